//! Audience filters end to end: black- and whitelists, dedup, frequency caps, quiet hours, and
//! a skipped step of a fallback chain. Every skipped target is counted, never sent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use msghub_sim::FaultPlan;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, app_msg, spawn_app_with};

/// A test server with a small pool: its connections stay open until the test binary exits,
/// and a shared Postgres has only so many.
async fn spawn_app() -> TestApp {
    spawn_app_with(|s| s.database.max_connections = 2).await
}

fn sms(code: &str) -> Value {
    json!([{"temp_id": "SMS_1", "temp_para": {"code": code}}])
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn received(app: &TestApp, channel: &str) -> BTreeSet<String> {
    app.sim.state.received(channel).into_keys().collect()
}

/// The counts of one channel type in a status document.
fn counts(status: &Value, channel_type: &str) -> Value {
    status["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["channel_type"] == channel_type)
        .cloned()
        .unwrap_or(Value::Null)
}

/// (target, sent, skipped) of one channel type.
fn tss(status: &Value, channel_type: &str) -> (i64, i64, i64) {
    let c = counts(status, channel_type);
    (
        c["target"].as_i64().unwrap_or(0),
        c["sent"].as_i64().unwrap_or(0),
        c["skipped"].as_i64().unwrap_or(0),
    )
}

async fn create_list(app: &TestApp, kind: &str, source_id: Option<i64>, always: bool) -> i64 {
    let list = app
        .admin_post(
            "/api/lists",
            json!({"name": format!("{kind} list"), "kind": kind, "source_id": source_id, "always": always}),
        )
        .await;
    list["id"].as_i64().expect("list id")
}

async fn add_entries(app: &TestApp, list: i64, userids: &[&str], addresses: &[&str]) {
    let r = app
        .admin_post(
            &format!("/api/lists/{list}/entries"),
            json!({"userids": userids, "addresses": addresses}),
        )
        .await;
    assert_eq!(r["added"], json!(userids.len() + addresses.len()), "{r}");
}

/// Skip reasons of a message's skipped deliveries, by address.
async fn skip_codes(app: &TestApp, msgid: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = app
        .deliveries(msgid)
        .await
        .iter()
        .filter(|d| d["status"] == "skipped")
        .map(|d| {
            (
                d["address"].as_str().unwrap_or_default().to_string(),
                d["code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn add_phone_users(app: &TestApp, users: &[(&str, &str)]) {
    app.add_users(users.iter().map(|(u, phone)| {
        json!({"userid": u, "add": {"phone": phone, "app": {"all": [format!("reg-{u}")]}}})
    }))
    .await;
}

#[actix_web::test]
async fn a_blacklist_skips_listed_userids_and_addresses_and_counts_them() {
    let app = spawn_app().await;
    add_phone_users(
        &app,
        &[
            ("b1", "13900000001"),
            ("b2", "13900000002"),
            ("b3", "13900000003"),
            ("b4", "13900000004"),
        ],
    )
    .await;
    let black = create_list(&app, "black", Some(app.source_id), false).await;
    add_entries(&app, black, &["b1"], &["13900000002"]).await;

    // b1 is listed by userid (every channel), b2 by its phone (SMS only).
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["b1", "b2", "b3"], "msg_sms": sms("1"), "msg_app": app_msg(),
                   "option": {"black_id": black}}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(received(&app, "sms"), set(&["13900000003"]));
    assert_eq!(received(&app, "app"), set(&["reg-b2", "reg-b3"]));
    assert_eq!(tss(&s, "sms"), (3, 1, 2), "{s}");
    assert_eq!(tss(&s, "app"), (3, 2, 1), "{s}");
    assert_eq!(counts(&s, "sms")["queued"], json!(0), "{s}");
    assert_eq!(
        skip_codes(&app, &msgid).await,
        [
            ("13900000001".to_string(), "blacklisted".to_string()),
            ("13900000002".to_string(), "blacklisted".to_string()),
            ("reg-b1".to_string(), "blacklisted".to_string()),
        ]
    );

    // Raw addresses are matched by address.
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_sms": [{"data": ["13900000002", "13900000004"]}], "msg_sms": sms("2"),
                   "option": {"black_id": black}}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(tss(&s, "sms"), (2, 1, 1), "{s}");
    assert_eq!(app.sim.state.count("sms", "13900000002"), 0);
    assert_eq!(app.sim.state.count("sms", "13900000004"), 1);

    // A global `always` blacklist applies without being named.
    let always = create_list(&app, "black", None, true).await;
    add_entries(&app, always, &["b3"], &[]).await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["b3", "b4"], "msg_sms": sms("3")}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(tss(&s, "sms"), (2, 1, 1), "{s}");
    assert_eq!(app.sim.state.count("sms", "13900000003"), 1);
    assert_eq!(app.sim.state.count("sms", "13900000004"), 2);

    // Refusals: an unknown list, another source's list, a list of the wrong kind, both lists.
    let other = app
        .admin_post("/api/sources", json!({"name": "other"}))
        .await["id"]
        .as_i64()
        .expect("source id");
    let foreign = create_list(&app, "black", Some(other), false).await;
    let white = create_list(&app, "white", None, false).await;
    for (option, code, text) in [
        (json!({"black_id": 999_999}), 4004, "no blacklist 999999"),
        (json!({"black_id": foreign}), 4004, "no blacklist"),
        (json!({"white_id": black}), 4004, "is a blacklist"),
        (
            json!({"black_id": black, "white_id": white}),
            1015097,
            "together",
        ),
    ] {
        let (status, r) = app
            .v1(
                "/v1/sent",
                &json!({"aud_userid": ["b4"], "msg_sms": sms("4"), "option": option}),
            )
            .await;
        assert_eq!((status, r["code"].as_i64()), (400, Some(code)), "{r}");
        assert!(
            r["message"].as_str().unwrap_or_default().contains(text),
            "{r}"
        );
    }
}

#[actix_web::test]
async fn a_whitelist_keeps_only_listed_userids_and_addresses() {
    let app = spawn_app().await;
    add_phone_users(
        &app,
        &[
            ("w1", "13800000001"),
            ("w2", "13800000002"),
            ("w3", "13800000003"),
        ],
    )
    .await;
    let white = create_list(&app, "white", Some(app.source_id), false).await;
    add_entries(&app, white, &["w1"], &["reg-w3"]).await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["w1", "w2", "w3"], "msg_sms": sms("1"), "msg_app": app_msg(),
                   "option": {"white_id": white}}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(received(&app, "sms"), set(&["13800000001"]));
    assert_eq!(received(&app, "app"), set(&["reg-w1", "reg-w3"]));
    assert_eq!(tss(&s, "sms"), (3, 1, 2), "{s}");
    assert_eq!(tss(&s, "app"), (3, 2, 1), "{s}");
    let codes = skip_codes(&app, &msgid).await;
    assert_eq!(codes.len(), 3);
    assert!(
        codes.iter().all(|(_, c)| c == "not_whitelisted"),
        "{codes:?}"
    );
}

#[actix_web::test]
async fn the_same_content_to_the_same_user_is_sent_once_within_the_dedup_window() {
    let app = spawn_app().await;
    add_phone_users(&app, &[("d1", "13700000001"), ("d2", "13700000002")]).await;
    let source = app
        .admin_patch(
            &format!("/api/sources/{}", app.source_id),
            json!({"dedup_window_seconds": 2}),
        )
        .await;
    assert_eq!(source["dedup_window_seconds"], json!(2), "{source}");
    let d1 = "13700000001";

    let first = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["d1"], "msg_sms": sms("a")}),
        )
        .await;
    app.wait_done(&first, Duration::from_secs(30)).await;
    // Everything after this is more than the window after the first delivery was created.
    let window_over = Instant::now() + Duration::from_millis(2200);
    assert_eq!(app.sim.state.count("sms", d1), 1);

    // Again within the window: d1 skipped, d2 (new to it) sent.
    let again = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["d1", "d2"], "msg_sms": sms("a")}),
        )
        .await;
    let s = app.wait_done(&again, Duration::from_secs(30)).await;
    assert_eq!(tss(&s, "sms"), (2, 1, 1), "{s}");
    assert_eq!(
        skip_codes(&app, &again).await,
        [(d1.to_string(), "duplicate".to_string())]
    );
    assert_eq!(app.sim.state.count("sms", d1), 1);
    assert_eq!(app.sim.state.count("sms", "13700000002"), 1);

    // Other content is not a duplicate.
    let other = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["d1"], "msg_sms": sms("b")}),
        )
        .await;
    app.wait_done(&other, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("sms", d1), 2);

    // Four identical sends at once: exactly one goes out.
    let sends = (0..4).map(|_| {
        app.send_ok(
            "/v1/sent",
            json!({"aud_userid": ["d1"], "msg_sms": sms("c")}),
        )
    });
    let ids = futures::future::join_all(sends).await;
    let mut skipped = 0;
    for id in &ids {
        let s = app.wait_done(id, Duration::from_secs(30)).await;
        skipped += tss(&s, "sms").2;
    }
    assert_eq!((app.sim.state.count("sms", d1), skipped), (3, 3));

    // After the window the first content is sent again.
    let wait = window_over.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait).await;
    let later = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["d1"], "msg_sms": sms("a")}),
        )
        .await;
    let s = app.wait_done(&later, Duration::from_secs(30)).await;
    assert_eq!(tss(&s, "sms"), (1, 1, 0), "{s}");
    assert_eq!(app.sim.state.count("sms", d1), 4);
}

