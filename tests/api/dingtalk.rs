//! DingTalk work notices (`dingtalk_cc`) end to end against the simulator: users batched up to
//! 1000 a call under the call's `task_id`; receipts asked for per task (DingTalk pushes none)
//! and applied — read, unread, invalid (suppressed), failed — until each task is settled, also
//! across a restart; a fallback chain driven by those receipts; a retract recalling each task
//! once; and contents DingTalk would refuse refused at the API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use msghub_sim::{FaultPlan, SimConfig};
use serde_json::{Value, json};

use crate::crash::spawn_process_app;
use crate::helpers::{TestApp, spawn_app_with, wait_until_async};

impl TestApp {
    /// A `dingtalk_cc` channel on the simulator's DingTalk application, granted to the test
    /// source.
    async fn dingtalk_channel(&self) -> i64 {
        let sim = SimConfig::default();
        let ch = self
            .admin_post(
                "/api/channels",
                json!({"type": "dingtalk_cc", "name": "dingtalk sim", "credentials": {
                    "appkey": sim.dingtalk_appkey, "appsecret": sim.dingtalk_appsecret,
                    "agent_id": sim.dingtalk_agent_id, "base_url": self.sim.http_url()}}),
            )
            .await;
        let id = ch["id"].as_i64().expect("channel id");
        self.grant(id).await;
        id
    }

