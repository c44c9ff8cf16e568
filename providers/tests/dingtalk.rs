//! The `dingtalk_cc` adapter against a local HTTP server: one token per adapter, users batched
//! in `userid_list` (1000 a call, each once), the call's `task_id` as every user's provider id,
//! a refused token fetched again once, send reports asked for per task and read in either
//! shape, recalls, and contents refused without a call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Canned, Captured, MockServer, install_crypto, options, targets};
use msghub_actors::provider::{ChannelType, OutcomeClass, SendRequest, Undelivered};
use serde_json::{Value, json};

fn adapter(base_url: &str) -> Arc<dyn msghub_actors::provider::Provider> {
    install_crypto();
    msghub_providers::build(
        ChannelType::DingtalkCc,
        &json!({"appkey": "dingkey01", "appsecret": "app-secret", "agent_id": 3000001,
                "base_url": base_url}),
        &options(),
    )
    .unwrap()
}

fn content() -> Value {
    json!({"msg": {"msgtype": "text", "text": {"content": "Your expense claim was approved"}}})
}

fn query(r: &Captured, name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://dingtalk.test{}", r.path))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A DingTalk that issues `tok-N` tokens (N counts the fetches), refuses the first
/// `refuse_first` calls with 42001 whatever their token, numbers accepted sends 900, 901, …,
/// reports task 900 in the `send_result` shape and any other in the wrapped one, and refuses
/// reports on task 404 as an unknown task.
fn dingtalk(fetches: Arc<AtomicUsize>, refuse_first: usize) -> impl Fn(&Captured) -> Canned {
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks = Arc::new(AtomicUsize::new(900));
    move |r: &Captured| {
        if r.path.starts_with("/gettoken?") {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            return Canned::new(
                200,
                json!({"errcode": 0, "errmsg": "ok", "access_token": format!("tok-{n}"), "expires_in": 7200})
                    .to_string(),
            );
        }
        let latest = format!("tok-{}", fetches.load(Ordering::SeqCst));
        if calls.fetch_add(1, Ordering::SeqCst) < refuse_first
            || query(r, "access_token") != Some(latest)
        {
            return Canned::new(200, r#"{"errcode":42001,"errmsg":"access_token expired"}"#);
        }
        let body = r.json();
        let path = r.path.split('?').next().unwrap_or_default();
        match path {
            "/topapi/message/corpconversation/asyncsend_v2" => {
                let task = tasks.fetch_add(1, Ordering::SeqCst);
                Canned::new(
                    200,
                    json!({"errcode": 0, "task_id": task, "request_id": "req1"}).to_string(),
                )
            }
            "/topapi/message/corpconversation/getsendresult" => match body["task_id"].as_u64() {
                Some(404) => Canned::new(200, r#"{"errcode":40035,"errmsg":"invalid task_id"}"#),
                Some(900) => Canned::new(
                    200,
                    json!({"errcode": 0, "send_result": {
                        "read_user_id_list": ["u1"], "unread_user_id_list": ["u2"],
                        "invalid_user_id_list": ["gone1"], "failed_user_id_list": ["f1"],
                        "forbidden_list": [{"code": "143105", "count": 500, "userid": "b1"}],
                        "invalid_dept_id_list": []}})
                    .to_string(),
                ),
                _ => Canned::new(
                    200,
                    json!({"errcode": 0, "result": {"send_result": {"unread_user_id_list": ["u9"]}}})
                        .to_string(),
                ),
            },
            "/topapi/message/corpconversation/recall" => {
                Canned::new(200, r#"{"errcode":0,"errmsg":"ok"}"#)
            }
            _ => Canned::new(404, "no such path"),
        }
    }
}

#[tokio::test]
async fn users_are_batched_once_each_under_the_call_s_task() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(dingtalk(fetches.clone(), 0)).await;
    let provider = adapter(&server.base_url);
    let targets = targets(&["manager01", "a,b", "user02", "manager01", " manager01 ", ""]);
    let content = content();
    let out = provider
        .send(SendRequest {
            msgid: 7,
            content: &content,
            targets: &targets,
            ttl: None,
        })
        .await;
    let classes: Vec<(OutcomeClass, &str, Option<&str>)> = out
        .iter()
        .map(|o| (o.class, o.code.as_str(), o.provider_id.as_deref()))
        .collect();
    assert_eq!(
        classes,
        vec![
            (OutcomeClass::Ok, "0", Some("900")),
            (OutcomeClass::Gone, "invalid_address", None),
            (OutcomeClass::Ok, "0", Some("900")),
            // The same user again: sent once, the same answer.
            (OutcomeClass::Ok, "0", Some("900")),
            // Padded: DingTalk would report it unpadded, matching no delivery.
            (OutcomeClass::Gone, "invalid_address", None),
            (OutcomeClass::Gone, "invalid_address", None),
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one token, one send");
    let token = &requests[0];
    assert_eq!(token.method, "GET");
    assert_eq!(
        (query(token, "appkey"), query(token, "appsecret")),
        (Some("dingkey01".into()), Some("app-secret".into()))
    );
    let send = &requests[1];
    assert_eq!(send.method, "POST");
    assert!(
        send.path
            .starts_with("/topapi/message/corpconversation/asyncsend_v2?"),
        "{}",
        send.path
    );
    assert_eq!(query(send, "access_token").as_deref(), Some("tok-1"));
    assert_eq!(
        send.json(),
        json!({"agent_id": 3000001, "userid_list": "manager01,user02",
               "msg": {"msgtype": "text", "text": {"content": "Your expense claim was approved"}}})
    );

    // 1500 users: two calls of 1000 and 500, two tasks, on the cached token.
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
    assert_eq!(out[0].provider_id.as_deref(), Some("901"));
    assert_eq!(out[1499].provider_id.as_deref(), Some("902"));
    let sizes: Vec<usize> = server.requests()[2..]
        .iter()
        .map(|r| r.json()["userid_list"].as_str().unwrap().split(',').count())
        .collect();
    assert_eq!(sizes, vec![1000, 500]);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn reports_are_asked_for_per_task_in_order() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(dingtalk(fetches, 0)).await;
    let ids = ["900".to_string(), "404".to_string(), "901".to_string()];
    let answers = adapter(&server.base_url).pull_receipts(&ids).await;
    assert_eq!(answers.len(), 3);
    let first = answers[0].as_ref().unwrap();
    assert_eq!(
        (first.read.clone(), first.delivered.clone()),
        (vec!["u1".to_string()], vec!["u2".to_string()])
    );
    let undelivered = |a: &str, code: &str, gone: bool| Undelivered {
        address: a.into(),
        code: code.into(),
        gone,
    };
    assert_eq!(
        first.undelivered,
        vec![
            undelivered("gone1", "invalid_user", true),
            undelivered("b1", "forbidden:143105", false),
            undelivered("f1", "failed", false),
        ]
    );
    // An unknown task: DingTalk will never report on it.
    let refused = answers[1].as_ref().unwrap_err();
    assert_eq!(
        (refused.class, refused.code.as_str()),
        (OutcomeClass::Gone, "40035")
    );
    assert_eq!(answers[2].as_ref().unwrap().delivered, vec!["u9"]);
    let mut asked: Vec<Value> = server
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .starts_with("/topapi/message/corpconversation/getsendresult?")
        })
        .map(Captured::json)
        .collect();
    asked.sort_by_key(|b| b["task_id"].as_u64());
    assert_eq!(
        asked,
        vec![
            json!({"agent_id": 3000001, "task_id": 404}),
            json!({"agent_id": 3000001, "task_id": 900}),
            json!({"agent_id": 3000001, "task_id": 901}),
        ]
    );
}

#[tokio::test]
async fn a_refused_token_is_fetched_again_once() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(dingtalk(fetches.clone(), 1)).await;
    let targets = targets(&["manager01"]);
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
    let server = MockServer::start(dingtalk(fetches.clone(), 2)).await;
    let out = adapter(&server.base_url).send(req).await;
    assert_eq!(
        (out[0].class, out[0].code.as_str()),
        (OutcomeClass::Token, "42001")
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn throttled_and_refused_sends_are_told_apart() {
    for (body, class, code) in [
        (
            r#"{"errcode":143103,"errmsg":"qpm"}"#,
            OutcomeClass::Rate,
            "143103",
        ),
        (
            r#"{"errcode":-1,"errmsg":"busy"}"#,
            OutcomeClass::Retry,
            "-1",
        ),
        (
            r#"{"errcode":88,"errmsg":"auth","sub_code":"60011","sub_msg":"no permission"}"#,
            OutcomeClass::Perm,
            "88:60011",
        ),
    ] {
        let body = body.to_string();
        let server = MockServer::start(move |r: &Captured| {
            if r.path.starts_with("/gettoken?") {
                Canned::new(200, r#"{"errcode":0,"access_token":"t","expires_in":7200}"#)
            } else {
                Canned::new(200, body.clone())
            }
        })
        .await;
        let targets = targets(&["a", "b"]);
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
        assert!(
            out.iter()
                .all(|o| (o.class, o.code.as_str()) == (class, code)),
            "{out:?}"
        );
    }
}

#[tokio::test]
async fn recalls_name_the_task() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start(dingtalk(fetches, 0)).await;
    let out = adapter(&server.base_url)
        .recall(&["900".to_string(), "901".to_string()])
        .await;
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.class == OutcomeClass::Ok), "{out:?}");
    let mut recalls: Vec<Value> = server
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .starts_with("/topapi/message/corpconversation/recall?")
        })
        .map(Captured::json)
        .collect();
    recalls.sort_by_key(|b| b["msg_task_id"].as_u64());
    assert_eq!(
        recalls,
        vec![
            json!({"agent_id": 3000001, "msg_task_id": 900}),
            json!({"agent_id": 3000001, "msg_task_id": 901})
        ]
    );
}

#[tokio::test]
async fn refused_contents_make_no_call() {
    let server = MockServer::fixed(Canned::new(500, "must not be called")).await;
    let targets = targets(&["manager01"]);
    let content =
        json!({"msg": {"msgtype": "text", "text": {"content": "hi"}}, "to_all_user": true});
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
