//! The WeChat Official Account endpoints: access tokens, template sends, errcodes and faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use msghub_sim::FaultPlan;
use serde_json::{Value, json};

const APPID: &str = "wx5151000000000001";
const SECRET: &str = "sim-wechat-secret";

async fn post(c: &reqwest::Client, url: String, body: Value) -> Value {
    let r = c.post(url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn stable(c: &reqwest::Client, base: &str, force: bool) -> Value {
    post(
        c,
        format!("{base}/cgi-bin/stable_token"),
        json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": force}),
    )
    .await
}

async fn send(c: &reqwest::Client, base: &str, token: &str, body: Value) -> Value {
    post(
        c,
        format!("{base}/cgi-bin/message/template/send?access_token={token}"),
        body,
    )
    .await
}

fn template(openid: &str, client_msg_id: &str) -> Value {
    json!({"touser": openid, "template_id": "TPL_1", "client_msg_id": client_msg_id,
           "data": {"thing1": {"value": "shipped"}}})
}

#[actix_web::test]
async fn tokens_are_issued_as_wechat_issues_them() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let first = stable(&c, &base, false).await;
    let token = first["access_token"].as_str().unwrap().to_string();
    assert!(first["expires_in"].as_u64().unwrap() > 7000, "{first}");
    // Normal mode: the same token while it is valid.
    assert_eq!(
        stable(&c, &base, false).await["access_token"],
        token.as_str()
    );
    // Force mode: a new one, and the old one is refused.
    let forced = stable(&c, &base, true).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(forced, token);
    let v = send(&c, &base, &token, template("oUser0000001", "a")).await;
    assert_eq!(v["errcode"], 40001, "{v}");
    assert_eq!(
        send(&c, &base, &forced, template("oUser0000001", "a")).await["errcode"],
        0
    );
    // The classic endpoint issues a new token per call.
    let classic = |q: String| {
        let c = c.clone();
        async move {
            c.get(q)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let url =
        format!("{base}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}");
    let a = classic(url.clone()).await;
    let b = classic(url).await;
    assert_ne!(a["access_token"], b["access_token"]);
    // The older one still works for a while (WeChat's grace while a refresh spreads).
    let older = a["access_token"].as_str().unwrap();
    assert_eq!(
        send(&c, &base, older, template("oUser0000001", "grace")).await["errcode"],
        0
    );
    for (q, code) in [
        (
            format!("{base}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=wrong"),
            40001,
        ),
        (
            format!("{base}/cgi-bin/token?grant_type=client_credential&appid=wx0&secret={SECRET}"),
            40013,
        ),
        (
            format!("{base}/cgi-bin/token?grant_type=password&appid={APPID}&secret={SECRET}"),
            40002,
        ),
    ] {
        assert_eq!(classic(q).await["errcode"], code);
    }
    // Expiry: every token is refused with 42001 until a new one is fetched.
    sim.state.expire_wechat_tokens();
    let v = send(&c, &base, &forced, template("oUser0000001", "b")).await;
    assert_eq!(v["errcode"], 42001, "{v}");
    let fresh = stable(&c, &base, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(fresh, forced);
    assert_eq!(
        send(&c, &base, &fresh, template("oUser0000001", "b")).await["errcode"],
        0
    );
    sim.stop().await;
}

#[actix_web::test]
async fn template_sends_are_checked_recorded_and_deduped() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let token = stable(&c, &base, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let v = send(&c, &base, &token, template("oUser0000001", "msghub-7-1")).await;
    assert_eq!(v["errcode"], 0, "{v}");
    let msgid = v["msgid"].as_u64().unwrap();
    // The same openid and client_msg_id: one message, the same msgid.
    let again = send(&c, &base, &token, template("oUser0000001", "msghub-7-1")).await;
    assert_eq!(again["msgid"].as_u64(), Some(msgid));
    let other = send(&c, &base, &token, template("oUser0000001", "msghub-7-2")).await;
    assert_ne!(other["msgid"].as_u64(), Some(msgid));
    assert_eq!(sim.state.count("wechatoa", "oUser0000001"), 2);

    let missing = c
        .post(format!("{base}/cgi-bin/message/template/send"))
        .json(&template("oUser0000001", "x"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(missing["errcode"], 41001);
    for (body, code) in [
        (
            json!({"template_id": "T", "data": {"a": {"value": "b"}}}),
            40003,
        ),
        (
            json!({"touser": "oUser0000001", "data": {"a": {"value": "b"}}}),
            40037,
        ),
        (
            json!({"touser": "oUser0000001", "template_id": "T", "data": {"a": "b"}}),
            47003,
        ),
    ] {
        assert_eq!(send(&c, &base, &token, body).await["errcode"], code);
    }
    assert_eq!(
        send(&c, &base, "not-a-token", template("oUser0000001", "y")).await["errcode"],
        40001
    );

    assert!(sim.state.set_faults(
        "wechatoa",
        FaultPlan {
            perm_addresses: vec!["oGone0000001".into()],
            fail_code: Some("45009".into()),
            fail_code_next: 1,
            ..FaultPlan::default()
        },
    ));
    assert_eq!(
        send(&c, &base, &token, template("oUser0000002", "z")).await["errcode"],
        45009
    );
    assert_eq!(
        send(&c, &base, &token, template("oGone0000001", "z")).await["errcode"],
        43004
    );
    assert_eq!(sim.state.count("wechatoa", "oGone0000001"), 0);
    sim.state.set_faults(
        "wechatoa",
        FaultPlan {
            fail_next: 1,
            fail_status: 502,
            ..FaultPlan::default()
        },
    );
    let r = c
        .post(format!(
            "{base}/cgi-bin/message/template/send?access_token={token}"
        ))
        .json(&template("oUser0000002", "w"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    sim.stop().await;
}

#[actix_web::test]
async fn subscribe_messages_use_up_one_time_subscriptions() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = sim.http_url();
    let token = stable(&c, &base, false).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{base}/cgi-bin/message/subscribe/send?access_token={token}");
    let body = |openid: &str, thing: &str| {
        json!({"touser": openid, "template_id": "SUB_1", "page": "pages/index",
               "data": {"thing1": {"value": thing}}})
    };
    // Without a grant, a long-term subscription: every send goes.
    for _ in 0..2 {
        let v = post(&c, url.clone(), body("oMini0000001", "shipped")).await;
        assert_eq!(v["errcode"], 0, "{v}");
        assert!(v["msgid"].is_u64(), "{v}");
    }
    assert_eq!(sim.state.count("wechatmp", "oMini0000001"), 2);
    // One one-time subscription, granted over the control API: one send, then 43101.
    let r = c
        .post(format!("{base}/sim/subscriptions"))
        .json(&json!({"openid": "oMini0000002", "template_id": "SUB_1", "remaining": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        post(&c, url.clone(), body("oMini0000002", "a")).await["errcode"],
        0
    );
    assert_eq!(
        post(&c, url.clone(), body("oMini0000002", "b")).await["errcode"],
        43101
    );
    assert_eq!(sim.state.count("wechatmp", "oMini0000002"), 1);
    // A thing value over 20 characters, and a refused user.
    assert_eq!(
        post(&c, url.clone(), body("oMini0000001", &"x".repeat(21))).await["errcode"],
        47003
    );
    sim.state.set_faults(
        "wechatmp",
        FaultPlan {
            perm_addresses: vec!["oMini0000003".into()],
            ..FaultPlan::default()
        },
    );
    assert_eq!(
        post(&c, url.clone(), body("oMini0000003", "a")).await["errcode"],
        43101
    );
    assert_eq!(
        post(
            &c,
            format!("{base}/cgi-bin/message/subscribe/send?access_token=nope"),
            body("oMini0000001", "a")
        )
        .await["errcode"],
        40001
    );
}
