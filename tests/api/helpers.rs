//! Boots the real server (on port 0, against a fresh SQLite file or, when
//! `MSGHUB_TEST_DATABASE_URL` is set, a fresh Postgres database) and the provider simulator.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use msghub::settings::{Secret, Settings};
use msghub::startup::Application;
use msghub::storage::Db;
use msghub_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub sim: SimHandle,
    pub db: Db,
    pub source_key: String,
    pub source_secret: String,
    pub source_id: i64,
    /// Channel ids by type code.
    pub channels: Vec<(String, i64)>,
    pub settings: Settings,
    /// The in-process server's dispatch topology, stopped when the test ends so its database
    /// connections are released (Postgres allows only so many).
    pub dispatch: Option<msghub_actors::Dispatch>,
    /// The bounce listener's address, when the settings start one.
    pub bounce_addr: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(d) = &self.dispatch {
            d.stop();
        }
    }
}

/// A database URL for one test: a new SQLite file, or a new Postgres database.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match std::env::var("MSGHUB_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => create_postgres_database(&base).await,
        _ => format!("sqlite://{}?mode=rwc", dir.join("msghub.db").display()),
    }
}

async fn create_postgres_database(base: &str) -> String {
    use sea_orm::{ConnectionTrait, Database};
    let name = format!("msghub_test_{}", uuid_like());
    let conn = Database::connect(base)
        .await
        .expect("connect to MSGHUB_TEST_DATABASE_URL");
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    format!("{prefix}/{name}")
}

fn uuid_like() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn test_settings(dir: &std::path::Path, db_url: String) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.database.url = db_url;
    s.database.sqlite_synchronous = "normal".into();
    // Many servers share one Postgres in this suite: few connections each, closed when idle.
    s.database.max_connections = 4;
    s.database.idle_timeout_ms = 1000;
    s.security.data_dir = PathBuf::from(dir);
    s.security.admin_token = Secret(ADMIN_TOKEN.into());
    s.dispatch.backoff_base_ms = 20;
    s.dispatch.backoff_max_ms = 1500;
    s.log.level = "warn".into();
    s
}

