//! Status callback parameters: a send's `callback` field and the URLs a source registers.

use serde_json::Value;

use super::kind_of;
use crate::error::JumsError;

/// Verified URLs per source (JUMS: at most five; the first registered is the default).
pub const MAX_URLS_PER_SOURCE: usize = 5;
pub const MAX_URL_BYTES: usize = 512;
/// `callback.params`, serialized, is echoed in every item of the message, so it stays small.
pub const MAX_PARAMS_BYTES: usize = 4096;

/// A send's `callback`: which verified URL (default when absent) and what to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRequest {
    pub url: Option<String>,
    /// A JSON object, when given.
    pub params: Option<Value>,
}

/// Check a callback URL for registration: absolute http(s) with a host, no credentials or
/// fragment, at most [`MAX_URL_BYTES`]. It is stored as given, because a send names it by
/// exact string.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > MAX_URL_BYTES {
        return Err(format!("url must be 1 to {MAX_URL_BYTES} bytes"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("url must not contain spaces or control characters".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("url is not an absolute URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("url has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not carry credentials; msghub signs with the source's key".into());
    }
    if parsed.fragment().is_some() {
        return Err("url must not have a #fragment".into());
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> JumsError {
    JumsError::invalid(msg)
}

/// Parse a send's `callback` (`{"url": "...", "params": {...}}`, both optional). `null` is the
/// same as leaving the field out.
pub fn parse(v: &Value) -> Result<Option<CallbackRequest>, JumsError> {
    let o = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        other => {
            return Err(invalid(format!(
                "callback must be an object, got {}",
                kind_of(other)
            )));
        }
    };
    let mut req = CallbackRequest {
        url: None,
        params: None,
    };
    for (k, value) in o {
        match (k.as_str(), value) {
            (_, Value::Null) => {}
            ("url", Value::String(s)) => {
                if s.is_empty() || s.len() > MAX_URL_BYTES {
                    return Err(invalid(format!(
                        "callback.url must be 1 to {MAX_URL_BYTES} bytes"
                    )));
                }
                req.url = Some(s.clone());
            }
            ("url", other) => {
                return Err(invalid(format!(
                    "callback.url must be a string, got {}",
                    kind_of(other)
                )));
            }
            ("params", Value::Object(_)) => {
                if value.to_string().len() > MAX_PARAMS_BYTES {
                    return Err(invalid(format!(
                        "callback.params is larger than {MAX_PARAMS_BYTES} bytes"
                    )));
                }
                req.params = Some(value.clone());
            }
            ("params", other) => {
                return Err(invalid(format!(
                    "callback.params must be an object, got {}",
                    kind_of(other)
                )));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "unknown field callback.{other}; give url and/or params"
                )));
            }
        }
    }
    Ok(Some(req))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn callback_fields_are_checked() {
        let ok = parse(&json!({"url": "https://b.example/cb", "params": {"k": 1}})).unwrap();
        assert_eq!(
            ok,
            Some(CallbackRequest {
                url: Some("https://b.example/cb".into()),
                params: Some(json!({"k": 1})),
            })
        );
        assert_eq!(parse(&json!(null)).unwrap(), None);
        assert_eq!(
            parse(&json!({"params": {"a": "b"}})).unwrap().unwrap().url,
            None
        );
        assert!(parse(&json!("https://x")).is_err());
        assert!(parse(&json!({"url": 5})).is_err());
        assert!(parse(&json!({"url": "x".repeat(513)})).is_err());
        assert!(parse(&json!({"params": [1]})).is_err());
        assert!(parse(&json!({"params": {"big": "x".repeat(4100)}})).is_err());
        assert!(parse(&json!({"uri": "https://x"})).is_err());
    }

    #[test]
    fn only_plain_http_urls_can_be_registered() {
        assert!(check_url("https://b.example/cb?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:9000/cb").is_ok());
        assert!(check_url("ftp://b.example/cb").is_err());
        assert!(check_url("/cb").is_err());
        assert!(check_url("https://u:p@b.example/cb").is_err());
        assert!(check_url("https://b.example/cb#top").is_err());
        assert!(check_url("https://b.example/c b").is_err());
        assert!(check_url(&format!("https://b.example/{}", "x".repeat(600))).is_err());
    }
}
