//! Layered configuration: built-in defaults < a TOML file < `MSGHUB__SECTION__KEY` environment.
//!
//! Every struct denies unknown fields, so a misspelt key is an error at start, not a setting
//! silently ignored. `config/default.toml` documents every key; a test keeps it equal to
//! [`Settings::default`].

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub security: SecuritySettings,
    pub accept: AcceptSettings,
    pub dispatch: DispatchSettings,
    pub providers: ProviderSettings,
    pub bounces: BounceSettings,
    pub callbacks: CallbackSettings,
    pub strategies: StrategySettings,
    pub log: LogSettings,
    pub simulator: SimulatorSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the HTTP API listens on.
    pub bind: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How providers reach this server, for receipt callback URLs (`https://hub.example.com`);
    /// empty means `http://<bind address>`.
    pub public_url: String,
    /// Nice value (0–19) of the threads that work in the background: dispatch and SQLite's
    /// writer. When every core is busy (a blast), the threads that answer requests run first.
    /// Off (0) by default: any other busy process on the machine then also runs before the
    /// hub's delivery work.
    pub background_nice: i32,
    /// Time slice (µs) the threads that answer requests ask the scheduler for (HTTP workers,
    /// the accept writer; also the fallback timers' deadline and read-ahead threads): on Linux
    /// 6.12+ a short slice makes a waking request thread run sooner on busy cores without
    /// changing anyone's share of them (100 by default; 0 keeps the kernel's default; the
    /// kernel keeps it within 100–100 000).
    pub request_slice_us: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            max_body_bytes: 4 * 1024 * 1024,
            public_url: String::new(),
            background_nice: 0,
            request_slice_us: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` (embedded default) or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
    /// Postgres: pooled connections idle this long are closed.
    pub idle_timeout_ms: u64,
    /// SQLite `synchronous` pragma: `full` survives power loss, `normal` only process crashes.
    pub sqlite_synchronous: String,
    /// SQLite: page cache of the writer connection, in MiB, filled as pages are touched.
    /// Outcomes, receipts and timer firings touch rows of large messages at random; pages
    /// read from the OS instead of this cache cost a system call each.
    pub sqlite_cache_mib: u32,
    /// SQLite: WAL pages written before they are copied back into the database file
    /// (SQLite's `wal_autocheckpoint`, 1000 by default). Receipts and outcomes rewrite rows
    /// at random; a longer WAL copies each page back once for many rewrites.
    pub sqlite_wal_autocheckpoint: u32,
    /// SQLite: those pages are copied back by a thread of its own (a passive checkpoint,
    /// which takes no write lock), woken by the commits that leave the log that long, instead
    /// of by the writer after its commit: no write queued behind the main database's writer,
    /// and no accept on the intake journal's (whose threshold is SQLite's 1000 pages), waits
    /// for a checkpoint. `false`: SQLite's own way.
    pub sqlite_background_checkpoint: bool,
    /// Log every SQL statement with its duration (target `sqlx::query`, level info): for
    /// finding where the database time goes; noisy.
    pub log_statements: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://msghub-data/msghub.db?mode=rwc".into(),
            max_connections: 8,
            idle_timeout_ms: 600_000,
            sqlite_synchronous: "full".into(),
            sqlite_cache_mib: 128,
            sqlite_wal_autocheckpoint: 10_000,
            sqlite_background_checkpoint: true,
            log_statements: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Where generated key material lives when not configured.
    pub data_dir: PathBuf,
    /// Base64 of 32 bytes encrypting provider credentials at rest. Empty: a key file
    /// `<data_dir>/master.key` is created on first start.
    pub encryption_key: Secret,
    /// Token for `/api`. Empty: one is generated and printed once on first start.
    pub admin_token: Secret,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            data_dir: PathBuf::from("msghub-data"),
            encryption_key: Secret::default(),
            admin_token: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptSettings {
    /// Most messages stored per group-commit transaction.
    pub batch_max: usize,
    /// Requests waiting for the writer before new ones wait for space.
    pub queue_capacity: usize,
    /// SQLite: store accepted sends in a journal file of their own (`<db>-intake.db`) and
    /// answer after its commit; a mover copies them into the main database. Accepting then
    /// never waits behind dispatch writes. Ignored on Postgres and in-memory databases.
    pub journal: bool,
    /// The most accepted messages the journal holds before they are stored: beyond it,
    /// accepts wait for the mover (backpressure to senders) instead of letting acceptance run
    /// ahead of delivery without end; refused after 30 s of waiting (HTTP 429, JUMS 1015030).
    pub max_backlog: usize,
}

impl Default for AcceptSettings {
    fn default() -> Self {
        AcceptSettings {
            batch_max: 512,
            queue_capacity: 8192,
            journal: true,
            max_backlog: 200_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSettings {
    /// Users per shard of a tag or broadcast audience.
    pub shard_size: u32,
    /// Shards created per planning transaction.
    pub page_shards: u32,
    /// Shards processed at once, per lane.
    pub realtime_shard_concurrency: usize,
    pub bulk_shard_concurrency: usize,
    /// Messages dispatched at once, per lane; the rest wait in the database for a sweep.
    pub max_active_realtime: usize,
    pub max_active_bulk: usize,
    /// How often the planner looks for stored messages it has not taken yet.
    pub sweep_interval_ms: u64,
    /// Shards waiting per queue before the planner waits.
    pub shard_queue_capacity: usize,
    /// Jobs waiting per channel lane before shard workers wait.
    pub lane_capacity: usize,
    /// Concurrent provider calls per channel for each lane.
    pub realtime_in_flight: usize,
    pub bulk_in_flight: usize,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Most items per group-commit transaction of the dispatch path.
    pub write_batch_max: usize,
    /// Most rows (deliveries opened, outcomes written) per such transaction: keeps each one
    /// short, so a send's acceptance never waits long behind bulk work on SQLite.
    pub write_batch_rows: usize,
    /// How often fallback timers are looked for. Those due within the next 250 ms are read
    /// ahead and fired at their deadline; this bounds how late a timer with a shorter wait fires.
    pub timer_poll_ms: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            shard_size: 1000,
            page_shards: 16,
            realtime_shard_concurrency: 512,
            bulk_shard_concurrency: 8,
            max_active_realtime: 20_000,
            max_active_bulk: 16,
            sweep_interval_ms: 500,
            shard_queue_capacity: 64,
            lane_capacity: 64,
            realtime_in_flight: 64,
            bulk_in_flight: 32,
            max_attempts: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 30_000,
            write_batch_max: 512,
            write_batch_rows: 1000,
            timer_poll_ms: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings {
    pub request_timeout_ms: u64,
    /// Pooled connections per channel: SMTP sessions, and idle HTTP keep-alive connections
    /// (at least `dispatch.realtime_in_flight + dispatch.bulk_in_flight`, the most calls a
    /// channel has under way, so a busy channel never closes and reopens connections).
    pub pool_size: usize,
    /// Email carries one-click unsubscribe links (`List-Unsubscribe`, RFC 8058) to
    /// `{server.public_url}/unsubscribe/…`; mailbox providers need that URL to be HTTPS and
    /// reachable from them.
    pub email_list_unsubscribe: bool,
    /// Providers whose receipts are asked for (DingTalk work notices): how long after a send
    /// the provider is first asked what became of it; each later ask waits twice as long as
    /// the wait before it, up to `receipt_pull_max_interval_ms`, until every recipient is settled
    /// (read, or not reached) or `receipt_pull_window_ms` has passed since the send.
    pub receipt_pull_first_ms: u64,
    pub receipt_pull_max_interval_ms: u64,
    pub receipt_pull_window_ms: u64,
    /// The most receipt asks per second to one channel. DingTalk limits an organisation's API
    /// calls per second (20–60 by plan): this budget is apart from the channel's send rate,
    /// so keep the two together within it.
    pub receipt_pulls_per_second: u32,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            request_timeout_ms: 10_000,
            pool_size: 32,
            email_list_unsubscribe: true,
            receipt_pull_first_ms: 5_000,
            receipt_pull_max_interval_ms: 7_200_000,
            receipt_pull_window_ms: 86_400_000,
            receipt_pulls_per_second: 10,
        }
    }
}

/// Email bounces: the return path each message carries (VERP) and the SMTP listener that
/// takes the delivery status notifications mail servers send to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceSettings {
    /// The domain of the return paths, `{local_part}+{msgid}.{delivery}.{tag}@{domain}`, whose MX is the
    /// listener below: a subdomain of the channels' From domain, so SPF aligns under DMARC.
    /// Empty: email goes out with the channel's from address as its return path, and
    /// bounces are not followed.
    pub domain: String,
    pub local_part: String,
    /// Where the bounce listener (SMTP, port 25 behind the domain's MX) listens, e.g.
    /// `0.0.0.0:25`. Empty: no listener.
    pub smtp_listen: String,
    /// The part of a bounce kept; notifications quoting whole messages are cut to this (their
    /// status part comes first).
    pub max_message_bytes: usize,
    /// Concurrent SMTP sessions (at most 10 000); a session beyond them is answered `421`
    /// (try later).
    pub max_sessions: usize,
    /// Soft bounces (a failure that does not say the mailbox is gone: mailbox full, the
    /// domain unreachable until the sender gave up) after which the address is suppressed as
    /// gone; 0 never suppresses for them. A bounce counts when it comes `soft_gap_hours` or
    /// more after the last one counted (one outage or a burst of mail counts once), and the
    /// count starts again after `soft_window_days` without one.
    pub soft_limit: u32,
    pub soft_gap_hours: u32,
    pub soft_window_days: u32,
}

impl Default for BounceSettings {
    fn default() -> Self {
        BounceSettings {
            domain: String::new(),
            local_part: "bounce".into(),
            smtp_listen: String::new(),
            max_message_bytes: 1024 * 1024,
            max_sessions: 64,
            soft_limit: 5,
            soft_gap_hours: 24,
            soft_window_days: 30,
        }
    }
}

/// Status callbacks to business systems (JUMS format): batching, retries and memory bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackSettings {
    /// Items per POST: a batch is sent as soon as it holds this many.
    pub batch_max: usize,
    /// A batch holding fewer items is sent this long after its first item.
    pub flush_ms: u64,
    /// Further attempts after a POST not answered with HTTP 200; then the batch is dropped.
    pub retries: u32,
    pub retry_delay_ms: u64,
    /// Per request: the POST of a batch and the echostr check of a URL.
    pub timeout_ms: u64,
    /// Items held (queued, batched or being retried) before new items are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            batch_max: 100,
            flush_ms: 10_000,
            retries: 3,
            retry_delay_ms: 50_000,
            timeout_ms: 5_000,
            queue_capacity: 100_000,
        }
    }
}

/// Strategies configured for the whole server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategySettings {
    /// Priority-3 (marketing) messages are not sent inside this daily window of local time,
    /// `HH:MM-HH:MM` (seconds allowed); they wait for its end. Empty: no quiet hours.
    pub quiet_hours: String,
    /// The UTC offset of the quiet hours' local time.
    pub quiet_hours_utc_offset: String,
    /// SMS replies that unsubscribe the number (Aliyun SmsUp, Tencent reply callbacks): a
    /// reply that is one of these — case, spaces, surrounding punctuation and full-width forms
    /// aside — opts the number out of marketing (suppressed with reason `opted_out`:
    /// priority-3 messages skip it). Empty: replies never do.
    pub sms_unsubscribe_replies: Vec<String>,
}

impl Default for StrategySettings {
    fn default() -> Self {
        StrategySettings {
            quiet_hours: String::new(),
            quiet_hours_utc_offset: "+08:00".into(),
            sms_unsubscribe_replies: ["TD", "T", "R", "退订", "STOP", "UNSUBSCRIBE"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `msghub=debug,info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// Ports of the bundled provider simulator (`msghub sim`, `msghub serve --demo`).
    pub http_port: u16,
    pub smtp_port: u16,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        SimulatorSettings {
            http_port: 8090,
            smtp_port: 2525,
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then the `MSGHUB__` environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("MSGHUB__").split("__"))
            .extract()
            .map_err(Box::new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_file_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file: Settings = Figment::from(Toml::file_exact(path)).extract().unwrap();
        assert_eq!(from_file, Settings::default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[server]\nbnd = \"x\""))
            .extract::<Settings>()
            .unwrap_err();
        assert!(err.to_string().contains("bnd"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut s = Settings::default();
        s.security.admin_token = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
