//! Types parsed at the edge: every request body is turned into one of these or refused with
//! a precise message, before anything is stored.

pub mod callback;
pub mod filters;
pub mod rules;
pub mod schedule;
pub mod send;
pub mod user_opt;

/// Text a client names something by, that storage can hold and look up: not blank, at most
/// `max` bytes, without control characters (Postgres refuses a NUL in text, and no stored
/// name, key, userid or address has one).
pub fn plain_text(text: &str, max: usize) -> bool {
    !text.trim().is_empty() && text.len() <= max && !text.chars().any(char::is_control)
}

/// A JSON value's kind, for error messages ("expected an array, got a string").
pub fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Parse a request body as a JSON value with a message that points at the problem.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, String> {
    if body.is_empty() {
        return Err("request body is empty; expected JSON".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))
}
