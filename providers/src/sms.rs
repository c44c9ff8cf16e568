//! What every `sms` provider reads the same way from a `msg_sms` content (JUMS JSMS shape):
//! the template id and the signature override. The parameters differ per provider (Aliyun
//! takes named ones, Tencent positional ones), so each adapter reads those itself.

use msghub_actors::provider::Outcome;
use serde_json::{Map, Value};

use crate::rejected;

/// The `msg_sms` object, or the refusal of anything else.
pub(crate) fn object(content: &Value) -> Result<&Map<String, Value>, Outcome> {
    content
        .as_object()
        .ok_or_else(|| rejected("msg_sms must be a JSON object"))
}

/// `temp_id`: a non-blank string or a number. Free text (`content` without `temp_id`) is
/// refused naming the provider, which sends approved templates only.
pub(crate) fn template_id(object: &Map<String, Value>, provider: &str) -> Result<String, Outcome> {
    match object.get("temp_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        None | Some(Value::Null) if object.contains_key("content") => Err(rejected(format!(
            "free-text SMS not supported by {provider}; use temp_id"
        ))),
        None | Some(Value::Null) => Err(rejected("msg_sms.temp_id is required")),
        Some(_) => Err(rejected("msg_sms.temp_id must be a string or a number")),
    }
}

/// `sign_name`, overriding the channel's signature.
pub(crate) fn sign_name(object: &Map<String, Value>) -> Result<Option<String>, Outcome> {
    match object.get("sign_name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(rejected("msg_sms.sign_name must be a non-empty string")),
    }
}