    /// What the simulated DingTalk reports now, per userid: `clicked` (read), `delivered`
    /// (unread) or `undelivered` (failed, invalid, forbidden); silent users are absent.
    fn dingtalk_fates(&self) -> BTreeMap<String, &'static str> {
        let report = self
            .sim
            .state
            .receipts("dingtalk_cc", None)
            .expect("dingtalk_cc has receipts");
        let mut fates = BTreeMap::new();
        for u in report.failed {
            fates.insert(u, "undelivered");
        }
        for u in report.delivered {
            fates.insert(u, "delivered");
        }
        for u in report.clicked {
            fates.insert(u, "clicked");
        }
        fates
    }

    /// The status of each delivery of `msgid` on the `dingtalk_cc` channel, by address.
    async fn dingtalk_statuses(&self, msgid: &str) -> BTreeMap<String, String> {
        self.all_deliveries(msgid)
            .await
            .iter()
            .filter(|d| d["channel_type"] == "dingtalk_cc")
            .map(|d| {
                (
                    d["address"].as_str().unwrap().to_string(),
                    d["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Wait until every `dingtalk_cc` delivery of `msgid` has the status the simulator's
    /// report gives its user (`submitted` for a user it says nothing of).
    async fn wait_dingtalk_matches(
        &self,
        msgid: &str,
        limit: Duration,
    ) -> BTreeMap<String, String> {
        let started = Instant::now();
        loop {
            let fates = self.dingtalk_fates();
            let statuses = self.dingtalk_statuses(msgid).await;
            let mismatch = statuses
                .iter()
                .find(|(address, status)| {
                    fates.get(*address).copied().unwrap_or("submitted") != status.as_str()
                })
                .map(|(a, s)| (a.clone(), s.clone()));
            let Some((address, status)) = mismatch else {
                return statuses;
            };
            assert!(
                started.elapsed() < limit,
                "{address}: {status}, the simulator says {:?}",
                fates.get(&address)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many deliveries have each status (for assertion messages).
fn tally(statuses: &BTreeMap<String, String>) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for s in statuses.values() {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    counts
}

fn notice(content: &str) -> Value {
    json!([{"msg": {"msgtype": "text", "text": {"content": content}}}])
}

/// Receipts asked for soon and often, as a test needs them.
fn quick_pulls(s: &mut msghub::settings::Settings) {
    s.providers.receipt_pull_first_ms = 150;
    s.providers.receipt_pull_max_interval_ms = 300;
    s.providers.receipt_pulls_per_second = 100;
}

#[actix_web::test]
async fn work_notices_are_followed_until_each_user_is_settled() {
    const N: usize = 1500;
    let app = spawn_app_with(quick_pulls).await;
    let channel = app.dingtalk_channel().await;
    assert!(app.sim.state.set_faults(
        "dingtalk_cc",
        FaultPlan {
            perm_addresses: vec!["gone.staff".into()],
            ..FaultPlan::default()
        },
    ));
    // Half reached (half of those read), a fifth failed, the rest never reported.
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "dingtalk_cc", "delivered_ratio": 0.5, "failed_ratio": 0.2,
               "clicked_ratio": 0.5, "delay_ms": 100, "click_delay_ms": 300}),
    )
    .await;
    app.add_users((0..N).map(|i| {
        json!({"userid": format!("d{i:04}"), "add": {"tag": ["staff"], "dingtalk_cc": format!("staff{i:04}")}})
    }))
    .await;
    app.add_users(std::iter::once(
        json!({"userid": "d-gone", "add": {"tag": ["staff"], "dingtalk_cc": "gone.staff"}}),
    ))
    .await;

    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["staff"], "msg_dingtalk_cc": notice("Payroll is out")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(60)).await;
    // Each user once, in two calls (tasks).
    let received = app.sim.state.received("dingtalk_cc");
    assert_eq!(received.len(), N);
    assert!(received.values().all(|n| *n == 1), "a user sent to twice");
    assert!(!received.contains_key("gone.staff"));
    let deliveries = app.all_deliveries(&msgid).await;
    // Each user's task.
    let task_of: BTreeMap<String, String> = deliveries
        .iter()
        .filter_map(|d| {
            Some((
                d["address"].as_str()?.to_string(),
                d["provider_id"].as_str()?.to_string(),
            ))
        })
        .collect();
    let tasks: BTreeSet<&str> = task_of.values().map(String::as_str).collect();
    assert!((2..=6).contains(&tasks.len()), "{tasks:?}");

    // Once the simulator's receipts have all come due, the hub shows each user's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses = app
        .wait_dingtalk_matches(&msgid, Duration::from_secs(30))
        .await;
    assert_eq!(statuses.len(), N + 1);
    let counts = tally(&statuses);
    for status in ["clicked", "delivered", "undelivered", "submitted"] {
        assert!(counts.get(status).copied().unwrap_or(0) > 50, "{counts:?}");
    }
    assert_eq!(statuses["gone.staff"], "undelivered");
    let suppressed = app.suppressed("?channel_type=dingtalk_cc").await;
    assert_eq!(
        suppressed
            .iter()
            .map(|s| (s.1.as_str(), s.2.as_str(), s.3.clone()))
            .collect::<Vec<_>>(),
        vec![("gone.staff", "gone", json!("invalid_user"))],
        "{suppressed:?}"
    );
    // Still followed: exactly the tasks with a user unread or not reported on.
    let open: BTreeSet<&str> = statuses
        .iter()
        .filter(|(_, s)| *s == "delivered" || *s == "submitted")
        .map(|(a, _)| task_of[a].as_str())
        .collect();
    assert!(!open.is_empty());
    wait_until_async(
        "the open tasks alone followed",
        Duration::from_secs(10),
        || async { app.count_rows("receipt_pulls").await == open.len() as i64 },
    )
    .await;
    let status = app.status(&msgid).await;
    let ding = status["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_type"] == "dingtalk_cc")
        .unwrap()
        .clone();
    assert_eq!(
        ding["clicked"].as_i64(),
        Some(counts["clicked"] as i64),
        "{ding}"
    );
    for task in &tasks {
        assert!(app.sim.state.dingtalk_reports(task.parse().unwrap()) >= 1);
    }
    let _ = channel;
}

/// The tasks (DingTalk `task_id`s) of `msgid`'s deliveries.
async fn tasks_of(app: &TestApp, msgid: &str) -> BTreeSet<u64> {
    app.all_deliveries(msgid)
        .await
        .iter()
        .filter_map(|d| d["provider_id"].as_str().and_then(|p| p.parse().ok()))
        .collect()
}

/// The single task of `msgid`'s `dingtalk_cc` deliveries.
async fn only_task(app: &TestApp, msgid: &str) -> u64 {
    let tasks = tasks_of(app, msgid).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    tasks.into_iter().next().unwrap()
}

/// Whether no send is followed any more.
async fn no_pulls(app: &TestApp) -> bool {
    app.count_rows("receipt_pulls").await == 0
}

#[actix_web::test]
async fn a_task_is_no_longer_asked_about_once_every_user_has_read_it() {
    let app = spawn_app_with(quick_pulls).await;
    app.dingtalk_channel().await;
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "dingtalk_cc", "delivered_ratio": 1.0, "clicked_ratio": 1.0,
               "delay_ms": 50, "click_delay_ms": 50}),
    )
    .await;
    app.add_users((0..20).map(
        |i| json!({"userid": format!("r{i}"), "add": {"dingtalk_cc": format!("reader{i:02}")}}),
    ))
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": users, "msg_dingtalk_cc": notice("Read me")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    wait_until_async(
        "the task no longer followed",
        Duration::from_secs(30),
        || no_pulls(&app),
    )
    .await;
    let statuses = app.dingtalk_statuses(&msgid).await;
    assert_eq!(statuses.len(), 20);
    assert!(
        statuses.values().all(|s| s == "clicked"),
        "{:?}",
        tally(&statuses)
    );
    // Settled: DingTalk is asked nothing more about it.
    let task = only_task(&app, &msgid).await;
    let asked = app.sim.state.dingtalk_reports(task);
    assert!(asked >= 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.sim.state.dingtalk_reports(task), asked);
}

