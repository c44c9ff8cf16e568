//! The `wechatwk` adapter against a local HTTP server: one token per adapter, members batched
//! in `touser` (1000 a call), the members WeCom did not send to told apart, a refused token
//! fetched again once, recalls, and contents refused without a call.

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
        ChannelType::Wechatwk,
        &json!({"corpid": "ww1234567890abcdef", "corpsecret": "app-secret", "agentid": 1000002,
                "base_url": base_url}),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({"msgtype": "text", "text": {"content": "Your leave was approved"}})
}

fn query(r: &Captured, name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://wecom.test{}", r.path))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A WeCom that issues `tok-N` tokens (N counts the fetches), refuses the first
/// `refuse_first` sends with 42001 whatever their token, and answers the others naming the
/// members whose id starts with `gone` as invalid.
fn wecom(fetches: Arc<AtomicUsize>, refuse_first: usize) -> impl Fn(&Captured) -> Canned {
    let sends = Arc::new(AtomicUsize::new(0));
    move |r: &Captured| {
        if r.path.starts_with("/cgi-bin/gettoken?") {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            return Canned::new(
                200,
                json!({"errcode": 0, "errmsg": "ok", "access_token": format!("tok-{n}"), "expires_in": 7200})
                    .to_string(),
            );
        }
        let latest = format!("tok-{}", fetches.load(Ordering::SeqCst));
        let n = sends.fetch_add(1, Ordering::SeqCst);
        if n < refuse_first || query(r, "access_token") != Some(latest) {
            return Canned::new(200, r#"{"errcode":42001,"errmsg":"access_token expired"}"#);
        }
        if r.path.starts_with("/cgi-bin/message/recall?") {
            return Canned::new(200, r#"{"errcode":0,"errmsg":"ok"}"#);
        }
        let body = r.json();
        let invalid: Vec<String> = body["touser"]
            .as_str()
            .unwrap()
            .split('|')
            .filter(|u| u.to_ascii_lowercase().starts_with("gone"))
            .map(str::to_ascii_lowercase)
            .collect();
        Canned::new(
            200,
            json!({"errcode": 0, "errmsg": "ok", "invaliduser": invalid.join("|"),
                   "msgid": format!("MSG{n}")})
            .to_string(),
        )
    }
}

#[tokio::test]
async fn members_are_batched_in_one_call_and_those_not_reached_told_apart() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wecom(fetches.clone(), 0)).await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["zhangsan", "GoneUser", "bad id!", "lisi", "ZhangSan"]);
    let content = content();
    let out = provider
        .send(SendRequest {
            msgid: 7,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    let classes: Vec<(OutcomeClass, &str)> =
        out.iter().map(|o| (o.class, o.code.as_str())).collect();
    assert_eq!(
        classes,
        vec![
            (OutcomeClass::Ok, "0"),
            (OutcomeClass::Gone, "invaliduser"),
            (OutcomeClass::Gone, "invalid_address"),
            (OutcomeClass::Ok, "0"),
            // The same member in another case: sent once, the same answer.
            (OutcomeClass::Ok, "0"),
        ]
    );
    assert_eq!(out[0].provider_id.as_deref(), Some("MSG0"));
    assert_eq!(out[3].provider_id.as_deref(), Some("MSG0"));
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one token, one send");
    let token = &requests[0];
    assert_eq!(token.method, "GET");
    assert_eq!(
        (query(token, "corpid"), query(token, "corpsecret")),
        (Some("ww1234567890abcdef".into()), Some("app-secret".into()))
    );
    let send = &requests[1];
    assert_eq!(send.method, "POST");
    assert!(
        send.path.starts_with("/cgi-bin/message/send?"),
        "{}",
        send.path
    );
    assert_eq!(query(send, "access_token").as_deref(), Some("tok-1"));
    assert_eq!(
        send.json(),
        json!({"msgtype": "text", "text": {"content": "Your leave was approved"},
               "touser": "zhangsan|GoneUser|lisi", "agentid": 1000002})
    );

    // 1500 members: two calls of 1000 and 500, on the cached token.
    let ids: Vec<String> = (0..1500).map(|i| format!("m{i:04}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let many = common::targets(&refs);
    let out = provider
        .send(SendRequest {
            msgid: 8,
            content: &content,
            targets: &many,
            ttl: None,
        })
        .await;
    assert_eq!(out.len(), 1500);
    assert!(out.iter().all(|o| o.class == OutcomeClass::Ok));
    let sizes: Vec<usize> = server.requests()[2..]
        .iter()
        .map(|r| r.json()["touser"].as_str().unwrap().split('|').count())
        .collect();
    assert_eq!(sizes, vec![1000, 500]);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_token_is_fetched_again_once() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wecom(fetches.clone(), 1)).await;
    let targets = targets(&["zhangsan"]);
    let content = content();
    let req = SendRequest {
        msgid: 1,
        content: &content,
        targets: &targets,
        ttl: None,
    };
    let out = adapter(&server.base_url).send(req).await;
    assert_eq!(out[0].class, OutcomeClass::Ok, "{out:?}");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // Refused twice in a row: a Token outcome, left to the retry policy.
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wecom(fetches.clone(), 2)).await;
    let out = adapter(&server.base_url).send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Token, "42001")
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_secret_fails_without_sending() {
    let server = MockServer::fixed(Canned::new(
        200,
        r#"{"errcode":40001,"errmsg":"invalid secret"}"#,
    ))
    .await;
    let targets = targets(&["zhangsan", "lisi"]);
    let content = content();
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
        assert_eq!((o.class, o.code.as_str()), (OutcomeClass::Perm, "40001"));
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
            .all(|r| r.path.starts_with("/cgi-bin/gettoken?"))
    );
}

#[tokio::test]
async fn recalls_name_the_call_s_msgid() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(wecom(fetches, 0)).await;
    let out = adapter(&server.base_url)
        .recall(&["MSG0".to_string(), "MSG9".to_string()])
        .await;
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.class == OutcomeClass::Ok), "{out:?}");
    let recalls: Vec<Value> = server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/cgi-bin/message/recall?"))
        .map(Captured::json)
        .collect();
    assert_eq!(
        recalls,
        vec![json!({"msgid": "MSG0"}), json!({"msgid": "MSG9"})]
    );
}

#[tokio::test]
async fn refused_contents_make_no_call() {
    let server = MockServer::fixed(Canned::new(500, "must not be called")).await;
    let targets = targets(&["zhangsan"]);
    let content = json!({"msgtype": "text", "text": {"content": "hi"}, "touser": "@all"});
    let out = adapter(&server.base_url)
        .send(SendRequest {
            msgid: 1,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Perm, "invalid_content")
    );
    assert!(server.requests().is_empty());
}
