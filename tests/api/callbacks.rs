//! Status callbacks to business systems: echostr-verified URLs, JUMS items in signed batches,
//! retries, and the source's default URL.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use msghub_sim::FaultPlan;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, app_msg, spawn_app_with};

pub(crate) const FLUSH_MS: u64 = 300;

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Post {
    authorization: String,
    content_type: String,
    items: Vec<Value>,
    accepted: bool,
}

#[derive(Default)]
struct ReceiverState {
    /// Authorization headers of echostr checks.
    checks: Mutex<Vec<String>>,
    posts: Mutex<Vec<Post>>,
    /// Refuse this many further POSTs with HTTP 503.
    fail_next: AtomicUsize,
}

/// A business system on 127.0.0.1: `/cb` answers the echostr check and records POSTs, `/mute`
/// answers 200 without echoing.
pub(crate) struct Receiver {
    pub(crate) base: String,
    state: Arc<ReceiverState>,
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn echo(
    state: web::Data<Arc<ReceiverState>>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    state
        .checks
        .lock()
        .unwrap()
        .push(header(&req, "authorization"));
    HttpResponse::Ok().body(query.get("echostr").cloned().unwrap_or_default())
}

async fn record(
    state: web::Data<Arc<ReceiverState>>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let refuse = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let items: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    state.posts.lock().unwrap().push(Post {
        authorization: header(&req, "authorization"),
        content_type: header(&req, "content-type"),
        items,
        accepted: !refuse,
    });
    if refuse {
        HttpResponse::ServiceUnavailable().finish()
    } else {
        HttpResponse::Ok().finish()
    }
}

async fn mute() -> HttpResponse {
    HttpResponse::Ok().body("hello")
}

pub(crate) async fn start_receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let state = Arc::new(ReceiverState::default());
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/cb", web::get().to(echo))
            .route("/cb", web::post().to(record))
            .route("/mute", web::get().to(mute))
    })
    .listen(listener)
    .unwrap()
    .workers(1)
    .disable_signals()
    .run();
    actix_web::rt::spawn(server);
    Receiver { base, state }
}

impl Receiver {
    pub(crate) fn url(&self) -> String {
        format!("{}/cb", self.base)
    }

    fn posts(&self) -> Vec<Post> {
        self.state.posts.lock().unwrap().clone()
    }

    fn accepted_items(&self) -> Vec<Value> {
        self.posts()
            .into_iter()
            .filter(|p| p.accepted)
            .flat_map(|p| p.items)
            .collect()
    }

    /// Accepted items of the given types (receipts may add 4s and 6s beside the outcomes).
    pub(crate) fn accepted_of(&self, types: &[i64]) -> Vec<Value> {
        self.accepted_items()
            .into_iter()
            .filter(|i| i["type"].as_i64().is_some_and(|t| types.contains(&t)))
            .collect()
    }

    /// Wait until `n` items of these types were accepted, then long enough for any extra batch
    /// to show, and return every accepted item of these types.
    pub(crate) async fn wait_items(&self, n: usize, types: &[i64]) -> Vec<Value> {
        let started = Instant::now();
        while self.accepted_of(types).len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of {n} callback items arrived: {:?}",
                self.accepted_of(types).len(),
                self.posts()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(FLUSH_MS * 4)).await;
        self.accepted_of(types)
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|s| {
        s.callbacks.flush_ms = FLUSH_MS;
        s.callbacks.retry_delay_ms = 100;
        s.callbacks.timeout_ms = 5_000;
    })
    .await
}

fn basic(key: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

impl TestApp {
    /// POST a callback URL for a source: (HTTP status, body).
    pub(crate) async fn add_callback_url(&self, source_id: i64, url: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!(
                "{}/api/sources/{source_id}/callback_urls",
                self.address
            ))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn callback_urls(&self, source_id: i64) -> Vec<(String, bool)> {
        let body: Value = self
            .admin_get(&format!("/api/sources/{source_id}/callback_urls"))
            .await
            .json()
            .await
            .unwrap();
        body["callback_urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["url"].as_str().unwrap().to_string(),
                    u["default"].as_bool().unwrap(),
                )
            })
            .collect()
    }
}

