//! The `webhook` adapter against a local HTTP server: signed delivery and status classification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Canned, MockServer, closed_port_url, install_crypto, options, targets};
use hmac::{Hmac, KeyInit, Mac};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::json;

const SECRET: &str = "whsec_test";

fn adapter(url: &str) -> std::sync::Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::Webhook,
        &json!({"url": url, "secret": SECRET, "headers": {"Authorization": "Bearer abc", "X-Team": "ops"}}),
        &options(),
    )
    .unwrap()
}

#[tokio::test]
async fn ok_delivery_is_signed() {
    let server = MockServer::fixed(Canned::new(204, "")).await;
    let url = format!("{}/hooks/in?team=7", server.base_url);
    let targets = targets(&["hook-target"]);
    let content = json!({"title": "Deploy", "body": "done"});
    let outcomes = adapter(&url)
        .send(SendRequest {
            msgid: 123456789012345,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        (outcomes[0].class, outcomes[0].code.as_str()),
        (OutcomeClass::Ok, "204")
    );

    let requests = server.requests();
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/in?team=7")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("authorization"), Some("Bearer abc"));
    assert_eq!(r.header("x-team"), Some("ops"));
    assert_eq!(r.header("x-msghub-delivery"), Some("100"));
    let timestamp = r.header("x-msghub-timestamp").unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now - timestamp.parse::<i64>().unwrap()).abs() < 60);

    // Receiver-side verification, as documented: HMAC-SHA256(secret, ts + "." + raw body).
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-msghub-signature"), Some(expected.as_str()));

    assert_eq!(
        r.json(),
        json!({
            "msgid": "123456789012345",
            "target": "hook-target",
            "userid": "user0",
            "content": {"title": "Deploy", "body": "done"},
            "timestamp": timestamp.parse::<i64>().unwrap()
        })
    );
}

#[tokio::test]
async fn statuses_are_classified() {
    let cases = [
        (Canned::new(200, "ok"), OutcomeClass::Ok, None),
        (
            Canned::new(429, "slow").header("Retry-After", "9"),
            OutcomeClass::Rate,
            Some(Duration::from_secs(9)),
        ),
        (Canned::new(500, "boom"), OutcomeClass::Retry, None),
        (
            Canned::new(503, "later").header("Retry-After", "2"),
            OutcomeClass::Retry,
            Some(Duration::from_secs(2)),
        ),
        (Canned::new(408, ""), OutcomeClass::Retry, None),
        (Canned::new(410, "gone"), OutcomeClass::Gone, None),
        (Canned::new(400, "bad"), OutcomeClass::Perm, None),
        (Canned::new(404, "missing"), OutcomeClass::Perm, None),
        // Redirects are not followed: the signed body must only reach the configured URL.
        (
            Canned::new(302, "").header("Location", "http://127.0.0.1:1/elsewhere"),
            OutcomeClass::Perm,
            None,
        ),
    ];
    let targets = targets(&["t"]);
    let content = json!({});
    for (canned, class, wait) in cases {
        let server = MockServer::fixed(canned.clone()).await;
        let out = adapter(&server.base_url)
            .send(SendRequest {
                msgid: 1,
                content: &content,
                targets: &targets,
                ttl: None,
            })
            .await;
        assert_eq!(
            (out[0].class, out[0].retry_after),
            (class, wait),
            "{canned:?}"
        );
        assert_eq!(out[0].code, canned.status.to_string());
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn several_targets_keep_their_order() {
    // Each target gets a different answer; requests run concurrently.
    let server = MockServer::start(|r| {
        let status = match r.json()["target"].as_str().unwrap() {
            "a" => 200,
            "b" => 410,
            "c" => 500,
            _ => 400,
        };
        Canned::new(status, "")
    })
    .await;
    let targets = targets(&["a", "b", "c", "d"]);
    let content = json!({"x": 1});
    let out = adapter(&server.base_url)
        .send(SendRequest {
            msgid: 5,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    let classes: Vec<_> = out.iter().map(|o| o.class).collect();
    assert_eq!(
        classes,
        [
            OutcomeClass::Ok,
            OutcomeClass::Gone,
            OutcomeClass::Retry,
            OutcomeClass::Perm
        ]
    );
    let mut deliveries: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("x-msghub-delivery").unwrap().to_string())
        .collect();
    deliveries.sort();
    assert_eq!(deliveries, ["100", "101", "102", "103"]);
}

#[tokio::test]
async fn connection_refused_is_retry_and_hides_the_url() {
    let url = format!("{}/in?token=receiver-secret", closed_port_url().await);
    let targets = targets(&["t"]);
    let content = json!({});
    let out = adapter(&url)
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(out[0].class, OutcomeClass::Retry);
    assert!(
        !out[0].message.contains("receiver-secret"),
        "{}",
        out[0].message
    );
}
