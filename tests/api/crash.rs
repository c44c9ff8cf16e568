//! The server killed in the middle of a broadcast and started again: every user receives the
//! message, none twice.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use msghub::storage::Db;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, TestApp, app_msg, fresh_database_url, start_sim, test_settings};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process, killed when dropped so a failing test never leaves it running.
pub(crate) struct Server(Child);

impl Server {
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn start_server_with(
    port: u16,
    db_url: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_msghub"))
        .arg("serve")
        .envs(env.iter().copied())
        .env("MSGHUB__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("MSGHUB__DATABASE__URL", db_url)
        .env("MSGHUB__SECURITY__DATA_DIR", dir)
        .env("MSGHUB__SECURITY__ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MSGHUB__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start msghub");
    Server(child)
}

pub(crate) async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let started = Instant::now();
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How to start the real server binary again on the same port, database and key.
pub struct ServerProcess {
    port: u16,
    db_url: String,
    data_dir: std::path::PathBuf,
    client: reqwest::Client,
}

impl ServerProcess {
    /// Start it and wait until it is ready.
    pub async fn start(&self) -> Server {
        self.start_with(&[]).await
    }

    /// Start it with extra settings (`MSGHUB__…` variables) and wait until it is ready.
    pub async fn start_with(&self, env: &[(&str, &str)]) -> Server {
        let server = start_server_with(self.port, &self.db_url, &self.data_dir, env);
        wait_healthy(&self.client, self.port).await;
        server
    }
}

/// The simulator, a fresh database and the server as a separate process (so a test can kill
/// it), with the test's source and channels set up.
pub async fn spawn_process_app() -> (TestApp, ServerProcess, Server) {
    msghub::startup::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db_url = fresh_database_url(dir.path()).await;
    let sim = start_sim().await;
    let process = ServerProcess {
        port: free_port(),
        db_url: db_url.clone(),
        data_dir: dir.path().to_path_buf(),
        client: reqwest::Client::new(),
    };
    let server = process.start().await;
    let settings = test_settings(dir.path(), db_url);
    let db = Db::connect(&settings.database).await.unwrap();
    let address = format!("http://127.0.0.1:{}", process.port);
    let app = TestApp::attach(address, sim, db, settings, dir).await;
    (app, process, server)
}

#[actix_web::test]
async fn a_broadcast_interrupted_by_a_crash_reaches_every_user_exactly_once_after_restart() {
    let (app, process, mut server) = spawn_process_app().await;
    app.admin_patch(
        &format!("/api/channels/{}", app.channel("app")),
        json!({"rate_per_second": 8}),
    )
    .await;
    const USERS: usize = 30_000;
    app.add_users(
        (0..USERS).map(
            |i| json!({"userid": format!("c{i:06}"), "add": {"app": [format!("crash-{i:06}")]}}),
        ),
    )
    .await;

    let msgid = app
        .send_ok("/v1/broadcast", json!({"msg_app": app_msg()}))
        .await;
    let started = Instant::now();
    while app.sim.state.total("app") < 8_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "broadcast never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    let before_restart = app.sim.state.total("app") as usize;
    assert!(
        before_restart < USERS,
        "the crash came too late to interrupt anything"
    );

    let mut server = process.start().await;
    let status = app.wait_done(&msgid, Duration::from_secs(120)).await;
    server.kill();

    assert_eq!(
        crate::helpers::totals(&status),
        (USERS as i64, USERS as i64, 0),
        "{status}"
    );
    assert_each_received_once(&app, USERS);
}

/// The simulator's `app` channel received exactly `addresses` registrations, each once.
fn assert_each_received_once(app: &TestApp, addresses: usize) {
    let received = app.sim.state.received("app");
    assert_eq!(received.len(), addresses, "every user received the message");
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "{} addresses received it more than once",
        twice.len()
    );
}

/// Fallback timers pending while the server is down fire once after it restarts: no step is
/// skipped or repeated. The server is killed twice: while step 1's timers wait, and while
/// step 2's do.
#[actix_web::test]
async fn fallback_timers_pending_across_restarts_fire_exactly_once() {
    let (app, process, mut server) = spawn_process_app().await;
    const USERS: usize = 3_000;
    app.add_users((0..USERS).map(|i| {
        json!({"userid": format!("f{i:05}"), "add": {"tag": ["f"], "app": [format!("freg-{i:05}")],
               "webhook": format!("fwh-{i:05}"), "phone": format!("1350{i:07}")}})
    }))
    .await;
    // No app receipts: every user moves on from each step.
    app.sim_post("/sim/receipts", json!({"channel": "app", "enabled": false}))
        .await;
    let rule = app
        .create_rule(json!({"type": "fallback", "steps": [
            {"channel": "app", "wait_seconds": 2, "condition": "not_delivered"},
            // Longer than step 2 can take in a debug build on a loaded machine: the server
            // must be killed before any step-3 timer is due, or an SMS in flight at the kill
            // is sent again after the restart (SMS providers have no idempotency key).
            {"channel": "webhook", "wait_seconds": 5, "condition": "not_clicked"},
            {"channel": "sms"}]}))
        .await;
    let msgid = app
        .send_ok(
            "/v1/sent",
            json!({"aud_tag": ["f"], "rule_id": rule, "msg_app": app_msg(),
                   "msg_webhook": [{"event": "x"}], "msg_sms": [{"temp_id": "SMS_1", "temp_para": {}}]}),
        )
        .await;
    let wait_for = |channel: &'static str| {
        let state = app.sim.state.clone();
        async move {
            let started = Instant::now();
            while state.received(channel).len() < USERS {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{channel} step incomplete"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for("app").await;
    server.kill();
    let pending = app.count_rows("fallback_timers").await;
    assert!(pending > 0, "the kill came after the step-1 timers fired");
    assert!(app.sim.state.received("webhook").is_empty());
    // Down for longer than the wait: the timers are overdue when the server returns.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut server = process.start().await;
    wait_for("webhook").await;
    server.kill();
    assert!(app.count_rows("fallback_timers").await > 0);
    assert!(
        app.sim.state.received("sms").is_empty(),
        "the kill came after step-3 timers fired"
    );
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let mut server = process.start().await;
    let status = app.wait_done(&msgid, Duration::from_secs(60)).await;
    server.kill();
    for channel in ["app", "webhook", "sms"] {
        let received = app.sim.state.received(channel);
        assert_eq!(received.len(), USERS, "{channel}: every user");
        assert!(
            received.values().all(|n| *n == 1),
            "{channel}: someone got a step twice"
        );
    }
    assert_eq!(
        status["steps"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(app.count_rows("fallback_timers").await, 0);
}

/// One-user messages are opened in the transaction that accepts them and keep no shard row.
/// Killed while most of them still wait for the channel's rate limit, the server sends each of
/// them after it restarts, exactly once, and finishes every message.
#[actix_web::test]
async fn one_user_messages_interrupted_by_a_crash_are_sent_exactly_once_after_restart() {
    let (app, process, mut server) = spawn_process_app().await;
    app.admin_patch(
        &format!("/api/channels/{}", app.channel("app")),
        json!({"rate_per_second": 20}),
    )
    .await;
    const USERS: usize = 300;
    app.add_users(
        (0..USERS).map(
            |i| json!({"userid": format!("o{i:04}"), "add": {"app": [format!("one-{i:04}")]}}),
        ),
    )
    .await;
    let mut msgids = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let body = json!({"aud_userid": [format!("o{i:04}")], "msg_app": app_msg()});
        msgids.push(app.send_ok("/v1/sent", body).await);
    }
    // Every message and its delivery are stored (on SQLite by the intake journal's mover,
    // moments after the answer); none has a shard row.
    let started = Instant::now();
    while app.count_rows("deliveries").await < USERS as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the answered messages were not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.count_rows("deliveries").await, USERS as i64);
    assert_eq!(app.count_rows("shards").await, 0);
    server.kill();
    let before_restart = app.sim.state.total("app") as usize;
    assert!(
        before_restart < USERS / 2,
        "the crash came too late to interrupt anything ({before_restart} sent)"
    );

    let mut server = process.start().await;
    for msgid in &msgids {
        let status = app.wait_done(msgid, Duration::from_secs(120)).await;
        assert_eq!(crate::helpers::totals(&status), (1, 1, 0), "{status}");
    }
    server.kill();
    assert_each_received_once(&app, USERS);
}

/// Messages answered but still in the intake journal when the server died are stored and sent
/// after it restarts, exactly once — also when it restarts with the journal switched off; so is
/// one the mover had stored but not yet deleted from the journal (a crash between its two
/// commits); a row whose plan cannot be read is set aside in `intake_failed`, not dropped and
/// not blocking the others; idempotency keys still replay, and new ids start above the
/// journal's.
#[actix_web::test]
async fn journaled_messages_are_stored_and_sent_exactly_once_after_a_crash() {
    use msghub::storage::intake::Intake;
    use msghub::storage::messages::NewMessage;
    use msghub_actors::plan::{Audience, MessagePlan};
    use sea_orm::ConnectionTrait;

    let (app, process, mut server) = spawn_process_app().await;
    let Some(intake) = Intake::open(&app.settings.database, true).await.unwrap() else {
        // Postgres: accepts are stored directly, there is no journal.
        server.kill();
        return;
    };
    const USERS: usize = 40;
    app.add_users(
        (0..USERS).map(
            |i| json!({"userid": format!("j{i:04}"), "add": {"app": [format!("jrn-{i:04}")]}}),
        ),
    )
    .await;
    // One message sent normally: its stored plan is the pattern of the journaled ones.
    let first = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["j0000"], "msg_app": app_msg()}),
        )
        .await;
    app.wait_done(&first, Duration::from_secs(30)).await;
    server.kill();
    let first: i64 = first.parse().unwrap();
    let row = app
        .db
        .query_one("SELECT plan FROM messages WHERE id = ?", vec![first.into()])
        .await
        .unwrap()
        .unwrap();
    let pattern: MessagePlan =
        serde_json::from_str(&row.try_get::<String>("", "plan").unwrap()).unwrap();
    let message = |plan: MessagePlan, key: Option<String>| NewMessage {
        response: json!({"code": 0, "message": "success", "msgid": plan.msgid.to_string()})
            .to_string(),
        plan,
        kind: "sent",
        priority: 2,
        sendno: None,
        idempotency_key: key,
        not_before: None,
    };
    let mut items = vec![message(pattern.clone(), None)];
    for i in 1..USERS {
        let mut plan = pattern.clone();
        plan.msgid = first + i as i64;
        plan.audience = Audience::Userids(vec![format!("j{i:04}")]);
        items.push(message(plan, Some(format!("key-{i}"))));
    }
    let answers = intake.append(&app.db, items).await.unwrap();
    assert_eq!(answers.len(), USERS);
    // And a row a newer build wrote, whose plan this one cannot read.
    let unreadable = first + USERS as i64;
    let journal = sea_orm::Database::connect(
        msghub::storage::intake::journal_url(&app.settings.database.url).unwrap(),
    )
    .await
    .unwrap();
    journal
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Sqlite,
            "INSERT INTO intake (id, source_id, kind, priority, plan, response, accepted_at) \
             VALUES (?, ?, 'sent', 2, '{\"from\": \"the future\"}', '{}', 0)",
            vec![unreadable.into(), pattern.source_id.into()],
        ))
        .await
        .unwrap();
    // And one the main database refuses while the others go in: its idempotency key is
    // already there (a state the checks at acceptance never let arise).
    let refused = first + USERS as i64 + 1;
    app.db
        .execute(
            "INSERT INTO messages (id, source_id, kind, priority, lane, state, plan, sendno, \
             idempotency_key, response, planned, plan_cursor, shard_count, created_at, updated_at, \
             not_before) SELECT ?, source_id, kind, priority, lane, 'done', plan, sendno, 'dup', \
             response, planned, plan_cursor, shard_count, created_at, updated_at, not_before \
             FROM messages WHERE id = ?",
            vec![(first - 1).into(), first.into()],
        )
        .await
        .unwrap();
    let mut plan = pattern.clone();
    plan.msgid = refused;
    plan.audience = Audience::Userids(vec!["j0002".into()]);
    journal
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Sqlite,
            "INSERT INTO intake (id, source_id, kind, priority, plan, idempotency_key, response, \
             accepted_at) VALUES (?, ?, 'sent', 2, ?, 'dup', '{}', 0)",
            vec![
                refused.into(),
                pattern.source_id.into(),
                serde_json::to_string(&plan).unwrap().into(),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(intake.pending(1000).await.unwrap().rows, USERS + 2);

    let mut server = process
        .start_with(&[("MSGHUB__ACCEPT__JOURNAL", "false")])
        .await;
    for i in 1..USERS {
        let status = app
            .wait_done(&(first + i as i64).to_string(), Duration::from_secs(60))
            .await;
        assert_eq!(crate::helpers::totals(&status), (1, 1, 0), "{status}");
    }
    // The journal is drained once the mover deleted what it stored.
    let started = Instant::now();
    while intake.pending(1000).await.unwrap().rows > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "journal not drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, replayed) = app
        .v1_raw(
            "/v1/sent",
            serde_json::to_vec(&json!({"aud_userid": ["j0001"], "msg_app": app_msg()})).unwrap(),
            Some("key-1"),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(replayed["msgid"], (first + 1).to_string(), "{replayed}");
    let set_aside: Vec<i64> = journal
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            "SELECT id FROM intake_failed ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("", "id").unwrap())
        .collect();
    assert_eq!(
        set_aside,
        vec![unreadable, refused],
        "kept aside, not dropped"
    );
    // Ids continue above the journal's.
    let next = app
        .send_ok(
            "/v1/sent",
            json!({"aud_userid": ["j0000"], "msg_app": app_msg()}),
        )
        .await;
    assert!(next.parse::<i64>().unwrap() > unreadable, "{next}");
    let status = app.wait_done(&next, Duration::from_secs(30)).await;
    assert_eq!(crate::helpers::totals(&status), (1, 1, 0), "{status}");
    server.kill();
    assert_eq!(
        app.count_rows("messages").await,
        USERS as i64 + 2,
        "one row each (and the copy with the refused key), none twice"
    );
    let received = app.sim.state.received("app");
    assert_eq!(received.len(), USERS, "every user received the message");
    assert_eq!(
        received.get("jrn-0000"),
        Some(&2),
        "j0000: its first message and the new one"
    );
    assert!(
        received
            .iter()
            .filter(|(a, _)| *a != "jrn-0000")
            .all(|(_, n)| *n == 1),
        "someone received a journaled message twice"
    );
}
