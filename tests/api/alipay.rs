//! Alipay life account template messages (`alipay_life`) end to end against the simulated
//! gateway: requests signed with the app's RSA2 key and answers verified with Alipay's, a user
//! id and an OpenID each sent to once, a user who does not follow the account failed without
//! being suppressed, an answer that does not verify never counted as sent, and contents the
//! gateway would refuse refused at the API.

use std::time::Duration;

use msghub_sim::{FaultPlan, SimConfig};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

impl TestApp {
    /// An `alipay_life` channel on the simulated gateway, granted to the test source, whose
    /// answers are checked with `alipay_public_key`.
    async fn alipay_channel(&self, alipay_public_key: &str) -> i64 {
        let ch = self
            .admin_post(
                "/api/channels",
                json!({"type": "alipay_life", "name": "alipay sim", "credentials": {
                    "app_id": SimConfig::default().alipay_app_id,
                    "private_key": msghub_sim::alipay::APP_PRIVATE_KEY,
                    "alipay_public_key": alipay_public_key,
                    "base_url": format!("{}/gateway.do", self.sim.http_url())}}),
            )
            .await;
        let id = ch["id"].as_i64().expect("channel id");
        self.grant(id).await;
        id
    }
}

fn template(keyword: &str) -> Value {
    json!([{"template_id": "e44cd3e52ffa46b1a50afc145f55d1ea", "context": {
        "head_color": "#85be53", "url": "https://example.com/flight/HU7142", "action_name": "查看详情",
        "first": "Your flight is on time", "keyword1": {"value": keyword, "color": "#85be53"},
        "remark": "Gate 12"}}])
}

#[actix_web::test]
async fn signed_template_messages_reach_each_follower_once() {
    let app = spawn_app().await;
    let channel = app
        .alipay_channel(&msghub_sim::alipay::platform_public_key_pem())
        .await;
    // The private key is stored encrypted and never read back.
    let read: Value = app
        .admin_get(&format!("/api/channels/{channel}"))
        .await
        .json()
        .await
        .expect("json");
    assert!(
        !read.to_string().contains("PRIVATE KEY"),
        "the private key was read back: {read}"
    );
    assert!(app.sim.state.set_faults(
        "alipay_life",
        FaultPlan {
            perm_addresses: vec!["2088000000000009".into()],
            ..FaultPlan::default()
        },
    ));
    app.add_users(
        [
            json!({"userid": "a1", "add": {"tag": ["fliers"], "alipaylife": "2088000000000001"}}),
            json!({"userid": "a2", "add": {"tag": ["fliers"], "alipaylife": "074a1CcTG1LelxKe4xQC0zgNdId0nx"}}),
            json!({"userid": "a9", "add": {"tag": ["fliers"], "alipaylife": "2088000000000009"}}),
        ]
        .into_iter(),
    )
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["fliers"], "msg_alipay_life": template("HU7142")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("alipay_life", "2088000000000001"), 1);
    assert_eq!(
        app.sim
            .state
            .count("alipay_life", "074a1CcTG1LelxKe4xQC0zgNdId0nx"),
        1
    );
    assert_eq!(app.sim.state.total("alipay_life"), 2);
    let rows = app.deliveries(&msgid).await;
    let status = |userid: &str| {
        let row = rows.iter().find(|d| d["userid"] == userid).expect("row");
        (row["status"].clone(), row["code"].clone())
    };
    assert_eq!(status("a1"), (json!("submitted"), json!("10000")));
    assert_eq!(status("a2").0, "submitted");
    assert_eq!(
        status("a9"),
        (json!("failed"), json!("PUB.USER_NOT_FOLLOW"))
    );
    assert!(app.suppressed("?channel_type=alipay_life").await.is_empty());
}

#[actix_web::test]
async fn an_answer_that_does_not_verify_is_never_counted_as_sent() {
    let app = spawn_app().await;
    // The channel holds another key than the gateway signs with: the app's own public key.
    let wrong = {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        let app_key = rsa::RsaPrivateKey::from_pkcs8_pem(msghub_sim::alipay::APP_PRIVATE_KEY)
            .expect("the simulator's app key");
        rsa::RsaPublicKey::from(&app_key)
            .to_public_key_pem(LineEnding::LF)
            .expect("pem")
    };
    app.alipay_channel(&wrong).await;
    app.add_users(std::iter::once(
        json!({"userid": "a1", "add": {"alipaylife": "2088000000000001"}}),
    ))
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["a1"], "msg_alipay_life": template("HU7142")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    let rows = app.deliveries(&msgid).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0]["status"], &rows[0]["code"]),
        (&json!("failed"), &json!("invalid_response_signature")),
        "{rows:?}"
    );
}

#[actix_web::test]
async fn a_template_message_the_gateway_would_refuse_is_refused_at_the_api() {
    let app = spawn_app().await;
    app.alipay_channel(&msghub_sim::alipay::platform_public_key_pem())
        .await;
    app.add_users(std::iter::once(
        json!({"userid": "a1", "add": {"alipaylife": "2088000000000001"}}),
    ))
    .await;
    let mut no_action = template("x");
    no_action[0]["context"]
        .as_object_mut()
        .expect("context")
        .remove("action_name");
    app.assert_contents_refused(
        "alipay_life",
        "a1",
        &[
        (
            json!([{"context": template("x")[0]["context"]}]),
            "msg_alipay_life.template_id",
        ),
        (no_action, "msg_alipay_life.context.action_name"),
        (
            json!([{"template_id": "T", "context": template("x")[0]["context"], "to_user_id": "2088"}]),
            "msg_alipay_life.to_user_id",
        ),
    ],
    )
    .await;
}