/// A UTC offset at which it is about noon now, so the test never straddles the caps' midnight.
fn noon_offset() -> String {
    let hour = chrono::Utc::now()
        .timestamp()
        .div_euclid(3600)
        .rem_euclid(24);
    let mut offset = 12 - hour;
    if offset < -11 {
        offset += 24;
    }
    let sign = if offset < 0 { '-' } else { '+' };
    format!("{sign}{:02}:00", offset.abs())
}

#[actix_web::test]
async fn the_fourth_sms_of_the_day_is_skipped_with_a_cap_of_three() {
    let app = spawn_app().await;
    add_phone_users(&app, &[("c1", "13600000001"), ("c2", "13600000002")]).await;
    let source = app
        .admin_patch(
            &format!("/api/sources/{}", app.source_id),
            json!({"caps": {"sms": 3}, "day_utc_offset": noon_offset()}),
        )
        .await;
    assert_eq!(source["caps"], json!({"sms": 3}), "{source}");
    for code in ["1", "2", "3"] {
        let msgid = app
            .send_ok(
                "/v1/sent",
                json!({"aud_userid": ["c1"], "msg_sms": sms(code)}),
            )
            .await;
        let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
        assert_eq!(tss(&s, "sms"), (1, 1, 0), "{s}");
    }
    // The fourth: c1 is capped, c2 is not, and the app channel has no cap.
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["c1", "c2"], "msg_sms": sms("4"), "msg_app": app_msg()}),
        )
        .await;
    let s = app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(tss(&s, "sms"), (2, 1, 1), "{s}");
    assert_eq!(tss(&s, "app"), (2, 2, 0), "{s}");
    assert_eq!(
        skip_codes(&app, &msgid).await,
        [("13600000001".to_string(), "capped".to_string())]
    );
    assert_eq!(app.sim.state.count("sms", "13600000001"), 3);
    assert_eq!(app.sim.state.count("sms", "13600000002"), 1);

    // Invalid settings are refused and name the field.
    for (body, text) in [
        (json!({"caps": {"pigeon": 3}}), "pigeon"),
        (json!({"caps": {"sms": 0}}), "caps.sms"),
        (json!({"day_utc_offset": "8"}), "day_utc_offset"),
    ] {
        let resp = app
            .client
            .patch(format!("{}/api/sources/{}", app.address, app.source_id))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("patch");
        assert_eq!(resp.status().as_u16(), 400);
        let r: Value = resp.json().await.expect("json");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(text),
            "{r}"
        );
    }
}

