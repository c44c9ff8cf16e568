//! `dingtalk_cc` channel adapter: DingTalk (钉钉) work notices
//! (`POST /topapi/message/corpconversation/asyncsend_v2`), up to 1000 users per call
//! (providers.md §3).
//!
//! Access tokens come from `GET /gettoken` with the application's AppKey and AppSecret:
//! DingTalk returns the same token while it is valid, so it is cached per adapter until a
//! minute before it expires, fetched by one caller at a time, and dropped and fetched again
//! once when a call is refused for it (40014, 42001, 41001). A send names its users in
//! `userid_list` (`a,b,c`) and is only accepted: DingTalk answers with a `task_id`, every
//! user's provider id, and reports what became of each user when asked
//! (`getsendresult`, [`Provider::pull_receipts`]): read, unread (delivered), invalid (no such
//! user: suppressed), forbidden (over a limit) or failed. DingTalk delivers the same content
//! from the same application to a user once a day, so a send repeated after a lost answer
//! does not reach anyone twice. Recalling the task withdraws the notice from all its users.

pub(crate) mod classify;
pub(crate) mod config;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use msghub_actors::provider::{
    ChannelType, Outcome, OutcomeClass, Provider, SendReport, SendRequest, Target,
};
use serde_json::{Map, Value, json};

use crate::http::{self, per_chunk, per_target};
use crate::token::{TokenCache, get_token};
use crate::{AdapterOptions, ConfigError, rejected};
use config::DingtalkConfig;

/// Users per call (`userid_list` takes up to 5000 for internal applications; JUMS audiences
/// name at most 1000 ids per channel).
const MAX_BATCH: usize = 1000;

/// The message types of `msgtype`, each with the fields its object must have.
const MSG_TYPES: &[(&str, &[&str])] = &[
    ("text", &["content"]),
    ("markdown", &["title", "text"]),
    ("link", &["messageUrl", "picUrl", "title", "text"]),
    ("action_card", &["title", "markdown"]),
    ("oa", &["message_url"]),
    ("image", &["media_id"]),
    ("voice", &["media_id"]),
    ("file", &["media_id"]),
];

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::DingtalkCc, options)?;
    let api = |path: &str| format!("{}/topapi/message/corpconversation/{path}", config.base_url);
    Ok(Arc::new(DingtalkProvider {
        client,
        send_url: api("asyncsend_v2"),
        result_url: api("getsendresult"),
        recall_url: api("recall"),
        token_url: format!("{}/gettoken", config.base_url),
        config,
        concurrency: options.pool_size.max(1),
        tokens: TokenCache::default(),
    }))
}

struct DingtalkProvider {
    client: reqwest::Client,
    config: DingtalkConfig,
    send_url: String,
    result_url: String,
    recall_url: String,
    token_url: String,
    /// Recalls and report requests under way at once.
    concurrency: usize,
    tokens: TokenCache,
}

