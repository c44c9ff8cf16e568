//! Input a client can send that storage cannot hold, or that once made a request fail with
//! a 5xx or store half of itself: each is refused with a stable code (or counted invalid,
//! for provider receipts), never a 5xx, and leaves what was stored as it was. Control
//! characters matter on Postgres, which refuses a NUL in text; on SQLite they were stored.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, app_msg, spawn_app};

fn refused(what: &str, (status, body): &(u16, Value)) {
    assert_eq!(*status, 400, "{what}: {body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{what}: {body}");
}

#[actix_web::test]
async fn a_fallback_wait_that_rounds_to_nothing_is_refused_and_rules_stay_readable() {
    let app = spawn_app().await;
    let chain = |wait: f64| {
        json!({"name": "tiny", "rule": {"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": wait, "condition": "not_delivered"},
            {"channel": "sms"}]}})
    };
    let r = app
        .admin(reqwest::Method::POST, "/api/rules", Some(chain(0.0004)))
        .await;
    refused("a 0.4 ms wait", &r);
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 1 ms"),
        "{}",
        r.1
    );
    assert_eq!(app.count_rows("rules").await, 0, "nothing stored");

    // Half a millisecond rounds to one: stored, and read back as stored.
    let (status, created) = app
        .admin(reqwest::Method::POST, "/api/rules", Some(chain(0.0005)))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["rule"]["steps"][0]["wait_seconds"], 0.001);
    let r = app
        .admin(
            reqwest::Method::PUT,
            &format!("/api/rules/{id}"),
            Some(chain(0.0001)),
        )
        .await;
    refused("an update to a 0.1 ms wait", &r);
    let (status, listed) = app.admin(reqwest::Method::GET, "/api/rules", None).await;
    assert_eq!(status, 200, "{listed}");
    let (status, one) = app
        .admin(reqwest::Method::GET, &format!("/api/rules/{id}"), None)
        .await;
    assert_eq!(
        (status, &one["rule"]["steps"][0]["wait_seconds"]),
        (200, &json!(0.001)),
        "{one}"
    );
    // A send naming it is accepted.
    app.add_users(
        [json!({"userid": "u1", "add": {"app": ["reg-1"], "phone": ["13800000001"]}})].into_iter(),
    )
    .await;
    app.send_ok(
        "/v1/sent",
        json!({"aud_userid": ["u1"], "msg_app": app_msg(), "msg_sms": [{"temp_id": "SMS_1"}], "rule_id": id}),
    )
    .await;
}

