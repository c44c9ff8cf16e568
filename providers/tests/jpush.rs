//! The `app` (JPush) adapter against a local HTTP server: wire format and reply classification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::{
    Canned, MockServer, closed_port_url, install_crypto, options, silent_server, targets,
};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::{Value, json};

fn adapter(base_url: &str) -> std::sync::Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::App,
        &json!({"app_key": "appkey1", "master_secret": "mastersecret1", "base_url": base_url}),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({
        "platform": ["android", "ios"],
        "notification": {"alert": "Hello", "android": {"title": "Order"}},
        "options": {"sendno": 42}
    })
}

#[tokio::test]
async fn ok_sends_push_object_with_basic_auth() {
    let server = MockServer::fixed(Canned::new(
        200,
        r#"{"sendno":"42","msg_id":"54043195528459532"}"#,
    ))
    .await;
    let provider = adapter(&format!("{}/prefix/", server.base_url));
    let targets = targets(&["regid-a", "regid-b"]);
    let content = content();
    let outcomes = provider
        .send(SendRequest {
            msgid: 7,
            content: &content,
            targets: &targets,
            ttl: Some(Duration::from_secs(600)),
        })
        .await;

    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert_eq!(o.class, OutcomeClass::Ok);
        assert_eq!(o.provider_id.as_deref(), Some("54043195528459532"));
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/prefix/v3/push")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("appkey1:mastersecret1");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let mut body = r.json();
    let cid = body
        .as_object_mut()
        .and_then(|o| o.remove("cid"))
        .expect("a cid makes the push idempotent");
    assert!(
        cid.as_str().is_some_and(|c| c.starts_with("appkey1-")),
        "{cid}"
    );
    assert_eq!(
        body,
        json!({
            "platform": ["android", "ios"],
            "audience": {"registration_id": ["regid-a", "regid-b"]},
            "notification": {"alert": "Hello", "android": {"title": "Order"}},
            "options": {"sendno": 42, "time_to_live": 600, "apns_production": false}
        })
    );
}