/// A `msg_dingtalk_cc` content as JUMS has it (`{"msg": {"msgtype": "text", "text":
/// {"content": "..."}}}`), or the message itself: checked as far as DingTalk would certainly
/// refuse it, so no call is spent on it. The message is returned.
pub(crate) fn parse_content(content: &Value) -> Result<Map<String, Value>, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_dingtalk_cc must be a JSON object"));
    };
    let (message, at) = match object.get("msg") {
        Some(msg) if object.len() == 1 => (msg.as_object(), "msg_dingtalk_cc.msg"),
        Some(_) => {
            return Err(rejected(
                "msg_dingtalk_cc holds only msg (the users and the application are set by msghub)",
            ));
        }
        None => (Some(object), "msg_dingtalk_cc"),
    };
    let Some(message) = message else {
        return Err(rejected(format!("{at} must be a JSON object")));
    };
    let names: Vec<&str> = MSG_TYPES.iter().map(|(t, _)| *t).collect();
    let Some((msgtype, required)) = message
        .get("msgtype")
        .and_then(Value::as_str)
        .and_then(|t| MSG_TYPES.iter().find(|(name, _)| *name == t))
    else {
        return Err(rejected(format!(
            "{at}.msgtype is required: one of {}",
            names.join(", ")
        )));
    };
    if let Some(other) = message
        .keys()
        .find(|k| k.as_str() != "msgtype" && k.as_str() != *msgtype)
    {
        return Err(rejected(format!(
            "{at}.{other} is not a field of a DingTalk {msgtype} message"
        )));
    }
    let Some(body) = message.get(*msgtype).and_then(Value::as_object) else {
        return Err(rejected(format!(
            "{at}.{msgtype} is required and must be an object"
        )));
    };
    for field in *required {
        let present = body
            .get(*field)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty());
        if !present {
            return Err(rejected(format!(
                "{at}.{msgtype}.{field} is required and must be a non-empty string"
            )));
        }
    }
    match *msgtype {
        "action_card" => {
            let single = ["single_title", "single_url"].iter().all(|f| {
                body.get(*f)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            });
            let buttons = body
                .get("btn_json_list")
                .and_then(Value::as_array)
                .is_some_and(|b| {
                    !b.is_empty()
                        && b.iter().all(|b| {
                            b.get("title").and_then(Value::as_str).is_some()
                                && b.get("action_url").and_then(Value::as_str).is_some()
                        })
                });
            if !single && !buttons {
                return Err(rejected(format!(
                    "{at}.action_card needs single_title and single_url, or btn_json_list \
                     (each with title and action_url)"
                )));
            }
        }
        "oa" if !body.get("body").is_some_and(Value::is_object) => {
            return Err(rejected(format!(
                "{at}.oa.body is required and must be an object"
            )));
        }
        _ => {}
    }
    Ok(message.clone())
}

/// A DingTalk userid is 1–64 characters without spaces (leading and trailing included),
/// control characters or commas (the list separator).
fn usable_userid(address: &str) -> bool {
    !address.is_empty()
        && address.chars().count() <= 64
        && !address
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
}

/// A task id as DingTalk takes it back: the number it gave.
fn task_value(task_id: &str) -> Value {
    task_id
        .parse::<u64>()
        .map_or_else(|_| json!(task_id), |n| json!(n))
}

impl DingtalkProvider {
    /// One `gettoken` call: the token and how long it lives.
    async fn fetch_token(&self) -> Result<(Arc<str>, Duration), Outcome> {
        let params = [
            ("appkey", self.config.appkey.as_str()),
            ("appsecret", self.config.appsecret.as_str()),
        ];
        get_token(&self.client, &self.token_url, params, classify::classify).await
    }

    async fn post(&self, url: &str, body: &Value) -> Result<http::Reply, Outcome> {
        let fetch = || self.fetch_token();
        self.tokens
            .post_json(&self.client, url, body, fetch, classify::is_token_error)
            .await
    }

    /// One call for the users of `chunk` (at most [`MAX_BATCH`]). A user named twice is sent
    /// to once, and both targets get the call's outcome.
    async fn send_chunk(&self, message: &Map<String, Value>, chunk: &[Target]) -> Vec<Outcome> {
        let mut users: Vec<&str> = Vec::with_capacity(chunk.len());
        let mut named: HashSet<&str> = HashSet::with_capacity(chunk.len());
        let usable: Vec<bool> = chunk
            .iter()
            .map(|t| {
                // Not trimmed: DingTalk reports the userid it was sent, and receipts find their
                // delivery by the address as stored.
                let u = t.address.as_str();
                let ok = usable_userid(u);
                if ok && named.insert(u) {
                    users.push(u);
                }
                ok
            })
            .collect();
        let answer = if users.is_empty() {
            None
        } else {
            let body = json!({
                "agent_id": self.config.agent_id,
                "userid_list": users.join(","),
                "msg": message,
            });
            Some(match self.post(&self.send_url, &body).await {
                Ok(reply) => classify::classify_send(&reply),
                Err(failed) => failed,
            })
        };
        usable
            .into_iter()
            .map(|ok| match (ok, &answer) {
                (false, _) => Outcome::failed(
                    OutcomeClass::Gone,
                    "invalid_address",
                    "a DingTalk userid is 1-64 characters without spaces or commas",
                ),
                (true, Some(answer)) => answer.clone(),
                (true, None) => {
                    Outcome::failed(OutcomeClass::Retry, "internal", "no answer for the user")
                }
            })
            .collect()
    }

