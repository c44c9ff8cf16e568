//! The WeCom endpoints: access tokens, batched sends with the members not reached listed,
//! errcodes, faults and recalls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use msghub_sim::FaultPlan;
use serde_json::{Value, json};

const CORPID: &str = "ww5151000000000001";
const SECRET: &str = "sim-wecom-secret";

async fn get(c: &reqwest::Client, url: String) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> Value {
    let r = c.post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn token(c: &reqwest::Client, base: &str) -> String {
    let v = get(
        c,
        format!("{base}/cgi-bin/gettoken?corpid={CORPID}&corpsecret={SECRET}"),
    )
    .await;
    assert_eq!(v["errcode"], 0, "{v}");
    assert!(v["expires_in"].as_u64().unwrap() > 7000, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

fn message(touser: &str) -> Value {
    json!({"touser": touser, "agentid": 1000002, "msgtype": "text", "text": {"content": "hi"}})
}

#[actix_web::test]
async fn sends_name_the_members_not_reached_and_recalls_are_listed() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    // Wrong corpid or secret: refused; the token is the same while it is valid.
    let wrong = get(
        &c,
        format!("{base}/cgi-bin/gettoken?corpid=other&corpsecret={SECRET}"),
    )
    .await;
    assert_eq!(wrong["errcode"], 40013);
    let wrong = get(
        &c,
        format!("{base}/cgi-bin/gettoken?corpid={CORPID}&corpsecret=nope"),
    )
    .await;
    assert_eq!(wrong["errcode"], 40001);
    let t = token(&c, &base).await;
    assert_eq!(token(&c, &base).await, t);
    let send = |token: String, body: Value| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            post(
                &c,
                format!("{base}/cgi-bin/message/send?access_token={token}"),
                body,
            )
            .await
        }
    };

    assert!(sim.state.set_faults(
        "wecom",
        FaultPlan {
            perm_addresses: vec!["left.company".into()],
            ..FaultPlan::default()
        },
    ));
    let v = send(t.clone(), message("zhangsan|Left.Company|lisi|ZHANGSAN")).await;
    assert_eq!(
        (&v["errcode"], &v["invaliduser"]),
        (&json!(0), &json!("left.company")),
        "{v}"
    );
    let msgid = v["msgid"].as_str().unwrap().to_string();
    // Member ids are case-insensitive: zhangsan once.
    assert_eq!(sim.state.count("wechatwk", "zhangsan"), 1);
    assert_eq!(sim.state.count("wechatwk", "lisi"), 1);
    assert_eq!(sim.state.total("wechatwk"), 2);
    let v = send(t.clone(), message("left.company")).await;
    assert_eq!(
        (&v["errcode"], &v["invaliduser"]),
        (&json!(81013), &json!("left.company"))
    );

    // Token, agent and body errors.
    assert_eq!(send("nope".into(), message("a")).await["errcode"], 40014);
    let mut other_agent = message("a");
    other_agent["agentid"] = json!(7);
    assert_eq!(send(t.clone(), other_agent).await["errcode"], 40056);
    let mut empty = message("a");
    empty["text"]["content"] = json!("");
    assert_eq!(send(t.clone(), empty).await["errcode"], 44004);
    // Injected: an errcode, then 429 as WeCom's frequency limit.
    assert!(sim.state.set_faults(
        "wechatwk",
        FaultPlan {
            fail_code: Some("-1".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    ));
    assert_eq!(send(t.clone(), message("a")).await["errcode"], -1);
    assert!(sim.state.set_faults(
        "wechatwk",
        FaultPlan {
            fail_next: 1,
            fail_status: 429,
            ..FaultPlan::default()
        },
    ));
    assert_eq!(send(t.clone(), message("a")).await["errcode"], 45009);

    // Recalls: a known msgid once however often, an unknown one refused.
    let recall = |body: Value| {
        let (c, base, t) = (c.clone(), base.clone(), t.clone());
        async move {
            post(
                &c,
                format!("{base}/cgi-bin/message/recall?access_token={t}"),
                body,
            )
            .await
        }
    };
    assert_eq!(recall(json!({"msgid": msgid})).await["errcode"], 0);
    assert_eq!(recall(json!({"msgid": msgid})).await["errcode"], 0);
    assert_eq!(
        recall(json!({"msgid": "SIMWK_unknown"})).await["errcode"],
        40058
    );
    let listed = get(&c, format!("{base}/sim/recalls")).await;
    assert_eq!(listed["wechatwk"], json!({"count": 1, "msg_ids": [msgid]}));

    // An expired token is told apart from an unknown one.
    sim.state.expire_wecom_token();
    assert_eq!(send(t.clone(), message("a")).await["errcode"], 42001);
    assert_ne!(token(&c, &base).await, t);
}
