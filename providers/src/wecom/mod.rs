//! `wechatwk` channel adapter: WeCom (企业微信) application messages
//! (`POST /cgi-bin/message/send`), up to 1000 members per call (providers.md §10.2).
//!
//! Access tokens come from `GET /cgi-bin/gettoken` with the application's Secret: WeCom
//! returns the same token while it is valid, so it is cached per adapter until a minute before
//! it expires, fetched by one caller at a time, and dropped and fetched again once when a send
//! is refused for it (40014, 42001, 41001). A send names its members in `touser` (`a|b|c`);
//! WeCom answers for the call and lists the members it could not send to, who get their own
//! outcomes. The msgid of the call is every member's provider id: recalling it withdraws the
//! message from all of them (`POST /cgi-bin/message/recall`, within 24 hours).

pub(crate) mod classify;
pub(crate) mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use serde_json::{Map, Value, json};

use crate::http::{self, per_chunk, per_target};
use crate::token::{TokenCache, get_token};
use crate::{AdapterOptions, ConfigError, rejected};
use config::WecomConfig;

/// Members per call (`touser` takes at most 1000).
const MAX_BATCH: usize = 1000;
/// The message types of `msgtype`; the message itself is the object under the same name.
const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "file",
    "textcard",
    "news",
    "mpnews",
    "markdown",
    "miniprogram_notice",
    "template_card",
];
/// Fields msghub fills in itself: the audience comes from the message's, the application
/// from the channel. A content that set them could reach the whole company (`@all`).
const SET_BY_MSGHUB: &[&str] = &["touser", "toparty", "totag", "agentid"];

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::Wechatwk, options)?;
    Ok(Arc::new(WecomProvider {
        client,
        send_url: format!("{}/cgi-bin/message/send", config.base_url),
        recall_url: format!("{}/cgi-bin/message/recall", config.base_url),
        token_url: format!("{}/cgi-bin/gettoken", config.base_url),
        config,
        concurrency: options.pool_size.max(1),
        tokens: TokenCache::default(),
    }))
}

struct WecomProvider {
    client: reqwest::Client,
    config: WecomConfig,
    send_url: String,
    recall_url: String,
    token_url: String,
    /// Recalls under way at once.
    concurrency: usize,
    tokens: TokenCache,
}

/// An integer option of the message within `range`.
fn check_option(
    object: &Map<String, Value>,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), Outcome> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| range.contains(&n)) => Ok(()),
        Some(_) => Err(rejected(format!(
            "msg_wechatwk.{field} must be an integer from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// A required non-empty string of the message's `msgtype` object.
fn required_text<'a>(
    message: &'a Map<String, Value>,
    msgtype: &str,
    field: &str,
) -> Result<&'a str, Outcome> {
    message
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            rejected(format!(
                "msg_wechatwk.{msgtype}.{field} is required and must be a non-empty string"
            ))
        })
}

/// A `msg_wechatwk` content: a WeCom message without its audience and application
/// (`{"msgtype": "text", "text": {"content": "..."}, "safe"?, "enable_id_trans"?,
/// "enable_duplicate_check"?, "duplicate_check_interval"?}`), checked as far as WeCom would
/// certainly refuse it, so no call is spent on it.
pub(crate) fn parse_content(content: &Value) -> Result<Map<String, Value>, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_wechatwk must be a JSON object"));
    };
    let msgtype = match object.get("msgtype").and_then(Value::as_str) {
        Some(t) if MSG_TYPES.contains(&t) => t,
        _ => {
            return Err(rejected(format!(
                "msg_wechatwk.msgtype is required: one of {}",
                MSG_TYPES.join(", ")
            )));
        }
    };
    for key in object.keys() {
        if SET_BY_MSGHUB.contains(&key.as_str()) {
            return Err(rejected(format!(
                "msg_wechatwk.{key} is set by msghub (the audience and the channel's application)"
            )));
        }
        let known = key == "msgtype"
            || key == msgtype
            || matches!(
                key.as_str(),
                "safe" | "enable_id_trans" | "enable_duplicate_check" | "duplicate_check_interval"
            );
        if !known {
            return Err(rejected(format!(
                "msg_wechatwk.{key} is not a field of a WeCom {msgtype} message"
            )));
        }
    }
    let Some(message) = object.get(msgtype).and_then(Value::as_object) else {
        return Err(rejected(format!(
            "msg_wechatwk.{msgtype} is required and must be an object"
        )));
    };
    match msgtype {
        // WeCom cuts a text past 2048 bytes, it does not refuse it.
        "text" | "markdown" => {
            required_text(message, msgtype, "content")?;
        }
        "textcard" => {
            for field in ["title", "description", "url"] {
                required_text(message, msgtype, field)?;
            }
        }
        "news" => match message.get("articles").and_then(Value::as_array) {
            Some(articles)
                if (1..=8).contains(&articles.len())
                    && articles
                        .iter()
                        .all(|a| a.get("title").and_then(Value::as_str).is_some()) => {}
            _ => {
                return Err(rejected(
                    "msg_wechatwk.news.articles must hold 1 to 8 articles, each with a title",
                ));
            }
        },
        _ => {}
    }
    // `safe` 2 (watermarked) is for mpnews only.
    let safe_max = if msgtype == "mpnews" { 2 } else { 1 };
    check_option(object, "safe", 0..=safe_max)?;
    check_option(object, "enable_id_trans", 0..=1)?;
    check_option(object, "enable_duplicate_check", 0..=1)?;
    check_option(object, "duplicate_check_interval", 1..=14_400)?;
    Ok(object.clone())
}

/// The send body: the message, its members and the application.
pub(crate) fn send_body(message: &Map<String, Value>, agentid: u64, members: &[&str]) -> Value {
    let mut body = message.clone();
    body.insert("touser".into(), json!(members.join("|")));
    body.insert("agentid".into(), json!(agentid));
    Value::Object(body)
}