    async fn recall_one(&self, task_id: &str) -> Outcome {
        let body = json!({"agent_id": self.config.agent_id, "msg_task_id": task_value(task_id)});
        match self.post(&self.recall_url, &body).await {
            Ok(reply) => classify::classify(&reply),
            Err(failed) => failed,
        }
    }

    async fn report_one(&self, task_id: &str) -> Result<SendReport, Outcome> {
        let body = json!({"agent_id": self.config.agent_id, "task_id": task_value(task_id)});
        classify::send_report(&self.post(&self.result_url, &body).await?)
    }
}

#[async_trait]
impl Provider for DingtalkProvider {
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

    async fn pull_receipts(&self, provider_ids: &[String]) -> Vec<Result<SendReport, Outcome>> {
        per_target(provider_ids, self.concurrency, |id| self.report_one(id)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;

    #[test]
    fn contents_in_the_jums_shape_or_bare() {
        let text = json!({"msgtype": "text", "text": {"content": "Expense approved"}});
        assert_eq!(
            parse_content(&json!({"msg": text.clone()})).unwrap(),
            text.as_object().unwrap().clone()
        );
        assert_eq!(
            parse_content(&text).unwrap(),
            text.as_object().unwrap().clone()
        );
        for ok in [
            json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "# due"}}),
            json!({"msgtype": "link", "link": {"messageUrl": "https://x.test", "picUrl": "@lADOAAGXIcza",
                   "title": "t", "text": "x"}}),
            json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m",
                   "single_title": "Open", "single_url": "https://x.test"}}),
            json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m",
                   "btn_orientation": "1", "btn_json_list": [{"title": "A", "action_url": "https://x.test"}]}}),
            json!({"msgtype": "oa", "oa": {"message_url": "https://x.test", "head": {"text": "h"},
                   "body": {"title": "b"}}}),
            json!({"msgtype": "file", "file": {"media_id": "@lAz"}}),
        ] {
            assert!(parse_content(&json!({ "msg": ok })).is_ok(), "{ok}");
        }
    }

    #[test]
    fn content_rejections() {
        for bad in [
            json!([]),
            json!({"msg": "hi"}),
            json!({"msg": {"msgtype": "text", "text": {"content": "hi"}}, "userid_list": "a"}),
            json!({"msgtype": "sms", "sms": {}}),
            json!({"text": {"content": "hi"}}),
            json!({"msgtype": "text"}),
            json!({"msgtype": "text", "text": {"content": " "}}),
            json!({"msgtype": "text", "text": {"content": "hi"}, "agent_id": 1}),
            json!({"msgtype": "markdown", "markdown": {"title": "t"}}),
            json!({"msgtype": "link", "link": {"messageUrl": "u", "title": "t", "text": "x"}}),
            json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m"}}),
            json!({"msgtype": "action_card", "action_card": {"title": "t", "markdown": "m",
                   "btn_json_list": [{"title": "A"}]}}),
            json!({"msgtype": "oa", "oa": {"message_url": "https://x.test"}}),
            json!({"msgtype": "image", "image": {}}),
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
    fn userids_and_task_ids() {
        for ok in ["manager4521", "0123456789", "张三", &"x".repeat(64)] {
            assert!(usable_userid(ok), "{ok}");
        }
        for bad in ["", "a,b", "has space", "tab\t", &"x".repeat(65)] {
            assert!(!usable_userid(bad), "{bad}");
        }
        assert_eq!(task_value("256271667526"), json!(256271667526u64));
        assert_eq!(task_value("T-1"), json!("T-1"));
    }
}
