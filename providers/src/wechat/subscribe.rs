//! `wechatmp` contents: mini-program subscribe messages (`POST /cgi-bin/message/subscribe/send`,
//! providers.md §2), one openid per call.

use msghub_actors::provider::Outcome;
use serde_json::{Map, Value, json};

use crate::rejected;

/// The values of `miniprogram_state`: which version of the mini-program a tap opens.
const STATES: &[&str] = &["developer", "trial", "formal"];
/// The values of `lang`.
const LANGS: &[&str] = &["zh_CN", "en_US", "zh_HK", "zh_TW"];

/// A `msg_wechatmp` subscribe message (`{template_id, page?, data, miniprogram_state?, lang?}`),
/// mapped onto the send body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscribe {
    pub template_id: String,
    pub page: Option<String>,
    /// `key → {"value"}`.
    pub data: Map<String, Value>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
}

/// An optional non-empty string field of `msg_wechatmp`, one of `allowed` when given.
fn optional(
    object: &Map<String, Value>,
    field: &str,
    allowed: Option<&[&str]>,
) -> Result<Option<String>, Outcome> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.trim().is_empty() && allowed.is_none_or(|a| a.contains(&s.as_str())) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(rejected(match allowed {
            Some(values) => format!("msg_wechatmp.{field} must be one of {}", values.join(", ")),
            None => format!("msg_wechatmp.{field} must be a non-empty string"),
        })),
    }
}

pub(crate) fn parse_content(content: &Value) -> Result<Subscribe, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_wechatmp must be a JSON object"));
    };
    if let Some(key) = object.keys().find(|k| {
        !matches!(
            k.as_str(),
            "template_id" | "page" | "data" | "miniprogram_state" | "lang"
        )
    }) {
        return Err(rejected(format!(
            "msg_wechatmp.{key} is not a field of a subscribe message (touser is set by msghub)"
        )));
    }
    let template_id = optional(object, "template_id", None)?
        .ok_or_else(|| rejected("msg_wechatmp.template_id is required"))?;
    let data = match object.get("data") {
        Some(Value::Object(fields)) if !fields.is_empty() => {
            let mut data = Map::new();
            for (key, value) in fields {
                // A subscribe message's values are checked by their key's type (`thing` ≤ 20
                // characters, `number` digits, ...): WeChat answers 47003, as the adapter's
                // outcome says; only their shape is checked here.
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Object(o) => match o.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                if text.is_empty() {
                    return Err(rejected(format!(
                        "msg_wechatmp.data.{key} must be a non-empty string or {{\"value\": \"...\"}}"
                    )));
                }
                data.insert(key.clone(), json!({ "value": text }));
            }
            data
        }
        _ => {
            return Err(rejected(
                "msg_wechatmp.data is required: the template's fields, e.g. {\"thing1\": {\"value\": \"...\"}}",
            ));
        }
    };
    Ok(Subscribe {
        template_id,
        page: optional(object, "page", None)?,
        data,
        miniprogram_state: optional(object, "miniprogram_state", Some(STATES))?,
        lang: optional(object, "lang", Some(LANGS))?,
    })
}

/// The send body for one openid.
pub(crate) fn send_body(message: &Subscribe, openid: &str) -> Value {
    let mut body = json!({
        "touser": openid,
        "template_id": message.template_id,
        "data": message.data,
    });
    for (field, value) in [
        ("page", &message.page),
        ("miniprogram_state", &message.miniprogram_state),
        ("lang", &message.lang),
    ] {
        if let Some(v) = value {
            body[field] = json!(v);
        }
    }
    body
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use msghub_actors::provider::OutcomeClass;

    use super::*;
    use crate::INVALID_CONTENT;

    #[test]
    fn content_mapping() {
        let m = parse_content(&json!({"template_id": "SUB_1", "page": "pages/order?id=7",
            "data": {"thing1": "Parcel shipped", "number2": 12, "time3": {"value": "10:00"}},
            "miniprogram_state": "trial", "lang": "en_US"}))
        .unwrap();
        assert_eq!(
            send_body(&m, "oMini000000000000000000000001"),
            json!({"touser": "oMini000000000000000000000001", "template_id": "SUB_1",
                   "page": "pages/order?id=7", "miniprogram_state": "trial", "lang": "en_US",
                   "data": {"thing1": {"value": "Parcel shipped"}, "number2": {"value": "12"},
                            "time3": {"value": "10:00"}}})
        );
        let bare = parse_content(&json!({"template_id": "S", "data": {"a": "b"}})).unwrap();
        assert_eq!(
            send_body(&bare, "o1234567"),
            json!({"touser": "o1234567", "template_id": "S", "data": {"a": {"value": "b"}}})
        );
    }

    #[test]
    fn content_rejections() {
        for bad in [
            json!("text"),
            json!({"data": {"a": "b"}}),
            json!({"template_id": " ", "data": {"a": "b"}}),
            json!({"template_id": "S"}),
            json!({"template_id": "S", "data": {}}),
            json!({"template_id": "S", "data": {"a": ""}}),
            json!({"template_id": "S", "data": {"a": ["b"]}}),
            json!({"template_id": "S", "data": {"a": {"color": "#fff"}}}),
            json!({"template_id": "S", "data": {"a": "b"}, "touser": "o1234567"}),
            json!({"template_id": "S", "data": {"a": "b"}, "miniprogram_state": "beta"}),
            json!({"template_id": "S", "data": {"a": "b"}, "lang": "fr_FR"}),
            json!({"template_id": "S", "data": {"a": "b"}, "page": 3}),
        ] {
            let out = parse_content(&bad).unwrap_err();
            assert_eq!(
                (out.class, out.code.as_str()),
                (OutcomeClass::Perm, INVALID_CONTENT),
                "{bad}"
            );
        }
    }
}
