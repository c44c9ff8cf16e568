//! The Feishu endpoints: tenant tokens, bearer checks, sends deduped by uuid, recalls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{Value, json};

async fn call(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[actix_web::test]
async fn sends_are_deduped_by_uuid_and_recalls_are_listed() {
    let sim = common::sim(|_| {}).await;
    let c = common::client();
    let base = format!("{}/open-apis", sim.http_url());
    let token_url = format!("{base}/auth/v3/tenant_access_token/internal");
    let (status, wrong) = call(
        c.post(&token_url)
            .json(&json!({"app_id": "cli_5151000000000001", "app_secret": "nope"})),
    )
    .await;
    assert_eq!((status, &wrong["code"]), (400, &json!(10014)));
    let (_, t) = call(
        c.post(&token_url)
            .json(&json!({"app_id": "cli_5151000000000001", "app_secret": "sim-feishu-secret"})),
    )
    .await;
    let token = t["tenant_access_token"].as_str().unwrap().to_string();
    assert!(t["expire"].as_u64().unwrap() > 7000, "{t}");
    let send_url = format!("{base}/im/v1/messages?receive_id_type=open_id");
    let body = |uuid: &str| json!({"receive_id": "ou_1", "msg_type": "text", "content": "{\"text\":\"hi\"}", "uuid": uuid});
    let (status, v) = call(c.post(&send_url).json(&body("u-1"))).await;
    assert_eq!((status, &v["code"]), (400, &json!(99991661)), "no token");
    let (status, v) = call(c.post(&send_url).bearer_auth("t-nope").json(&body("u-1"))).await;
    assert_eq!((status, &v["code"]), (400, &json!(99991663)));
    let (status, first) = call(c.post(&send_url).bearer_auth(&token).json(&body("u-1"))).await;
    assert_eq!((status, &first["code"]), (200, &json!(0)), "{first}");
    let (_, again) = call(c.post(&send_url).bearer_auth(&token).json(&body("u-1"))).await;
    assert_eq!(again["data"]["message_id"], first["data"]["message_id"]);
    let (_, other) = call(c.post(&send_url).bearer_auth(&token).json(&body("u-2"))).await;
    assert_ne!(other["data"]["message_id"], first["data"]["message_id"]);
    assert_eq!(
        sim.state.count("feishu", "ou_1"),
        2,
        "the repeat of u-1 was not sent again"
    );
    let (status, v) = call(
        c.post(format!("{base}/im/v1/messages?receive_id_type=chat"))
            .bearer_auth(&token)
            .json(&body("u-3")),
    )
    .await;
    assert_eq!((status, &v["code"]), (400, &json!(99992402)));

    let id = first["data"]["message_id"].as_str().unwrap();
    let (status, v) = call(
        c.delete(format!("{base}/im/v1/messages/{id}"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!((status, &v["code"]), (200, &json!(0)));
    let (status, _) = call(
        c.delete(format!("{base}/im/v1/messages/om_unknown"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(sim.state.feishu_recalled(), vec![id.to_string()]);

    sim.state.expire_feishu_token();
    let (status, v) = call(c.post(&send_url).bearer_auth(&token).json(&body("u-4"))).await;
    assert_eq!((status, &v["code"]), (400, &json!(99991668)));
}
