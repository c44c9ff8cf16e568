//! Webhook signature checks, webhook faults and the `/sim/` control API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use hmac::{Hmac, KeyInit, Mac};
use msghub_sim::FaultPlan;
use serde_json::{Value, json};
use sha2::Sha256;

fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("{ts}.").as_bytes());
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

async fn hook(c: &reqwest::Client, url: &str, body: &str, secret: &str) -> u16 {
    let ts = chrono::Utc::now().timestamp().to_string();
    c.post(url)
        .header("Content-Type", "application/json")
        .header("X-Msghub-Timestamp", &ts)
        .header("X-Msghub-Signature", sign(secret, &ts, body.as_bytes()))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[actix_web::test]
async fn webhook_signature_recording_and_faults() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let url = sim.webhook_url("orders");
    let secret = "sim-webhook-secret";

    assert_eq!(
        hook(
            &c,
            &url,
            r#"{"target":"https://x.example/a","n":1}"#,
            secret
        )
        .await,
        200
    );
    assert_eq!(hook(&c, &url, r#"{"n":2}"#, secret).await, 200);
    assert_eq!(hook(&c, &url, r#"{"n":3}"#, "wrong").await, 401);
    let r = c.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // signature over a different body
    let ts = chrono::Utc::now().timestamp().to_string();
    let r = c
        .post(&url)
        .header("X-Msghub-Timestamp", &ts)
        .header("X-Msghub-Signature", sign(secret, &ts, b"{}"))
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(sim.state.count("webhook", "https://x.example/a"), 1);
    assert_eq!(sim.state.count("webhook", "orders"), 1);

    sim.state.set_faults(
        "webhook",
        FaultPlan {
            fail_next: 1,
            fail_status: 503,
            ..FaultPlan::default()
        },
    );
    assert_eq!(hook(&c, &url, r#"{"n":4}"#, secret).await, 503);
    sim.state.set_faults(
        "webhook",
        FaultPlan {
            perm_addresses: vec!["gone".into()],
            ..FaultPlan::default()
        },
    );
    assert_eq!(hook(&c, &url, r#"{"target":"gone"}"#, secret).await, 410);
    sim.state.set_faults(
        "webhook",
        FaultPlan {
            fail_code: Some("422".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    );
    assert_eq!(hook(&c, &url, r#"{"n":5}"#, secret).await, 422);
    assert_eq!(hook(&c, &url, r#"{"n":6}"#, secret).await, 200);
    assert_eq!(sim.state.total("webhook"), 3);
    assert_eq!(sim.state.calls("webhook"), 9);
    assert_eq!(sim.state.failed_calls("webhook"), 6);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let h: Value = c
        .get(format!("{base}/sim/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["ok"], true);

    let ts = chrono::Utc::now().timestamp().to_string();
    let body = json!({"target": "t1"}).to_string();
    let r = c
        .post(sim.webhook_url("n"))
        .header("X-Msghub-Timestamp", &ts)
        .header(
            "X-Msghub-Signature",
            sign("sim-webhook-secret", &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let v: Value = c
        .get(format!("{base}/sim/received?channel=webhook"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["calls"], 1);
    assert_eq!(v["failed_calls"], 0);
    assert_eq!(v["addresses"]["t1"], 1);
    let all: Value = c
        .get(format!("{base}/sim/received"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["app"]["total"], 0);
    let r = c
        .get(format!("{base}/sim/received?channel=fax"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let ev: Value = c
        .get(format!("{base}/sim/events?channel=webhook"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ev["events"][0]["addresses"][0], "t1");

    let r = c
        .post(format!("{base}/sim/faults"))
        .json(&json!({"channel": "sms", "fail_next": 2, "fail_status": 500, "latency_ms": 5, "perm_addresses": ["13800000000"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let f: Value = c
        .get(format!("{base}/sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["sms"]["fail_next"], 2);
    assert_eq!(f["sms"]["latency_ms"], 5);
    assert_eq!(
        sim.state.faults("sms").unwrap().perm_addresses,
        vec!["13800000000".to_string()]
    );

    let r = c
        .delete(format!("{base}/sim/received"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sim.state.total("webhook"), 0);
    assert!(sim.state.events("webhook").is_empty());
    assert_eq!(sim.state.faults("sms").unwrap(), FaultPlan::default());
    sim.stop().await;
}
