//! The management API, secrets handling and the operator endpoints.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, app_msg, spawn_app};

#[actix_web::test]
async fn the_management_api_requires_the_admin_token() {
    let app = spawn_app().await;
    for path in ["/api/sources", "/api/channels"] {
        let r = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let r = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
}

#[actix_web::test]
async fn source_secrets_are_shown_once_and_channel_credentials_are_masked_and_encrypted() {
    let app = spawn_app().await;
    let listed: Value = app.admin_get("/api/sources").await.json().await.unwrap();
    let text = listed.to_string();
    assert!(text.contains(&app.source_key));
    assert!(
        !text.contains(&app.source_secret),
        "the secret is never listed"
    );

    let ch: Value = app
        .admin_get(&format!("/api/channels/{}", app.channel("app")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ch["credentials"]["master_secret"], "******");
    assert_eq!(ch["credentials"]["app_key"], "sim-app-key");
    let sms: Value = app
        .admin_get(&format!("/api/channels/{}", app.channel("sms")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sms["credentials"]["access_key_secret"], "******");

    let raw = app
        .db
        .query_all("SELECT credentials FROM channels", vec![])
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("", "credentials").unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        !raw.contains("sim-master-secret")
            && !raw.contains("sim-ak-secret")
            && !raw.contains("sim-app-key")
    );
    let stored = app
        .db
        .query_one("SELECT secret_hash FROM sources", vec![])
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        stored.try_get::<String>("", "secret_hash").unwrap(),
        app.source_secret
    );
}

#[actix_web::test]
async fn invalid_management_input_is_refused_with_stable_codes() {
    let app = spawn_app().await;
    let cases = [
        (
            "/api/channels",
            json!({"type": "pigeon", "name": "x", "credentials": {}}),
            "invalid_request",
        ),
        (
            "/api/channels",
            json!({"type": "app", "name": "x", "credentials": {"app_key": "k"}}),
            "invalid_credentials",
        ),
        (
            "/api/channels",
            json!({"type": "app", "name": "x"}),
            "invalid_request",
        ),
        ("/api/sources", json!({"name": ""}), "invalid_request"),
        ("/api/sources", json!({"nom": "x"}), "invalid_request"),
    ];
    for (path, body, code) in cases {
        let r = app
            .client
            .post(format!("{}{path}", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let resp: Value = r.json().await.unwrap();
        assert_eq!(resp["error"]["code"], code, "{resp}");
    }
    let r = app.admin_get("/api/messages/notanumber").await;
    assert_eq!(r.status().as_u16(), 400);
    let r = app.admin_get("/api/messages/12345").await;
    assert_eq!(r.status().as_u16(), 404);
}

#[actix_web::test]
async fn health_readiness_and_metrics_are_served() {
    let app = spawn_app().await;
    app.add_users([json!({"userid": "u1", "add": {"app": ["reg-1"]}})].into_iter())
        .await;
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u1"], "msg_app": app_msg()}),
        )
        .await;
    app.wait_done(&m, std::time::Duration::from_secs(30)).await;
    for path in ["/healthz", "/readyz"] {
        let r = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let text = app.metrics().await;
    for name in [
        "msghub_messages_accepted_total",
        "msghub_provider_call_duration_seconds",
        "msghub_provider_outcomes_total",
        "msghub_accept_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[actix_web::test]
async fn patching_a_channel_with_its_masked_credentials_keeps_the_secret() {
    let app = spawn_app().await;
    let path = format!("/api/channels/{}", app.channel("app"));
    let ch: Value = app.admin_get(&path).await.json().await.unwrap();
    app.admin_patch(
        &path,
        json!({"credentials": ch["credentials"], "name": "renamed"}),
    )
    .await;
    app.add_users([json!({"userid": "u1", "add": {"app": ["reg-1"]}})].into_iter())
        .await;
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u1"], "msg_app": app_msg()}),
        )
        .await;
    let s = app.wait_done(&m, std::time::Duration::from_secs(30)).await;
    assert_eq!(
        crate::helpers::totals(&s),
        (1, 1, 0),
        "the secret survived the round trip: {s}"
    );
}

#[actix_web::test]
async fn user_operations_apply_in_request_order() {
    let app = spawn_app().await;
    app.add_users(
        [
            json!({"userid": "u1", "add": {"tag": ["a"], "app": ["reg-1"]}}),
            json!({"userid": "u1", "del": {"tag": ["a"]}}),
            json!({"userid": "u2", "add": {"tag": ["a"]}}),
            json!({"userid": "u2", "set": {"tag": ["b"]}}),
        ]
        .into_iter(),
    )
    .await;
    let tags = app
        .db
        .query_all(
            "SELECT tag, userid FROM user_tags ORDER BY userid, tag",
            vec![],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r.try_get::<String>("", "userid").unwrap(),
                r.try_get::<String>("", "tag").unwrap()
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(tags, vec!["u2:b".to_string()]);
}