#[actix_web::test]
async fn callback_urls_are_stored_only_after_echoing_the_signed_echostr_check() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    let id = app.source_id;

    let (status, body) = app.add_callback_url(id, &format!("{}/mute", rx.base)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "callback_unverified");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("body"),
        "{body}"
    );
    let (status, body) = app.add_callback_url(id, "http://127.0.0.1:9/cb").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("callback_unverified"))
    );
    let (status, body) = app.add_callback_url(id, "ftp://127.0.0.1/cb").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(app.callback_urls(id).await.is_empty());

    let first = rx.url();
    let second = format!("{}/cb?tenant=2", rx.base);
    assert_eq!(app.add_callback_url(id, &first).await.0, 201);
    assert_eq!(app.add_callback_url(id, &second).await.0, 201);
    assert_eq!(
        app.callback_urls(id).await,
        vec![(first.clone(), true), (second.clone(), false)]
    );
    let expected = basic(&app.source_key, &app.source_secret);
    assert!(
        rx.state
            .checks
            .lock()
            .unwrap()
            .iter()
            .all(|a| *a == expected)
    );

    // Deleting the default makes the next one the default.
    let resp = app
        .client
        .delete(
            url::Url::parse_with_params(
                &format!("{}/api/sources/{id}/callback_urls", app.address),
                [("url", first.as_str())],
            )
            .unwrap(),
        )
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(app.callback_urls(id).await, vec![(second, true)]);

    // At most five.
    for n in 0..4 {
        let (status, body) = app
            .add_callback_url(id, &format!("{}/cb?n={n}", rx.base))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = app
        .add_callback_url(id, &format!("{}/cb?n=9", rx.base))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_callback_urls"))
    );
    assert_eq!(app.add_callback_url(9999, &rx.url()).await.0, 404);
}

#[actix_web::test]
async fn a_source_without_a_stored_secret_must_rotate_it_before_registering_a_url() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    // What a source created before callbacks existed looks like.
    app.db
        .execute(
            "UPDATE sources SET secret_enc = NULL WHERE id = ?",
            vec![app.source_id.into()],
        )
        .await
        .unwrap();
    let (status, body) = app.add_callback_url(app.source_id, &rx.url()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "secret_rotation_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rotate")
    );

    let rotated = app
        .admin_post(&format!("/api/sources/{}/secret", app.source_id), json!({}))
        .await;
    let secret = rotated["secret"].as_str().unwrap();
    assert_ne!(secret, app.source_secret);
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    assert_eq!(
        rx.state.checks.lock().unwrap().last().unwrap(),
        &basic(&app.source_key, secret)
    );
    // The old secret no longer authenticates.
    let (status, body) = app
        .v1(
            "/v1/sent",
            &json!({"aud_userid": ["u1"], "msg_app": app_msg()}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(4005)), "{body}");
}

#[actix_web::test]
async fn a_send_naming_an_unverified_callback_url_is_refused_with_4004() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    let send =
        |callback: Value| json!({"aud_userid": ["u1"], "msg_app": app_msg(), "callback": callback});

    // No URL registered yet.
    let (status, body) = app.v1("/v1/sent", &send(json!({"url": rx.url()}))).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a verified callback URL"),
        "{body}"
    );
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    let (status, body) = app
        .v1(
            "/v1/sent",
            &send(json!({"url": format!("{}/other", rx.base)})),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");
    let (status, body) = app
        .v1("/v1/sent", &send(json!({"url": rx.url(), "params": [1]})))
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");
    assert_eq!(app.count_rows("messages").await, 0);
    app.send_ok(
        "/v1/sent",
        send(json!({"url": rx.url(), "params": {"k": "v"}})),
    )
    .await;
}

#[actix_web::test]
async fn submitted_outcomes_are_posted_as_signed_jums_items_in_batches_of_at_most_100() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    let users: Vec<String> = (0..250).map(|i| format!("cb{i:03}")).collect();
    app.add_users(
        users
            .iter()
            .map(|u| json!({"userid": u, "add": {"app": [format!("reg-{u}")]}})),
    )
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": users, "msg_app": app_msg(),
                   "callback": {"url": rx.url(), "params": {"order": "A1", "n": 7}}}),
        )
        .await;

    let items = rx.wait_items(250, &[2]).await;
    assert_eq!(items.len(), 250, "one submitted item per delivery, no more");
    let posts = rx.posts();
    let sizes: Vec<usize> = posts.iter().map(|p| p.items.len()).collect();
    assert!(sizes.iter().all(|&n| (1..=100).contains(&n)), "{sizes:?}");
    assert!(sizes.contains(&100), "full batches leave at 100: {sizes:?}");
    let expected_auth = basic(&app.source_key, &app.source_secret);
    for p in &posts {
        assert_eq!(p.authorization, expected_auth);
        assert!(p.content_type.starts_with("application/json"));
    }
    let mut seen = BTreeSet::new();
    for item in &items {
        let userid = item["userid"].as_str().unwrap();
        assert_eq!(item["type"], 2, "{item}");
        assert_eq!(item["channelkey"], app.source_key.as_str());
        assert_eq!(item["msgid"], msgid.as_str());
        assert_eq!(item["sender"], 1);
        assert_eq!(item["sender_id"], format!("reg-{userid}"));
        assert_eq!(item["params"], json!({"order": "A1", "n": 7}));
        assert!(item["sent_time"].as_i64().unwrap() > 0);
        assert!(item.get("error").is_none(), "{item}");
        seen.insert(userid.to_string());
    }
    assert_eq!(seen, users.into_iter().collect::<BTreeSet<_>>());
}

