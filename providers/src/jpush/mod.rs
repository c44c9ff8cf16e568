//! `app` channel adapter: JPush push API v3 (`POST {base_url}/v3/push`, HTTP Basic auth).
//!
//! The `msg_app` content is a JPush push object without `audience` (JUMS shape); the adapter
//! adds `audience.registration_id` from the targets, so up to 1000 devices share one call, and,
//! when the channel has a receipt URL, a `callback` asking JPush to report every device back.
//! Accepted pushes can be withdrawn (`DELETE {base_url}/v3/push/{msg_id}`) when a message is
//! retracted.

pub(crate) mod classify;
pub(crate) mod config;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use serde_json::{Map, Value, json};

use crate::http::{self, per_chunk, per_target};
use crate::{AdapterOptions, ConfigError, rejected};
use config::JpushConfig;

/// JPush caps `audience.registration_id` at 1000 ids.
pub(crate) const MAX_BATCH: usize = 1000;

/// `callback.type` bitmask msghub asks for: 1 received + 2 clicked + 4 not received.
pub(crate) const CALLBACK_TYPES: u8 = 1 | 2 | 4;

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::App, options)?;
    let endpoint = format!("{}/v3/push", config.base_url);
    Ok(Arc::new(JpushProvider {
        client,
        config,
        endpoint,
        receipt_url: options.receipt_url.clone(),
        recall_concurrency: options.pool_size.max(1),
    }))
}

struct JpushProvider {
    client: reqwest::Client,
    config: JpushConfig,
    endpoint: String,
    /// Withdrawals in flight at once (one call per `msg_id`).
    recall_concurrency: usize,
    /// Where JPush should POST receipts for this channel; `None` = ask for none.
    receipt_url: Option<String>,
}

impl JpushProvider {
    async fn send_chunk(
        &self,
        msgid: i64,
        content: &Value,
        targets: &[Target],
        ttl: Option<Duration>,
    ) -> Vec<Outcome> {
        let outcome = match push_body(content, targets, ttl, self.config.apns_production) {
            Err(rejected) => rejected,
            Ok(mut body) => {
                body["cid"] = json!(idempotency_cid(&self.config.app_key, msgid, targets));
                if let Some(callback) = receipt_callback(self.receipt_url.as_deref(), msgid) {
                    body["callback"] = callback;
                }
                let request = self
                    .client
                    .post(&self.endpoint)
                    .basic_auth(&self.config.app_key, Some(&self.config.master_secret))
                    .json(&body);
                match http::execute(request).await {
                    Ok(reply) => accepted_with_id(classify::classify(&reply)),
                    Err(transport) => transport,
                }
            }
        };
        vec![outcome; targets.len()]
    }

    /// Withdraw one push. A `msg_id` that is not a JPush id is refused without a call.
    async fn recall_one(&self, msg_id: &str) -> Outcome {
        let Some(url) = recall_url(&self.endpoint, msg_id) else {
            return Outcome::failed(
                OutcomeClass::Perm,
                "invalid_msg_id",
                "not a JPush msg_id (digits expected)",
            );
        };
        let request = self
            .client
            .delete(url)
            .basic_auth(&self.config.app_key, Some(&self.config.master_secret));
        match http::execute(request).await {
            Ok(reply) => classify::classify(&reply),
            Err(transport) => transport,
        }
    }
}

/// A push JPush accepted answers with its `msg_id`; a 2xx without one came from something
/// else on the way (a proxy's page, an empty body) and confirms nothing. It is tried again:
/// the call's `cid` keeps JPush from pushing it twice if it did go through.
pub(crate) fn accepted_with_id(outcome: Outcome) -> Outcome {
    if outcome.class == OutcomeClass::Ok && outcome.provider_id.is_none() {
        return Outcome::failed(
            OutcomeClass::Retry,
            outcome.code,
            "JPush answered without a msg_id: not confirmed",
        );
    }
    outcome
}

