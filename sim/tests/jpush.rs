//! JPush simulator tests: auth, validation, recording, rate limits and fault injection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use msghub_sim::FaultPlan;
use serde_json::{Value, json};

const AUTH: &str = "sim-app-key:sim-master-secret";

fn basic(cred: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(cred)
    )
}

fn body(ids: &[&str]) -> Value {
    json!({
        "platform": ["android", "ios"],
        "audience": {"registration_id": ids},
        "notification": {"alert": "hi", "android": {"title": "t"}},
        "options": {"sendno": 42}
    })
}

async fn post(
    c: &reqwest::Client,
    base: &str,
    cred: &str,
    b: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = c
        .post(format!("{base}/v3/push"))
        .header("Authorization", basic(cred))
        .json(b)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

#[actix_web::test]
async fn auth_success_recording_and_validation() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();

    let (s, h, v) = post(&c, &base, "sim-app-key:wrong", &body(&["r1"])).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], 1004);
    assert!(h.contains_key("x-rate-limit-limit"));
    let r = c
        .post(format!("{base}/v3/push"))
        .json(&body(&["r1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let (s, h, v) = post(&c, &base, AUTH, &body(&["r1", "r2"])).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["sendno"], "42");
    let id1: u64 = v["msg_id"].as_str().unwrap().parse().unwrap();
    for k in [
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
    ] {
        assert!(h.contains_key(k), "missing {k}");
    }
    let (_, _, v) = post(&c, &base, AUTH, &body(&["r1"])).await;
    let id2: u64 = v["msg_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(id1, id2);
    assert_eq!(sim.state.count("app", "r1"), 2);
    assert_eq!(sim.state.count("app", "r2"), 1);
    assert_eq!(sim.state.total("app"), 3);
    let ev = sim.state.events("app");
    assert_eq!(ev.len(), 2);
    assert!(ev[0].seq < ev[1].seq);
    assert_eq!(ev[0].addresses_count(), 2);

    // validation errors record nothing
    let (s, _, v) = post(
        &c,
        &base,
        AUTH,
        &json!({"platform":"all","audience":{"registration_id":["x"]}}),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1002)));
    let (s, _, v) = post(&c, &base, AUTH, &body(&[""])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1003)));
    let mut b = body(&["x"]);
    b["nope"] = json!(1);
    let (s, _, v) = post(&c, &base, AUTH, &b).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1009)));
    let ids: Vec<String> = (0..1001).map(|i| format!("id{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (s, _, v) = post(&c, &base, AUTH, &body(&refs)).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1003)));
    let (s, _, _) = post(&c, &base, AUTH, &body(&refs[..1000])).await;
    assert_eq!(s, 200);
    assert_eq!(sim.state.total("app"), 1003);
    assert_eq!(sim.state.calls("app"), 9);
    assert_eq!(sim.state.failed_calls("app"), 6);

    // validate records nothing; GET is 405/1001
    let r = c
        .post(format!("{base}/v3/push/validate"))
        .header("Authorization", basic(AUTH))
        .json(&body(&["v1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sim.state.count("app", "v1"), 0);
    let r = c
        .get(format!("{base}/v3/push"))
        .header("Authorization", basic(AUTH))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], 1001);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_rate_limit_and_cid() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let st = &sim.state;

    st.set_faults(
        "app",
        FaultPlan {
            fail_next: 1,
            fail_status: 503,
            ..FaultPlan::default()
        },
    );
    let (s, _, v) = post(&c, &base, AUTH, &body(&["a"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (503, Some(1030)));
    st.set_faults(
        "app",
        FaultPlan {
            fail_next: 1,
            fail_status: 500,
            ..FaultPlan::default()
        },
    );
    let (s, _, v) = post(&c, &base, AUTH, &body(&["a"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (500, Some(1000)));
    st.set_faults(
        "app",
        FaultPlan {
            fail_next: 1,
            fail_status: 429,
            ..FaultPlan::default()
        },
    );
    let (s, h, v) = post(&c, &base, AUTH, &body(&["a"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (429, Some(2002)));
    assert_eq!(h["x-rate-limit-reset"], "1");
    assert_eq!(h["retry-after"], "1");
    st.set_faults(
        "app",
        FaultPlan {
            fail_code: Some("1011".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    );
    let (s, _, v) = post(&c, &base, AUTH, &body(&["a"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1011)));
    assert_eq!(st.count("app", "a"), 0);
    let (s, _, _) = post(&c, &base, AUTH, &body(&["a"])).await;
    assert_eq!(s, 200);

    st.set_faults(
        "app",
        FaultPlan {
            perm_addresses: vec!["dead".into()],
            ..FaultPlan::default()
        },
    );
    let (s, _, v) = post(&c, &base, AUTH, &body(&["dead"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1011)));
    let (s, _, v) = post(&c, &base, AUTH, &body(&["dead", "b"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (400, Some(1003)));
    assert_eq!(st.count("app", "b"), 0);
    assert_eq!(st.failed_calls("app"), 6);

    st.set_faults(
        "app",
        FaultPlan {
            rate_limit_per_minute: Some(2),
            ..FaultPlan::default()
        },
    );
    let (_, h, _) = post(&c, &base, AUTH, &body(&["b"])).await;
    assert_eq!(h["x-rate-limit-limit"], "2");
    assert_eq!(h["x-rate-limit-remaining"], "1");
    let (s, _, _) = post(&c, &base, AUTH, &body(&["b"])).await;
    assert_eq!(s, 200);
    let (s, _, v) = post(&c, &base, AUTH, &body(&["b"])).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (429, Some(2002)));
    st.set_faults("app", FaultPlan::default());

    // same cid → same msg_id, recorded once
    let mut b = body(&["c"]);
    b["cid"] = json!("cid-1");
    let (_, _, v1) = post(&c, &base, AUTH, &b).await;
    let (_, _, v2) = post(&c, &base, AUTH, &b).await;
    assert_eq!(v1["msg_id"], v2["msg_id"]);
    assert_eq!(st.count("app", "c"), 1);

    // fault plan over HTTP
    let r = c
        .post(format!("{base}/sim/faults"))
        .json(&json!({"channel": "app", "fail_next": 1, "fail_status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, _, _) = post(&c, &base, AUTH, &body(&["d"])).await;
    assert_eq!(s, 503);
    let (s, _, _) = post(&c, &base, AUTH, &body(&["d"])).await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[actix_web::test]
async fn latency_override() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    sim.state.set_faults(
        "app",
        FaultPlan {
            latency_ms: Some(150),
            ..FaultPlan::default()
        },
    );
    let t = std::time::Instant::now();
    let (s, _, _) = post(&c, &sim.http_url(), AUTH, &body(&["l"])).await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    sim.stop().await;
}

#[actix_web::test]
async fn accepted_pushes_can_be_withdrawn_and_the_withdrawals_are_listed() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let (s, _, v) = post(&c, &base, AUTH, &body(&["r1"])).await;
    assert_eq!(s, 200);
    let msg_id = v["msg_id"].as_str().unwrap().to_string();
    let delete = |cred: &'static str, id: String| {
        let c = c.clone();
        let url = format!("{base}/v3/push/{id}");
        async move {
            let r = c
                .delete(url)
                .header("Authorization", basic(cred))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (s, v) = delete("sim-app-key:wrong", msg_id.clone()).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (401, Some(1004)));
    let (s, v) = delete(AUTH, "999".into()).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(1003)));
    assert!(sim.state.recalled().is_empty());
    assert_eq!(delete(AUTH, msg_id.clone()).await.0, 200);
    assert_eq!(
        delete(AUTH, msg_id.clone()).await.0,
        200,
        "a repeat succeeds"
    );
    assert_eq!(sim.state.recalled(), vec![msg_id.clone()]);

    let listed: Value = c
        .get(format!("{base}/sim/recalls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!({"app": {"count": 1, "msg_ids": [msg_id]}, "wechatwk": {"count": 0, "msg_ids": []},
               "feishu": {"count": 0, "msg_ids": []},
               "dingtalk_cc": {"count": 0, "task_ids": []}})
    );
    sim.state.reset();
    assert!(sim.state.recalled().is_empty());
}
