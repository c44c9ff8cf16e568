//! WeCom application messages (`wechatwk`) end to end against the simulator: members batched
//! up to 1000 a call and each sent to once, a member WeCom cannot reach failed and suppressed
//! while the rest of its call is sent, a retract recalling each call's msgid once, and
//! contents WeCom would refuse refused at the API.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use msghub_sim::{FaultPlan, SimConfig};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

impl TestApp {
    /// A `wechatwk` channel on the simulator's WeCom application, granted to the test source.
    async fn wecom_channel(&self) -> i64 {
        let sim = SimConfig::default();
        let ch = self
            .admin_post(
                "/api/channels",
                json!({"type": "wechatwk", "name": "wecom sim", "credentials": {
                    "corpid": sim.wecom_corpid, "corpsecret": sim.wecom_corpsecret,
                    "agentid": sim.wecom_agentid, "base_url": self.sim.http_url()}}),
            )
            .await;
        let id = ch["id"].as_i64().expect("channel id");
        self.grant(id).await;
        id
    }
}

fn text(content: &str) -> Value {
    json!([{"msgtype": "text", "text": {"content": content}}])
}

#[actix_web::test]
async fn members_are_sent_in_batches_once_each_and_unreachable_ones_are_suppressed() {
    const N: usize = 1500;
    let app = spawn_app().await;
    let channel = app.wecom_channel().await;
    // The credentials are stored encrypted and read back masked.
    let read: Value = app
        .admin_get(&format!("/api/channels/{channel}"))
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(
        read["credentials"]["corpsecret"],
        SimConfig::default().wecom_corpsecret,
        "{read}"
    );
    assert!(app.sim.state.set_faults(
        "wechatwk",
        FaultPlan {
            perm_addresses: vec!["gone.member".into()],
            ..FaultPlan::default()
        },
    ));
    app.add_users((0..N).map(|i| {
        json!({"userid": format!("c{i:04}"), "add": {"tag": ["corp"], "wechatwk": format!("Member.{i:04}")}})
    }))
    .await;
    app.add_users(
        [
            json!({"userid": "c-gone", "add": {"tag": ["corp"], "wechatwk": "gone.member"}}),
            json!({"userid": "c-none", "add": {"tag": ["corp"]}}),
        ]
        .into_iter(),
    )
    .await;

    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["corp"], "msg_wechatwk": text("Quarterly review at 3pm")}),
        )
        .await;
    let status = app.wait_done(&msgid, Duration::from_secs(60)).await;
    let wk = status["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel_type"] == "wechatwk")
        .expect("the wechatwk channel's counts")
        .clone();
    assert_eq!(
        (&wk["target"], &wk["sent"], &wk["failed"]),
        (&json!(N + 1), &json!(N), &json!(1)),
        "{status}"
    );

    // Each member once, the unreachable one never, in calls of up to 1000 members.
    let received = app.sim.state.received("wechatwk");
    assert_eq!(received.len(), N);
    assert!(received.values().all(|n| *n == 1), "a member sent to twice");
    assert!(received.contains_key("Member.0000") && received.contains_key("Member.1499"));
    assert!(!received.contains_key("gone.member"));
    let calls = app.sim.state.calls("wechatwk");
    assert!((2..=6).contains(&calls), "{calls} calls for {N} members");

    let deliveries = app.all_deliveries(&msgid).await;
    assert_eq!(deliveries.len(), N + 1);
    let gone: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["address"] == "gone.member")
        .collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["status"], "failed", "{:?}", gone[0]);
    let suppressed = app.suppressed("?channel_type=wechatwk").await;
    assert_eq!(
        suppressed.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        vec!["gone.member"],
        "{suppressed:?}"
    );

    // A retract recalls each call's msgid once: it names every member of its call.
    let (code, body) = app.v1(&format!("/v1/retract/{msgid}"), &json!({})).await;
    assert_eq!((code, body["code"].as_i64()), (200, Some(0)), "{body}");
    let sent_ids: BTreeSet<String> = deliveries
        .iter()
        .filter_map(|d| d["provider_id"].as_str().map(str::to_string))
        .collect();
    assert!(
        (2..=6).contains(&sent_ids.len()) && sent_ids.iter().all(|id| id.starts_with("SIMWK")),
        "{sent_ids:?}"
    );
    let started = Instant::now();
    loop {
        let recalled: BTreeSet<String> = app.sim.state.wecom_recalled().into_iter().collect();
        if recalled == sent_ids {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "recalled {recalled:?} of {sent_ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.sim.state.wecom_recalled().len(), sent_ids.len());
}

#[actix_web::test]
async fn a_content_wecom_would_refuse_is_refused_at_the_api_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.wecom_channel().await;
    app.add_users(std::iter::once(
        json!({"userid": "c1", "add": {"wechatwk": "zhangsan"}}),
    ))
    .await;
    app.assert_contents_refused(
        "wechatwk",
        "c1",
        &[
            (
                json!([{"msgtype": "text", "text": {"content": "hi"}, "touser": "@all"}]),
                "msg_wechatwk.touser",
            ),
            (json!([{"msgtype": "text"}]), "msg_wechatwk.text"),
            (
                json!([{"msgtype": "sms", "sms": {}}]),
                "msg_wechatwk.msgtype",
            ),
            (
                json!([{"msgtype": "news", "news": {"articles": []}}]),
                "msg_wechatwk.news.articles",
            ),
        ],
    )
    .await;
    // A good one goes.
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["c1"], "msg_wechatwk": text("hello")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    assert_eq!(app.sim.state.count("wechatwk", "zhangsan"), 1);
}