#[actix_web::test]
async fn a_batch_the_receiver_refuses_is_posted_again() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    app.add_users(
        (0..3).map(|i| json!({"userid": format!("r{i}"), "add": {"app": [format!("reg-r{i}")]}})),
    )
    .await;
    rx.state.fail_next.store(1, Ordering::SeqCst);
    app.send_ok(
        "/v1/sent",
        json!({"aud_userid": ["r0", "r1", "r2"], "msg_app": app_msg(),
               "callback": {"url": rx.url()}}),
    )
    .await;
    let items = rx.wait_items(3, &[2]).await;
    assert_eq!(items.len(), 3, "{items:?}");
    let posts = rx.posts();
    let refused: Vec<&Post> = posts.iter().filter(|p| !p.accepted).collect();
    assert_eq!(refused.len(), 1, "{posts:?}");
    assert!(
        posts
            .iter()
            .any(|p| p.accepted && p.items == refused[0].items),
        "the refused batch is posted again, unchanged: {posts:?}"
    );
    assert!(items.iter().all(|i| i.get("params").is_none()));
}

#[actix_web::test]
async fn sends_without_callback_report_to_the_source_default_url_with_failures_explained() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    app.sim.state.set_faults(
        "app",
        FaultPlan {
            perm_addresses: vec!["dead-reg".into()],
            ..FaultPlan::default()
        },
    );
    let ok = app
        .send_ok(
            "/v1/sent",
            json!({"aud_app": [{"instance": "", "data": ["live-reg"]}], "msg_app": app_msg()}),
        )
        .await;
    let failed = app
        .send_ok(
            "/v1/sent",
            json!({"aud_app": [{"instance": "", "data": ["dead-reg"]}], "msg_app": app_msg()}),
        )
        .await;
    let items = rx.wait_items(2, &[2, 3]).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let by_msgid = |m: &str| {
        items
            .iter()
            .find(|i| i["msgid"] == m)
            .unwrap_or_else(|| panic!("no item for {m}: {items:?}"))
            .clone()
    };
    let submitted = by_msgid(&ok);
    assert_eq!(submitted["type"], 2);
    assert_eq!(submitted["userid"], "");
    assert_eq!(submitted["sender_id"], "live-reg");
    assert!(submitted.get("params").is_none() && submitted.get("error").is_none());
    let refused = by_msgid(&failed);
    assert_eq!(refused["type"], 3, "{refused}");
    assert_eq!(refused["sender_id"], "dead-reg");
    assert_eq!(refused["error"]["code"], 1011, "{refused}");
    assert!(refused["error"]["message"].is_string());
}

/// Receipts become callback items too: 4 delivered, 6 clicked (JPush receipts from the
/// simulator) and 5 delivery failed (an Aliyun report saying it did not arrive).
#[actix_web::test]
async fn receipts_are_reported_as_delivered_clicked_and_failed_items() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    app.add_users((0..30).map(|i| {
        json!({"userid": format!("cb{i:02}"), "add": {"app": {"all": [format!("cbreg-{i:02}")]},
               "phone": format!("1330000{i:04}")}})
    }))
    .await;
    // Every push is received; every one is clicked.
    let r = app
        .client
        .post(format!("{}/sim/receipts", app.sim.http_url()))
        .json(&json!({"channel": "app", "delivered_ratio": 1.0, "clicked_ratio": 1.0}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let userids: Vec<String> = (0..30).map(|i| format!("cb{i:02}")).collect();
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": userids, "msg_app": app_msg(),
                   "msg_sms": [{"temp_id": "SMS_1", "temp_para": {}}],
                   "callback": {"params": {"order": "A-1"}}}),
        )
        .await;
    let delivered = rx.wait_items(30, &[4]).await;
    let clicked = rx.wait_items(30, &[6]).await;
    for (items, kind) in [(&delivered, 4), (&clicked, 6)] {
        let users: BTreeSet<&str> = items.iter().filter_map(|i| i["userid"].as_str()).collect();
        assert_eq!(users.len(), 30, "type {kind}: one item per user");
        assert!(
            items.iter().all(|i| i["msgid"] == json!(msgid)
                && i["sender"] == 1
                && i["params"] == json!({"order": "A-1"})
                && i.get("error").is_none()),
            "{items:?}"
        );
    }
    // An SMS report saying one text did not arrive.
    let ch: Value = app
        .admin_get(&format!("/api/channels/{}", app.channel("sms")))
        .await
        .json()
        .await
        .unwrap();
    let report = json!([{"phone_number": "13300000007", "success": false, "err_code": "UNDELIV",
                         "err_msg": "用户接收失败", "out_id": msgid, "biz_id": "b"}]);
    let r = app
        .client
        .post(ch["receipt_url"].as_str().unwrap())
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let failed = rx.wait_items(1, &[5]).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["userid"], "cb07");
    assert_eq!(failed[0]["sender"], 5);
    assert_eq!(failed[0]["sender_id"], "13300000007");
    assert!(failed[0]["error"]["message"].is_string(), "{failed:?}");
}

