//! Fallback chains, routing rules and receipts, end to end against the simulator.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, app_msg, spawn_app, spawn_app_with};

fn sms_msg() -> Value {
    json!([{"temp_id": "SMS_1", "temp_para": {"code": "42"}}])
}

fn webhook_msg() -> Value {
    json!([{"event": "notice"}])
}

impl TestApp {
    async fn sim_receipts(&self, channel: &str, msgid: &str) -> Value {
        self.client
            .get(format!(
                "{}/sim/receipts?channel={channel}&msgid={msgid}",
                self.sim.http_url()
            ))
            .send()
            .await
            .expect("sim receipts")
            .json()
            .await
            .expect("json")
    }

    /// Addresses the simulator received on a channel.
    fn received(&self, channel: &str) -> BTreeSet<String> {
        self.sim.state.received(channel).into_keys().collect()
    }

    /// The simulator's receipt report for one message once nothing is pending.
    async fn settled_receipts(&self, channel: &str, msgid: &str) -> Value {
        let started = Instant::now();
        loop {
            let r = self.sim_receipts(channel, msgid).await;
            if r["pending"] == 0 {
                return r;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A `wechatoa` channel on the simulator's account, granted to the test source: its id
    /// and receipt URL.
    pub(crate) async fn wechat_channel(&self, sim: &msghub_sim::SimConfig) -> (i64, String) {
        let ch = self
            .admin_post(
                "/api/channels",
                json!({"type": "wechatoa", "name": "oa sim", "credentials": {
                    "appid": sim.wechat_appid, "secret": sim.wechat_secret,
                    "token": sim.wechat_token, "base_url": self.sim.http_url()}}),
            )
            .await;
        let oa = ch["id"].as_i64().expect("channel id");
        self.grant(oa).await;
        (oa, self.receipt_url(oa).await)
    }

    async fn wait_until(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

/// The addresses of the deliveries (as `/api/messages/{msgid}/deliveries` lists them) in a
/// status.
fn with_status(deliveries: &[Value], status: &str) -> BTreeSet<String> {
    deliveries
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["address"].as_str().expect("address").to_string())
        .collect()
}

fn addresses(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// 10k users on a three-step chain app → webhook → sms. Users whose app receipt arrives get
/// nothing more; the others get the webhook; only those who did not click it get the SMS.
#[actix_web::test]
async fn a_three_step_chain_reaches_exactly_the_users_each_step_did_not() {
    let app = spawn_app().await;
    const N: usize = 10_000;
    // Some users have no app registration (they start on the webhook at once), some no webhook
    // (they skip to SMS), some no phone (the chain ends without reaching them).
    let has_app = |i: usize| !i.is_multiple_of(10);
    let has_webhook = |i: usize| !i.is_multiple_of(7);
    let has_phone = |i: usize| !i.is_multiple_of(11);
    app.add_users((0..N).map(|i| {
        let mut add = json!({"tag": ["chain"]});
        if has_app(i) {
            add["app"] = json!({"all": [format!("reg-{i:05}")]});
        }
        if has_webhook(i) {
            add["webhook"] = json!(format!("wh-{i:05}"));
        }
        if has_phone(i) {
            add["phone"] = json!(format!("1390{i:07}"));
        }
        json!({"userid": format!("u{i:05}"), "add": add})
    }))
    .await;
    // JPush receipts: about half delivered, a tenth reported not delivered, the rest silent.
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "app", "delivered_ratio": 0.5, "failed_ratio": 0.1, "clicked_ratio": 0.2,
               "delay_ms": 20, "batch_max": 200, "batch_ms": 50}),
    )
    .await;
    // The waits are long enough for receipts and clicks to land inside them on a loaded
    // machine; what is checked are user sets, never times.
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 4, "condition": "not_delivered"},
            {"channel": "webhook", "wait_seconds": 12, "condition": "not_clicked"},
            {"channel": "sms"}]}))
        .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["chain"], "rule_id": rule, "msg_app": app_msg(),
                   "msg_webhook": webhook_msg(), "msg_sms": sms_msg()}),
        )
        .await;

    // Step 1: every registration id once.
    let app_users: BTreeSet<String> = set((0..N)
        .filter(|i| has_app(*i))
        .map(|i| format!("reg-{i:05}")));
    app.wait_until("the app step", Duration::from_secs(60), || {
        app.received("app") == app_users
    })
    .await;

    // Step 2 reaches those without an app receipt saying delivered. Click a third of them as
    // their webhooks arrive (through the client-event API), before the step's wait ends.
    let idx = |a: &str| -> usize { a[a.len() - 5..].parse().expect("index") };
    let mut clicked: BTreeSet<usize> = BTreeSet::new();
    let started = Instant::now();
    let delivered_app: BTreeSet<usize> = loop {
        let r = app.sim_receipts("app", &msgid).await;
        let delivered_app: BTreeSet<usize> =
            addresses(&r["delivered"]).iter().map(|a| idx(a)).collect();
        let expected_webhook: BTreeSet<usize> = (0..N)
            .filter(|i| has_webhook(*i) && !delivered_app.contains(i))
            .collect();
        let got: BTreeSet<usize> = app.received("webhook").iter().map(|a| idx(a)).collect();
        let to_click: Vec<usize> = got
            .iter()
            .copied()
            .filter(|i| i % 3 == 0 && !clicked.contains(i))
            .collect();
        for chunk in to_click.chunks(1000) {
            let events: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"msgid": msgid, "userid": format!("u{i:05}"), "type": "clicked", "channel": "webhook"}))
                .collect();
            let (status, body) = app.v1("/v1/events", &json!({"events": events})).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["applied"], json!(chunk.len()), "{body}");
            clicked.extend(chunk);
        }
        if got == expected_webhook && r["pending"] == json!(0) {
            break delivered_app;
        }
        assert!(
            got.is_subset(&expected_webhook),
            "webhook went to users whose app receipt said delivered"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "step 2 incomplete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Step 3: those still not reached and not clicked, with a phone.
    let s = app.wait_done(&msgid, Duration::from_secs(240)).await;
    let expected_sms: BTreeSet<String> = (0..N)
        .filter(|i| !delivered_app.contains(i) && !clicked.contains(i) && has_phone(*i))
        .map(|i| format!("1390{i:07}"))
        .collect();
    let got_sms = app.received("sms");
    let extra: Vec<_> = got_sms.difference(&expected_sms).take(10).collect();
    let missing: Vec<_> = expected_sms.difference(&got_sms).take(10).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "sms: {} unexpected (e.g. {extra:?}), {} missing (e.g. {missing:?})",
        got_sms.difference(&expected_sms).count(),
        expected_sms.difference(&got_sms).count()
    );
    for channel in ["app", "webhook", "sms"] {
        assert!(
            app.sim.state.received(channel).values().all(|n| *n == 1),
            "{channel}: an address got the message twice"
        );
    }
    let steps = s["steps"].as_array().expect("per-step counts");
    assert_eq!(steps.len(), 3, "{s}");
    assert_eq!(steps[0]["target"], json!(app_users.len()));
    assert_eq!(steps[0]["delivered"], json!(delivered_app.len()), "{s}");
    assert_eq!(steps[2]["target"], json!(expected_sms.len()), "{s}");
    assert_eq!(steps[1]["clicked"], json!(clicked.len()), "{s}");
    assert_eq!(app.count_rows("fallback_timers").await, 0);
    // The firings were timed: each against the deadline of the first user it moved on.
    let fired = app
        .metric("msghub_fallback_timer_lateness_seconds_count")
        .await;
    assert!(fired >= 2, "firings not timed: {fired}");
    // Their waits are seconds long: what the firings needed was read ahead of the deadlines.
    let ahead = app
        .metric("msghub_fallback_reads_total{when=\"ahead\"}")
        .await;
    assert!(ahead >= 1, "nothing read ahead");
}

