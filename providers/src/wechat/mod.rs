//! `wechatoa` and `wechatmp` channel adapter: WeChat Official Account template messages
//! (`POST /cgi-bin/message/template/send`, providers.md §1.3) and mini-program subscribe
//! messages (`POST /cgi-bin/message/subscribe/send`, §2, [`subscribe`]), one openid per call.
//!
//! Access tokens come from `POST /cgi-bin/stable_token` (normal mode): repeated calls return the
//! same token while it is valid and never invalidate one another process's token, so several
//! hubs or tools can share an account. The token is cached per adapter until a minute before it
//! expires and refreshed by one caller at a time; a send refused for its token (40001, 40014,
//! 42001) drops the cached token and is sent once more with a fresh one. The msgid WeChat
//! returns is kept as the provider id: the `TEMPLATESENDJOBFINISH` event names the send by it.

pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use serde_json::{Map, Value, json};

use crate::http::{self, per_target};
use crate::token::{TokenCache, token_from, token_transport};
use crate::{AdapterOptions, ConfigError, rejected};
use config::WechatConfig;

const INVALID_ADDRESS: &str = "invalid_address";

/// The adapter of a `wechatoa` or `wechatmp` channel (`kind`).
pub(crate) fn build(
    kind: ChannelType,
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(kind, credentials)?;
    let client = http::client(kind, options)?;
    let send_path = match kind {
        ChannelType::Wechatmp => "/cgi-bin/message/subscribe/send",
        _ => "/cgi-bin/message/template/send",
    };
    Ok(Arc::new(WechatProvider {
        kind,
        client,
        send_url: format!("{}{send_path}", config.base_url),
        token_url: format!("{}/cgi-bin/stable_token", config.base_url),
        config,
        concurrency: options.pool_size.max(1),
        tokens: TokenCache::default(),
    }))
}

struct WechatProvider {
    /// `wechatoa` or `wechatmp`.
    kind: ChannelType,
    client: reqwest::Client,
    config: WechatConfig,
    send_url: String,
    token_url: String,
    concurrency: usize,
    tokens: TokenCache,
}

/// A `msg_wechatoa` template message (JUMS `type: 0`), mapped onto the send body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    pub template_id: String,
    pub url: Option<String>,
    /// `{"appid", "pagepath"?}`: opens a mini-program bound to the account (wins over `url`).
    pub miniprogram: Option<Value>,
    /// `key → {"value", "color"?}`.
    pub data: Map<String, Value>,
    pub color: Option<String>,
}

fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, Outcome> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(rejected(format!(
            "msg_wechatoa.{field} must be a non-empty string"
        ))),
    }
}

pub(crate) fn parse_content(content: &Value) -> Result<Template, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_wechatoa must be a JSON object"));
    };
    match object.get("type") {
        None | Some(Value::Null) => {}
        Some(t) if t.as_i64() == Some(0) => {}
        Some(t) if t.as_i64() == Some(1) => {
            return Err(rejected(
                "msg_wechatoa type 1 (subscription notices) is not supported; use type 0 template messages",
            ));
        }
        Some(_) => return Err(rejected("msg_wechatoa.type must be 0")),
    }
    let template_id = optional_string(object, "template_id")?
        .ok_or_else(|| rejected("msg_wechatoa.template_id is required"))?;
    let url = optional_string(object, "url")?;
    let miniprogram = match object.get("miniprogram") {
        None | Some(Value::Null) => {
            // JUMS also takes the mini-program's appid and pagepath at the top level.
            optional_string(object, "appid")?.map(|appid| {
                let mut mp = json!({"appid": appid});
                if let Ok(Some(page)) = optional_string(object, "pagepath") {
                    mp["pagepath"] = json!(page);
                }
                mp
            })
        }
        Some(Value::Object(mp)) => {
            let appid = optional_string(mp, "appid")?
                .ok_or_else(|| rejected("msg_wechatoa.miniprogram.appid is required"))?;
            let mut out = json!({"appid": appid});
            if let Some(page) = optional_string(mp, "pagepath")? {
                out["pagepath"] = json!(page);
            }
            Some(out)
        }
        Some(_) => return Err(rejected("msg_wechatoa.miniprogram must be an object")),
    };
    let data = match object.get("data") {
        Some(Value::Object(fields)) if !fields.is_empty() => {
            let mut data = Map::new();
            for (key, value) in fields {
                let field = match value {
                    Value::String(s) => json!({"value": s}),
                    Value::Number(n) => json!({"value": n.to_string()}),
                    Value::Object(o) if o.get("value").is_some_and(Value::is_string) => {
                        let mut field = json!({"value": o["value"]});
                        if let Some(color) = o.get("color").and_then(Value::as_str) {
                            field["color"] = json!(color);
                        }
                        field
                    }
                    _ => {
                        return Err(rejected(format!(
                            "msg_wechatoa.data.{key} must be a string or {{\"value\": \"...\"}}"
                        )));
                    }
                };
                data.insert(key.clone(), field);
            }
            data
        }
        _ => {
            return Err(rejected(
                "msg_wechatoa.data is required: the template's fields, e.g. {\"thing1\": {\"value\": \"...\"}}",
            ));
        }
    };
    Ok(Template {
        template_id,
        url,
        miniprogram,
        data,
        color: optional_string(object, "color")?,
    })
}

/// The send body for one openid. `client_msg_id` is derived from the delivery, so a re-sent
/// attempt is the same message to WeChat (it sends one per openid and id within 10 minutes).
pub(crate) fn send_body(template: &Template, openid: &str, msgid: i64, delivery_id: i64) -> Value {
    let mut body = json!({
        "touser": openid,
        "template_id": template.template_id,
        "client_msg_id": format!("msghub-{msgid}-{delivery_id}"),
        "data": template.data,
    });
    if let Some(url) = &template.url {
        body["url"] = json!(url);
    }
    if let Some(mp) = &template.miniprogram {
        body["miniprogram"] = mp.clone();
    }
    if let Some(color) = &template.color {
        body["color"] = json!(color);
    }
    body
}

