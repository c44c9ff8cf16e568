//! Feishu bot messages (`feishu`) end to end against the simulator: each recipient sent to
//! once with the bot body, a tenant token that expires fetched again without a failed
//! delivery, a recipient the bot cannot reach failed without being suppressed, a retract
//! withdrawing what was sent, and contents Feishu would refuse refused at the API.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use msghub_sim::{FaultPlan, SimConfig};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

impl TestApp {
    /// A `feishu` channel on the simulator's app, granted to the test source.
    async fn feishu_channel(&self) -> i64 {
        let sim = SimConfig::default();
        let ch = self
            .admin_post(
                "/api/channels",
                json!({"type": "feishu", "name": "feishu sim", "credentials": {
                    "app_id": sim.feishu_app_id, "app_secret": sim.feishu_app_secret,
                    "base_url": format!("{}/open-apis", self.sim.http_url())}}),
            )
            .await;
        let id = ch["id"].as_i64().expect("channel id");
        self.grant(id).await;
        id
    }
}

fn text(content: &str) -> Value {
    json!([{"msg_type": "text", "content": {"text": content}}])
}

fn open_id(i: usize) -> String {
    format!("ou_{i:032}")
}

#[actix_web::test]
async fn bot_messages_reach_each_recipient_once_and_a_retract_withdraws_them() {
    const N: usize = 40;
    let app = spawn_app().await;
    app.feishu_channel().await;
    assert!(app.sim.state.set_faults(
        "feishu",
        FaultPlan {
            perm_addresses: vec![open_id(N)],
            ..FaultPlan::default()
        },
    ));
    app.add_users((0..=N).map(
        |i| json!({"userid": format!("f{i:02}"), "add": {"tag": ["team"], "feishu": open_id(i)}}),
    ))
    .await;

    let first = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["team"], "msg_feishu": text("Build #42 passed")}),
        )
        .await;
    let status = app.wait_done(&first, Duration::from_secs(30)).await;
    let counts = status["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel_type"] == "feishu")
        .expect("feishu counts")
        .clone();
    assert_eq!(
        (&counts["target"], &counts["sent"], &counts["failed"]),
        (&json!(N + 1), &json!(N), &json!(1)),
        "{status}"
    );
    let received = app.sim.state.received("feishu");
    assert_eq!(received.len(), N);
    assert!(received.values().all(|n| *n == 1));
    let deliveries = app.deliveries(&first).await;
    let unreachable: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["status"] == "failed")
        .collect();
    assert_eq!(unreachable.len(), 1);
    assert_eq!(unreachable[0]["code"], "230013", "{:?}", unreachable[0]);
    // The bot's availability is the app's configuration, not the user's: nobody suppressed.
    assert!(app.suppressed("?channel_type=feishu").await.is_empty());

    // The tenant token expires between two messages: fetched again, nothing fails.
    app.sim.state.expire_feishu_token();
    let second = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["f00", "f01"], "msg_feishu": text("Deploy started")}),
        )
        .await;
    app.wait_done(&second, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("feishu", &open_id(0)), 2);
    assert_eq!(app.sim.state.count("feishu", &open_id(1)), 2);
    let rows = app.deliveries(&second).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|d| d["status"] == "submitted"), "{rows:?}");

    // A retract withdraws each message the first send made.
    let (code, body) = app.v1(&format!("/v1/retract/{first}"), &json!({})).await;
    assert_eq!((code, body["code"].as_i64()), (200, Some(0)), "{body}");
    let sent: BTreeSet<String> = deliveries
        .iter()
        .filter_map(|d| d["provider_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(sent.len(), N);
    let started = Instant::now();
    loop {
        let recalled: BTreeSet<String> = app.sim.state.feishu_recalled().into_iter().collect();
        if recalled == sent {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "recalled {} of {}",
            recalled.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_bot_message_feishu_would_refuse_is_refused_at_the_api() {
    let app = spawn_app().await;
    app.feishu_channel().await;
    app.add_users(std::iter::once(
        json!({"userid": "f0", "add": {"feishu": open_id(0)}}),
    ))
    .await;
    app.assert_contents_refused(
        "feishu",
        "f0",
        &[
            (json!([{"content": {"text": "hi"}}]), "msg_feishu.msg_type"),
            (
                json!([{"msg_type": "text", "content": {}}]),
                "msg_feishu.content.text",
            ),
            (
                json!([{"msg_type": "text", "content": "not json"}]),
                "msg_feishu.content",
            ),
            (
                json!([{"msg_type": "text", "content": {"text": "hi"}, "receive_id": "ou_other"}]),
                "msg_feishu.receive_id",
            ),
        ],
    )
    .await;
}