fn time_of_day(ms: i64) -> String {
    let s = ms.rem_euclid(86_400_000) / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Quiet hours that began a minute ago and end a few seconds from now: a priority-3 message
/// waits for the end (without holding the only bulk slot), a priority-2 one does not.
#[actix_web::test]
async fn quiet_hours_hold_priority_three_until_the_window_ends() {
    let now = chrono::Utc::now().timestamp_millis();
    let end = (now + 8_000) / 1000 * 1000;
    let ends_at = Instant::now() + Duration::from_millis(u64::try_from(end - now).unwrap());
    let window = format!("{}-{}", time_of_day(now - 60_000), time_of_day(end));
    let app = spawn_app_with(|s| {
        s.strategies.quiet_hours = window;
        s.strategies.quiet_hours_utc_offset = "+00:00".into();
        s.dispatch.max_active_bulk = 1;
        s.database.max_connections = 2;
    })
    .await;
    app.add_users(
        [
            json!({"userid": "q1", "add": {"phone": "13500000001"}}),
            json!({"userid": "q2", "add": {"phone": "13500000002", "tag": ["news"]}}),
        ]
        .into_iter(),
    )
    .await;
    let low = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["q1"], "msg_sms": sms("promo"), "option": {"priority": 3}}),
        )
        .await;
    let normal = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["news"], "msg_sms": sms("news"), "option": {"priority": 2}}),
        )
        .await;
    app.wait_done(&normal, Duration::from_secs(30)).await;
    assert!(
        Instant::now() < ends_at,
        "the priority-2 message took the whole window; nothing can be concluded"
    );
    assert_eq!(app.sim.state.count("sms", "13500000002"), 1);
    assert_eq!(app.sim.state.count("sms", "13500000001"), 0);
    let s = app.status(&low).await;
    assert_eq!(s["state"], "accepted", "{s}");
    assert!(s["not_before"].as_i64().is_some(), "{s}");

    // After the window it goes out, once.
    app.wait_done(&low, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("sms", "13500000001"), 1);
    let event = app
        .sim
        .state
        .events("sms")
        .into_iter()
        .find(|e| e.contains("13500000001"))
        .expect("the priority-3 SMS");
    assert!(
        event.received_at + Duration::from_millis(50) >= ends_at,
        "sent {:?} before the window ended",
        ends_at - event.received_at
    );
}

