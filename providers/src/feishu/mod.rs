//! `feishu` channel adapter: Feishu (Lark) bot messages (`POST /im/v1/messages`), one
//! recipient per call (providers.md §10.1).
//!
//! Tenant access tokens come from `POST /auth/v3/tenant_access_token/internal` with the app's
//! id and secret, cached like WeChat's (`crate::token`) and sent as `Authorization: Bearer`;
//! a send refused for its token (99991661, 99991663, 99991668) is sent once more with a fresh
//! one. Each send carries `uuid` = `msghub-{msgid}-{delivery id}`: Feishu sends one message per
//! uuid within an hour, so a re-sent attempt is not a second message. The `message_id` is the
//! provider id, and a retract withdraws it (`DELETE /im/v1/messages/{message_id}`).

pub(crate) mod classify;
pub(crate) mod config;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use serde_json::{Map, Value, json};

use crate::http::{self, Reply, per_target};
use crate::token::{TokenAnswer, TokenCache, token_from_answer, token_transport};
use crate::{AdapterOptions, ConfigError, rejected};
use config::FeishuConfig;

/// The message types of `msg_type`.
const MSG_TYPES: &[&str] = &[
    "text",
    "post",
    "image",
    "file",
    "audio",
    "media",
    "sticker",
    "interactive",
    "share_chat",
    "share_user",
];

/// Where a tenant access token answer holds its parts.
const TENANT_TOKEN: TokenAnswer = TokenAnswer {
    token: "tenant_access_token",
    expires: "expire",
    code: classify::code,
};

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::Feishu, options)?;
    Ok(Arc::new(FeishuProvider {
        client,
        send_url: format!(
            "{}/im/v1/messages?receive_id_type={}",
            config.base_url, config.receive_id_type
        ),
        messages_url: format!("{}/im/v1/messages", config.base_url),
        token_url: format!("{}/auth/v3/tenant_access_token/internal", config.base_url),
        config,
        concurrency: options.pool_size.max(1),
        tokens: TokenCache::default(),
    }))
}

struct FeishuProvider {
    client: reqwest::Client,
    config: FeishuConfig,
    send_url: String,
    /// `…/im/v1/messages`, to which recalls add `/{message_id}`.
    messages_url: String,
    token_url: String,
    concurrency: usize,
    tokens: TokenCache,
}

/// A `msg_feishu` content: `{"msg_type", "content"}`, the content an object (or the JSON text
/// of one, as Feishu takes it). Returns the type and the content as Feishu's string.
pub(crate) fn parse_content(content: &Value) -> Result<(String, String), Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_feishu must be a JSON object"));
    };
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "msg_type" | "content"))
    {
        return Err(rejected(format!(
            "msg_feishu.{key} is not a field of a Feishu message (receive_id and uuid are set by msghub)"
        )));
    }
    let msg_type = match object.get("msg_type").and_then(Value::as_str) {
        Some(t) if MSG_TYPES.contains(&t) => t,
        _ => {
            return Err(rejected(format!(
                "msg_feishu.msg_type is required: one of {}",
                MSG_TYPES.join(", ")
            )));
        }
    };
    let body: Map<String, Value> = match object.get("content") {
        Some(Value::Object(o)) => o.clone(),
        Some(Value::String(s)) => match serde_json::from_str(s) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(rejected(
                    "msg_feishu.content must be an object, or the JSON text of one",
                ));
            }
        },
        _ => {
            return Err(rejected(
                "msg_feishu.content is required: e.g. {\"text\": \"...\"} for a text message",
            ));
        }
    };
    if msg_type == "text"
        && body
            .get("text")
            .and_then(Value::as_str)
            .is_none_or(|t| t.trim().is_empty())
    {
        return Err(rejected(
            "msg_feishu.content.text is required and must be a non-empty string",
        ));
    }
    Ok((msg_type.to_string(), Value::Object(body).to_string()))
}

/// The send body for one recipient. `uuid` is derived from the delivery, so a re-sent attempt
/// is the same message to Feishu (one per uuid within an hour).
pub(crate) fn send_body(
    msg_type: &str,
    content: &str,
    receive_id: &str,
    msgid: i64,
    delivery_id: i64,
) -> Value {
    json!({
        "receive_id": receive_id,
        "msg_type": msg_type,
        "content": content,
        "uuid": format!("msghub-{msgid}-{delivery_id}"),
    })
}

/// A receive id (an `ou_…` open_id, a user_id, a union_id or an email) is at most 128
/// printable characters without spaces; anything else is refused before a call.
fn usable_receive_id(address: &str) -> bool {
    (1..=128).contains(&address.len()) && address.bytes().all(|b| b.is_ascii_graphic())
}

