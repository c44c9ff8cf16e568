//! A priority-1 message never waits behind a bulk job.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{app_msg, spawn_app, spawn_app_with};

#[actix_web::test]
async fn a_priority_one_message_is_delivered_long_before_a_100k_bulk_job_ends() {
    let app = spawn_app().await;
    // 1000 registration ids per JPush call; at 25 calls/s the 100 calls of the bulk job take
    // about four seconds, plenty of room to see where the urgent one lands.
    app.admin_patch(
        &format!("/api/channels/{}", app.channel("app")),
        json!({"rate_per_second": 25}),
    )
    .await;
    app.add_users((0..100_000).map(|i| json!({"userid": format!("b{i:06}"), "add": {"tag": ["campaign"], "app": [format!("bulk-{i:06}")]}})))
        .await;
    app.add_users([json!({"userid": "vip", "add": {"app": ["vip-reg"]}})].into_iter())
        .await;

    let bulk = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["campaign"], "msg_app": app_msg()}),
        )
        .await;
    let started = Instant::now();
    while app.sim.state.total("app") < 5_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bulk job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let urgent = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["vip"], "msg_app": app_msg(), "option": {"priority": 1}}),
        )
        .await;
    app.wait_done(&urgent, Duration::from_secs(30)).await;
    let status = app.wait_done(&bulk, Duration::from_secs(300)).await;
    assert_eq!(crate::helpers::totals(&status), (100_000, 100_000, 0));

    let events = app.sim.state.events("app");
    let urgent_seq = events
        .iter()
        .find(|e| e.contains("vip-reg"))
        .expect("urgent delivered")
        .seq;
    let bulk_calls: Vec<_> = events.iter().filter(|e| !e.contains("vip-reg")).collect();
    let after = bulk_calls.iter().filter(|e| e.seq > urgent_seq).count();
    assert_eq!(
        bulk_calls
            .iter()
            .map(|e| e.addresses_count())
            .sum::<usize>(),
        100_000
    );
    assert!(
        after * 2 > bulk_calls.len(),
        "the urgent message waited: only {after} of {} bulk calls came after it",
        bulk_calls.len()
    );
}

/// One-user sends are opened in their acceptance transaction while the real-time lane has room
/// to queue them (four times its concurrency); an accept batch that does not fit is stored
/// without deliveries and the planner opens its messages later. Either way each is sent
/// exactly once.
#[actix_web::test]
async fn one_user_sends_beyond_the_real_time_lanes_room_are_opened_later_and_sent_once() {
    let app = spawn_app_with(|s| s.dispatch.realtime_shard_concurrency = 1).await;
    app.admin_patch(
        &format!("/api/channels/{}", app.channel("app")),
        json!({"rate_per_second": 5}),
    )
    .await;
    const USERS: usize = 40;
    app.add_users(
        (0..USERS)
            .map(|i| json!({"userid": format!("q{i:02}"), "add": {"app": [format!("q-{i:02}")]}})),
    )
    .await;
    let app = &app;
    let send = |i: usize| {
        let body = json!({"aud_userid": [format!("q{i:02}")], "msg_app": app_msg()});
        app.send_ok("/v1/sent", body)
    };
    // Once `n` messages are stored (the journal moves them in batches).
    let stored = |n: i64| async move {
        let started = Instant::now();
        while app.count_rows("messages").await < n {
            assert!(started.elapsed() < Duration::from_secs(30), "never stored");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // The first is stored alone: the lane has room for it, so it is opened at acceptance.
    let mut msgids = vec![send(0).await];
    stored(1).await;
    assert_eq!(
        app.count_rows("deliveries").await,
        1,
        "opened at acceptance"
    );
    // The others come faster than 5 sends a second make room for: a batch the lane has no
    // room for is stored without deliveries, so not all of them can have been opened then.
    for i in 1..USERS {
        msgids.push(send(i).await);
    }
    stored(USERS as i64).await;
    let opened = app.count_rows("deliveries").await;
    assert!(
        (1..USERS as i64).contains(&opened),
        "{opened} of {USERS} opened at acceptance"
    );
    for msgid in &msgids {
        let status = app.wait_done(msgid, Duration::from_secs(60)).await;
        assert_eq!(crate::helpers::totals(&status), (1, 1, 0), "{status}");
    }
    let received = app.sim.state.received("app");
    assert_eq!(received.len(), USERS, "every user received their message");
    assert!(received.values().all(|n| *n == 1), "{received:?}");
}