pub async fn start_sim() -> SimHandle {
    msghub_sim::start(SimConfig::default())
        .await
        .expect("simulator starts")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    msghub::telemetry::init_logging(&msghub::settings::LogSettings {
        format: "text".into(),
        level: std::env::var("MSGHUB_TEST_LOG").unwrap_or_else(|_| "warn".into()),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_sim().await;
    let mut settings = test_settings(dir.path(), fresh_database_url(dir.path()).await);
    tweak(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let port = app.port();
    let bounce_addr = app.bounce_addr();
    let db = app.state().db.clone();
    let dispatch = app.state().dispatch.clone();
    actix_web::rt::spawn(app.into_server());
    let mut t = TestApp::attach(format!("http://127.0.0.1:{port}"), sim, db, settings, dir).await;
    t.dispatch = Some(dispatch);
    t.bounce_addr = bounce_addr;
    t
}

impl TestApp {
    /// Set up a source and one channel of each simulated type on a running server.
    pub async fn attach(
        address: String,
        sim: SimHandle,
        db: Db,
        settings: Settings,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut t = TestApp {
            address,
            client,
            sim,
            db,
            source_key: String::new(),
            source_secret: String::new(),
            source_id: 0,
            channels: Vec::new(),
            settings,
            dispatch: None,
            bounce_addr: None,
            _dir: dir,
        };
        let source = t
            .admin_post("/api/sources", json!({"name": "billing"}))
            .await;
        t.source_key = source["key"].as_str().expect("key").to_string();
        t.source_secret = source["secret"].as_str().expect("secret").to_string();
        t.source_id = source["id"].as_i64().expect("id");
        for (kind, creds) in sim_credentials(&t.sim) {
            let ch = t
                .admin_post(
                    "/api/channels",
                    json!({"type": kind, "name": format!("{kind} sim"), "credentials": creds}),
                )
                .await;
            let id = ch["id"].as_i64().expect("channel id");
            t.grant(id).await;
            t.channels.push((kind.to_string(), id));
        }
        t
    }
}

pub fn sim_credentials(sim: &SimHandle) -> Vec<(&'static str, Value)> {
    let c = SimConfig::default();
    vec![
        (
            "app",
            json!({"app_key": c.jpush_app_key, "master_secret": c.jpush_master_secret, "base_url": sim.http_url()}),
        ),
        (
            "sms",
            json!({"access_key_id": c.aliyun_access_key_id, "access_key_secret": c.aliyun_access_key_secret,
                        "sign_name": "msghub", "base_url": sim.http_url()}),
        ),
        (
            "email",
            json!({"host": "127.0.0.1", "port": sim.smtp_addr.port(), "tls": "none", "from": "hub@msghub.test"}),
        ),
        (
            "webhook",
            json!({"url": sim.webhook_url("test"), "secret": c.webhook_secret}),
        ),
    ]
}

impl TestApp {
    pub fn channel(&self, kind: &str) -> i64 {
        self.channels
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, id)| *id)
            .expect("channel")
    }

    /// POST to the simulator's control API, which must accept it.
    pub async fn sim_post(&self, path: &str, body: Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.sim.http_url()))
            .json(&body)
            .send()
            .await
            .expect("sim control");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    /// Create a rule (`/api/rules`) and return its id.
    pub async fn create_rule(&self, rule: Value) -> i64 {
        let r = self
            .admin_post("/api/rules", json!({"name": "chain", "rule": rule}))
            .await;
        r["id"].as_i64().expect("rule id")
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    pub async fn admin_patch(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .patch(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(
            resp.status().is_success(),
            "PATCH {path}: {}",
            resp.status()
        );
        resp.json().await.expect("json")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    pub async fn grant(&self, channel_id: i64) {
        let resp = self
            .client
            .put(format!(
                "{}/api/sources/{}/grants/{channel_id}",
                self.address, self.source_id
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 204);
    }

    /// POST to `/v1/...` with the source's Basic credentials.
    pub async fn v1(&self, path: &str, body: &Value) -> (u16, Value) {
        self.v1_raw(path, serde_json::to_vec(body).expect("json"), None)
            .await
    }

    pub async fn v1_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .basic_auth(&self.source_key, Some(&self.source_secret))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Send and return the msgid, asserting JUMS code 0.
    pub async fn send_ok(&self, path: &str, body: Value) -> String {
        let (status, resp) = self.v1(path, &body).await;
        assert_eq!((status, resp["code"].as_i64()), (200, Some(0)), "{resp}");
        resp["msgid"].as_str().expect("msgid").to_string()
    }

    /// Each `(content, named)`: a send of `msg_<kind>` `content` to `userid` is refused with
    /// JUMS 4004 and a message naming `named`; nothing is stored and the simulator's `kind`
    /// channel gets no call.
    pub async fn assert_contents_refused(&self, kind: &str, userid: &str, cases: &[(Value, &str)]) {
        for (content, named) in cases {
            let (status, body) = self
                .v1(
                    "/v1/sent",
                    &json!({"aud_userid": [userid], format!("msg_{kind}"): content}),
                )
                .await;
            assert_eq!((status, body["code"].as_i64()), (400, Some(4004)), "{body}");
            let message = body["message"].as_str().expect("message");
            assert!(message.contains(named), "{message}");
        }
        assert_eq!(self.count_rows("messages").await, 0, "nothing stored");
        assert_eq!(self.sim.state.calls(kind), 0);
    }

    /// Add users in batches of 1000 through `/v1/user/opt`.
    pub async fn add_users(&self, users: impl Iterator<Item = Value>) {
        let users: Vec<Value> = users.collect();
        for chunk in users.chunks(1000) {
            let (status, resp) = self.v1("/v1/user/opt", &Value::Array(chunk.to_vec())).await;
            assert_eq!(status, 200, "{resp}");
            assert_eq!(
                resp["data"]["fail"].as_array().map(Vec::len),
                Some(0),
                "{resp}"
            );
        }
    }

    pub async fn status(&self, msgid: &str) -> Value {
        let resp = self.admin_get(&format!("/api/messages/{msgid}")).await;
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.expect("json")
    }

    /// A channel's receipt URL, as `GET /api/channels/{id}` shows it.
    pub async fn receipt_url(&self, channel_id: i64) -> String {
        let shown: Value = self
            .admin_get(&format!("/api/channels/{channel_id}"))
            .await
            .json()
            .await
            .expect("json");
        shown["receipt_url"]
            .as_str()
            .expect("receipt url")
            .to_string()
    }

    /// A message's deliveries (the first 1000), as `/api/messages/{msgid}/deliveries` lists them.
    pub async fn deliveries(&self, msgid: &str) -> Vec<Value> {
        let resp = self
            .admin_get(&format!("/api/messages/{msgid}/deliveries?limit=1000"))
            .await;
        assert_eq!(resp.status().as_u16(), 200);
        let mut body: Value = resp.json().await.expect("json");
        match body["deliveries"].take() {
            Value::Array(rows) => rows,
            other => panic!("deliveries: {other}"),
        }
    }

    /// Wait until the message is done (every delivery has a final outcome).
    pub async fn wait_done(&self, msgid: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let s = self.status(msgid).await;
            if s["state"] == "done" {
                return s;
            }
            assert!(started.elapsed() < limit, "message {msgid} not done: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series (its name with labels, as `/metrics` prints it); 0 if absent.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    pub async fn count_rows(&self, table: &str) -> i64 {
        let r = self
            .db
            .query_one(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![])
            .await
            .expect("count")
            .expect("row");
        r.try_get("", "n").expect("n")
    }
}

/// Sum of per-channel counts of a status document.
pub fn totals(status: &Value) -> (i64, i64, i64) {
    let mut t = (0, 0, 0);
    for c in status["channels"].as_array().into_iter().flatten() {
        t.0 += c["target"].as_i64().unwrap_or(0);
        t.1 += c["sent"].as_i64().unwrap_or(0);
        t.2 += c["failed"].as_i64().unwrap_or(0);
    }
    t
}

pub fn app_msg() -> Value {
    json!([{"platform": "all", "notification": {"alert": "hello"}}])
}

/// Wait until `done` answers true, checking every 20 ms; fails the test naming `what` after
/// `limit`.
pub async fn wait_until_async<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