impl FeishuProvider {
    /// One tenant access token request: the token and how long it lives.
    async fn fetch_token(&self) -> Result<(Arc<str>, Duration), Outcome> {
        let request = self.client.post(&self.token_url).json(&json!({
            "app_id": self.config.app_id,
            "app_secret": self.config.app_secret,
        }));
        let reply = http::execute(request).await.map_err(token_transport)?;
        token_from_answer(&reply, &TENANT_TOKEN, classify::classify)
    }

    /// A call with the tenant token as a bearer, once more with a fresh one when refused.
    async fn call(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Reply, Outcome> {
        let fetch = || self.fetch_token();
        let send = |token: Arc<str>| {
            let request = request().bearer_auth(&*token);
            async move { http::execute(request).await }
        };
        let refused = |reply: &Reply| {
            reply
                .json()
                .as_ref()
                .and_then(classify::code)
                .is_some_and(|(code, _)| classify::is_token_error(code))
        };
        self.tokens.call(fetch, send, refused).await
    }

    async fn send_one(
        &self,
        msg_type: &str,
        content: &str,
        target: &Target,
        msgid: i64,
    ) -> Outcome {
        let receive_id = target.address.trim();
        if !usable_receive_id(receive_id) {
            return Outcome::failed(
                OutcomeClass::Gone,
                "invalid_address",
                "a Feishu receive id is printable characters without spaces",
            );
        }
        let body = send_body(msg_type, content, receive_id, msgid, target.delivery_id);
        match self
            .call(|| self.client.post(&self.send_url).json(&body))
            .await
        {
            Ok(reply) => classify::classify(&reply),
            Err(failed) => failed,
        }
    }

    async fn recall_one(&self, message_id: &str) -> Outcome {
        // Only a Feishu message id reaches the URL path.
        let id_ok = message_id.strip_prefix("om_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !id_ok {
            return Outcome::failed(
                OutcomeClass::Perm,
                "invalid_message_id",
                "not a Feishu message id",
            );
        }
        let url = format!("{}/{message_id}", self.messages_url);
        match self.call(|| self.client.delete(&url)).await {
            Ok(reply) => classify::classify(&reply),
            Err(failed) => failed,
        }
    }
}

#[async_trait]
impl Provider for FeishuProvider {
    fn max_batch(&self) -> usize {
        1
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        if req.targets.is_empty() {
            return Vec::new();
        }
        let (msg_type, content) = match parse_content(req.content) {
            Ok(parsed) => parsed,
            Err(rejected) => return vec![rejected; req.targets.len()],
        };
        per_target(req.targets, self.concurrency, |t| {
            self.send_one(&msg_type, &content, t, req.msgid)
        })
        .await
    }

    async fn recall(&self, provider_ids: &[String]) -> Vec<Outcome> {
        per_target(provider_ids, self.concurrency, |id| self.recall_one(id)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;

    #[test]
    fn content_mapping() {
        let (t, c) =
            parse_content(&json!({"msg_type": "text", "content": {"text": "Build #42 passed"}}))
                .unwrap();
        assert_eq!(
            send_body(&t, &c, "ou_7d8a6e6df7621556ce0d21922b676706ccs", 77, 5),
            json!({"receive_id": "ou_7d8a6e6df7621556ce0d21922b676706ccs", "msg_type": "text",
                   "content": "{\"text\":\"Build #42 passed\"}", "uuid": "msghub-77-5"})
        );
        // The content may come as Feishu's own string.
        let (_, c) =
            parse_content(&json!({"msg_type": "text", "content": "{\"text\":\"hi\"}"})).unwrap();
        assert_eq!(c, "{\"text\":\"hi\"}");
        assert!(
            parse_content(&json!({"msg_type": "interactive", "content": {"elements": []}})).is_ok()
        );
        // The longest uuid Feishu is given fits its 50 characters.
        let uuid = send_body("text", "{}", "ou_1", i64::MAX, i64::MAX)["uuid"].clone();
        assert!(uuid.as_str().unwrap().len() <= 50, "{uuid}");
    }

    #[test]
    fn content_rejections() {
        for bad in [
            json!([]),
            json!({"content": {"text": "hi"}}),
            json!({"msg_type": "sms", "content": {"text": "hi"}}),
            json!({"msg_type": "text"}),
            json!({"msg_type": "text", "content": "not json"}),
            json!({"msg_type": "text", "content": {"text": " "}}),
            json!({"msg_type": "text", "content": {"text": "hi"}, "receive_id": "ou_x"}),
            json!({"msg_type": "text", "content": {"text": "hi"}, "uuid": "x"}),
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
    fn receive_ids() {
        for ok in [
            "ou_7d8a6e6df7621556ce0d21922b676706ccs",
            "a.b@example.com",
            "6a1b2c",
        ] {
            assert!(usable_receive_id(ok), "{ok}");
        }
        for bad in ["", "has space", "ou_\u{7}", &"x".repeat(129), "张三"] {
            assert!(!usable_receive_id(bad), "{bad}");
        }
    }
}
