//! The `feishu` adapter against a local HTTP server: the tenant token as a bearer, fetched
//! once and again once when refused, the send body with its uuid, recalls, and contents
//! refused without a call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Canned, Captured, MockServer, install_crypto, options, targets};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::json;

fn adapter(base_url: &str) -> Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::Feishu,
        &json!({"app_id": "cli_a1b2c3", "app_secret": "app-secret", "base_url": base_url}),
        &options(),
    )
    .unwrap()
}

/// A Feishu that issues `t-N` tokens and refuses the first `refuse_first` calls with
/// 99991663 whatever their token.
fn feishu(fetches: Arc<AtomicUsize>, refuse_first: usize) -> impl Fn(&Captured) -> Canned {
    let calls = Arc::new(AtomicUsize::new(0));
    move |r: &Captured| {
        if r.path == "/auth/v3/tenant_access_token/internal" {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            return Canned::new(
                200,
                json!({"code": 0, "msg": "ok", "tenant_access_token": format!("t-{n}"), "expire": 7200})
                    .to_string(),
            );
        }
        let latest = format!("Bearer t-{}", fetches.load(Ordering::SeqCst));
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n < refuse_first || r.header("authorization") != Some(latest.as_str()) {
            return Canned::new(400, r#"{"code":99991663,"msg":"Invalid access token"}"#);
        }
        if r.method == "DELETE" {
            return Canned::new(200, r#"{"code":0,"msg":"success"}"#);
        }
        Canned::new(
            200,
            json!({"code": 0, "msg": "success", "data": {"message_id": format!("om_{n}")}})
                .to_string(),
        )
    }
}

#[tokio::test]
async fn sends_carry_the_tenant_token_and_a_uuid_per_delivery() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(feishu(fetches.clone(), 0)).await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["ou_aaaa", "bad id", "ou_bbbb"]);
    let content = json!({"msg_type": "text", "content": {"text": "Build #42 passed"}});
    let out = provider
        .send(SendRequest {
            msgid: 77,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].class, OutcomeClass::Ok);
    assert!(out[0].provider_id.as_deref().unwrap().starts_with("om_"));
    assert_eq!(
        (out[1].class, out[1].code.as_str()),
        (OutcomeClass::Gone, "invalid_address")
    );
    assert_eq!(out[2].class, OutcomeClass::Ok);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let requests = server.requests();
    assert_eq!(
        requests[0].json(),
        json!({"app_id": "cli_a1b2c3", "app_secret": "app-secret"})
    );
    let send = requests
        .iter()
        .find(|r| r.method == "POST" && r.path.starts_with("/im/v1/messages"))
        .unwrap();
    assert_eq!(send.path, "/im/v1/messages?receive_id_type=open_id");
    let body = send.json();
    assert_eq!(body["msg_type"], "text");
    assert_eq!(body["content"], "{\"text\":\"Build #42 passed\"}");
    assert!(
        body["uuid"].as_str().unwrap().starts_with("msghub-77-"),
        "{body}"
    );
    assert_eq!(requests.len(), 3, "one token, two sends");
}

#[tokio::test]
async fn a_refused_token_is_fetched_again_once_and_recalls_use_it_too() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(feishu(fetches.clone(), 1)).await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["ou_aaaa"]);
    let content = json!({"msg_type": "text", "content": "{\"text\":\"hi\"}"});
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let out = provider.send(req).await;
    assert_eq!(out[0].class, OutcomeClass::Ok, "{out:?}");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let recalled = provider
        .recall(&["om_1".to_string(), "../etc".to_string()])
        .await;
    assert_eq!(recalled.len(), 2);
    assert_eq!(recalled[0].class, OutcomeClass::Ok);
    assert_eq!(
        (recalled[1].class, recalled[1].code.as_str()),
        (OutcomeClass::Perm, "invalid_message_id")
    );
    let deletes: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, vec!["/im/v1/messages/om_1"]);

    // Refused twice in a row: a Token outcome, left to the retry policy.
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(feishu(fetches.clone(), 2)).await;
    let out = adapter(&server.base_url).send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Token, "99991663")
    );
}

#[tokio::test]
async fn a_refused_secret_fails_without_sending() {
    let server = MockServer::fixed(Canned::new(
        400,
        r#"{"code":10014,"msg":"app secret invalid"}"#,
    ))
    .await;
    let targets = targets(&["ou_aaaa", "ou_bbbb"]);
    let content = json!({"msg_type": "text", "content": {"text": "hi"}});
    let out = adapter(&server.base_url)
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(out.len(), 2);
    for o in &out {
        assert_eq!((o.class, o.code.as_str()), (OutcomeClass::Perm, "10014"));
        assert!(
            o.message.starts_with("getting an access token"),
            "{}",
            o.message
        );
    }
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path == "/auth/v3/tenant_access_token/internal")
    );
}
