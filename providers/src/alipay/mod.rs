//! `alipay_life` channel adapter: Alipay life account template messages
//! (`alipay.open.public.message.single.send` on the OpenAPI gateway, providers.md §4), one
//! user per call.
//!
//! Each request is signed with the app's RSA2 key (`sign.rs`): the system parameters and the
//! signature go in the query, `biz_content` in the form body, as Alipay's own SDK sends them.
//! An answer is believed only as far as its signature verifies with Alipay's public key: a
//! success that does not verify is a failure (`invalid_response_signature`). Alipay reports
//! nothing after a send, so `submitted` is final; it has no recall for these messages.

pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::http::{self, per_target};
use crate::{AdapterOptions, ConfigError, rejected};
use classify::Signed;
use config::AlipayConfig;

const METHOD: &str = "alipay.open.public.message.single.send";
/// The answer's node for [`METHOD`]: its name with `_` for `.`, and `_response`.
const RESPONSE_NODE: &str = "alipay_open_public_message_single_send_response";

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::AlipayLife, options)?;
    Ok(Arc::new(AlipayProvider {
        client,
        config,
        concurrency: options.pool_size.max(1),
    }))
}

struct AlipayProvider {
    client: reqwest::Client,
    config: AlipayConfig,
    concurrency: usize,
}

/// The width of `text` as Alipay counts `action_name` (8 Chinese characters or 16 others): a
/// non-ASCII character is two.
fn width(text: &str) -> usize {
    text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// A required string of `context` no longer than `max` by `measure`.
fn context_text(
    context: &Map<String, Value>,
    field: &str,
    max: usize,
    measure: fn(&str) -> usize,
) -> Result<String, Outcome> {
    match context.get(field).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() && measure(s) <= max => Ok(s.to_string()),
        _ => Err(rejected(format!(
            "msg_alipay_life.context.{field} is required: a string of at most {max}"
        ))),
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// A `msg_alipay_life` content (`{"template_id", "context": {"head_color", "url",
/// "action_name", "first"?, "keyword1"…?, "remark"?}}`), as the template of the send body.
pub(crate) fn parse_content(content: &Value) -> Result<Value, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_alipay_life must be a JSON object"));
    };
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "template_id" | "context"))
    {
        return Err(rejected(format!(
            "msg_alipay_life.{key} is not a field of a life account template message"
        )));
    }
    let template_id = match object.get("template_id").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() && t.len() <= 128 => t,
        _ => {
            return Err(rejected(
                "msg_alipay_life.template_id is required: at most 128 characters",
            ));
        }
    };
    let Some(context) = object.get("context").and_then(Value::as_object) else {
        return Err(rejected(
            "msg_alipay_life.context is required: {\"head_color\", \"url\", \"action_name\", \"keyword1\", ...}",
        ));
    };
    let mut out = Map::new();
    out.insert(
        "head_color".into(),
        json!(context_text(context, "head_color", 10, chars)?),
    );
    out.insert(
        "url".into(),
        json!(context_text(context, "url", 256, chars)?),
    );
    out.insert(
        "action_name".into(),
        json!(context_text(context, "action_name", 16, width)?),
    );
    for (key, value) in context {
        if matches!(key.as_str(), "head_color" | "url" | "action_name") {
            continue;
        }
        let is_keyword = key
            .strip_prefix("keyword")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !(is_keyword || key == "first" || key == "remark") {
            return Err(rejected(format!(
                "msg_alipay_life.context.{key} is not a template field (first, keywordN, remark)"
            )));
        }
        let (text, color) = match value {
            Value::String(s) => (Some(s.as_str()), None),
            Value::Object(o) => (
                o.get("value").and_then(Value::as_str),
                o.get("color").and_then(Value::as_str),
            ),
            _ => (None, None),
        };
        let Some(text) = text.filter(|t| t.chars().count() <= 128) else {
            return Err(rejected(format!(
                "msg_alipay_life.context.{key} must be a string of at most 128 characters or {{\"value\", \"color\"}}"
            )));
        };
        let mut field = json!({ "value": text });
        if let Some(color) = color {
            field["color"] = json!(color);
        }
        out.insert(key.clone(), field);
    }
    Ok(json!({"template_id": template_id, "context": out}))
}

/// The `biz_content` for one user: an Alipay user id (`2088…`, digits) is `to_user_id`, any
/// other address an app-scoped OpenID (`to_open_id`).
pub(crate) fn biz_content(template: &Value, address: &str) -> Value {
    let to = if address.bytes().all(|b| b.is_ascii_digit()) {
        "to_user_id"
    } else {
        "to_open_id"
    };
    json!({ to: address, "template": template })
}