/// A chain dingtalk_cc → sms on "not delivered": users DingTalk reports reached get no SMS,
/// users it reports failed get it at once, and silent ones when the wait ends.
#[actix_web::test]
async fn a_fallback_chain_follows_the_receipts_dingtalk_is_asked_for() {
    const N: usize = 300;
    let app = spawn_app_with(quick_pulls).await;
    app.dingtalk_channel().await;
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "dingtalk_cc", "delivered_ratio": 0.5, "failed_ratio": 0.25,
               "delay_ms": 50}),
    )
    .await;
    app.add_users((0..N).map(|i| {
        json!({"userid": format!("c{i:03}"), "add": {"tag": ["chain"],
               "dingtalk_cc": format!("chain{i:03}"), "phone": format!("1380000{i:04}")}})
    }))
    .await;
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "dingtalk_cc", "wait_seconds": 3, "condition": "not_delivered"},
            {"channel": "sms"}]}))
        .await;
    let sent = Instant::now();
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["chain"], "rule_id": rule, "msg_dingtalk_cc": notice("Shift swap approved"),
                   "msg_sms": [{"temp_id": "SMS_1", "temp_para": {}}]}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(60)).await;
    let fates = app.dingtalk_fates();
    let phone = |userid: &str| {
        let i: usize = userid.trim_start_matches("chain").parse().unwrap();
        format!("1380000{i:04}")
    };
    let reached: BTreeSet<String> = fates
        .iter()
        .filter(|(_, f)| **f != "undelivered")
        .map(|(u, _)| phone(u))
        .collect();
    let failed: BTreeSet<String> = fates
        .iter()
        .filter(|(_, f)| **f == "undelivered")
        .map(|(u, _)| phone(u))
        .collect();
    let sms: BTreeSet<String> = app.sim.state.received("sms").into_keys().collect();
    let all: BTreeSet<String> = (0..N).map(|i| format!("1380000{i:04}")).collect();
    let expected: BTreeSet<String> = all.difference(&reached).cloned().collect();
    assert!(reached.len() > 50 && failed.len() > 20, "{fates:?}");
    assert!(expected.len() > failed.len(), "no silent users");
    assert_eq!(
        sms, expected,
        "SMS to exactly the users DingTalk did not reach"
    );
    assert!(app.sim.state.received("sms").values().all(|n| *n == 1));
    assert!(sent.elapsed() >= Duration::from_secs(3));
}