/// `{base_url}/v3/push/{msg_id}`, the withdrawal endpoint of one push; `None` unless `msg_id`
/// is a JPush id (decimal digits), so nothing else ever reaches the URL path.
pub(crate) fn recall_url(push_endpoint: &str, msg_id: &str) -> Option<String> {
    (!msg_id.is_empty() && msg_id.len() <= 32 && msg_id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{push_endpoint}/{msg_id}"))
}

#[async_trait]
impl Provider for JpushProvider {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        let outcomes = per_chunk(req.targets, MAX_BATCH, |chunk| {
            self.send_chunk(req.msgid, req.content, chunk, req.ttl)
        })
        .await;
        if let Some(first) = outcomes.first() {
            tracing::debug!(channel = "app", msgid = req.msgid, targets = outcomes.len(), class = first.class.as_str(), code = %first.code, "jpush push");
        }
        outcomes
    }

    async fn recall(&self, provider_ids: &[String]) -> Vec<Outcome> {
        per_target(provider_ids, self.recall_concurrency, |id| {
            self.recall_one(id)
        })
        .await
    }
}

/// JPush's idempotency id (`{appkey}-{uuid}`): the same message to the same delivery records
/// always yields the same cid, so a batch re-sent after a crash or a lost reply is not pushed
/// twice. The uuid part is a SHA-256 digest of the message id and delivery ids.
pub(crate) fn idempotency_cid(app_key: &str, msgid: i64, targets: &[Target]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(msgid.to_be_bytes());
    for t in targets {
        h.update(t.delivery_id.to_be_bytes());
    }
    let d = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&d[..16]);
    // Version 4 / RFC 4122 variant bits, so the id has the shape JPush issues.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format!("{app_key}-{}", uuid::Uuid::from_bytes(bytes))
}

/// The push's `callback` object: receipts for every device go to the channel's receipt URL and
/// carry `params.msgid` (decimal string) back, so the hub can match them without a lookup of
/// JPush's `msg_id`. `None` when the channel has no receipt URL.
pub(crate) fn receipt_callback(receipt_url: Option<&str>, msgid: i64) -> Option<Value> {
    receipt_url.map(|url| {
        json!({
            "url": url,
            "params": {"msgid": msgid.to_string()},
            "type": CALLBACK_TYPES,
        })
    })
}