/// A user id is digits (at most 32); an OpenID letters, digits, `_` and `-` (at most 64).
fn usable_address(address: &str) -> bool {
    if address.bytes().all(|b| b.is_ascii_digit()) {
        (1..=32).contains(&address.len())
    } else {
        address.len() <= 64
            && address
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

/// The form value encoding of `application/x-www-form-urlencoded`.
fn form_encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

impl AlipayProvider {
    /// The signed system parameters of a call carrying `biz_content`.
    fn signed_params(
        &self,
        biz: &str,
        timestamp: String,
    ) -> Option<BTreeMap<&'static str, String>> {
        let mut params: BTreeMap<&'static str, String> = BTreeMap::from([
            ("app_id", self.config.app_id.clone()),
            ("method", METHOD.to_string()),
            ("format", "JSON".to_string()),
            ("charset", "utf-8".to_string()),
            ("sign_type", "RSA2".to_string()),
            ("timestamp", timestamp),
            ("version", "1.0".to_string()),
            ("biz_content", biz.to_string()),
        ]);
        let signature = sign::sign(&self.config.private_key, &sign::sign_content(&params))?;
        params.insert("sign", signature);
        Some(params)
    }

    async fn send_one(&self, template: &Value, target: &Target) -> Outcome {
        let address = target.address.trim();
        if !usable_address(address) {
            return Outcome::failed(
                OutcomeClass::Gone,
                "invalid_address",
                "an Alipay user id is digits (2088…), an OpenID letters, digits, _ and -",
            );
        }
        let biz = biz_content(template, address).to_string();
        // Beijing time, as the gateway reads it.
        let timestamp = (chrono::Utc::now() + chrono::Duration::hours(8))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let Some(params) = self.signed_params(&biz, timestamp) else {
            return Outcome::failed(OutcomeClass::Perm, "sign", "the private key cannot sign");
        };
        let query: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| **k != "biz_content")
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let Ok(url) = reqwest::Url::parse_with_params(&self.config.base_url, &query) else {
            return Outcome::failed(
                OutcomeClass::Perm,
                "base_url",
                "the gateway URL is not valid",
            );
        };
        let request = self
            .client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(format!("biz_content={}", form_encode(&biz)));
        let reply = match http::execute(request).await {
            Ok(reply) => reply,
            Err(transport) => return transport,
        };
        let body = String::from_utf8_lossy(&reply.body);
        let node = sign::response_node(&body, RESPONSE_NODE)
            .or_else(|| sign::response_node(&body, "error_response"));
        let signature = reply
            .json()
            .and_then(|j| j.get("sign").and_then(Value::as_str).map(str::to_string));
        let signed = match (node, signature) {
            (Some(n), Some(s)) if sign::verify(&self.config.alipay_public_key, n, &s) => {
                Signed::Valid
            }
            _ => Signed::Invalid,
        };
        classify::classify(&reply, node, signed)
    }
}

#[async_trait]
impl Provider for AlipayProvider {
    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        if req.targets.is_empty() {
            return Vec::new();
        }
        let template = match parse_content(req.content) {
            Ok(template) => template,
            Err(rejected) => return vec![rejected; req.targets.len()],
        };
        per_target(req.targets, self.concurrency, |t| {
            self.send_one(&template, t)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;

    fn content() -> Value {
        json!({"template_id": "e44cd3e52ffa46b1a50afc145f55d1ea", "context": {
            "head_color": "#85be53", "url": "https://example.com/detail", "action_name": "查看详情",
            "keyword1": {"color": "#85be53", "value": "HU7142"}, "keyword2": "2026-12-02",
            "first": "Your flight is on time", "remark": {"value": "Gate 12"}}})
    }

    #[test]
    fn content_mapping() {
        let t = parse_content(&content()).unwrap();
        assert_eq!(
            biz_content(&t, "2088102733318286"),
            json!({"to_user_id": "2088102733318286", "template": {
                "template_id": "e44cd3e52ffa46b1a50afc145f55d1ea", "context": {
                    "head_color": "#85be53", "url": "https://example.com/detail", "action_name": "查看详情",
                    "keyword1": {"color": "#85be53", "value": "HU7142"}, "keyword2": {"value": "2026-12-02"},
                    "first": {"value": "Your flight is on time"}, "remark": {"value": "Gate 12"}}}})
        );
        assert_eq!(
            biz_content(&t, "074a1CcTG1LelxKe4xQC0zgNdId0nx")["to_open_id"],
            "074a1CcTG1LelxKe4xQC0zgNdId0nx"
        );
    }

    #[test]
    fn content_rejections() {
        let with = |path: &str, value: Value| {
            let mut v = content();
            *v.pointer_mut(path).unwrap() = value;
            v
        };
        let mut extra = content();
        extra["to_user_id"] = json!("2088");
        let mut unknown = content();
        unknown["context"]["keyword"] = json!("x");
        for bad in [
            json!([]),
            extra,
            unknown,
            with("/template_id", json!("")),
            with("/template_id", json!("x".repeat(129))),
            with("/context", json!("x")),
            with("/context/head_color", json!("#85be53ffff0")),
            with("/context/action_name", json!("查看详情查看详情查")),
            with("/context/url", json!(5)),
            with("/context/keyword1", json!({"color": "#fff"})),
            with("/context/remark", json!("x".repeat(129))),
        ] {
            let out = parse_content(&bad).unwrap_err();
            assert_eq!(
                (out.class, out.code.as_str()),
                (OutcomeClass::Perm, INVALID_CONTENT),
                "{bad}"
            );
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "2088102733318286",
            "074a1CcTG1LelxKe4xQC0zgNdId0nx",
            "a_b-c",
        ] {
            assert!(usable_address(ok), "{ok}");
        }
        for bad in ["", "2088 1027", "a@b", &"1".repeat(33), &"a".repeat(65)] {
            assert!(!usable_address(bad), "{bad}");
        }
    }
}