/// The msghub binary on `port` with quiet hours, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_server(port: u16, db_url: &str, dir: &std::path::Path, quiet: &str) -> Server {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_msghub"))
        .arg("serve")
        .env("MSGHUB__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("MSGHUB__DATABASE__URL", db_url)
        .env("MSGHUB__SECURITY__DATA_DIR", dir)
        .env("MSGHUB__SECURITY__ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MSGHUB__STRATEGIES__QUIET_HOURS", quiet)
        .env("MSGHUB__STRATEGIES__QUIET_HOURS_UTC_OFFSET", "+00:00")
        .env("MSGHUB__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start msghub");
    let server = Server(child);
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

/// A priority-3 message held by quiet hours is still held after a restart inside the window,
/// and goes out once when it ends.
#[actix_web::test]
async fn a_message_held_by_quiet_hours_survives_a_restart() {
    msghub::startup::install_crypto_provider();
    let now = chrono::Utc::now().timestamp_millis();
    let end = (now + 15_000) / 1000 * 1000;
    let ends_at = Instant::now() + Duration::from_millis(u64::try_from(end - now).unwrap());
    let window = format!("{}-{}", time_of_day(now - 60_000), time_of_day(end));
    let dir = tempfile::tempdir().unwrap();
    let db_url = crate::helpers::fresh_database_url(dir.path()).await;
    let sim = crate::helpers::start_sim().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_dir = dir.path().to_path_buf();
    let server = start_server(port, &db_url, &data_dir, &window).await;
    let settings = crate::helpers::test_settings(dir.path(), db_url.clone());
    let db = msghub::storage::Db::connect(&settings.database)
        .await
        .unwrap();
    let app = TestApp::attach(format!("http://127.0.0.1:{port}"), sim, db, settings, dir).await;
    app.add_users([json!({"userid": "r1", "add": {"phone": "13400000001"}})].into_iter())
        .await;
    let low = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["r1"], "msg_sms": sms("later"), "option": {"priority": 3}}),
        )
        .await;
    crate::helpers::wait_until_async("the deferral", Duration::from_secs(10), || async {
        app.status(&low).await["not_before"].as_i64().is_some()
    })
    .await;
    drop(server);
    let _server = start_server(port, &db_url, &data_dir, &window).await;
    assert!(
        Instant::now() < ends_at,
        "the restart took the whole window"
    );
    assert_eq!(app.sim.state.count("sms", "13400000001"), 0);
    app.wait_done(&low, Duration::from_secs(60)).await;
    assert_eq!(app.sim.state.count("sms", "13400000001"), 1);
    let event = app
        .sim
        .state
        .events("sms")
        .into_iter()
        .find(|e| e.contains("13400000001"))
        .expect("the priority-3 SMS");
    assert!(event.received_at + Duration::from_millis(50) >= ends_at);
}