/// (type, userid, sender, sender_id) of callback items.
type ItemKey = (i64, String, i64, String);

fn item_set(items: &[(i64, &str, i64, &str)]) -> BTreeSet<ItemKey> {
    items
        .iter()
        .map(|(k, u, s, a)| (*k, u.to_string(), *s, a.to_string()))
        .collect()
}

/// Items 0 and 1: every delivery a send resolves to is reported as a valid target, and every
/// listed user without an address on one of the message's channel types as an invalid one;
/// a tag audience reports its targets, and a fallback step reports its own when its timer
/// queues them.
#[actix_web::test]
async fn resolved_targets_are_reported_valid_and_users_without_an_address_invalid() {
    let app = spawn_app().await;
    let rx = start_receiver().await;
    assert_eq!(app.add_callback_url(app.source_id, &rx.url()).await.0, 201);
    app.add_users(
        [
            json!({"userid": "t0", "add": {"app": ["reg-t0"], "phone": "13300000000", "tag": ["grp"]}}),
            json!({"userid": "t1", "add": {"app": ["reg-t1"], "tag": ["grp"]}}),
            json!({"userid": "t2", "add": {"tag": ["other"]}}),
        ]
        .into_iter(),
    )
    .await;
    let sms = json!([{"temp_id": "SMS_1", "temp_para": {}}]);
    let listed = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["t0", "t1", "t2"], "msg_app": app_msg(), "msg_sms": sms}),
        )
        .await;
    let of = |items: &[Value], msgid: &str| -> BTreeSet<ItemKey> {
        items
            .iter()
            .filter(|i| i["msgid"] == msgid)
            .map(|i| {
                (
                    i["type"].as_i64().unwrap(),
                    i["userid"].as_str().unwrap().to_string(),
                    i["sender"].as_i64().unwrap(),
                    i["sender_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let items = rx.wait_items(6, &[0, 1]).await;
    let expected = item_set(&[
        (0, "t0", 1, "reg-t0"),
        (0, "t0", 5, "13300000000"),
        (0, "t1", 1, "reg-t1"),
        (1, "t1", 5, ""),
        (1, "t2", 1, ""),
        (1, "t2", 5, ""),
    ]);
    assert_eq!(of(&items, &listed), expected, "{items:?}");
    assert_eq!(items.len(), 6, "one item per target: {items:?}");
    for item in &items {
        match item["type"].as_i64() {
            Some(1) => {
                assert_eq!(item["error"]["code"], -1, "{item}");
                let message = item["error"]["message"].as_str().unwrap();
                assert!(message.starts_with("no_address"), "{item}");
            }
            _ => assert!(item.get("error").is_none(), "{item}"),
        }
    }

    // A tag audience: its members' targets; users outside it are not reported.
    let tagged = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["grp"], "msg_app": app_msg()}),
        )
        .await;
    let items = rx.wait_items(8, &[0, 1]).await;
    let expected = item_set(&[(0, "t0", 1, "reg-t0"), (0, "t1", 1, "reg-t1")]);
    assert_eq!(of(&items, &tagged), expected, "{items:?}");

    // A chain app → sms without receipts: the SMS step's target is reported when it is queued.
    app.sim_post("/sim/receipts", json!({"channel": "app", "enabled": false}))
        .await;
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 1, "condition": "not_delivered"},
            {"channel": "sms"}]}))
        .await;
    let chained = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["t0"], "rule_id": rule, "msg_app": app_msg(), "msg_sms": sms}),
        )
        .await;
    let items = rx.wait_items(10, &[0, 1]).await;
    let expected = item_set(&[(0, "t0", 1, "reg-t0"), (0, "t0", 5, "13300000000")]);
    assert_eq!(of(&items, &chained), expected, "{items:?}");
    assert_eq!(items.len(), 10, "{items:?}");
}