/// What one send carries, by channel type.
enum Message {
    Template(Template),
    Subscribe(subscribe::Subscribe),
}

/// The content of a `kind` channel's message.
fn parse_message(kind: ChannelType, content: &Value) -> Result<Message, Outcome> {
    match kind {
        ChannelType::Wechatmp => subscribe::parse_content(content).map(Message::Subscribe),
        _ => parse_content(content).map(Message::Template),
    }
}

/// An openid is 28 characters of letters, digits, `-` and `_`; allow some room, refuse the rest
/// before spending a call on it.
fn usable_openid(address: &str) -> bool {
    (8..=64).contains(&address.len())
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl WechatProvider {
    /// One `stable_token` call: the token and how long it lives.
    async fn fetch_token(&self) -> Result<(Arc<str>, Duration), Outcome> {
        let request = self.client.post(&self.token_url).json(&json!({
            "grant_type": "client_credential",
            "appid": self.config.appid,
            "secret": self.config.secret,
            "force_refresh": false,
        }));
        let reply = http::execute(request).await.map_err(token_transport)?;
        token_from(&reply, |r| classify::classify(r, self.kind))
    }

    async fn send_one(&self, message: &Message, target: &Target, msgid: i64) -> Outcome {
        let openid = target.address.trim();
        if !usable_openid(openid) {
            return Outcome::failed(
                OutcomeClass::Gone,
                INVALID_ADDRESS,
                "an openid is letters, digits, - and _",
            );
        }
        let body = match message {
            Message::Template(template) => send_body(template, openid, msgid, target.delivery_id),
            Message::Subscribe(message) => subscribe::send_body(message, openid),
        };
        let fetch = || self.fetch_token();
        match self
            .tokens
            .post_json(
                &self.client,
                &self.send_url,
                &body,
                fetch,
                classify::is_token_error,
            )
            .await
        {
            Ok(reply) => classify::classify(&reply, self.kind),
            Err(outcome) => outcome,
        }
    }
}

#[async_trait]
impl Provider for WechatProvider {
    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        if req.targets.is_empty() {
            return Vec::new();
        }
        let message = match parse_message(self.kind, req.content) {
            Ok(message) => message,
            Err(rejected) => return vec![rejected; req.targets.len()],
        };
        per_target(req.targets, self.concurrency, |t| {
            self.send_one(&message, t, req.msgid)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;

    #[test]
    fn content_mapping() {
        let t = parse_content(&json!({"type": 0, "template_id": "TPL_1", "url": "https://x.test/o/1",
            "data": {"thing1": "Order shipped", "amount2": 12.5, "time3": {"value": "10:00", "color": "#173177"}}}))
        .unwrap();
        assert_eq!(t.template_id, "TPL_1");
        assert_eq!(t.url.as_deref(), Some("https://x.test/o/1"));
        assert_eq!(
            Value::Object(t.data.clone()),
            json!({"thing1": {"value": "Order shipped"}, "amount2": {"value": "12.5"},
                   "time3": {"value": "10:00", "color": "#173177"}})
        );
        let body = send_body(&t, "oABCDEFGHIJKLMNOPQRSTUVWXYZ1", 77, 5);
        assert_eq!(
            body,
            json!({"touser": "oABCDEFGHIJKLMNOPQRSTUVWXYZ1", "template_id": "TPL_1",
                   "client_msg_id": "msghub-77-5", "url": "https://x.test/o/1",
                   "data": {"thing1": {"value": "Order shipped"}, "amount2": {"value": "12.5"},
                            "time3": {"value": "10:00", "color": "#173177"}}})
        );
        // A mini-program, nested or at the top level as JUMS also allows.
        let nested = parse_content(&json!({"template_id": "T", "data": {"a": "b"},
            "miniprogram": {"appid": "wxmp", "pagepath": "pages/o?id=1"}}))
        .unwrap();
        let top = parse_content(&json!({"template_id": "T", "data": {"a": "b"},
            "appid": "wxmp", "pagepath": "pages/o?id=1"}))
        .unwrap();
        assert_eq!(nested, top);
        assert_eq!(
            send_body(&nested, "o1234567", 1, 1)["miniprogram"],
            json!({"appid": "wxmp", "pagepath": "pages/o?id=1"})
        );
    }

    #[test]
    fn content_rejections() {
        for bad in [
            json!([]),
            json!({"data": {"a": "b"}}),
            json!({"template_id": "", "data": {"a": "b"}}),
            json!({"template_id": "T"}),
            json!({"template_id": "T", "data": {}}),
            json!({"template_id": "T", "data": {"a": ["b"]}}),
            json!({"template_id": "T", "data": {"a": {"color": "#fff"}}}),
            json!({"template_id": "T", "data": {"a": "b"}, "miniprogram": "wxmp"}),
            json!({"template_id": "T", "data": {"a": "b"}, "miniprogram": {"pagepath": "p"}}),
            json!({"template_id": "T", "data": {"a": "b"}, "url": 5}),
            json!({"type": 1, "template_id": "T", "data": {"a": "b"}}),
            json!({"type": "x", "template_id": "T", "data": {"a": "b"}}),
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
    fn openids() {
        assert!(usable_openid("oABCDEFGHIJKLMNOPQRSTUVWXYZ1"));
        assert!(usable_openid("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"));
        for bad in ["", "short", "has space in it", "o<script>alert</script>"] {
            assert!(!usable_openid(bad), "{bad}");
        }
    }
}