/// A permanent provider failure on a step moves the user on without waiting for the timer.
/// The webhook is called once per user, so its failures are per user.
#[actix_web::test]
async fn a_permanent_failure_advances_the_user_at_once() {
    let app = spawn_app().await;
    app.add_users((0..20).map(|i| {
        json!({"userid": format!("p{i:02}"), "add": {"webhook": format!("pwh-{i:02}"),
               "phone": format!("1380000{i:04}")}})
    }))
    .await;
    let failing: Vec<String> = (0..5).map(|i| format!("pwh-{i:02}")).collect();
    app.sim_post(
        "/sim/faults",
        json!({"channel": "webhook", "perm_addresses": failing}),
    )
    .await;
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "webhook", "wait_seconds": 3600, "condition": "not_clicked"},
            {"channel": "sms"}]}))
        .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": (0..20).map(|i| format!("p{i:02}")).collect::<Vec<_>>(),
                   "rule_id": rule, "msg_webhook": webhook_msg(), "msg_sms": sms_msg()}),
        )
        .await;
    let expected: BTreeSet<String> = (0..5).map(|i| format!("1380000{i:04}")).collect();
    app.wait_until("the failed users' SMS", Duration::from_secs(30), || {
        app.received("sms").len() >= expected.len()
    })
    .await;
    // The others were delivered but not clicked: they wait for their (hour-long) timer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.received("sms"), expected);
    let s = app.status(&msgid).await;
    assert_eq!(
        s["state"], "waiting",
        "the others still wait for their timer: {s}"
    );
    assert_eq!(app.count_rows("fallback_timers").await, 1);
    assert_eq!(s["steps"][0]["failed"], json!(5), "{s}");
    assert_eq!(s["steps"][1]["target"], json!(5), "{s}");
}

