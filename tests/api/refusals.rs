//! Requests that must be refused: clear JUMS codes, 4xx, and nothing stored.

use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, app_msg, spawn_app};

#[actix_web::test]
async fn auth_and_channel_refusals_carry_jums_codes_and_store_nothing() {
    let app = spawn_app().await;
    let body = json!({"aud_userid": ["u1"], "msg_app": app_msg()});

    // Bad credentials.
    let resp = app
        .client
        .post(format!("{}/v1/sent", app.address))
        .basic_auth(&app.source_key, Some("wrong"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        4005
    );
    let resp = app
        .client
        .post(format!("{}/v1/sent", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Ungranted channel: revoke sms, then send sms.
    let revoke = app
        .client
        .delete(format!(
            "{}/api/sources/{}/grants/{}",
            app.address,
            app.source_id,
            app.channel("sms")
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status().as_u16(), 204);
    let (status, resp) = app
        .v1(
            "/v1/sent",
            &json!({"aud_userid": ["u1"], "msg_sms": [{"temp_id": "SMS_1"}]}),
        )
        .await;
    assert_eq!(
        (status, resp["code"].as_i64()),
        (403, Some(1015007)),
        "{resp}"
    );
    assert!(
        resp["message"].as_str().unwrap().contains("not granted")
            || resp["message"].as_str().unwrap().contains("no sms")
    );

    // Disabled channel.
    app.admin_patch(
        &format!("/api/channels/{}", app.channel("app")),
        json!({"enabled": false}),
    )
    .await;
    let (status, resp) = app.v1("/v1/sent", &body).await;
    assert_eq!(
        (status, resp["code"].as_i64()),
        (403, Some(1015006)),
        "{resp}"
    );
    let (status, resp) = app
        .v1(
            "/v1/sent",
            &json!({"aud_userid": ["u1"], "msg_email": [{"subject": "s", "text": "t"}]}),
        )
        .await;
    assert_eq!(
        (status, resp["code"].as_i64()),
        (200, Some(0)),
        "other channels still work: {resp}"
    );
    // Accepted is durable in the intake journal (SQLite); the mover moves it to `messages`.
    let accepted = resp["msgid"].as_str().expect("msgid").to_string();
    app.wait_done(&accepted, std::time::Duration::from_secs(30))
        .await;

    // Disabled source.
    app.admin_patch(
        &format!("/api/sources/{}", app.source_id),
        json!({"enabled": false}),
    )
    .await;
    let (status, resp) = app
        .v1(
            "/v1/sent",
            &json!({"aud_userid": ["u1"], "msg_email": [{"subject": "s", "text": "t"}]}),
        )
        .await;
    assert_eq!(
        (status, resp["code"].as_i64()),
        (403, Some(1015005)),
        "{resp}"
    );

    assert_eq!(
        app.count_rows("messages").await,
        1,
        "only the one accepted message is stored"
    );
}

#[actix_web::test]
async fn malformed_and_over_limit_requests_get_4xx_with_a_clear_message_and_store_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>, i64, &str)> = vec![
        ("/v1/sent", b"{not json".to_vec(), 4004, "malformed JSON"),
        ("/v1/sent", b"".to_vec(), 4004, "empty"),
        ("/v1/sent", b"[1,2]".to_vec(), 4004, "must be a JSON object"),
        ("/v1/sent", json!({"aud_userid": "u1", "msg_app": app_msg()}).to_string().into_bytes(), 4004, "aud_userid must be an array"),
        ("/v1/sent", json!({"aud_userid": [1], "msg_app": app_msg()}).to_string().into_bytes(), 4004, "aud_userid[0] must be a string"),
        ("/v1/sent", json!({"aud_userid": ["u"], "msg_app": app_msg(), "surprise": true}).to_string().into_bytes(), 4004, "unknown field"),
        ("/v1/sent", json!({"aud_userid": ["u"], "msg_app": app_msg(), "option": {"priority": "high"}}).to_string().into_bytes(), 4004, "option.priority"),
        ("/v1/sent", json!({"aud_userid": ["u"]}).to_string().into_bytes(), 4004, "no content"),
        ("/v1/sent", json!({"msg_app": app_msg()}).to_string().into_bytes(), 4004, "no audience"),
        ("/v1/sent", json!({"aud_userid": (0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>(), "msg_app": app_msg()}).to_string().into_bytes(), 1015004, "at most 1000"),
        ("/v1/sent", json!({"aud_userid": ["u"], "msg_app": app_msg(), "rule_id": 77}).to_string().into_bytes(), 1015026, "rule_id 77"),
        ("/v1/broadcast", json!({"aud_tag": ["t"], "msg_app": app_msg()}).to_string().into_bytes(), 4004, "takes no aud_"),
        ("/v1/user/opt", json!({"userid": "x"}).to_string().into_bytes(), 4004, "array of user operations"),
    ];
    for (path, body, code, needle) in cases {
        let (status, resp) = app.v1_raw(path, body.clone(), None).await;
        assert!(
            (400..500).contains(&status),
            "{path} {}: status {status}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(resp["code"].as_i64(), Some(code), "{resp}");
        let message = resp["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "expected {needle:?} in {message:?}"
        );
    }
    let big = vec![b' '; app.settings.server.max_body_bytes + 1];
    let (status, _) = app.v1_raw("/v1/sent", big, None).await;
    assert_eq!(status, 413);
    let resp = app
        .client
        .get(format!("{}/v1/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(app.count_rows("messages").await, 0);
    assert_eq!(app.count_rows("shards").await, 0);
    assert_eq!(app.count_rows("users").await, 0);
}

#[actix_web::test]
async fn a_repeated_idempotency_key_returns_the_first_response_and_sends_once() {
    let app = spawn_app().await;
    app.add_users([json!({"userid": "u1", "add": {"app": ["reg-1"]}})].into_iter())
        .await;
    let body = json!({"aud_userid": ["u1"], "msg_app": app_msg(), "option": {"sendno": "abc"}})
        .to_string()
        .into_bytes();
    let (s1, r1) = app.v1_raw("/v1/sent", body.clone(), Some("order-42")).await;
    let (s2, r2) = app.v1_raw("/v1/sent", body.clone(), Some("order-42")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(r1, r2);
    assert_eq!(r1["sendno"], "abc");
    // Concurrent repeats land in the same or later batches: still one message.
    let mut handles = Vec::new();
    for _ in 0..20 {
        let c = app.client.clone();
        let url = format!("{}/v1/sent", app.address);
        let (k, s) = (app.source_key.clone(), app.source_secret.clone());
        let b = body.clone();
        handles.push(actix_web::rt::spawn(async move {
            let r = c
                .post(url)
                .basic_auth(k, Some(s))
                .header("Idempotency-Key", "burst")
                .body(b)
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()["msgid"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        ids.insert(h.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "one msgid for one key");
    let msgid = r1["msgid"].as_str().unwrap().to_string();
    app.wait_done(&msgid, std::time::Duration::from_secs(30))
        .await;
    let burst = ids.into_iter().next().unwrap();
    app.wait_done(&burst, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(app.count_rows("messages").await, 2);
    assert_eq!(
        app.sim.state.count("app", "reg-1"),
        2,
        "one delivery per distinct key"
    );
}