#[tokio::test]
async fn a_channel_with_a_receipt_url_asks_for_receipts_in_every_push() {
    install_crypto();
    let server = MockServer::fixed(Canned::new(200, r#"{"sendno":"0","msg_id":"9"}"#)).await;
    let receipt_url = "http://127.0.0.1:18080/receipts/5/tok-abc";
    let provider = msghub_providers::build(
        ChannelType::App,
        &json!({"app_key": "appkey1", "master_secret": "mastersecret1", "base_url": server.base_url}),
        &msghub_providers::AdapterOptions {
            receipt_url: Some(receipt_url.into()),
            ..options()
        },
    )
    .unwrap();
    let targets = targets(&["regid-a"]);
    let content = content();
    let outcomes = provider
        .send(SendRequest {
            msgid: 1_754_000_000_000_000_001,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(outcomes[0].class, OutcomeClass::Ok);
    let body = server.requests()[0].json();
    assert_eq!(
        body["callback"],
        json!({
            "url": receipt_url,
            "params": {"msgid": "1754000000000000001"},
            "type": 7
        })
    );
    assert_eq!(body["audience"], json!({"registration_id": ["regid-a"]}));
}

#[tokio::test]
async fn error_replies_are_classified() {
    let cases = [
        (
            Canned::new(
                429,
                r#"{"error":{"code":2002,"message":"Rate limit exceeded"}}"#,
            )
            .header("X-Rate-Limit-Limit", "600")
            .header("X-Rate-Limit-Remaining", "0")
            .header("X-Rate-Limit-Reset", "17"),
            OutcomeClass::Rate,
            "2002",
            Some(Duration::from_secs(17)),
        ),
        (
            Canned::new(429, "slow down").header("Retry-After", "4"),
            OutcomeClass::Rate,
            "429",
            Some(Duration::from_secs(4)),
        ),
        (
            Canned::new(500, r#"{"error":{"code":1000,"message":"internal error"}}"#),
            OutcomeClass::Retry,
            "1000",
            None,
        ),
        (
            Canned::new(502, "<html>bad gateway</html>"),
            OutcomeClass::Retry,
            "502",
            None,
        ),
        (
            Canned::new(
                400,
                r#"{"error":{"code":1011,"message":"cannot find user by this audience"}}"#,
            ),
            OutcomeClass::Gone,
            "1011",
            None,
        ),
        (
            Canned::new(
                401,
                r#"{"error":{"code":1004,"message":"Basic authentication failed"}}"#,
            ),
            OutcomeClass::Perm,
            "1004",
            None,
        ),
        (
            Canned::new(403, r#"{"error":{"code":2005,"message":"too many"}}"#),
            OutcomeClass::Quota,
            "2005",
            None,
        ),
        (
            Canned::new(400, "not json"),
            OutcomeClass::Perm,
            "400",
            None,
        ),
    ];
    let targets = targets(&["r1", "r2", "r3"]);
    let content = content();
    for (canned, class, code, wait) in cases {
        let server = MockServer::fixed(canned.clone()).await;
        let outcomes = adapter(&server.base_url)
            .send(SendRequest {
                msgid: 1,
                content: &content,
                targets: &targets,
                ttl: None,
            })
            .await;
        assert_eq!(outcomes.len(), 3);
        for o in outcomes {
            assert_eq!(
                (o.class, o.code.as_str(), o.retry_after),
                (class, code, wait),
                "{canned:?}"
            );
        }
    }
}

#[tokio::test]
async fn invalid_content_is_perm_without_a_call() {
    let server = MockServer::fixed(Canned::new(200, "{}")).await;
    let targets = targets(&["r1"]);
    let content = json!({"platform": "all", "audience": "all", "notification": {"alert": "x"}});
    let outcomes = adapter(&server.base_url)
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(outcomes[0].class, OutcomeClass::Perm);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn transport_failures_are_retry() {
    install_crypto();
    let targets = targets(&["r1"]);
    let content = content();
    let mut opts = options();
    opts.request_timeout = Duration::from_millis(300);
    let slow = msghub_providers::build(
        ChannelType::App,
        &json!({"app_key": "k", "master_secret": "s", "base_url": silent_server().await}),
        &opts,
    )
    .unwrap();
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let out = slow.send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Retry, "timeout")
    );

    let refused = adapter(&closed_port_url().await).send(req).await;
    assert_eq!(refused[0].class, OutcomeClass::Retry);
    assert!(!refused[0].message.contains("mastersecret1"));
}

#[tokio::test]
async fn empty_target_list_makes_no_call() {
    let server = MockServer::fixed(Canned::new(200, "{}")).await;
    let content = content();
    let out = adapter(&server.base_url)
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &[],
            ttl: None,
        })
        .await;
    assert!(out.is_empty());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn recall_deletes_each_push_with_basic_auth_and_classifies_the_replies() {
    let server = MockServer::start(|req| {
        if req.path.ends_with("/222") {
            Canned::new(
                400,
                r#"{"error":{"code":1003,"message":"msg_id is invalid"}}"#,
            )
        } else {
            Canned::new(200, "")
        }
    })
    .await;
    let provider = adapter(&server.base_url);
    let ids = ["111".to_string(), "222".to_string(), "../etc".to_string()];
    let out = provider.recall(&ids).await;

    assert_eq!(out.len(), 3, "one outcome per id, in order");
    assert_eq!(out[0].class, OutcomeClass::Ok);
    assert_eq!(
        (out[1].class, out[1].code.as_str()),
        (OutcomeClass::Perm, "1003")
    );
    assert_eq!(
        (out[2].class, out[2].code.as_str()),
        (OutcomeClass::Perm, "invalid_msg_id")
    );
    let mut requests = server.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    let seen: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![("DELETE", "/v3/push/111"), ("DELETE", "/v3/push/222")],
        "no call for an id that is not a JPush msg_id"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("appkey1:mastersecret1");
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(format!("Basic {basic}").as_str()))
    );
}

#[tokio::test]
async fn providers_without_withdrawal_answer_every_recall_as_unsupported() {
    install_crypto();
    let sms = msghub_providers::build(
        ChannelType::Sms,
        &json!({"access_key_id": "i", "access_key_secret": "s", "sign_name": "n",
                "base_url": closed_port_url().await}),
        &options(),
    )
    .unwrap();
    let out = sms
        .recall(&["biz-1".to_string(), "biz-2".to_string()])
        .await;
    assert_eq!(out.len(), 2);
    assert!(
        out.iter().all(|o| o.class == OutcomeClass::Perm
            && o.code == msghub_actors::provider::RECALL_UNSUPPORTED)
    );
}