/// The tasks the hub follows are stored: killed while receipts are not yet in, the server
/// asks for them after it restarts.
#[actix_web::test]
async fn tasks_pending_across_a_restart_are_asked_about_after_it() {
    let (app, process, mut server) = spawn_process_app().await;
    let env = [
        ("MSGHUB__PROVIDERS__RECEIPT_PULL_FIRST_MS", "200"),
        ("MSGHUB__PROVIDERS__RECEIPT_PULL_MAX_INTERVAL_MS", "400"),
    ];
    server.kill();
    let mut server = process.start_with(&env).await;
    app.dingtalk_channel().await;
    // Every user reached, but only after 4 s.
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "dingtalk_cc", "delivered_ratio": 1.0, "delay_ms": 4000}),
    )
    .await;
    app.add_users((0..200).map(|i| {
        json!({"userid": format!("p{i:03}"), "add": {"tag": ["p"], "dingtalk_cc": format!("pending{i:03}")}})
    }))
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["p"], "msg_dingtalk_cc": notice("Badge renewal")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(60)).await;
    // Asked at least once before the kill, with nothing to learn yet.
    let task = only_task(&app, &msgid).await;
    wait_until_async("a first ask", Duration::from_secs(10), || async {
        app.sim.state.dingtalk_reports(task) >= 1
    })
    .await;
    let statuses = app.dingtalk_statuses(&msgid).await;
    server.kill();
    assert_eq!(statuses.len(), 200);
    assert!(
        statuses.values().all(|s| s == "submitted"),
        "{:?}",
        tally(&statuses)
    );
    assert_eq!(app.count_rows("receipt_pulls").await, 1);
    let asked_before = app.sim.state.dingtalk_reports(task);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let mut server = process.start_with(&env).await;
    let statuses = app
        .wait_dingtalk_matches(&msgid, Duration::from_secs(30))
        .await;
    server.kill();
    assert!(
        statuses.values().all(|s| s == "delivered"),
        "{:?}",
        tally(&statuses)
    );
    assert!(app.sim.state.dingtalk_reports(task) > asked_before);
    // Reached but unread: still followed for reads.
    assert_eq!(app.count_rows("receipt_pulls").await, 1);
}

#[actix_web::test]
async fn a_retract_recalls_each_task_once() {
    let app = spawn_app_with(quick_pulls).await;
    app.dingtalk_channel().await;
    app.add_users((0..1200).map(|i| {
        json!({"userid": format!("t{i:04}"), "add": {"tag": ["t"], "dingtalk_cc": format!("recall{i:04}")}})
    }))
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["t"], "msg_dingtalk_cc": notice("Wrong room, ignore")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(60)).await;
    let tasks = tasks_of(&app, &msgid).await;
    assert!((2..=6).contains(&tasks.len()), "{tasks:?}");
    let (code, body) = app.v1(&format!("/v1/retract/{msgid}"), &json!({})).await;
    assert_eq!((code, body["code"].as_i64()), (200, Some(0)), "{body}");
    wait_until_async("every task recalled", Duration::from_secs(30), || async {
        app.sim
            .state
            .dingtalk_recalled()
            .into_iter()
            .collect::<BTreeSet<u64>>()
            == tasks
    })
    .await;
    // Each recalled delivery is recorded retracted (after the simulator's answer), whatever
    // receipt came in meanwhile.
    wait_until_async(
        "every delivery retracted",
        Duration::from_secs(10),
        || async {
            app.dingtalk_statuses(&msgid)
                .await
                .values()
                .all(|s| s == "retracted")
        },
    )
    .await;
    // Withdrawn: their receipts are no longer asked for.
    wait_until_async(
        "the tasks no longer followed",
        Duration::from_secs(10),
        || no_pulls(&app),
    )
    .await;
}

#[actix_web::test]
async fn a_content_dingtalk_would_refuse_is_refused_at_the_api_and_nothing_is_stored() {
    let app = spawn_app_with(quick_pulls).await;
    app.dingtalk_channel().await;
    app.add_users(std::iter::once(
        json!({"userid": "u1", "add": {"dingtalk_cc": "manager01"}}),
    ))
    .await;
    app.assert_contents_refused(
        "dingtalk_cc",
        "u1",
        &[
            (json!([{"msg": {"msgtype": "sms"}}]), "msgtype"),
            (
                json!([{"msg": {"msgtype": "text", "text": {"content": ""}}}]),
                "text.content",
            ),
            (
                json!([{"msg": {"msgtype": "text", "text": {"content": "hi"}}, "to_all_user": true}]),
                "only msg",
            ),
            (
                json!([{"msg": {"msgtype": "link", "link": {"title": "t", "text": "x", "picUrl": "p"}}}]),
                "link.messageUrl",
            ),
        ],
    )
    .await;
}

