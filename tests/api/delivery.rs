//! Sends to every audience kind arrive at the simulator exactly once.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{app_msg, spawn_app, totals};

fn user(i: usize, tags: &[&str]) -> serde_json::Value {
    json!({"userid": format!("u{i:05}"), "add": {
        "tag": tags,
        "app": {"all": [format!("reg-{i:05}")]},
        "phone": format!("1390000{i:04}"),
        "email": format!("user{i}@example.com"),
        "webhook": format!("wh-{i:05}"),
    }})
}

#[actix_web::test]
async fn userid_tag_broadcast_and_raw_sends_arrive_exactly_once() {
    let app = spawn_app().await;
    app.add_users((0..2500).map(|i| user(i, if i % 2 == 0 { &["even"] } else { &["odd"] })))
        .await;

    // aud_userid: three users on app and sms.
    let m1 = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u00001", "u00002", "u00003"], "msg_app": app_msg(),
                   "msg_sms": [{"temp_id": "SMS_1", "temp_para": {"code": "42"}}], "option": {"sendno": "n1"}}),
        )
        .await;
    let s1 = app.wait_done(&m1, Duration::from_secs(30)).await;
    assert_eq!(totals(&s1), (6, 6, 0), "{s1}");
    for i in 1..=3 {
        assert_eq!(app.sim.state.count("app", &format!("reg-{i:05}")), 1);
        assert_eq!(app.sim.state.count("sms", &format!("1390000{i:04}")), 1);
    }
    assert_eq!(app.sim.state.count("app", "reg-00004"), 0);

    // aud_tag: the 1250 even users, across two shards, on app.
    let m2 = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["even"], "msg_app": app_msg()}),
        )
        .await;
    let s2 = app.wait_done(&m2, Duration::from_secs(60)).await;
    assert_eq!(totals(&s2), (1250, 1250, 0), "{s2}");
    for i in (0..2500).step_by(2) {
        let expect = if (1..=3).contains(&i) { 2 } else { 1 };
        assert_eq!(
            app.sim.state.count("app", &format!("reg-{i:05}")),
            expect,
            "reg-{i:05}"
        );
    }
    assert_eq!(
        app.sim.state.count("app", "reg-00005"),
        0,
        "odd users get nothing from the tag send"
    );

    // broadcast: every user, on webhook (one call per user) and email.
    let m3 = app
        .send_ok(
            "/v1/broadcast",
            json!({"msg_webhook": [{"event": "notice"}], "msg_email": [{"subject": "Hi", "text": "<b>hi</b>"}]}),
        )
        .await;
    let s3 = app.wait_done(&m3, Duration::from_secs(120)).await;
    assert_eq!(totals(&s3), (5000, 5000, 0), "{s3}");
    let webhook = app.sim.state.received("webhook");
    assert_eq!(webhook.len(), 2500);
    assert!(webhook.values().all(|&n| n == 1));
    let email = app.sim.state.received("email");
    assert_eq!(email.len(), 2500);
    assert!(email.values().all(|&n| n == 1));

    // raw addresses: no user lookup.
    let m4 = app
        .send_ok(
            "/v1/sent",
            json!({"aud_app": [{"instance": "", "data": ["raw-a", "raw-b"]}], "msg_app": app_msg()}),
        )
        .await;
    let s4 = app.wait_done(&m4, Duration::from_secs(30)).await;
    assert_eq!(totals(&s4), (2, 2, 0));
    assert_eq!(app.sim.state.count("app", "raw-a"), 1);
    assert_eq!(app.sim.state.count("app", "raw-b"), 1);

    // Delivery records can be looked up per user.
    let resp = app
        .admin_get(&format!("/api/messages/{m1}/deliveries?userid=u00002"))
        .await;
    let body: serde_json::Value = resp.json().await.unwrap();
    let rows = body["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| {
        ["submitted", "delivered"].contains(&r["status"].as_str().unwrap_or_default())
            && r["userid"] == "u00002"
    }));
    assert!(
        rows.iter()
            .any(|r| r["channel_type"] == "sms" && r["provider_id"].is_string())
    );
}

#[actix_web::test]
async fn users_without_an_address_on_a_channel_get_no_delivery_on_it() {
    let app = spawn_app().await;
    app.add_users([json!({"userid": "only-app", "add": {"app": ["reg-x"]}})].into_iter())
        .await;
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["only-app", "nobody"], "msg_app": app_msg(),
                   "msg_sms": [{"temp_id": "SMS_1"}]}),
        )
        .await;
    let s = app.wait_done(&m, Duration::from_secs(30)).await;
    assert_eq!(totals(&s), (1, 1, 0), "{s}");
    assert_eq!(app.sim.state.total("sms"), 0);
}

#[actix_web::test]
async fn messages_beyond_the_planner_capacity_wait_in_the_database_and_are_all_delivered() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.dispatch.max_active_realtime = 2;
        s.dispatch.sweep_interval_ms = 50;
    })
    .await;
    app.add_users(
        (0..50).map(|i| json!({"userid": format!("p{i}"), "add": {"app": [format!("preg-{i}")]}})),
    )
    .await;
    let mut sends = Vec::new();
    for i in 0..50 {
        let c = app.client.clone();
        let url = format!("{}/v1/sent", app.address);
        let (k, s) = (app.source_key.clone(), app.source_secret.clone());
        let body = json!({"aud_userid": [format!("p{i}")], "msg_app": app_msg()});
        sends.push(actix_web::rt::spawn(async move {
            let r = c
                .post(url)
                .basic_auth(k, Some(s))
                .json(&body)
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()["msgid"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut ids = Vec::new();
    for s in sends {
        ids.push(s.await.unwrap());
    }
    for id in &ids {
        let s = app.wait_done(id, Duration::from_secs(60)).await;
        assert_eq!(totals(&s), (1, 1, 0), "{s}");
    }
    for i in 0..50 {
        assert_eq!(app.sim.state.count("app", &format!("preg-{i}")), 1);
    }
}
