//! Provider failures: transient ones are retried until they succeed, permanent ones fail the
//! delivery at once.

use std::time::Duration;

use msghub_sim::FaultPlan;
use serde_json::json;

use crate::helpers::{app_msg, spawn_app, totals};

#[actix_web::test]
async fn provider_5xx_and_429_are_retried_and_then_succeed() {
    let app = spawn_app().await;
    app.add_users((0..3).map(|i| json!({"userid": format!("u{i}"), "add": {"app": [format!("reg-{i}")], "phone": format!("1380000000{i}")}})))
        .await;
    app.sim.state.set_faults(
        "app",
        FaultPlan {
            fail_next: 2,
            fail_status: 503,
            ..FaultPlan::default()
        },
    );
    app.sim.state.set_faults(
        "sms",
        FaultPlan {
            fail_next: 1,
            fail_status: 429,
            ..FaultPlan::default()
        },
    );
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u0", "u1", "u2"], "msg_app": app_msg(), "msg_sms": [{"temp_id": "SMS_9"}]}),
        )
        .await;
    let s = app.wait_done(&m, Duration::from_secs(30)).await;
    assert_eq!(totals(&s), (6, 6, 0), "{s}");
    assert_eq!(app.sim.state.failed_calls("app"), 2);
    assert_eq!(app.sim.state.failed_calls("sms"), 1);
    for i in 0..3 {
        assert_eq!(app.sim.state.count("app", &format!("reg-{i}")), 1);
        assert_eq!(app.sim.state.count("sms", &format!("1380000000{i}")), 1);
    }
    let body: serde_json::Value = app
        .admin_get(&format!("/api/messages/{m}/deliveries?userid=u1"))
        .await
        .json()
        .await
        .unwrap();
    let app_row = body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel_type"] == "app")
        .unwrap()
        .clone();
    assert_eq!(app_row["attempts"], 3, "{app_row}");
}

#[actix_web::test]
async fn a_permanent_provider_error_is_recorded_as_failed_and_not_retried() {
    let app = spawn_app().await;
    app.add_users([json!({"userid": "u1", "add": {"phone": "13800000001"}})].into_iter())
        .await;
    app.sim.state.set_faults(
        "sms",
        FaultPlan {
            fail_code: Some("isv.SMS_TEMPLATE_ILLEGAL".into()),
            fail_code_next: 5,
            ..FaultPlan::default()
        },
    );
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u1"], "msg_sms": [{"temp_id": "SMS_BAD"}]}),
        )
        .await;
    let s = app.wait_done(&m, Duration::from_secs(30)).await;
    assert_eq!(totals(&s), (1, 0, 1), "{s}");
    assert_eq!(
        app.sim.state.calls("sms"),
        1,
        "a permanent error is not retried"
    );
    let body: serde_json::Value = app
        .admin_get(&format!("/api/messages/{m}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let d = &body["deliveries"][0];
    assert_eq!(d["status"], "failed");
    assert_eq!(d["outcome"], "perm");
    assert_eq!(d["code"], "isv.SMS_TEMPLATE_ILLEGAL");
    assert_eq!(d["attempts"], 1);
}

#[actix_web::test]
async fn a_provider_that_keeps_failing_is_given_up_after_the_attempt_limit() {
    let app = spawn_app_with_attempts(3).await;
    app.add_users([json!({"userid": "u1", "add": {"app": ["reg-1"]}})].into_iter())
        .await;
    app.sim.state.set_faults(
        "app",
        FaultPlan {
            fail_next: 100,
            fail_status: 500,
            ..FaultPlan::default()
        },
    );
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["u1"], "msg_app": app_msg()}),
        )
        .await;
    let s = app.wait_done(&m, Duration::from_secs(30)).await;
    assert_eq!(totals(&s), (1, 0, 1), "{s}");
    assert_eq!(app.sim.state.calls("app"), 3);
}

async fn spawn_app_with_attempts(n: u32) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| s.dispatch.max_attempts = n).await
}

/// `option.ttl_seconds` is also msghub's deadline: past it, a failing delivery is not retried
/// any more, however many attempts are left.
#[actix_web::test]
async fn retries_stop_when_the_ttl_has_passed() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.dispatch.max_attempts = 1000;
        s.dispatch.backoff_base_ms = 50;
        s.dispatch.backoff_max_ms = 200;
    })
    .await;
    app.add_users([json!({"userid": "t0", "add": {"app": ["treg-0"]}})].into_iter())
        .await;
    app.sim.state.set_faults(
        "app",
        FaultPlan {
            fail_next: 1_000_000,
            fail_status: 503,
            ..FaultPlan::default()
        },
    );
    let m = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["t0"], "msg_app": app_msg(), "option": {"ttl_seconds": 1}}),
        )
        .await;
    let s = app.wait_done(&m, Duration::from_secs(60)).await;
    assert_eq!(totals(&s), (1, 0, 1), "{s}");
    let body: serde_json::Value = app
        .admin_get(&format!("/api/messages/{m}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let row = &body["deliveries"][0];
    assert_eq!(row["code"], "expired", "{row}");
    let attempts = row["attempts"].as_i64().unwrap_or(0);
    assert!((1..1000).contains(&attempts), "{row}");
    assert_eq!(app.sim.state.count("app", "treg-0"), 0);
}