/// Routing sends `amount < 200` to one channel and the rest to another.
#[actix_web::test]
async fn routing_chooses_the_channel_from_the_message_parameters() {
    let app = spawn_app().await;
    app.add_users(
        [json!({"userid": "r1", "add": {"app": {"all": ["rreg-1"]}, "phone": "13700000001"}})]
            .into_iter(),
    )
    .await;
    let rule = app
        .create_rule(json!({"type": "routing",
            "routes": [{"when": [{"param": "amount", "op": "lt", "value": 200}], "channels": ["app"]}],
            "default": ["sms"]}))
        .await;
    for (amount, channel) in [(150, "app"), (200, "sms"), (5000, "sms"), (3, "app")] {
        let msgid = app
            .send_ok(
                "/v1/sent",
                json!({"aud_userid": ["r1"], "rule_id": rule, "msg_app": app_msg(), "msg_sms": sms_msg(),
                       "option": {"params": {"amount": amount}}}),
            )
            .await;
        let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
        let channels: Vec<&str> = s["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .filter_map(|c| c["channel_type"].as_str())
            .collect();
        assert_eq!(channels, [channel], "amount {amount}: {s}");
    }
    assert_eq!(app.sim.state.count("app", "rreg-1"), 2);
    assert_eq!(app.sim.state.count("sms", "13700000001"), 2);

    // Invalid uses of rules are refused with 1015026 and a reason.
    for (body, reason) in [
        (
            json!({"aud_userid": ["r1"], "rule_id": 999, "msg_app": app_msg()}),
            "does not exist",
        ),
        (
            json!({"aud_userid": ["r1"], "rule_id": rule, "msg_app": app_msg(), "option": {"params": {"amount": 900}}}),
            "no msg_sms",
        ),
    ] {
        let (status, r) = app.v1("/v1/sent", &body).await;
        assert_eq!(status, 400, "{r}");
        assert_eq!(r["code"], 1015026, "{r}");
        assert!(
            r["message"].as_str().unwrap_or_default().contains(reason),
            "{r}"
        );
    }
    // Rules themselves are validated on save.
    let resp = app
        .client
        .post(format!("{}/api/rules", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"name": "bad", "rule": {"type": "fallback", "steps": [{"channel": "app"}]}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("steps"),
        "{body}"
    );
}

/// Provider receipts: JPush callbacks need the app's credentials and the URL token; receipts
/// naming no delivery of that channel are counted, never applied.
#[actix_web::test]
async fn receipts_are_verified_and_foreign_ones_rejected() {
    let app = spawn_app_with(|_| {}).await;
    app.add_users(
        [json!({"userid": "k1", "add": {"app": {"all": ["kreg-1"]}, "phone": "13600000001"}})]
            .into_iter(),
    )
    .await;
    app.sim_post("/sim/receipts", json!({"channel": "app", "enabled": false}))
        .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["k1"], "msg_app": app_msg(), "msg_sms": sms_msg()}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    let url = app.receipt_url(app.channel("app")).await;
    let sim = msghub_sim::SimConfig::default();
    let item = |addr: &str, t: i64| json!({"msg_id": "1", "registration_id": addr, "platform": "android", "type": t, "time": 1, "params": {"msgid": msgid}});
    let post = |url: String, auth: Option<(String, String)>, body: Value| {
        let client = app.client.clone();
        async move {
            let mut r = client.post(url).json(&body);
            if let Some((u, p)) = auth {
                r = r.basic_auth(u, Some(p));
            }
            let resp = r.send().await.expect("post");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let creds = Some((sim.jpush_app_key.clone(), sim.jpush_master_secret.clone()));
    // Wrong credentials, wrong token: refused, nothing applied.
    let (st, _) = post(
        url.clone(),
        Some(("x".into(), "y".into())),
        json!([item("kreg-1", 2)]),
    )
    .await;
    assert_eq!(st, 401);
    let flipped = if url.ends_with('0') { '1' } else { '0' };
    let bad_token = format!("{}{flipped}", &url[..url.len() - 1]);
    let (st, _) = post(bad_token, creds.clone(), json!([item("kreg-1", 2)])).await;
    assert_eq!(st, 404);
    // A foreign address, an unknown message and a malformed item are counted.
    let foreign = json!({"msg_id": "1", "registration_id": "kreg-1", "type": 1, "params": {"msgid": "12345"}});
    let (st, r) = post(
        url.clone(),
        creds.clone(),
        json!([item("someone-else", 1), foreign, {"type": 1}, item("kreg-1", 1), item("kreg-1", 2), item("kreg-1", 1)]),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        r,
        json!({"applied": 2, "duplicate": 1, "unknown": 2, "invalid": 1})
    );
    let s = app.status(&msgid).await;
    let app_counts = s["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel_type"] == "app")
        .cloned()
        .expect("app counts");
    assert_eq!(
        (
            app_counts["delivered"].clone(),
            app_counts["clicked"].clone()
        ),
        (json!(1), json!(1))
    );
    // The sms channel's URL does not accept the app's receipts (no match: unknown).
    let sms_url = app.receipt_url(app.channel("sms")).await;
    let report = json!([{"phone_number": "13600000001", "success": true, "err_code": "DELIVERED", "out_id": msgid, "biz_id": "b"},
                        {"phone_number": "13600000009", "success": true, "err_code": "DELIVERED", "out_id": msgid, "biz_id": "b"}]);
    let (st, r) = post(sms_url.clone(), None, report).await;
    assert_eq!((st, r["code"].clone()), (200, json!(0)), "{r}");
    let s = app.status(&msgid).await;
    let sms_counts = s["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel_type"] == "sms")
        .cloned()
        .expect("sms counts");
    assert_eq!(sms_counts["delivered"], json!(1), "{s}");
    // Aliyun's console probe.
    let probe: Value = app
        .client
        .get(&sms_url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(probe["code"], json!(0));
}

/// An `sms` channel on Tencent Cloud SMS: the simulator's status callbacks name deliveries by
/// serial alone, and the hub applies exactly the ones the simulator drew — even when a callback
/// overtakes the commit of the send it reports (no delay in the simulator). Statuses for
/// unknown serials, or for another number, are counted and never applied.
#[actix_web::test]
async fn tencent_sms_status_callbacks_apply_by_serial() {
    let app = spawn_app().await;
    let sim = msghub_sim::SimConfig::default();
    let secret = sim.tencent_secret_key.clone();
    let ch = app
        .admin_post(
            "/api/channels",
            json!({"type": "sms", "name": "tencent sim", "credentials": {
                "provider": "tencent", "secret_id": sim.tencent_secret_id, "secret_key": secret,
                "sdk_app_id": sim.tencent_sdk_app_id, "sign_name": "msghub",
                "base_url": app.sim.http_url()}}),
        )
        .await;
    let tencent = ch["id"].as_i64().expect("channel id");
    // The source sends SMS through Tencent only.
    let resp = app
        .client
        .delete(format!(
            "{}/api/sources/{}/grants/{}",
            app.address,
            app.source_id,
            app.channel("sms")
        ))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 204);
    app.grant(tencent).await;
    let shown = app
        .admin_get(&format!("/api/channels/{tencent}"))
        .await
        .text()
        .await
        .expect("text");
    assert!(
        !shown.contains(&secret),
        "the secret key is masked: {shown}"
    );
    let shown: Value = serde_json::from_str(&shown).expect("json");
    let url = shown["receipt_url"]
        .as_str()
        .expect("receipt url")
        .to_string();
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "tencent_sms", "report_url": url, "delivered_ratio": 0.6,
               "failed_ratio": 0.3, "delay_ms": 0, "batch_max": 50, "batch_ms": 20}),
    )
    .await;

    const N: usize = 300;
    app.add_users((0..N).map(
        |i| json!({"userid": format!("t{i:03}"), "add": {"phone": format!("1370000{i:04}")}}),
    ))
    .await;
    let users: Vec<String> = (0..N).map(|i| format!("t{i:03}")).collect();
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": users, "msg_sms": [{"temp_id": "1110", "temp_para": ["42"]}]}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.total("tencent_sms"), N as u64);
    assert_eq!(app.sim.state.total("sms"), 0);
    // Every status the simulator drew was acknowledged by the hub.
    let report = app.settled_receipts("tencent_sms", &msgid).await;
    assert_eq!(report["dropped_items"], 0, "{report}");
    let national = |v: &Value| -> BTreeSet<String> {
        addresses(v)
            .into_iter()
            .map(|a| a.trim_start_matches("+86").to_string())
            .collect()
    };
    let (delivered, failed) = (national(&report["delivered"]), national(&report["failed"]));
    assert!(
        delivered.len() > N / 3 && failed.len() > N / 10 && delivered.len() + failed.len() < N,
        "the draw: {} delivered, {} failed",
        delivered.len(),
        failed.len()
    );
    let deliveries = app.deliveries(&msgid).await;
    let with_status = |status: &str| with_status(&deliveries, status);
    assert_eq!(with_status("delivered"), delivered);
    assert_eq!(with_status("undelivered"), failed);
    assert_eq!(
        with_status("submitted").len(),
        N - delivered.len() - failed.len()
    );
    for r in &deliveries {
        assert!(
            r["provider_id"]
                .as_str()
                .is_some_and(|p| p.starts_with("2433:")),
            "{r}"
        );
    }

    // Foreign statuses: an unknown serial, and a known serial for another number.
    let row = &deliveries[0];
    let serial = row["provider_id"].as_str().expect("serial");
    let unknown_before = app
        .metric(r#"msghub_receipts_total{channel_type="sms",result="unknown"}"#)
        .await;
    let status = |sid: &str, mobile: &str| {
        json!({"user_receive_time": "2026-01-02 03:04:05", "nationcode": "86", "mobile": mobile,
               "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "ok", "sid": sid})
    };
    let resp = app
        .client
        .post(&url)
        .json(&json!([status("2433:1", "13700000001"), status(serial, "13999999999"), {"sid": serial}]))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({"result": 0, "errmsg": "OK"}));
    assert_eq!(
        app.metric(r#"msghub_receipts_total{channel_type="sms",result="unknown"}"#)
            .await,
        unknown_before + 2
    );
    let again: Value = app
        .admin_get(&format!(
            "/api/messages/{msgid}/deliveries?userid={}",
            row["userid"].as_str().expect("userid")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["deliveries"][0]["status"], row["status"]);
}

/// `url` signed as WeChat signs its pushes, at `timestamp`.
fn wechat_signed_at(url: &str, token: &str, timestamp: i64, extra: &str) -> String {
    use sha1::Digest;
    let (timestamp, nonce) = (timestamp.to_string(), "8271");
    let mut parts = [token, timestamp.as_str(), nonce];
    parts.sort_unstable();
    let signature = hex::encode(sha1::Sha1::digest(parts.concat().as_bytes()));
    format!("{url}?signature={signature}&timestamp={timestamp}&nonce={nonce}{extra}")
}

pub(crate) fn wechat_signed(url: &str, token: &str, extra: &str) -> String {
    wechat_signed_at(url, token, chrono::Utc::now().timestamp(), extra)
}

/// A `wechatoa` channel: the URL check WeChat makes when the URL is saved, template sends
/// through the simulator (a token that expires between two messages is fetched again), and
/// `TEMPLATESENDJOBFINISH` events — plaintext on a channel without a key, then safe
/// (encrypted) and compatible once the channel has its `encoding_aes_key` — applied by MsgID to
/// exactly the deliveries the simulator drew. Unsigned, stale and forged pushes are refused;
/// other events change nothing; an unknown MsgID is answered 503 so WeChat pushes it again; a
/// channel with a key trusts no plaintext.
#[actix_web::test]
async fn wechat_template_events_apply_by_msgid() {
    let app = spawn_app().await;
    let sim = msghub_sim::SimConfig::default();
    let (oa, url) = app.wechat_channel(&sim).await;

    // The server URL check: echostr back when signed with the token, recently.
    let get = |u: String| {
        let client = app.client.clone();
        async move {
            let r = client.get(u).send().await.expect("get");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(
        get(wechat_signed(&url, &sim.wechat_token, "&echostr=4711")).await,
        (200, "4711".to_string())
    );
    assert_eq!(
        get(wechat_signed(&url, "otherToken", "&echostr=4711"))
            .await
            .0,
        401
    );
    let stale = chrono::Utc::now().timestamp() - 600;
    assert_eq!(
        get(wechat_signed_at(
            &url,
            &sim.wechat_token,
            stale,
            "&echostr=4711"
        ))
        .await
        .0,
        401
    );

    const N: usize = 240;
    app.add_users((0..N).map(
        |i| json!({"userid": format!("w{i:03}"), "add": {"wechatoa": format!("oUser{i:07}")}}),
    ))
    .await;
    let msg = json!([{"type": 0, "template_id": "TPL_order", "url": "https://shop.test/o/1",
                      "data": {"thing1": "Order shipped", "time2": {"value": "2026-11-30 10:00"}}}]);
    let third = N / 3;
    let event = |msgid: &str, openid: &str| {
        format!(
            "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
             <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID><Status><![CDATA[success]]></Status></xml>"
        )
    };
    let post = |u: String, body: String| {
        let client = app.client.clone();
        async move {
            let r = client.post(u).body(body).send().await.expect("post");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let metric = |result: &'static str| {
        let app = &app;
        async move {
            app.metric(&format!(
                r#"msghub_receipts_total{{channel_type="wechatoa",result="{result}"}}"#
            ))
            .await
        }
    };
    let signed = || wechat_signed(&url, &sim.wechat_token, "");
    let mut msgids = Vec::new();
    let mut blocked = BTreeSet::new();
    for (part, mode) in ["plain", "safe", "compatible"].into_iter().enumerate() {
        if mode == "safe" {
            // The account turns encryption on: its key goes into the channel (the secrets
            // sent back masked keep their stored values), and applies to the next push.
            let resp = app
                .client
                .patch(format!("{}/api/channels/{oa}", app.address))
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .json(
                    &json!({"credentials": {"appid": sim.wechat_appid, "secret": "******",
                    "token": "******", "encoding_aes_key": sim.wechat_encoding_aes_key,
                    "base_url": app.sim.http_url()}}),
                )
                .send()
                .await
                .expect("patch");
            assert_eq!(resp.status().as_u16(), 200);
            // The cached token expires: the next sends are refused once (42001), fetch a new
            // token and go through.
            app.sim.state.expire_wechat_tokens();
        }
        app.sim_post(
            "/sim/receipts",
            json!({"channel": "wechatoa", "report_url": url, "delivered_ratio": 0.6,
                   "failed_ratio": 0.3, "delay_ms": 0, "batch_ms": 10, "wechat_mode": mode}),
        )
        .await;
        let users: Vec<String> = (part * third..(part + 1) * third)
            .map(|i| format!("w{i:03}"))
            .collect();
        let msgid = app
            .send_ok(
                "/v1/sent",
                json!({"aud_userid": users, "msg_wechatoa": msg}),
            )
            .await;
        app.wait_done(&msgid, Duration::from_secs(30)).await;
        let report = app.settled_receipts("wechatoa", &msgid).await;
        assert_eq!(report["dropped_items"], 0, "{mode}: {report}");
        let (delivered, failed) = (
            addresses(&report["delivered"]),
            addresses(&report["failed"]),
        );
        assert!(
            delivered.len() > third / 4
                && !failed.is_empty()
                && delivered.len() + failed.len() < third,
            "the draw for {mode}: {report}"
        );
        let rows = app.deliveries(&msgid).await;
        assert_eq!(rows.len(), third);
        let with_status = |status: &str| with_status(&rows, status);
        assert_eq!(with_status("delivered"), delivered, "{mode}");
        assert_eq!(with_status("undelivered"), failed, "{mode}");
        assert!(
            rows.iter().all(|r| r["provider_id"].is_string()),
            "{rows:?}"
        );
        // The simulator reports even MsgIDs' failures as `failed:user block`: those users
        // are suppressed.
        blocked.extend(rows.iter().filter_map(|r| {
            let even = r["provider_id"].as_str()?.parse::<u64>().ok()? % 2 == 0;
            (r["status"] == "undelivered" && even)
                .then(|| r["address"].as_str().map(str::to_string))?
        }));
        msgids.push(msgid);

        if mode == "plain" {
            // Unsigned: refused. Another event: answered, nothing applied. A known MsgID for
            // another openid: unknown. An unknown MsgID: 503, for WeChat to bring again.
            assert_eq!(post(url.clone(), event("1", "oUser0000001")).await.0, 401);
            let (unknown, retry) = (metric("unknown").await, metric("retry").await);
            let known = rows[0]["provider_id"].as_str().expect("msgid").to_string();
            let other_event = "<xml><FromUserName><![CDATA[oUser0000001]]></FromUserName>\
                               <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event></xml>";
            assert_eq!(
                post(signed(), other_event.to_string()).await,
                (200, "success".to_string())
            );
            // A subscription notice's result (a mini-program event, naming a known MsgID) is
            // not an Official Account's template result: answered, nothing applied.
            let sent_event = format!(
                "<xml><FromUserName><![CDATA[oUser0000001]]></FromUserName><MsgType><![CDATA[event]]></MsgType>\
                 <Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List>\
                 <MsgID>{}</MsgID><ErrorCode>10005</ErrorCode></List></SubscribeMsgSentEvent></xml>",
                rows[0]["provider_id"].as_str().expect("msgid")
            );
            assert_eq!(
                post(signed(), sent_event).await,
                (200, "success".to_string())
            );
            assert_eq!(
                post(signed(), event(&known, "oSomeoneElse01")).await,
                (200, "success".to_string())
            );
            // Nor does a block reported that way suppress anyone.
            let blocked =
                event(&known, "oSomeoneElse01").replace("[success]", "[failed:user block]");
            assert_eq!(post(signed(), blocked).await, (200, "success".to_string()));
            assert!(app.suppressed("?address=oSomeoneElse01").await.is_empty());
            assert_eq!(
                post(signed(), event("999999999999", "oUser0000001"))
                    .await
                    .0,
                503
            );
            assert_eq!(metric("unknown").await, unknown + 2);
            assert_eq!(metric("retry").await, retry + 1);
            assert_eq!(
                post(signed(), "<xml><MsgType>event".to_string()).await.0,
                400
            );
        }
    }
    assert_eq!(app.sim.state.total("wechatoa"), N as u64);
    assert!(!blocked.is_empty(), "no user block drawn");
    let suppressed = app.suppressed("?channel_type=wechatoa").await;
    assert!(
        suppressed.iter().all(|s| s.2 == "blocked"),
        "{suppressed:?}"
    );
    assert_eq!(
        suppressed.into_iter().map(|s| s.1).collect::<BTreeSet<_>>(),
        blocked
    );
    let shown = app
        .admin_get(&format!("/api/channels/{oa}"))
        .await
        .text()
        .await
        .expect("text");
    for secret in [
        &sim.wechat_secret,
        &sim.wechat_token,
        &sim.wechat_encoding_aes_key,
    ] {
        assert!(!shown.contains(secret.as_str()), "masked: {shown}");
    }
    // With a key, a correctly signed plaintext push is not trusted (the signature does not
    // cover the body), nor an envelope whose msg_signature does not match.
    let known_rows: Value = app
        .admin_get(&format!("/api/messages/{}/deliveries?limit=1", msgids[1]))
        .await
        .json()
        .await
        .expect("json");
    let known = known_rows["deliveries"][0]["provider_id"]
        .as_str()
        .expect("msgid")
        .to_string();
    assert_eq!(post(signed(), event(&known, "oUser0000080")).await.0, 401);
    let forged = format!("{}&encrypt_type=aes&msg_signature=00", signed());
    let body = "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName><Encrypt><![CDATA[AAAA]]></Encrypt></xml>";
    assert_eq!(post(forged, body.to_string()).await.0, 401);
}

/// A paced send (`option.spread_seconds`) spreads its deliveries evenly over the duration:
/// counted in equal time buckets, each holds about its share.
#[actix_web::test]
async fn a_paced_send_spreads_evenly_over_its_duration() {
    let app = spawn_app().await;
    const N: usize = 10_000;
    const SPREAD: u64 = 8;
    app.add_users((0..N).map(|i| {
        json!({"userid": format!("s{i:05}"), "add": {"tag": ["paced"], "app": {"all": [format!("sreg-{i:05}")]}}})
    }))
    .await;
    app.sim_post("/sim/receipts", json!({"channel": "app", "enabled": false}))
        .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["paced"], "msg_app": app_msg(), "option": {"spread_seconds": SPREAD}}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(SPREAD * 6)).await;
    assert_eq!(crate::helpers::totals(&s), (N as i64, N as i64, 0), "{s}");
    let received = app.sim.state.received("app");
    assert_eq!(received.len(), N);
    assert!(received.values().all(|n| *n == 1));
    // Every address with the time its call was recorded.
    let events = app.sim.state.events("app");
    let first = events.iter().map(|e| e.received_at).min().expect("events");
    let times: Vec<f64> = events
        .iter()
        .flat_map(|e| {
            let t = e.received_at.duration_since(first).as_secs_f64();
            std::iter::repeat_n(t, e.addresses_count())
        })
        .collect();
    assert_eq!(times.len(), N);
    let span = times.iter().copied().fold(0.0, f64::max);
    assert!(
        span >= SPREAD as f64 * 0.8,
        "deliveries took {span:.2} s of a {SPREAD} s spread"
    );
    // Eight equal buckets over the spread: each holds its share within a wide tolerance.
    let buckets = SPREAD as usize;
    let width = SPREAD as f64 / buckets as f64;
    let mut counts = vec![0usize; buckets];
    for t in &times {
        counts[((t / width) as usize).min(buckets - 1)] += 1;
    }
    let share = N / buckets;
    for (i, c) in counts.iter().enumerate() {
        assert!(
            *c >= share * 4 / 10 && *c <= share * 16 / 10,
            "bucket {i} holds {c} of {N} (share {share}): {counts:?}"
        );
    }
    // A paced userid list is cut into slices of the list: each user still gets it once.
    let userids: Vec<String> = (0..300).map(|i| format!("s{i:05}")).collect();
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": userids, "msg_app": app_msg(), "option": {"spread_seconds": 2}}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(crate::helpers::totals(&s), (300, 300, 0), "{s}");
    assert!(s["shards"].as_i64().unwrap_or(0) > 1, "{s}");
    for i in 0..N {
        let expect = if i < 300 { 2 } else { 1 };
        assert_eq!(app.sim.state.count("app", &format!("sreg-{i:05}")), expect);
    }
}
