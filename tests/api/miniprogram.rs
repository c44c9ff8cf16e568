//! Mini-program subscribe messages (`wechatmp`) end to end against the simulator: each user
//! sent to once with the subscribe body, a used-up one-time subscription failing that
//! delivery without suppressing the user (subscriptions are per template), and contents
//! WeChat would refuse refused at the API.

use std::time::Duration;

use msghub_sim::SimConfig;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

impl TestApp {
    /// A `wechatmp` channel on the simulator's WeChat app, granted to the test source.
    async fn mini_program_channel(&self) -> i64 {
        let sim = SimConfig::default();
        let ch = self
            .admin_post(
                "/api/channels",
                json!({"type": "wechatmp", "name": "mini-program sim", "credentials": {
                    "appid": sim.wechat_appid, "secret": sim.wechat_secret,
                    "base_url": self.sim.http_url()}}),
            )
            .await;
        let id = ch["id"].as_i64().expect("channel id");
        self.grant(id).await;
        id
    }

    /// The status and error code of the user's delivery of a message on `wechatmp`.
    async fn mp_delivery(&self, msgid: &str, userid: &str) -> (String, Value) {
        let rows = self.deliveries(msgid).await;
        let row = rows
            .iter()
            .find(|d| d["userid"] == userid && d["channel_type"] == "wechatmp")
            .unwrap_or_else(|| panic!("no delivery for {userid}: {rows:?}"));
        (
            row["status"].as_str().expect("status").to_string(),
            row["code"].clone(),
        )
    }
}

fn subscribe(template: &str, thing: &str) -> Value {
    json!([{"template_id": template, "page": "pages/order?id=7", "miniprogram_state": "formal",
            "data": {"thing1": thing, "time2": {"value": "2026-12-02 10:00"}}}])
}

fn openid(i: usize) -> String {
    format!("oMini{i:023}")
}

#[actix_web::test]
async fn a_used_up_subscription_fails_its_delivery_without_suppressing_the_user() {
    let app = spawn_app().await;
    app.mini_program_channel().await;
    app.add_users((0..3).map(
        |i| json!({"userid": format!("m{i}"), "add": {"tag": ["shoppers"], "wechatmp": openid(i)}}),
    ))
    .await;
    // m0 subscribed once to the order template; m1 and m2 subscribed for good.
    app.sim
        .state
        .grant_subscriptions(&openid(0), "SUB_ORDER", 1);

    let first = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["shoppers"], "msg_wechatmp": subscribe("SUB_ORDER", "Order shipped")}),
        )
        .await;
    app.wait_done(&first, Duration::from_secs(30)).await;
    for i in 0..3 {
        assert_eq!(app.sim.state.count("wechatmp", &openid(i)), 1, "user {i}");
    }
    let sent = app.deliveries(&first).await;
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|d| d["status"] == "submitted" && d["provider_id"].is_string()),
        "{sent:?}"
    );

    // The one-time subscription is used up: m0's next one fails (no retry), the others go.
    let second = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["shoppers"], "msg_wechatmp": subscribe("SUB_ORDER", "Order delivered")}),
        )
        .await;
    app.wait_done(&second, Duration::from_secs(30)).await;
    assert_eq!(
        app.mp_delivery(&second, "m0").await,
        ("failed".to_string(), json!("43101"))
    );
    assert_eq!(app.sim.state.count("wechatmp", &openid(0)), 1);
    assert_eq!(app.sim.state.count("wechatmp", &openid(1)), 2);
    // Not suppressed: after m0 subscribes again, the template reaches m0.
    assert!(app.suppressed("?channel_type=wechatmp").await.is_empty());
    app.sim
        .state
        .grant_subscriptions(&openid(0), "SUB_ORDER", 1);
    let third = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["m0"], "msg_wechatmp": subscribe("SUB_ORDER", "Order returned")}),
        )
        .await;
    app.wait_done(&third, Duration::from_secs(30)).await;
    assert_eq!(app.mp_delivery(&third, "m0").await.0, "submitted");
    assert_eq!(app.sim.state.count("wechatmp", &openid(0)), 2);
}

#[actix_web::test]
async fn a_subscribe_message_wechat_would_refuse_is_refused_at_the_api() {
    let app = spawn_app().await;
    app.mini_program_channel().await;
    app.add_users(std::iter::once(
        json!({"userid": "m0", "add": {"wechatmp": openid(0)}}),
    ))
    .await;
    app.assert_contents_refused(
        "wechatmp",
        "m0",
        &[
            (
                json!([{"data": {"thing1": "x"}}]),
                "msg_wechatmp.template_id",
            ),
            (json!([{"template_id": "S"}]), "msg_wechatmp.data"),
            (
                json!([{"template_id": "S", "data": {"thing1": "x"}, "touser": "oOther"}]),
                "msg_wechatmp.touser",
            ),
            (
                json!([{"template_id": "S", "data": {"thing1": "x"}, "lang": "fr_FR"}]),
                "msg_wechatmp.lang",
            ),
        ],
    )
    .await;
}

