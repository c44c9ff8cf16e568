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