/// The JSON body of one push: `msg_app` plus audience and the options msghub controls.
///
/// Pure so the exact wire shape is unit-tested; a content JPush would reject for its shape is
/// answered with a `Perm` outcome here, without spending a call (or rate budget) on it.
pub(crate) fn push_body(
    content: &Value,
    targets: &[Target],
    ttl: Option<Duration>,
    apns_production: bool,
) -> Result<Value, Outcome> {
    let Some(object) = content.as_object() else {
        return Err(rejected("msg_app must be a JSON object"));
    };
    for key in ["audience", "callback"] {
        if object.contains_key(key) {
            return Err(rejected(format!(
                "msg_app must not contain {key:?}: msghub sets audience and callback itself"
            )));
        }
    }
    if object.get("platform").is_none_or(Value::is_null) {
        return Err(rejected("msg_app.platform is required"));
    }
    let has = |key: &str| object.get(key).is_some_and(|v| !v.is_null());
    if !has("notification") && !has("message") {
        return Err(rejected("msg_app needs a notification or a message"));
    }

    let mut body = object.clone();
    let mut options = match body.remove("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(options)) => options,
        Some(_) => return Err(rejected("msg_app.options must be an object")),
    };
    // JPush requires an int; a quoted number would be refused with 1003 after a wasted call.
    if let Some(sendno) = options.get("sendno")
        && !(sendno.is_i64() || sendno.is_u64())
    {
        return Err(rejected("msg_app.options.sendno must be an integer"));
    }
    if let Some(ttl) = ttl {
        options.insert("time_to_live".into(), json!(ttl.as_secs()));
    }
    options
        .entry("apns_production")
        .or_insert(Value::Bool(apns_production));
    body.insert("options".into(), Value::Object(options));

    let ids: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
    body.insert("audience".into(), json!({ "registration_id": ids }));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::INVALID_CONTENT;

    fn targets(ids: &[&str]) -> Vec<Target> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Target {
                delivery_id: i as i64,
                address: (*id).to_string(),
                userid: None,
            })
            .collect()
    }

    #[test]
    fn the_cid_is_stable_for_the_same_batch_and_differs_for_another() {
        let a = idempotency_cid("key", 7, &targets(&["r1", "r2"]));
        assert_eq!(
            a,
            idempotency_cid("key", 7, &targets(&["x", "y"])),
            "depends on delivery ids only"
        );
        assert_ne!(a, idempotency_cid("key", 8, &targets(&["r1", "r2"])));
        assert_ne!(a, idempotency_cid("key", 7, &targets(&["r1"])));
        assert!(a.starts_with("key-") && a.len() == 4 + 36, "{a}");
    }

    #[test]
    fn a_receipt_url_becomes_a_callback_with_the_msgid_and_all_receipt_types() {
        let url = "http://127.0.0.1:8080/receipts/3/tok";
        assert_eq!(
            receipt_callback(Some(url), 1_234_567_890_123),
            Some(json!({
                "url": url,
                "params": {"msgid": "1234567890123"},
                "type": 7
            }))
        );
    }

    #[test]
    fn the_recall_url_takes_only_jpush_ids() {
        let push = "https://api.jpush.cn/v3/push";
        assert_eq!(
            recall_url(push, "54043195528459532").as_deref(),
            Some("https://api.jpush.cn/v3/push/54043195528459532")
        );
        for bad in ["", "12a", "../x", "1/2", &"9".repeat(33)] {
            assert_eq!(recall_url(push, bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_push_with_its_msg_id_is_accepted() {
        let ok = Outcome::ok("200", Some("54043195528459532".into()));
        assert_eq!(accepted_with_id(ok.clone()), ok);
        let bare = accepted_with_id(Outcome::ok("200", None));
        assert_eq!(
            (bare.class, bare.code.as_str()),
            (OutcomeClass::Retry, "200")
        );
        let failed = Outcome::failed(OutcomeClass::Perm, "1003", "bad");
        assert_eq!(accepted_with_id(failed.clone()), failed);
    }

    #[test]
    fn no_receipt_url_means_no_callback() {
        assert_eq!(receipt_callback(None, 42), None);
    }

    #[test]
    fn body_adds_audience_and_options() {
        let content = json!({
            "platform": ["android", "ios"],
            "notification": {"alert": "Hello", "ios": {"sound": "default", "badge": "+1"}},
            "options": {"sendno": 42, "time_to_live": 60}
        });
        let body = push_body(
            &content,
            &targets(&["r1", "r2"]),
            Some(Duration::from_secs(3600)),
            false,
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "platform": ["android", "ios"],
                "audience": {"registration_id": ["r1", "r2"]},
                "notification": {"alert": "Hello", "ios": {"sound": "default", "badge": "+1"}},
                "options": {"sendno": 42, "time_to_live": 3600, "apns_production": false}
            })
        );
        // sendno stays an integer on the wire.
        let wire = serde_json::to_string(&body).unwrap();
        assert!(wire.contains(r#""sendno":42"#), "{wire}");
    }

    #[test]
    fn body_keeps_content_ttl_and_apns_flag_when_not_overridden() {
        let content = json!({
            "platform": "all",
            "message": {"msg_content": "hi"},
            "options": {"time_to_live": 60, "apns_production": true}
        });
        let body = push_body(&content, &targets(&["r1"]), None, false).unwrap();
        assert_eq!(
            body["options"],
            json!({"time_to_live": 60, "apns_production": true})
        );
        let body = push_body(
            &json!({"platform": "all", "message": {"msg_content": "x"}}),
            &targets(&["r"]),
            None,
            true,
        )
        .unwrap();
        assert_eq!(body["options"], json!({"apns_production": true}));
    }

    #[test]
    fn rejects_bad_content_as_perm() {
        let table = [
            json!("text"),
            json!({"platform": "all", "notification": {"alert": "x"}, "audience": "all"}),
            json!({"platform": "all", "notification": {"alert": "x"}, "callback": {"url": "u"}}),
            json!({"notification": {"alert": "x"}}),
            json!({"platform": null, "notification": {"alert": "x"}}),
            json!({"platform": "all"}),
            json!({"platform": "all", "notification": null, "message": null}),
            json!({"platform": "all", "notification": {"alert": "x"}, "options": []}),
            json!({"platform": "all", "notification": {"alert": "x"}, "options": {"sendno": "42"}}),
            json!({"platform": "all", "notification": {"alert": "x"}, "options": {"sendno": 4.2}}),
        ];
        for content in table {
            let out = push_body(&content, &targets(&["r"]), None, false).unwrap_err();
            assert_eq!(
                (out.class, out.code.as_str()),
                (OutcomeClass::Perm, INVALID_CONTENT),
                "{content}"
            );
        }
    }
}