/// The mini-program's message push configuration reports each subscribe send's delivery
/// (`subscribe_msg_sent_event`, naming the send's MsgID): signed with the channel's token, in
/// plaintext and, with its EncodingAESKey, in safe mode. Each user's delivery ends as the
/// simulator reported it; a user it says nothing of stays submitted.
#[actix_web::test]
async fn subscribe_send_results_pushed_by_wechat_are_applied() {
    const N: usize = 120;
    let app = spawn_app().await;
    let sim = SimConfig::default();
    let ch = app
        .admin_post(
            "/api/channels",
            json!({"type": "wechatmp", "name": "mini-program events", "credentials": {
                "appid": sim.wechat_appid, "secret": sim.wechat_secret, "token": sim.wechat_token,
                "base_url": app.sim.http_url()}}),
        )
        .await;
    let channel = ch["id"].as_i64().expect("channel id");
    app.grant(channel).await;
    let url = app.receipt_url(channel).await;
    app.add_users(
        (0..N).map(|i| json!({"userid": format!("e{i:03}"), "add": {"wechatmp": openid(i)}})),
    )
    .await;
    // Events of an Official Account, posted to this mini-program's URL and signed with its
    // token (plaintext, before it has a key): answered, nothing applied or suppressed.
    let signed = crate::strategies::wechat_signed(&url, &sim.wechat_token, "");
    for event in [
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>1</MsgID><Status><![CDATA[failed:user block]]></Status>",
        "<Event><![CDATA[unsubscribe]]></Event>",
    ] {
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_5151000000001]]></ToUserName><FromUserName><![CDATA[{}]]></FromUserName>\
             <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType>{event}</xml>",
            openid(0)
        );
        let r = app
            .client
            .post(&signed)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200, "{event}");
        assert_eq!(r.text().await.unwrap_or_default(), "success");
    }
    assert!(app.suppressed("?channel_type=wechatmp").await.is_empty());
    let half = N / 2;
    for (part, mode) in ["plain", "safe"].into_iter().enumerate() {
        if mode == "safe" {
            let resp = app
                .client
                .patch(format!("{}/api/channels/{channel}", app.address))
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
        }
        app.sim_post(
            "/sim/receipts",
            json!({"channel": "wechatmp", "report_url": url, "delivered_ratio": 0.6,
                   "failed_ratio": 0.3, "delay_ms": 0, "wechat_mode": mode}),
        )
        .await;
        let users: Vec<String> = (part * half..(part + 1) * half)
            .map(|i| format!("e{i:03}"))
            .collect();
        let msgid = app
            .send_ok(
                "/v1/sent",
                json!({"aud_userid": users, "msg_wechatmp": subscribe("SUB_order", "Parcel shipped")}),
            )
            .await;
        app.wait_done(&msgid, Duration::from_secs(30)).await;
        let ours: std::collections::BTreeSet<String> =
            (part * half..(part + 1) * half).map(openid).collect();
        // Every push answered, then the hub's records match the simulator's.
        let started = std::time::Instant::now();
        let report = loop {
            let r = app.sim.state.receipts("wechatmp", None).expect("report");
            if r.pending == 0 {
                break r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{mode}: pending"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(report.dropped_items, 0, "{mode}");
        let pick = |list: &[String]| -> std::collections::BTreeSet<String> {
            list.iter().filter(|a| ours.contains(*a)).cloned().collect()
        };
        let (delivered, failed) = (pick(&report.delivered), pick(&report.failed));
        assert!(
            delivered.len() > half / 4
                && !failed.is_empty()
                && delivered.len() + failed.len() < half,
            "the draw for {mode}: {} delivered, {} failed",
            delivered.len(),
            failed.len()
        );
        let rows = app.deliveries(&msgid).await;
        let with = |status: &str| -> std::collections::BTreeSet<String> {
            rows.iter()
                .filter(|r| r["status"] == status)
                .filter_map(|r| r["address"].as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(with("delivered"), delivered, "{mode}");
        assert_eq!(with("undelivered"), failed, "{mode}");
        assert_eq!(
            with("submitted").len(),
            half - delivered.len() - failed.len()
        );
        // A failure reported here is WeChat's push failing: the user is not suppressed.
        assert!(
            app.suppressed("?channel_type=wechatmp").await.is_empty(),
            "{mode}"
        );
    }
}