/// Ten users of one task, the message done; the task's id.
async fn one_task_sent(app: &TestApp, tag: &str) -> (String, u64) {
    app.add_users((0..10).map(|i| {
        json!({"userid": format!("{tag}{i}"), "add": {"tag": [tag], "dingtalk_cc": format!("{tag}.staff{i}")}})
    }))
    .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": [tag], "msg_dingtalk_cc": notice("Canteen closed")}),
        )
        .await;
    app.wait_done(&msgid, Duration::from_secs(30)).await;
    let task = only_task(app, &msgid).await;
    (msgid, task)
}

/// An ask DingTalk refuses for now (no permission, a busy moment) keeps the task followed:
/// it is asked again, and its receipts come in.
#[actix_web::test]
async fn a_refused_ask_is_asked_again_later() {
    let app = spawn_app_with(|s| {
        quick_pulls(s);
        s.providers.receipt_pull_first_ms = 1500;
    })
    .await;
    app.dingtalk_channel().await;
    let (msgid, task) = one_task_sent(&app, "refused").await;
    assert_eq!(app.sim.state.dingtalk_reports(task), 0, "asked too soon");
    // The next two asks: no permission, then busy.
    for code in ["88", "-1"] {
        assert!(app.sim.state.set_faults(
            "dingtalk_cc",
            FaultPlan {
                fail_code: Some(code.into()),
                fail_code_next: 1,
                ..FaultPlan::default()
            },
        ));
        let failed = app.sim.state.failed_calls("dingtalk_cc");
        wait_until_async(
            &format!("the ask refused with {code}"),
            Duration::from_secs(20),
            || async { app.sim.state.failed_calls("dingtalk_cc") != failed },
        )
        .await;
        assert_eq!(
            app.count_rows("receipt_pulls").await,
            1,
            "{code}: forgotten"
        );
    }
    let statuses = app
        .wait_dingtalk_matches(&msgid, Duration::from_secs(30))
        .await;
    assert!(
        statuses.values().all(|s| s == "delivered"),
        "{:?}",
        tally(&statuses)
    );
    assert!(app.sim.state.dingtalk_reports(task) >= 1);
}

/// A task whose users DingTalk never reports on is asked about until the window ends, then
/// no more; its deliveries stay submitted.
#[actix_web::test]
async fn a_task_is_forgotten_when_its_window_ends() {
    let app = spawn_app_with(|s| {
        quick_pulls(s);
        s.providers.receipt_pull_window_ms = 1500;
    })
    .await;
    app.dingtalk_channel().await;
    app.sim_post(
        "/sim/receipts",
        json!({"channel": "dingtalk_cc", "delivered_ratio": 0.0}),
    )
    .await;
    let (msgid, task) = one_task_sent(&app, "silent").await;
    wait_until_async(
        "the task forgotten after its window",
        Duration::from_secs(20),
        || no_pulls(&app),
    )
    .await;
    let asked = app.sim.state.dingtalk_reports(task);
    assert!(asked >= 2, "asked {asked} times");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.sim.state.dingtalk_reports(task), asked);
    let statuses = app.dingtalk_statuses(&msgid).await;
    assert!(
        statuses.values().all(|s| s == "submitted"),
        "{:?}",
        tally(&statuses)
    );
}

/// The tasks of a channel disabled after the send are not asked about while it is disabled,
/// and are once it is enabled again.
#[actix_web::test]
async fn a_disabled_channel_s_tasks_wait_until_it_is_enabled() {
    let app = spawn_app_with(|s| {
        quick_pulls(s);
        s.providers.receipt_pull_first_ms = 1500;
    })
    .await;
    let channel = app.dingtalk_channel().await;
    let (msgid, task) = one_task_sent(&app, "paused").await;
    app.admin_patch(
        &format!("/api/channels/{channel}"),
        json!({"enabled": false}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.sim.state.dingtalk_reports(task), 0);
    assert_eq!(app.count_rows("receipt_pulls").await, 1);
    app.admin_patch(
        &format!("/api/channels/{channel}"),
        json!({"enabled": true}),
    )
    .await;
    let statuses = app
        .wait_dingtalk_matches(&msgid, Duration::from_secs(30))
        .await;
    assert!(
        statuses.values().all(|s| s == "delivered"),
        "{:?}",
        tally(&statuses)
    );
}