/// Fallback chain webhook → app → sms. A blacklisted webhook address moves its user to the
/// app step at once; a user whose webhook failed and whose app registration is blacklisted
/// goes straight on to SMS. Neither waits for the hour-long step timer.
#[actix_web::test]
async fn a_blacklisted_step_moves_the_user_to_the_next_step_at_once() {
    let app = spawn_app().await;
    app.add_users((1..=3).map(|i| {
        json!({"userid": format!("f{i}"), "add": {"webhook": format!("wh-f{i}"),
               "app": {"all": [format!("reg-f{i}")]}, "phone": format!("1330000000{i}")}})
    }))
    .await;
    app.sim.state.set_faults(
        "webhook",
        FaultPlan {
            perm_addresses: vec!["wh-f2".into()],
            ..FaultPlan::default()
        },
    );
    let black = create_list(&app, "black", None, false).await;
    add_entries(&app, black, &[], &["wh-f1", "reg-f2"]).await;
    let rule = app
        .admin_post(
            "/api/rules",
            json!({"name": "chain", "rule": {"type": "fallback", "steps": [
                {"channel": "webhook", "wait_seconds": 3600, "condition": "not_clicked"},
                {"channel": "app", "wait_seconds": 3600, "condition": "not_clicked"},
                {"channel": "sms"}]}}),
        )
        .await["id"]
        .as_i64()
        .expect("rule id");
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["f1", "f2", "f3"], "rule_id": rule,
                   "msg_webhook": [{"event": "notice"}], "msg_app": app_msg(), "msg_sms": sms("f"),
                   "option": {"black_id": black}}),
        )
        .await;
    wait_until("f2's SMS", Duration::from_secs(30), || {
        app.sim.state.count("sms", "13300000002") == 1
    })
    .await;
    wait_until("f1's app push", Duration::from_secs(30), || {
        app.sim.state.count("app", "reg-f1") == 1
    })
    .await;
    // Give anything that should not happen a moment to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received(&app, "sms"), set(&["13300000002"]));
    assert_eq!(received(&app, "app"), set(&["reg-f1"]));
    assert_eq!(app.sim.state.count("webhook", "wh-f1"), 0);
    assert_eq!(app.sim.state.count("webhook", "wh-f3"), 1);
    let s = app.status(&msgid).await;
    assert_eq!(
        s["state"], "waiting",
        "f1 and f3 wait for their timers: {s}"
    );
    let steps = s["steps"].as_array().expect("steps");
    let step = |i: usize, k: &str| steps[i][k].as_i64().unwrap_or(-1);
    // Step 0: f1 skipped, f2 failed, f3 sent; step 1: f1 sent, f2 skipped; step 2: f2.
    assert_eq!(
        (step(0, "target"), step(0, "skipped"), step(0, "failed")),
        (3, 1, 1),
        "{s}"
    );
    assert_eq!(
        (step(1, "target"), step(1, "skipped"), step(1, "sent")),
        (2, 1, 1),
        "{s}"
    );
    assert_eq!((step(2, "target"), step(2, "sent")), (1, 1), "{s}");
}

