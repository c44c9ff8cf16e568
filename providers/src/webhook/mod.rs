//! `webhook` channel adapter: a signed JSON POST per target to the configured URL.
//!
//! Receivers verify `X-Msghub-Signature` (HMAC-SHA256 over `timestamp + "." + body`) and dedupe
//! on `X-Msghub-Delivery`, which stays the same across retries of one delivery.

pub(crate) mod classify;
pub(crate) mod config;

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use msghub_actors::provider::{ChannelType, Outcome, Provider, SendRequest, Target};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::http::{self, per_target};
use crate::{AdapterOptions, ConfigError};
use config::WebhookConfig;

pub(crate) const MAX_BATCH: usize = 1;

pub(crate) fn build(
    credentials: &Value,
    options: &AdapterOptions,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let config = config::parse(credentials)?;
    let client = http::client(ChannelType::Webhook, options)?;
    Ok(Arc::new(WebhookProvider {
        client,
        config,
        concurrency: options.pool_size.max(1),
    }))
}

struct WebhookProvider {
    client: reqwest::Client,
    config: WebhookConfig,
    concurrency: usize,
}

/// The exact bytes POSTed (and signed). `msgid` is a string so JavaScript receivers keep all
/// 64 bits.
pub(crate) fn payload(msgid: i64, target: &Target, content: &Value, timestamp: i64) -> Vec<u8> {
    json!({
        "msgid": msgid.to_string(),
        "target": target.address,
        "userid": target.userid,
        "content": content,
        "timestamp": timestamp,
    })
    .to_string()
    .into_bytes()
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; binding the timestamp lets
/// receivers reject replays older than their tolerance window.
pub(crate) fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error branch is unreachable but kept panic-free.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookProvider {
    async fn send_one(&self, msgid: i64, content: &Value, target: &Target) -> Outcome {
        let timestamp = chrono::Utc::now().timestamp();
        let body = payload(msgid, target, content, timestamp);
        let request = self
            .client
            .post(self.config.url.clone())
            .headers(self.config.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("X-Msghub-Timestamp", timestamp.to_string())
            .header(
                "X-Msghub-Signature",
                signature(&self.config.secret, timestamp, &body),
            )
            .header("X-Msghub-Delivery", target.delivery_id.to_string())
            .body(body);
        match http::execute(request).await {
            Ok(reply) => classify::classify(&reply),
            Err(transport) => transport,
        }
    }
}

#[async_trait]
impl Provider for WebhookProvider {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
        let outcomes = per_target(req.targets, self.concurrency, |target| {
            self.send_one(req.msgid, req.content, target)
        })
        .await;
        for outcome in &outcomes {
            tracing::debug!(channel = "webhook", msgid = req.msgid, class = outcome.class.as_str(), code = %outcome.code, "webhook post");
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn target() -> Target {
        Target {
            delivery_id: 9,
            address: "hook-1".into(),
            userid: Some("u1".into()),
        }
    }

    #[test]
    fn payload_shape() {
        let body = payload(
            1234567890123,
            &target(),
            &json!({"text": "hi"}),
            1_700_000_000,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "msgid": "1234567890123",
                "target": "hook-1",
                "userid": "u1",
                "content": {"text": "hi"},
                "timestamp": 1_700_000_000
            })
        );
        let anonymous = Target {
            userid: None,
            ..target()
        };
        let v: Value = serde_json::from_slice(&payload(1, &anonymous, &Value::Null, 0)).unwrap();
        assert_eq!(v["userid"], Value::Null);
    }

    #[test]
    fn signature_matches_hand_computed_hmac() {
        let body = br#"{"msgid":"1"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(br#"1700000000.{"msgid":"1"}"#);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature("whsec", 1_700_000_000, body), expected);
        assert_ne!(signature("whsec", 1_700_000_001, body), expected);
        assert_ne!(signature("other", 1_700_000_000, body), expected);
    }

    /// RFC 4231 test case 2 ("Jefe"), to pin the primitive itself.
    #[test]
    fn hmac_sha256_known_vector() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