/// A member id (UserID) is 1–64 bytes of letters, digits and `_-@.`, starting with a letter or
/// digit; anything else, `@all` included, is refused before a call is spent on it.
fn usable_userid(address: &str) -> bool {
    (1..=64).contains(&address.len())
        && address.as_bytes()[0].is_ascii_alphanumeric()
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'.'))
}

impl WecomProvider {
    /// One `gettoken` call: the token and how long it lives.
    async fn fetch_token(&self) -> Result<(Arc<str>, Duration), Outcome> {
        let params = [
            ("corpid", self.config.corpid.as_str()),
            ("corpsecret", self.config.corpsecret.as_str()),
        ];
        get_token(&self.client, &self.token_url, params, classify::classify).await
    }

    async fn post(&self, url: &str, body: &Value) -> Result<http::Reply, Outcome> {
        let fetch = || self.fetch_token();
        self.tokens
            .post_json(&self.client, url, body, fetch, classify::is_token_error)
            .await
    }

    /// One call for the members of `chunk` (at most [`MAX_BATCH`]). A member named twice
    /// (member ids are case-insensitive) is sent to once, and both targets get its outcome.
    async fn send_chunk(&self, message: &Map<String, Value>, chunk: &[Target]) -> Vec<Outcome> {
        // Each target's place among the members called (`None`: not a usable member id).
        let mut members: Vec<&str> = Vec::with_capacity(chunk.len());
        let mut places: HashMap<String, usize> = HashMap::with_capacity(chunk.len());
        let slots: Vec<Option<usize>> = chunk
            .iter()
            .map(|t| {
                let m = t.address.trim();
                usable_userid(m).then(|| {
                    *places.entry(m.to_ascii_lowercase()).or_insert_with(|| {
                        members.push(m);
                        members.len() - 1
                    })
                })
            })
            .collect();
        let answers = if members.is_empty() {
            Vec::new()
        } else {
            let body = send_body(message, self.config.agentid, &members);
            match self.post(&self.send_url, &body).await {
                Ok(reply) => classify::classify_send(&reply, &members),
                Err(failed) => vec![failed; members.len()],
            }
        };
        slots
            .into_iter()
            .map(|slot| match slot {
                None => Outcome::failed(
                    OutcomeClass::Gone,
                    "invalid_address",
                    "a WeCom member id is 1-64 letters, digits and _-@.",
                ),
                Some(i) => answers.get(i).cloned().unwrap_or_else(|| {
                    Outcome::failed(OutcomeClass::Retry, "internal", "no answer for the member")
                }),
            })
            .collect()
    }

    async fn recall_one(&self, msgid: &str) -> Outcome {
        match self
            .post(&self.recall_url, &json!({ "msgid": msgid }))
            .await
        {
            Ok(reply) => classify::classify(&reply),
            Err(failed) => failed,
        }
    }
}

#[async_trait]
impl Provider for WecomProvider {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        if req.targets.is_empty() {
            return Vec::new();
        }
        let message = match parse_content(req.content) {
            Ok(message) => message,
            Err(rejected) => return vec![rejected; req.targets.len()],
        };
        per_chunk(req.targets, MAX_BATCH, |chunk| {
            self.send_chunk(&message, chunk)
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
        let content = json!({"msgtype": "text", "text": {"content": "Your order shipped"},
                             "safe": 0, "enable_duplicate_check": 1, "duplicate_check_interval": 600});
        let message = parse_content(&content).unwrap();
        assert_eq!(
            send_body(&message, 1000002, &["zhangsan", "lisi"]),
            json!({"msgtype": "text", "text": {"content": "Your order shipped"}, "safe": 0,
                   "enable_duplicate_check": 1, "duplicate_check_interval": 600,
                   "touser": "zhangsan|lisi", "agentid": 1000002})
        );
        for ok in [
            json!({"msgtype": "markdown", "markdown": {"content": "**due** today"}}),
            json!({"msgtype": "textcard", "textcard": {"title": "t", "description": "d", "url": "https://x.test"}}),
            json!({"msgtype": "news", "news": {"articles": [{"title": "a", "url": "https://x.test"}]}}),
            json!({"msgtype": "mpnews", "mpnews": {"articles": []}, "safe": 2}),
            json!({"msgtype": "template_card", "template_card": {"card_type": "text_notice"}}),
        ] {
            assert!(parse_content(&ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn content_rejections() {
        for bad in [
            json!([]),
            json!({"text": {"content": "hi"}}),
            json!({"msgtype": "sms", "sms": {}}),
            json!({"msgtype": "text"}),
            json!({"msgtype": "text", "text": "hi"}),
            json!({"msgtype": "text", "text": {"content": ""}}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "touser": "@all"}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "toparty": "1"}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "agentid": 1}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "markdown": {"content": "x"}}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "safe": 2}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "safe": "1"}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "duplicate_check_interval": 0}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "duplicate_check_interval": 14_401}),
            json!({"msgtype": "textcard", "textcard": {"title": "t", "description": "d"}}),
            json!({"msgtype": "news", "news": {"articles": []}}),
            json!({"msgtype": "news", "news": {"articles": [{"url": "u"}]}}),
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
    fn member_ids() {
        for ok in ["zhangsan", "Zhang.San", "a@b.c", "u_1-2", &"x".repeat(64)] {
            assert!(usable_userid(ok), "{ok}");
        }
        for bad in [
            "",
            "@all",
            "_lead",
            "a|b",
            "has space",
            "张三",
            &"x".repeat(65),
        ] {
            assert!(!usable_userid(bad), "{bad}");
        }
    }
}