#[actix_web::test]
async fn lists_take_entries_in_bulk_and_page_through_them() {
    let app = spawn_app().await;
    let list = create_list(&app, "black", Some(app.source_id), true).await;
    let userids: Vec<String> = (0..2500).map(|i| format!("u{i:05}")).collect();
    let r = app
        .admin_post(
            &format!("/api/lists/{list}/entries"),
            json!({"userids": userids, "addresses": ["a@b.test"]}),
        )
        .await;
    assert_eq!(r["added"], json!(2501));
    // Adding again adds nothing.
    let r = app
        .admin_post(
            &format!("/api/lists/{list}/entries"),
            json!({"userids": ["u00000"]}),
        )
        .await;
    assert_eq!(r["added"], json!(0));
    let l: Value = app
        .admin_get(&format!("/api/lists/{list}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            l["kind"].clone(),
            l["always"].clone(),
            l["userids"].clone(),
            l["addresses"].clone()
        ),
        (json!("black"), json!(true), json!(2500), json!(1)),
        "{l}"
    );
    // Paging visits every entry once.
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("/api/lists/{list}/entries?limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Value = app.admin_get(&url).await.json().await.expect("json");
        seen += page["entries"].as_array().map_or(0, Vec::len);
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 2501);
    // Too many at once is refused.
    let many: Vec<String> = (0..10_001).map(|i| format!("x{i}")).collect();
    let resp = app
        .client
        .post(format!("{}/api/lists/{list}/entries", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"userids": many}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let resp = app
        .client
        .delete(format!("{}/api/lists/{list}/entries", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"userids": ["u00000", "u00001", "nobody"], "addresses": ["a@b.test"]}))
        .send()
        .await
        .expect("delete");
    let r: Value = resp.json().await.expect("json");
    assert_eq!(r["removed"], json!(3));
    let resp = app
        .client
        .delete(format!("{}/api/lists/{list}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        app.admin_get(&format!("/api/lists/{list}"))
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(app.count_rows("audience_list_entries").await, 0);
}

/// A paced priority-3 message whose later shard's slot falls in quiet hours that began while
/// it waited: that shard is held until the window ends, like the rest of the message.
#[actix_web::test]
async fn a_paced_shard_whose_slot_falls_in_quiet_hours_waits_for_the_window_to_end() {
    let now = chrono::Utc::now().timestamp_millis();
    let start = (now + 2_500) / 1000 * 1000 + 1000;
    let end = start + 6_000;
    let since = |t: i64| Duration::from_millis(u64::try_from(t - now).unwrap());
    let (starts_at, ends_at) = (Instant::now() + since(start), Instant::now() + since(end));
    let window = format!("{}-{}", time_of_day(start), time_of_day(end));
    let app = spawn_app_with(|s| {
        s.strategies.quiet_hours = window;
        s.strategies.quiet_hours_utc_offset = "+00:00".into();
    })
    .await;
    app.add_users(
        [
            json!({"userid": "p1", "add": {"phone": "13500000011"}}),
            json!({"userid": "p2", "add": {"phone": "13500000012"}}),
        ]
        .into_iter(),
    )
    .await;
    // Two one-user shards, 5 s apart: the first before the window, the second inside it.
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["p1", "p2"], "msg_sms": sms("promo"),
                   "option": {"priority": 3, "spread_seconds": 10}}),
        )
        .await;
    let sent_at = |phone: &str| {
        app.sim
            .state
            .events("sms")
            .into_iter()
            .find(|e| e.contains(phone))
            .map(|e| e.received_at)
    };
    let first = loop {
        if let Some(at) = sent_at("13500000011") {
            break at;
        }
        assert!(
            Instant::now() < starts_at,
            "the first shard did not go out before the window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        first < starts_at,
        "nothing can be concluded: the first shard left in the window"
    );
    app.wait_done(&msgid, Duration::from_secs(60)).await;
    let second = sent_at("13500000012").expect("the second SMS");
    assert!(
        second + Duration::from_millis(50) >= ends_at,
        "the second shard was sent {:?} before quiet hours ended",
        ends_at - second
    );
    assert_eq!(app.sim.state.count("sms", "13500000012"), 1);
}