#[actix_web::test]
async fn one_user_operation_may_delete_more_tags_and_addresses_than_a_statement_takes() {
    let app = spawn_app().await;
    app.add_users(
        [json!({"userid": "u1", "add": {"tag": ["keep", "drop"], "app": ["reg-keep", "reg-drop"]}})].into_iter(),
    )
    .await;
    // 70 000 names: more parameters than one statement takes (SQLite 32 766, Postgres 65 535).
    let mut tags: Vec<String> = (0..70_000).map(|i| format!("t{i}")).collect();
    tags.push("drop".into());
    let mut regs: Vec<String> = (0..70_000).map(|i| format!("r{i}")).collect();
    regs.push("reg-drop".into());
    let (status, body) = app
        .v1(
            "/v1/user/opt",
            &json!([{"userid": "u1", "del": {"tag": tags, "app": regs}}]),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(app.count_rows("user_tags").await, 1, "only `keep` is left");
    assert_eq!(
        app.count_rows("bindings").await,
        1,
        "only `reg-keep` is left"
    );
}

#[actix_web::test]
async fn bind_keys_and_addresses_storage_cannot_hold_are_refused_per_item() {
    let app = spawn_app().await;
    let (status, body) = app
        .v1(
            "/v1/user/opt",
            &json!([
                {"userid": "u1", "add": {"app": {"k".repeat(65): ["r1"]}}},
                {"userid": "u2", "add": {"app": ["r\u{0}"]}},
                {"userid": "u3", "add": {"webhook": ["  "]}},
                {"userid": "u4", "add": {"app": {"ch1": ["r4"]}}}
            ]),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["success"], json!(["u4"]), "{body}");
    let failed: Vec<&str> = body["data"]["fail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["userid"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["u1", "u2", "u3"]);
    assert_eq!(app.count_rows("bindings").await, 1);
}

#[actix_web::test]
async fn control_characters_are_refused_before_they_reach_storage() {
    let app = spawn_app().await;
    app.add_users([json!({"userid": "u1", "add": {"app": ["reg-1"]}})].into_iter())
        .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u1"], "msg_app": app_msg()}),
        )
        .await;
    app.wait_done(&msgid, std::time::Duration::from_secs(30))
        .await;

    // A source key with a NUL names no source.
    let resp = app
        .client
        .post(format!("{}/v1/sent", app.address))
        .basic_auth("\u{0}a", Some("b"))
        .json(&json!({"aud_userid": ["u1"], "msg_app": app_msg()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], 4005);

    // A client event for a userid no user can have.
    let (status, body) = app
        .v1(
            "/v1/events",
            &json!({"events": [{"msgid": msgid, "userid": "\u{0}", "type": "clicked"}]}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");

    // A JPush receipt naming such a device is invalid; the rest of its request is applied.
    let sim = msghub_sim::SimConfig::default();
    let item = |addr: &str| json!({"msg_id": "1", "registration_id": addr, "type": 2, "time": 1, "params": {"msgid": msgid}});
    let resp = app
        .client
        .post(app.receipt_url(app.channel("app")).await)
        .basic_auth(&sim.jpush_app_key, Some(&sim.jpush_master_secret))
        .json(&json!([item("reg-\u{0}1"), item("reg-1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let counts: Value = resp.json().await.unwrap();
    assert_eq!(
        (counts["applied"].as_i64(), counts["invalid"].as_i64()),
        (Some(1), Some(1)),
        "{counts}"
    );

    // Names.
    let nul = "x\u{0}y";
    let r = app
        .admin(
            reqwest::Method::POST,
            "/api/sources",
            Some(json!({"name": nul})),
        )
        .await;
    refused("a source name", &r);
    let r = app
        .admin(
            reqwest::Method::POST,
            "/api/lists",
            Some(json!({"name": nul, "kind": "black"})),
        )
        .await;
    refused("a list name", &r);
    let rule = json!({"type": "fallback", "steps": [
        {"channel": "app", "wait_seconds": 1, "condition": "not_delivered"}, {"channel": "sms"}]});
    let r = app
        .admin(
            reqwest::Method::POST,
            "/api/rules",
            Some(json!({"name": nul, "rule": rule})),
        )
        .await;
    refused("a rule name", &r);
    let r = app.admin(
        reqwest::Method::POST,
        "/api/channels",
        Some(json!({"type": "webhook", "name": nul, "credentials": {"url": "http://127.0.0.1:9/h", "secret": "s"}})),
    )
    .await;
    refused("a channel name", &r);

    // Query parameters that are looked up.
    let (status, list) = app
        .admin(
            reqwest::Method::POST,
            "/api/lists",
            Some(json!({"name": "l", "kind": "black"})),
        )
        .await;
    assert_eq!(status, 201, "{list}");
    for path in [
        "/api/suppressions?address=%00".to_string(),
        "/api/suppressions?after=sms:%00".to_string(),
        format!("/api/lists/{}/entries?after=userid:%00", list["id"]),
        format!("/api/messages/{msgid}/deliveries?userid=u%001"),
    ] {
        let r = app.admin(reqwest::Method::GET, &path, None).await;
        refused(&path, &r);
    }
    let path = format!(
        "/api/sources/{}/callback_urls?url=http://127.0.0.1/%00",
        app.source_id
    );
    let r = app.admin(reqwest::Method::DELETE, &path, None).await;
    refused(&path, &r);
    assert_eq!(app.count_rows("rules").await, 0);
    assert_eq!(app.count_rows("audience_lists").await, 1);
}

#[actix_web::test]
async fn a_source_patch_is_applied_whole_or_not_at_all() {
    let app = spawn_app().await;
    let path = format!("/api/sources/{}", app.source_id);
    let r = app
        .admin(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"dedup_window_seconds": 60, "name": "x\u{0}"})),
        )
        .await;
    refused("a patch with a bad name", &r);
    let (_, source) = app.admin(reqwest::Method::GET, &path, None).await;
    assert_eq!(
        (&source["name"], &source["dedup_window_seconds"]),
        (&json!("billing"), &json!(0)),
        "{source}"
    );
    let updated = app
        .admin_patch(
            &path,
            json!({"dedup_window_seconds": 60, "name": "renamed"}),
        )
        .await;
    assert_eq!(
        (&updated["name"], &updated["dedup_window_seconds"]),
        (&json!("renamed"), &json!(60)),
        "{updated}"
    );
}

#[actix_web::test]
async fn a_channel_patch_checks_what_a_create_checks() {
    let app = spawn_app().await;
    let path = format!("/api/channels/{}", app.channel("webhook"));
    let (_, before) = app.admin(reqwest::Method::GET, &path, None).await;
    for (what, body) in [
        ("a blank name", json!({"name": "   "})),
        ("a 201-character name", json!({"name": "n".repeat(201)})),
        (
            "a rate beyond the column",
            json!({"rate_per_second": 3_000_000_000u32}),
        ),
    ] {
        let r = app.admin(reqwest::Method::PATCH, &path, Some(body)).await;
        refused(what, &r);
    }
    let r = app
        .admin(
            reqwest::Method::POST,
            "/api/channels",
            Some(
                json!({"type": "webhook", "name": "w", "rate_per_second": 3_000_000_000u32,
                    "credentials": {"url": "http://127.0.0.1:9/h", "secret": "s"}}),
            ),
        )
        .await;
    refused("a created rate beyond the column", &r);
    let (_, after) = app.admin(reqwest::Method::GET, &path, None).await;
    assert_eq!(
        (&after["name"], &after["rate_per_second"]),
        (&before["name"], &before["rate_per_second"]),
        "{after}"
    );
}

#[actix_web::test]
async fn bodies_that_cannot_be_read_are_answered_in_each_api_s_own_format() {
    let app = spawn_app().await;
    let big = vec![b' '; app.settings.server.max_body_bytes + 1];
    for path in ["/v1/sent", "/v1/user/opt", "/v1/user/delete", "/v1/events"] {
        let (status, body) = app.v1_raw(path, big.clone(), None).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (413, Some(4004)),
            "{path}: {body}"
        );
    }
    let resp = app
        .client
        .post(format!("{}/api/lists", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");

    // An unknown field in a user deletion is refused, as everywhere else.
    let (status, body) = app
        .v1("/v1/user/delete", &json!({"userids": ["u1"], "junk": 1}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");
    assert!(body["message"].as_str().unwrap().contains("junk"), "{body}");
}
