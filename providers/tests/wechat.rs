//! The `wechatoa` adapter against a local HTTP server: one token fetch shared by concurrent
//! sends, a refused token fetched again once, and the send body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Canned, Captured, MockServer, install_crypto, options, targets};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest};
use serde_json::{Value, json};

fn adapter(base_url: &str) -> Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::Wechatoa,
        &json!({"appid": "wx1234567890abcdef", "secret": "oa-secret", "token": "hubToken", "base_url": base_url}),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({"template_id": "TPL_1", "url": "https://shop.test/o/1", "data": {"thing1": "shipped"}})
}

/// A WeChat that issues `tok-N` tokens (N counts the fetches) and accepts sends presenting the
/// latest one; `refuse_first` sends are answered 40001 whatever their token.
fn wechat(fetches: Arc<AtomicUsize>, refuse_first: usize) -> impl Fn(&Captured) -> Canned {
    let sends = Arc::new(AtomicUsize::new(0));
    move |r: &Captured| {
        if r.path == "/cgi-bin/stable_token" {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            return Canned::new(
                200,
                json!({"access_token": format!("tok-{n}"), "expires_in": 7200}).to_string(),
            );
        }
        let latest = format!("access_token=tok-{}", fetches.load(Ordering::SeqCst));
        let n = sends.fetch_add(1, Ordering::SeqCst);
        if n < refuse_first || !r.path.ends_with(&latest) {
            return Canned::new(200, r#"{"errcode":40001,"errmsg":"invalid credential"}"#);
        }
        Canned::new(
            200,
            format!(r#"{{"errcode":0,"errmsg":"ok","msgid":{}}}"#, 1000 + n),
        )
    }
}

#[tokio::test]
async fn concurrent_sends_share_one_token_fetch() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wechat(fetches.clone(), 0)).await;
    let provider = adapter(&server.base_url);
    let openids: Vec<String> = (0..20).map(|i| format!("oUser{i:07}")).collect();
    let refs: Vec<&str> = openids.iter().map(String::as_str).collect();
    let targets = targets(&refs);
    let content = content();
    let outcomes = provider
        .send(SendRequest {
            msgid: 77,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert!(
        outcomes.iter().all(|o| o.class == OutcomeClass::Ok),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o.provider_id.is_some()));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let requests = server.requests();
    let token_call = requests
        .iter()
        .find(|r| r.path == "/cgi-bin/stable_token")
        .unwrap();
    assert_eq!(
        token_call.json(),
        json!({"grant_type": "client_credential", "appid": "wx1234567890abcdef",
               "secret": "oa-secret", "force_refresh": false})
    );
    let send = requests
        .iter()
        .find(|r| {
            r.path
                .starts_with("/cgi-bin/message/template/send?access_token=tok-1")
        })
        .unwrap();
    let body = send.json();
    assert_eq!(body["template_id"], "TPL_1");
    assert_eq!(body["data"], json!({"thing1": {"value": "shipped"}}));
    assert!(
        body["client_msg_id"]
            .as_str()
            .unwrap()
            .starts_with("msghub-77-"),
        "{body}"
    );
}

#[tokio::test]
async fn a_refused_token_is_fetched_again_once() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wechat(fetches.clone(), 1)).await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["oUser0000001"]);
    let content = content();
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let out = provider.send(req).await;
    assert_eq!(out[0].class, OutcomeClass::Ok, "{out:?}");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // Refused twice in a row: a Token outcome, left to the retry policy.
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wechat(fetches.clone(), 2)).await;
    let out = adapter(&server.base_url).send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Token, "40001")
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_account_fails_without_sending() {
    let server = MockServer::fixed(Canned::new(
        200,
        r#"{"errcode":40013,"errmsg":"invalid appid"}"#,
    ))
    .await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["oUser0000001", "bad openid!"]);
    let content = content();
    let out = provider
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Perm, "40013")
    );
    assert!(
        out[0].message.starts_with("getting an access token"),
        "{}",
        out[0].message
    );
    assert_eq!(
        (out[1].class, out[1].code.as_str()),
        (OutcomeClass::Gone, "invalid_address")
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path == "/cgi-bin/stable_token")
    );
}

#[tokio::test]
async fn a_failed_token_fetch_answers_the_sends_after_it_for_a_while() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let server = MockServer::start(move |r: &Captured| {
        if r.path == "/cgi-bin/stable_token" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        Canned::new(503, "busy")
    })
    .await;
    let provider = adapter(&server.base_url);
    let openids: Vec<String> = (0..12).map(|i| format!("oUser{i:07}")).collect();
    let refs: Vec<&str> = openids.iter().map(String::as_str).collect();
    let targets = targets(&refs);
    let content = content();
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    {
        let out = provider.send(req).await;
        assert_eq!(out.len(), 12);
        for o in &out {
            assert_eq!(
                (o.class, o.code.as_str()),
                (OutcomeClass::Retry, "503"),
                "{o:?}"
            );
            // The retry is asked to come after the failure's hold, not at once.
            assert!(
                o.retry_after.is_some_and(|w| w > std::time::Duration::ZERO),
                "{o:?}"
            );
            assert!(
                !o.message.contains("busy"),
                "the body is not quoted: {}",
                o.message
            );
        }
    }
    // Twelve sends, four at a time, one fetch.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_mini_program_sends_subscribe_messages() {
    install_crypto();
    let server = MockServer::start(|r: &Captured| {
        if r.path == "/cgi-bin/stable_token" {
            return Canned::new(200, r#"{"access_token":"mp-tok","expires_in":7200}"#);
        }
        if r.json()["touser"] == "oRefused000001" {
            return Canned::new(
                200,
                r#"{"errcode":43101,"errmsg":"user refuse to accept the msg"}"#,
            );
        }
        Canned::new(
            200,
            r#"{"errcode":0,"errmsg":"ok","msgid":1864323726461255680}"#,
        )
    })
    .await;
    let provider = msghub_providers::build(
        ChannelType::Wechatmp,
        &json!({"appid": "wx5151000000000002", "secret": "mp-secret", "base_url": server.base_url}),
        &options(),
    )
    .unwrap();
    let targets = targets(&["oMini000000001", "oRefused000001"]);
    let content = json!({"template_id": "SUB_1", "page": "pages/o?id=1", "lang": "en_US",
                         "data": {"thing1": "shipped"}});
    let out = provider
        .send(SendRequest {
            msgid: 9,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(
        (out[0].class, out[0].provider_id.as_deref()),
        (OutcomeClass::Ok, Some("1864323726461255680"))
    );
    // Subscriptions are per template: a refusal fails the delivery, it does not mark the
    // openid gone.
    assert_eq!(
        (out[1].class, out[1].code.as_str()),
        (OutcomeClass::Perm, "43101")
    );
    let requests = server.requests();
    assert_eq!(
        requests[0].json(),
        json!({"grant_type": "client_credential", "appid": "wx5151000000000002",
               "secret": "mp-secret", "force_refresh": false})
    );
    let send = requests
        .iter()
        .find(|r| r.json()["touser"] == "oMini000000001")
        .unwrap();
    assert_eq!(
        send.path,
        "/cgi-bin/message/subscribe/send?access_token=mp-tok"
    );
    assert_eq!(
        send.json(),
        json!({"touser": "oMini000000001", "template_id": "SUB_1", "page": "pages/o?id=1",
               "lang": "en_US", "data": {"thing1": {"value": "shipped"}}})
    );
}
