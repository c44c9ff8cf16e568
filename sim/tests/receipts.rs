//! Receipts pushed by the simulator to a local receiver: JPush callbacks, Aliyun SmsReport and
//! Tencent SMS status callbacks, WeChat template and mini-program subscribe events, batching,
//! retries, the loopback rule and the `/sim/receipts` control API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use serde_json::{Value, json};

const APP_AUTH: &str = "sim-app-key:sim-master-secret";

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
    /// Whether the receiver answered 200.
    ok: bool,
}

/// A local receipt receiver: records every request and answers 500 to the first `fail_first`.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Every receipt item of every request answered 200.
    fn items(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.ok)
            .flat_map(|r| r.body.as_array().unwrap().clone())
            .collect()
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, rx: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let failing = rx
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    rx.seen.lock().unwrap().push(Seen {
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        ok: !failing,
    });
    if failing {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::Ok().json(json!({"code": 0, "msg": "接收成功"}))
    }
}

/// Starts a receiver on 127.0.0.1:0; returns its base URL.
async fn receiver(fail_first: usize) -> (String, Receiver) {
    let rx = Receiver::default();
    rx.fail_first.store(fail_first, Ordering::SeqCst);
    let data = web::Data::new(rx.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (base, rx)
}

async fn configure(c: &reqwest::Client, sim: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{sim}/sim/receipts"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn report(c: &reqwest::Client, sim: &str, query: &str) -> Value {
    let r = c
        .get(format!("{sim}/sim/receipts?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

/// Polls the report until `done` holds (nothing pending and the expected counts).
async fn settle(
    c: &reqwest::Client,
    sim: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = report(c, sim, query).await;
        if r["pending"] == 0 && done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "receipts did not settle: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn basic(cred: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(cred)
    )
}

/// Pushes to `ids` (plus one alias) with a callback; returns the JPush msg_id.
async fn push(c: &reqwest::Client, sim: &str, ids: &[&str], callback: Option<Value>) -> String {
    let mut body = json!({
        "platform": "all",
        "audience": {"registration_id": ids, "alias": ["someone"]},
        "notification": {"alert": "hi"}
    });
    if let Some(cb) = callback {
        body["callback"] = cb;
    }
    let r = c
        .post(format!("{sim}/v3/push"))
        .header("Authorization", basic(APP_AUTH))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    v["msg_id"].as_str().unwrap().to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn jpush_receipts_reach_the_callback_url_in_signed_batches() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let (rx_base, rx) = receiver(0).await;
    let (s, v) = configure(
        &c,
        &base,
        json!({"channel": "app", "clicked_ratio": 1.0, "delay_ms": 0, "click_delay_ms": 0,
               "batch_max": 3, "batch_ms": 20}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["config"]["batch_max"], 3);

    let ids = ["r1", "r2", "r3", "r4", "r5"];
    let params = json!({"msgid": "777", "extra": {"n": [1, 2]}});
    let url = format!("{rx_base}/receipts/4/tok");
    let msg_id = push(
        &c,
        &base,
        &ids,
        Some(json!({"url": url, "params": params, "type": 7})),
    )
    .await;
    // A push without a callback gets no receipts.
    push(&c, &base, &["x1"], None).await;

    let r = settle(&c, &base, "channel=app", |r| r["posted_items"] == 10).await;
    assert_eq!(
        (r["failed_posts"].as_u64(), r["dropped_items"].as_u64()),
        (Some(0), Some(0))
    );
    let requests = rx.requests();
    assert_eq!(r["posted_batches"].as_u64(), Some(requests.len() as u64));
    for req in &requests {
        assert_eq!(req.path, "/receipts/4/tok");
        assert_eq!(req.authorization.as_deref(), Some(basic(APP_AUTH).as_str()));
        assert_eq!(req.content_type.as_deref(), Some("application/json"));
        let n = req.body.as_array().unwrap().len();
        assert!((1..=3).contains(&n), "batch of {n}");
    }
    let items = rx.items();
    assert_eq!(items.len(), 10);
    let mut by_type: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for item in &items {
        assert_eq!(item["msg_id"], msg_id.as_str());
        assert_eq!(item["platform"], "android");
        assert_eq!(item["params"], params, "params are echoed verbatim");
        assert!(item["time"].is_i64());
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 6, "{item}");
        by_type
            .entry(item["type"].as_u64().unwrap())
            .or_default()
            .insert(item["registration_id"].as_str().unwrap().to_string());
    }
    let all: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(by_type.get(&1), Some(&all), "received, aliases excluded");
    assert_eq!(by_type.get(&2), Some(&all), "clicked");
    assert!(!by_type.contains_key(&4));

    let one = report(&c, &base, "channel=app&msgid=777").await;
    assert_eq!(strings(&one["delivered"]), ids);
    assert_eq!(strings(&one["clicked"]), ids);
    assert!(one["failed"].as_array().unwrap().is_empty());
    let other = report(&c, &base, "channel=jpush&msgid=778").await;
    assert!(other["delivered"].as_array().unwrap().is_empty());
    sim.stop().await;
}

#[actix_web::test]
async fn ratios_and_the_callback_type_choose_the_receipts() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let (rx_base, rx) = receiver(0).await;
    let url = format!("{rx_base}/r");
    let cb = |msgid: &str, kind: u64| json!({"url": url, "params": {"msgid": msgid}, "type": kind});

    let cfg = json!({"channel": "app", "delivered_ratio": 0.0, "failed_ratio": 1.0, "delay_ms": 0, "batch_ms": 5});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    push(&c, &base, &["f1", "f2", "f3"], Some(cb("1", 7))).await;
    settle(&c, &base, "channel=app", |r| r["posted_items"] == 3).await;

    let cfg = json!({"channel": "app", "clicked_ratio": 1.0, "delay_ms": 0, "click_delay_ms": 0, "batch_ms": 5});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    // type 1 asks for "received" only: no click receipts although every device clicks.
    push(&c, &base, &["d1", "d2"], Some(cb("2", 1))).await;
    settle(&c, &base, "channel=app", |r| r["posted_items"] == 5).await;

    let cfg = json!({"channel": "app", "delivered_ratio": 0.0, "failed_ratio": 0.0, "delay_ms": 0});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    push(&c, &base, &["s1", "s2"], Some(cb("3", 7))).await;

    let failed = report(&c, &base, "channel=app&msgid=1").await;
    assert_eq!(strings(&failed["failed"]), ["f1", "f2", "f3"]);
    assert!(failed["delivered"].as_array().unwrap().is_empty());
    let delivered = report(&c, &base, "channel=app&msgid=2").await;
    assert_eq!(strings(&delivered["delivered"]), ["d1", "d2"]);
    assert!(delivered["clicked"].as_array().unwrap().is_empty());
    let types: BTreeSet<u64> = rx
        .items()
        .iter()
        .map(|i| i["type"].as_u64().unwrap())
        .collect();
    assert_eq!(types, BTreeSet::from([1, 4]));

    let r = settle(&c, &base, "channel=app", |_| true).await;
    assert_eq!(r["posted_items"], 5, "silent devices get no receipt");
    assert!(
        report(&c, &base, "channel=app&msgid=3").await["delivered"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.stop().await;
}

#[actix_web::test]
async fn a_failing_receiver_is_retried_then_the_batch_is_dropped() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let cfg = json!({"channel": "app", "delay_ms": 0, "batch_ms": 5, "retry_delays_ms": [5, 5, 5]});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);

    // Two 500s, then 200: the third attempt carries the same batch.
    let (rx_base, rx) = receiver(2).await;
    let cb = json!({"url": format!("{rx_base}/r"), "params": {"msgid": "5"}, "type": 7});
    push(&c, &base, &["a", "b"], Some(cb)).await;
    let r = settle(&c, &base, "channel=app", |r| r["posted_items"] == 2).await;
    assert_eq!(
        (r["posted_batches"].as_u64(), r["failed_posts"].as_u64()),
        (Some(1), Some(2))
    );
    let requests = rx.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|q| q.body == requests[0].body));
    assert_eq!(strings(&r["delivered"]), ["a", "b"]);

    // A receiver that never answers 200: 1 try + 3 retries, then dropped and counted.
    let (dead_base, dead) = receiver(usize::MAX).await;
    let cb = json!({"url": format!("{dead_base}/r"), "params": {"msgid": "6"}, "type": 7});
    push(&c, &base, &["c", "d", "e"], Some(cb)).await;
    let r = settle(&c, &base, "channel=app", |r| r["dropped_items"] == 3).await;
    assert_eq!(r["failed_posts"], 2 + 4);
    assert_eq!(dead.requests().len(), 4);
    assert!(
        report(&c, &base, "channel=app&msgid=6").await["delivered"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.stop().await;
}

#[actix_web::test]
async fn receipts_for_non_loopback_hosts_are_dropped_without_connecting() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let cb = json!({"url": "http://192.0.2.1:9/r", "params": {"msgid": "1"}, "type": 7});
    push(&c, &base, &["a", "b"], Some(cb)).await;
    let r = report(&c, &base, "channel=app").await;
    assert_eq!(
        (r["dropped_items"].as_u64(), r["pending"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(r["failed_posts"], 0, "no connection was attempted");
    sim.stop().await;
}

/// Form body of a signed Aliyun call with `action` parameters.
fn aliyun_form(action: &[(&str, &str)]) -> String {
    let nonce = format!("n-{}", rand::random::<u64>());
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut p: BTreeMap<String, String> = [
        ("Format", "JSON"),
        ("Version", "2017-05-25"),
        ("AccessKeyId", "sim-ak"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("Timestamp", ts.as_str()),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("RegionId", "cn-hangzhou"),
    ]
    .iter()
    .chain(action.iter())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sts = msghub_sim::aliyun::string_to_sign("POST", &p);
    p.insert(
        "Signature".into(),
        msghub_sim::aliyun::sign("sim-ak-secret", &sts),
    );
    p.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                msghub_sim::aliyun::percent_encode(k),
                msghub_sim::aliyun::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn aliyun(c: &reqwest::Client, sim: &str, action: &[(&str, &str)]) -> String {
    let r = c
        .post(format!("{sim}/"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(aliyun_form(action))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["Code"], "OK", "{v}");
    v["BizId"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn aliyun_sms_reports_go_to_the_configured_report_url() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let (rx_base, rx) = receiver(1).await;

    // No report_url yet: nothing is sent.
    let send = [
        ("Action", "SendSms"),
        ("PhoneNumbers", "13800138000,+8613800138001,13800138002"),
        ("SignName", "msghub"),
        ("TemplateCode", "SMS_1"),
        ("OutId", "900"),
    ];
    aliyun(&c, &base, &send).await;
    let r = report(&c, &base, "channel=sms").await;
    assert_eq!(
        (r["posted_items"].as_u64(), r["pending"].as_u64()),
        (Some(0), Some(0))
    );

    let cfg = json!({"channel": "sms", "report_url": format!("{rx_base}/sms/report"),
                     "delay_ms": 0, "batch_max": 2, "batch_ms": 20, "retry_delays_ms": [5]});
    let (s, v) = configure(&c, &base, cfg).await;
    assert_eq!(s, 200, "{v}");
    let biz_id = aliyun(&c, &base, &send).await;
    let batch = [
        ("Action", "SendBatchSms"),
        ("PhoneNumberJson", r#"["13900139000"]"#),
        ("SignNameJson", r#"["msghub"]"#),
        ("TemplateCode", "SMS_1"),
        ("OutId", "901"),
    ];
    let batch_biz_id = aliyun(&c, &base, &batch).await;

    let r = settle(&c, &base, "channel=sms", |r| r["posted_items"] == 4).await;
    assert_eq!(
        r["failed_posts"], 1,
        "the first POST got a 500 and was retried"
    );
    let requests = rx.requests();
    for req in &requests {
        assert_eq!(req.path, "/sms/report");
        assert_eq!(req.authorization, None);
        assert_eq!(req.content_type.as_deref(), Some("application/json"));
        assert!(req.body.as_array().unwrap().len() <= 2);
    }
    assert_eq!(requests.iter().filter(|r| !r.ok).count(), 1);
    let items = rx.items();
    assert_eq!(items.len(), 4);
    let phones: BTreeSet<&str> = items
        .iter()
        .map(|i| i["phone_number"].as_str().unwrap())
        .collect();
    assert_eq!(
        phones,
        BTreeSet::from([
            "13800138000",
            "+8613800138001",
            "13800138002",
            "13900139000"
        ])
    );
    for item in &items {
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 9, "{item}");
        assert_eq!(item["success"], true);
        assert_eq!(item["err_code"], "DELIVERED");
        assert_eq!(item["err_msg"], "用户接收成功");
        assert_eq!(item["sms_size"], "1");
        for t in ["send_time", "report_time"] {
            let s = item[t].as_str().unwrap();
            assert!(
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok(),
                "{s}"
            );
        }
        let expected = if item["out_id"] == "900" {
            &biz_id
        } else {
            &batch_biz_id
        };
        assert_eq!(item["biz_id"], expected.as_str());
    }
    let one = report(&c, &base, "channel=sms&msgid=900").await;
    assert_eq!(
        strings(&one["delivered"]),
        ["+8613800138001", "13800138000", "13800138002"],
        "sorted, as the numbers were sent"
    );
    assert!(one["clicked"].as_array().unwrap().is_empty());

    // Failures carry UNDELIV.
    let cfg = json!({"channel": "sms", "report_url": format!("{rx_base}/sms/report"),
                     "delivered_ratio": 0.0, "failed_ratio": 1.0, "delay_ms": 0, "batch_ms": 5});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    let send = [
        ("Action", "SendSms"),
        ("PhoneNumbers", "13700137000"),
        ("SignName", "msghub"),
        ("TemplateCode", "SMS_1"),
        ("OutId", "902"),
    ];
    aliyun(&c, &base, &send).await;
    settle(&c, &base, "channel=sms", |r| r["posted_items"] == 5).await;
    let last = rx.items().pop().unwrap();
    assert_eq!(
        (
            &last["success"],
            &last["err_code"],
            &last["err_msg"],
            &last["out_id"]
        ),
        (
            &json!(false),
            &json!("UNDELIV"),
            &json!("用户接收失败"),
            &json!("902")
        )
    );
    let one = report(&c, &base, "channel=sms&msgid=902").await;
    assert_eq!(strings(&one["failed"]), ["13700137000"]);
    sim.stop().await;
}

#[actix_web::test]
async fn the_control_api_validates_reports_and_resets_receipts() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();

    let (s, v) = configure(&c, &base, json!({"channel": "app", "delay": 5})).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `delay`"),
        "{v}"
    );
    let (s, v) = configure(
        &c,
        &base,
        json!({"channel": "sms", "delivered_ratio": 0.8, "failed_ratio": 0.3}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("must not exceed 1"),
        "{v}"
    );
    let (s, _) = configure(&c, &base, json!({"channel": "email"})).await;
    assert_eq!(s, 400);
    let r = c
        .get(format!("{base}/sim/receipts?channel=webhook"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let defaults = json!({
        "enabled": true, "delivered_ratio": 1.0, "failed_ratio": 0.0, "clicked_ratio": 0.0,
        "delay_ms": 50, "click_delay_ms": 50, "batch_max": 100, "batch_ms": 100,
        "retry_delays_ms": [1000, 5000, 10000], "report_url": null, "wechat_mode": "plain"
    });
    let all = report(&c, &base, "").await;
    for channel in ["app", "sms", "tencent_sms", "wechatoa", "wechatmp"] {
        assert_eq!(all[channel]["config"], defaults, "{channel}");
    }
    // The encryption mode is the WeChat account's alone.
    let (s, v) = configure(&c, &base, json!({"channel": "sms", "wechat_mode": "safe"})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = configure(
        &c,
        &base,
        json!({"channel": "wechatoa", "wechat_mode": "secret"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // The mini-program is the same WeChat app: it takes a push URL and a mode too.
    let (s, v) = configure(
        &c,
        &base,
        json!({"channel": "miniprogram", "wechat_mode": "compatible",
               "report_url": "http://127.0.0.1:1/mp"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["channel"].as_str(),
            v["config"]["wechat_mode"].as_str(),
            v["config"]["report_url"].as_str()
        ),
        (
            Some("wechatmp"),
            Some("compatible"),
            Some("http://127.0.0.1:1/mp")
        )
    );
    let mp = report(&c, &base, "channel=wechatmp").await;
    assert_eq!(mp["config"]["wechat_mode"], "compatible");
    for key in [
        "posted_batches",
        "posted_items",
        "failed_posts",
        "dropped_items",
        "pending",
    ] {
        assert_eq!(all["app"][key], 0, "{key}");
    }

    let (s, _) = configure(
        &c,
        &base,
        json!({"channel": "sms", "report_url": "http://127.0.0.1:1/r", "enabled": false}),
    )
    .await;
    assert_eq!(s, 200);
    let cb = json!({"url": "http://example.com/r", "params": {"msgid": "1"}, "type": 7});
    push(&c, &base, &["a"], Some(cb)).await;
    assert_eq!(report(&c, &base, "channel=app").await["dropped_items"], 1);

    let r = c.post(format!("{base}/sim/reset")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let all = report(&c, &base, "").await;
    assert_eq!(
        all["sms"]["config"], defaults,
        "reset restores the defaults"
    );
    assert_eq!(
        all["wechatmp"]["config"], defaults,
        "the mini-program's too"
    );
    assert_eq!(all["app"]["dropped_items"], 0, "reset clears the counters");

    // In-process API: the same validation.
    assert!(
        sim.state
            .set_receipts(
                "app",
                msghub_sim::ReceiptConfig {
                    batch_max: 0,
                    ..Default::default()
                }
            )
            .is_err()
    );
    assert!(sim.state.receipts("email", None).is_none());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_receipts_arrive_in_full_batches() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let (rx_base, rx) = receiver(0).await;
    let cfg = json!({"channel": "app", "delay_ms": 0, "batch_max": 1000, "batch_ms": 50});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    let pushes = 20;
    for p in 0..pushes {
        let ids: Vec<String> = (0..1000).map(|k| format!("p{p}-{k}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let cb =
            json!({"url": format!("{rx_base}/r"), "params": {"msgid": p.to_string()}, "type": 7});
        push(&c, &base, &refs, Some(cb)).await;
    }
    let r = settle(&c, &base, "channel=app", |r| {
        r["posted_items"] == pushes * 1000
    })
    .await;
    assert_eq!(r["dropped_items"], 0);
    assert!(
        rx.requests()
            .iter()
            .all(|q| q.body.as_array().unwrap().len() <= 1000)
    );
    assert_eq!(
        strings(&report(&c, &base, "channel=app&msgid=7").await["delivered"]).len(),
        1000
    );
    sim.stop().await;
}

#[actix_web::test]
async fn tencent_statuses_name_each_number_by_its_serial() {
    let sim = common::sim(|c| c.receipt_seed = Some(7)).await;
    let c = common::client();
    let base = sim.http_url();
    let (rx_base, rx) = receiver(0).await;
    let cfg = json!({"channel": "tencent", "report_url": format!("{rx_base}/tencent"),
                     "delivered_ratio": 0.5, "failed_ratio": 0.5, "delay_ms": 0, "batch_ms": 10});
    let (s, v) = configure(&c, &base, cfg).await;
    assert_eq!(
        (s, v["channel"].as_str()),
        (200, Some("tencent_sms")),
        "{v}"
    );

    let phones: Vec<String> = (0..40).map(|i| format!("+86139000000{i:02}")).collect();
    let body = json!({"PhoneNumberSet": phones, "SmsSdkAppId": "1400000001", "TemplateId": "1110",
                      "SignName": "msghub", "SessionContext": "903"});
    let (status, v) = common::TencentCall::default()
        .send(&c, &base, &body.to_string())
        .await;
    assert_eq!(status, 200, "{v}");
    let serials: BTreeMap<String, String> = v["Response"]["SendStatusSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["SerialNo"].as_str().unwrap().to_string(),
                s["PhoneNumber"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(serials.len(), 40);
    let intl = json!({"PhoneNumberSet": ["+14155550100"], "SmsSdkAppId": "1400000001",
                      "TemplateId": "1110", "SessionContext": "904"});
    common::TencentCall::default()
        .send(&c, &base, &intl.to_string())
        .await;

    settle(&c, &base, "channel=tencent_sms", |r| {
        r["posted_items"] == 41
    })
    .await;
    let items = rx.items();
    let (mut delivered, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for item in &items {
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // The documented seven fields (their wire order is checked where they are written).
        assert_eq!(
            keys,
            [
                "description",
                "errmsg",
                "mobile",
                "nationcode",
                "report_status",
                "sid",
                "user_receive_time"
            ],
            "{item}"
        );
        let t = item["user_receive_time"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").is_ok(),
            "{t}"
        );
        let e164 = format!(
            "+{}{}",
            item["nationcode"].as_str().unwrap(),
            item["mobile"].as_str().unwrap()
        );
        if item["nationcode"] == "1" {
            assert_eq!(e164, "+14155550100");
            continue;
        }
        assert_eq!(item["nationcode"], "86");
        let sid = item["sid"].as_str().unwrap();
        assert_eq!(serials.get(sid), Some(&e164), "{item}");
        if item["report_status"] == "SUCCESS" {
            assert_eq!(item["errmsg"], "DELIVRD");
            delivered.insert(e164);
        } else {
            assert_eq!(
                (&item["report_status"], &item["errmsg"]),
                (&json!("FAIL"), &json!("UNDELIV"))
            );
            failed.insert(e164);
        }
    }
    assert_eq!(delivered.len() + failed.len(), 40);
    assert!(!delivered.is_empty() && !failed.is_empty(), "both drawn");
    let one = report(&c, &base, "channel=tencent_sms&msgid=903").await;
    assert_eq!(
        strings(&one["delivered"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        delivered
    );
    assert_eq!(
        strings(&one["failed"]).into_iter().collect::<BTreeSet<_>>(),
        failed
    );
    sim.stop().await;
}

/// The text of one XML element of a flat WeChat event (CDATA or not).
fn xml_field(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = xml[start..].find(&close).unwrap() + start;
    let text = &xml[start..end];
    text.strip_prefix("<![CDATA[")
        .and_then(|t| t.strip_suffix("]]>"))
        .unwrap_or(text)
        .to_string()
}

#[actix_web::test]
async fn wechat_events_are_pushed_one_per_post_and_signed() {
    use sha1::Digest;
    let sim = common::sim(|c| c.receipt_seed = Some(11)).await;
    let c = common::client();
    let base = sim.http_url();
    let (rx_base, rx) = receiver(1).await;
    let cfg = json!({"channel": "wechat", "report_url": format!("{rx_base}/oa?x=1"),
                     "delivered_ratio": 0.5, "failed_ratio": 0.5, "delay_ms": 0, "batch_ms": 5,
                     "retry_delays_ms": [5]});
    let (s, v) = configure(&c, &base, cfg).await;
    assert_eq!((s, v["channel"].as_str()), (200, Some("wechatoa")), "{v}");
    let token: Value = c
        .post(format!("{base}/cgi-bin/stable_token"))
        .json(
            &json!({"grant_type": "client_credential", "appid": "wx5151000000000001",
                      "secret": "sim-wechat-secret"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let mut msgids = BTreeMap::new();
    for i in 0..20 {
        let openid = format!("oUser{i:07}");
        let v: Value = c
            .post(format!("{base}/cgi-bin/message/template/send?access_token={token}"))
            .json(&json!({"touser": openid, "template_id": "T", "client_msg_id": format!("msghub-905-{i}"),
                          "data": {"a": {"value": "b"}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        msgids.insert(v["msgid"].as_u64().unwrap().to_string(), openid);
    }
    settle(&c, &base, "channel=wechatoa", |r| r["posted_items"] == 20).await;
    let requests: Vec<Seen> = rx.requests();
    assert_eq!(
        requests.iter().filter(|r| !r.ok).count(),
        1,
        "one refused, retried"
    );
    let (mut delivered, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for r in requests.iter().filter(|r| r.ok) {
        assert_eq!(r.path, "/oa");
        assert_eq!(r.content_type.as_deref(), Some("text/xml"));
        let q: BTreeMap<String, String> = url::form_urlencoded::parse(r.query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(q["x"], "1", "the URL's own query is kept");
        let mut parts = [
            "simWechatToken",
            q["timestamp"].as_str(),
            q["nonce"].as_str(),
        ];
        parts.sort_unstable();
        assert_eq!(
            q["signature"],
            hex::encode(sha1::Sha1::digest(parts.concat().as_bytes()))
        );
        let xml = r.body.as_str().unwrap();
        assert_eq!(xml_field(xml, "ToUserName"), "gh_5151000000001");
        assert_eq!(xml_field(xml, "MsgType"), "event");
        assert_eq!(xml_field(xml, "Event"), "TEMPLATESENDJOBFINISH");
        let openid = xml_field(xml, "FromUserName");
        let msgid = xml_field(xml, "MsgID");
        assert_eq!(msgids.get(&msgid), Some(&openid), "{xml}");
        assert!(xml_field(xml, "CreateTime").parse::<i64>().is_ok());
        let even = msgid.parse::<u64>().unwrap() % 2 == 0;
        match xml_field(xml, "Status").as_str() {
            "success" => assert!(delivered.insert(openid)),
            "failed:user block" if even => assert!(failed.insert(openid)),
            "failed: system failed" if !even => assert!(failed.insert(openid)),
            other => assert_eq!(other, "a known status", "{xml}"),
        }
    }
    assert_eq!(delivered.len() + failed.len(), 20);
    let one = report(&c, &base, "channel=wechatoa&msgid=905").await;
    assert_eq!(
        strings(&one["delivered"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        delivered
    );
    assert_eq!(
        strings(&one["failed"]).into_iter().collect::<BTreeSet<_>>(),
        failed
    );
    sim.stop().await;
}

/// A stable access token of the simulated WeChat app.
async fn wechat_token(c: &reqwest::Client, sim: &str) -> String {
    let v: Value = c
        .post(format!("{sim}/cgi-bin/stable_token"))
        .json(
            &json!({"grant_type": "client_credential", "appid": "wx5151000000000001",
                      "secret": "sim-wechat-secret"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// A mini-program subscribe send to `openid`; returns the answer.
async fn subscribe(c: &reqwest::Client, sim: &str, token: &str, openid: &str) -> Value {
    c.post(format!(
        "{sim}/cgi-bin/message/subscribe/send?access_token={token}"
    ))
    .json(
        &json!({"touser": openid, "template_id": "SUB_1", "page": "pages/index",
                  "data": {"thing1": {"value": "shipped"}}}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// The query of a WeChat push, checked to be signed with the simulator's Token.
fn signed_query(r: &Seen) -> BTreeMap<String, String> {
    use sha1::Digest;
    let q: BTreeMap<String, String> = url::form_urlencoded::parse(r.query.as_bytes())
        .into_owned()
        .collect();
    let mut parts = [
        "simWechatToken",
        q["timestamp"].as_str(),
        q["nonce"].as_str(),
    ];
    parts.sort_unstable();
    assert_eq!(
        q["signature"],
        hex::encode(sha1::Sha1::digest(parts.concat().as_bytes()))
    );
    q
}

#[actix_web::test]
async fn miniprogram_sent_events_report_each_accepted_subscribe_send() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let token = wechat_token(&c, &base).await;
    let (rx_base, rx) = receiver(0).await;

    // No report_url yet: nothing is sent.
    assert_eq!(
        subscribe(&c, &base, &token, "oMini0000009").await["errcode"],
        0
    );
    let r = report(&c, &base, "channel=wechatmp").await;
    assert_eq!(
        (r["posted_items"].as_u64(), r["pending"].as_u64()),
        (Some(0), Some(0))
    );

    let cfg = json!({"channel": "miniprogram", "report_url": format!("{rx_base}/mp"),
                     "delay_ms": 0, "batch_ms": 5});
    let (s, v) = configure(&c, &base, cfg).await;
    assert_eq!((s, v["channel"].as_str()), (200, Some("wechatmp")), "{v}");
    let mut msgids = BTreeMap::new();
    for i in 1..=3 {
        let openid = format!("oMini000000{i}");
        let v = subscribe(&c, &base, &token, &openid).await;
        assert_eq!(v["errcode"], 0, "{v}");
        msgids.insert(v["msgid"].as_u64().unwrap().to_string(), openid);
    }
    // No subscription left: refused, and no event.
    sim.state.grant_subscriptions("oMini0000004", "SUB_1", 0);
    assert_eq!(
        subscribe(&c, &base, &token, "oMini0000004").await["errcode"],
        43101
    );

    let r = settle(&c, &base, "channel=wechatmp", |r| r["posted_items"] == 3).await;
    assert_eq!(r["posted_batches"], 3, "one event per POST");
    assert_eq!(
        strings(&r["delivered"]),
        ["oMini0000001", "oMini0000002", "oMini0000003"]
    );
    assert!(strings(&r["failed"]).is_empty());
    let requests = rx.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.path, "/mp");
        assert_eq!(r.content_type.as_deref(), Some("text/xml"));
        let q = signed_query(r);
        assert!(!q.contains_key("encrypt_type"), "plain mode");
        let xml = r.body.as_str().unwrap();
        assert_eq!(xml_field(xml, "ToUserName"), "gh_5151000000001");
        assert_eq!(xml_field(xml, "MsgType"), "event");
        assert_eq!(xml_field(xml, "Event"), "subscribe_msg_sent_event");
        assert!(xml_field(xml, "CreateTime").parse::<i64>().is_ok());
        let list = xml_field(&xml_field(xml, "SubscribeMsgSentEvent"), "List");
        assert_eq!(xml_field(&list, "TemplateId"), "SUB_1");
        assert_eq!(xml_field(&list, "ErrorCode"), "0");
        assert_eq!(xml_field(&list, "ErrorStatus"), "success");
        let msgid = xml_field(&list, "MsgID");
        assert!(msgid.starts_with("18"), "{msgid}");
        assert_eq!(
            msgids.get(&msgid).map(String::as_str),
            Some(xml_field(xml, "FromUserName").as_str()),
            "{xml}"
        );
        assert!(!xml.contains("oMini0000004") && !xml.contains("oMini0000009"));
    }
    // Per msgid: the WeChat msgid in decimal.
    let (msgid, openid) = msgids.iter().next().unwrap();
    let one = report(&c, &base, &format!("channel=wechatmp&msgid={msgid}")).await;
    assert_eq!(strings(&one["delivered"]), [openid.as_str()]);
    // The Official Account's events are apart.
    assert_eq!(
        report(&c, &base, "channel=wechatoa").await["posted_items"],
        0
    );

    // Every send failing: ErrorCode 10005, "system failed".
    let cfg = json!({"channel": "wechatmp", "report_url": format!("{rx_base}/mp"),
                     "delivered_ratio": 0.0, "failed_ratio": 1.0, "delay_ms": 0, "batch_ms": 5});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    let v = subscribe(&c, &base, &token, "oMini0000005").await;
    let msgid = v["msgid"].as_u64().unwrap().to_string();
    let r = settle(&c, &base, "channel=wechatmp", |r| r["posted_items"] == 4).await;
    assert_eq!(strings(&r["failed"]), ["oMini0000005"]);
    let last = rx.requests().pop().unwrap();
    let xml = last.body.as_str().unwrap();
    assert_eq!(xml_field(xml, "FromUserName"), "oMini0000005");
    assert_eq!(xml_field(xml, "MsgID"), msgid);
    assert_eq!(xml_field(xml, "ErrorCode"), "10005");
    assert_eq!(xml_field(xml, "ErrorStatus"), "system failed");
    let one = report(&c, &base, &format!("channel=wechatmp&msgid={msgid}")).await;
    assert_eq!(strings(&one["failed"]), ["oMini0000005"]);
    assert!(strings(&one["delivered"]).is_empty());

    // Reset forgets it all.
    c.post(format!("{base}/sim/reset")).send().await.unwrap();
    let r = report(&c, &base, "channel=wechatmp").await;
    assert_eq!(r["posted_items"], 0);
    assert!(r["config"]["report_url"].is_null());
    sim.stop().await;
}

/// Decrypts a WeChat `Encrypt` envelope with the simulator's EncodingAESKey, as a receiver
/// would by the published scheme: the message and the appid after it.
fn wechat_decrypt(encrypt: &str) -> (String, String) {
    use aes::cipher::block_padding::NoPadding;
    use aes::cipher::{BlockModeDecrypt, KeyIvInit};
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = lenient
        .decode("simWechatEncodingAesKey0123456789abcdefghij=")
        .unwrap();
    assert_eq!(key.len(), 32);
    let mut sealed = base64::engine::general_purpose::STANDARD
        .decode(encrypt)
        .unwrap();
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .unwrap()
        .decrypt_padded::<NoPadding>(&mut sealed)
        .unwrap()
        .to_vec();
    let pad = *plain.last().unwrap() as usize;
    assert!((1..=32).contains(&pad), "PKCS#7 to 32 bytes");
    let plain = &plain[..plain.len() - pad];
    let len = u32::from_be_bytes(plain[16..20].try_into().unwrap()) as usize;
    let xml = String::from_utf8(plain[20..20 + len].to_vec()).unwrap();
    let appid = String::from_utf8(plain[20 + len..].to_vec()).unwrap();
    (xml, appid)
}

#[actix_web::test]
async fn miniprogram_sent_events_in_safe_mode_carry_only_the_envelope() {
    use sha1::Digest;
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let token = wechat_token(&c, &base).await;
    let (rx_base, rx) = receiver(0).await;
    let cfg = json!({"channel": "wechatmp", "report_url": format!("{rx_base}/mp"),
                     "wechat_mode": "safe", "delay_ms": 0, "batch_ms": 5});
    assert_eq!(configure(&c, &base, cfg).await.0, 200);
    let v = subscribe(&c, &base, &token, "oMini0000001").await;
    assert_eq!(v["errcode"], 0, "{v}");
    let msgid = v["msgid"].as_u64().unwrap().to_string();
    settle(&c, &base, "channel=wechatmp", |r| r["posted_items"] == 1).await;

    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let q = signed_query(r);
    assert_eq!(q["encrypt_type"], "aes");
    let body = r.body.as_str().unwrap();
    let encrypt = xml_field(body, "Encrypt");
    assert_eq!(
        body,
        format!(
            "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
        "only the envelope"
    );
    let mut parts = [
        "simWechatToken",
        q["timestamp"].as_str(),
        q["nonce"].as_str(),
        encrypt.as_str(),
    ];
    parts.sort_unstable();
    assert_eq!(
        q["msg_signature"],
        hex::encode(sha1::Sha1::digest(parts.concat().as_bytes()))
    );
    let (xml, appid) = wechat_decrypt(&encrypt);
    assert_eq!(appid, "wx5151000000000001");
    let created = xml_field(&xml, "CreateTime");
    assert_eq!(
        xml,
        format!(
            "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName><FromUserName><![CDATA[oMini0000001]]></FromUserName>\
             <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List>\
             <TemplateId><![CDATA[SUB_1]]></TemplateId><MsgID>{msgid}</MsgID><ErrorCode>0</ErrorCode>\
             <ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>"
        )
    );
    let r = report(&c, &base, &format!("channel=wechatmp&msgid={msgid}")).await;
    assert_eq!(strings(&r["delivered"]), ["oMini0000001"]);
    sim.stop().await;
}
