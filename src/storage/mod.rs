//! Storage: the only module that talks to the database (sea-orm over SQLite or Postgres).
//!
//! SQL is written once with `?` placeholders in the subset both engines share; [`Db::stmt`]
//! renumbers them for Postgres. On SQLite every write goes through a single-connection pool,
//! the engine's own rule (one writer at a time) made explicit so writers queue instead of
//! failing with `SQLITE_BUSY`; reads use a separate pool and WAL snapshots.

pub mod callbacks;
pub mod channels;
pub mod checkpoint;
pub mod crypto;
pub mod dispatch;
pub mod intake;
pub mod lists;
pub mod messages;
pub mod pulls;
pub mod receipts;
pub mod retract;
pub mod rules;
pub mod schedule;
pub mod sources;
pub mod suppressions;
pub mod users;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use msghub_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    QueryResult, Statement, Value,
};

use crate::settings::DatabaseSettings;

pub use sea_orm::DbErr as StorageError;

#[derive(Clone)]
pub struct Db {
    read: DatabaseConnection,
    write: DatabaseConnection,
    backend: DatabaseBackend,
    gate: Arc<WriteGate>,
    /// Delivery counts of large messages (see `Db::message_status`).
    counts: Arc<std::sync::Mutex<std::collections::HashMap<i64, messages::CachedCounts>>>,
    /// SQLite: the thread that checkpoints the WAL, while any clone of this is alive.
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

/// Who goes first on SQLite's single writer connection. Acceptance of a send is the latency
/// path: while one waits, bulk writers (shard opens, outcomes, receipts, timers) do not start a
/// transaction, and they queue one at a time, so an accept waits for at most one bulk
/// transaction. On Postgres, writers do not serialise and the gate does nothing.
#[derive(Default)]
pub struct WriteGate {
    /// Accept transactions waiting for or holding the writer.
    urgent: AtomicUsize,
    urgent_done: Notify,
    /// Held by the one bulk writer allowed to queue for the connection.
    bulk: tokio::sync::Mutex<()>,
    /// Fallback timer firings waiting for or holding the writer: bulk writers yield to them
    /// too (deadlines before throughput), and they yield to accepts.
    timely: AtomicUsize,
    timely_done: Notify,
}

/// The longest a bulk writer yields to urgent ones before it takes its turn anyway.
const MAX_BULK_YIELD: Duration = Duration::from_millis(20);

/// Held by an urgent writer until its transaction ends.
pub struct UrgentWrite {
    gate: Option<Arc<WriteGate>>,
}

impl Drop for UrgentWrite {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate
            && gate.urgent.fetch_sub(1, Ordering::AcqRel) == 1
        {
            gate.urgent_done.notify_waiters();
        }
    }
}

/// Held by a timely writer (see [`Db::timely_write`]) until its transaction ends.
pub struct TimelyWrite {
    gate: Option<Arc<WriteGate>>,
}

impl Drop for TimelyWrite {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate
            && gate.timely.fetch_sub(1, Ordering::AcqRel) == 1
        {
            gate.timely_done.notify_waiters();
        }
    }
}

/// Held by a real-time or bulk writer until its transaction ends (see [`Db::lane_write`]).
pub enum LaneWrite<'a> {
    Urgent(UrgentWrite),
    Bulk(BulkWrite<'a>),
}

/// Held by a bulk writer until its transaction ends.
pub struct BulkWrite<'a> {
    _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// The name of the SQLite writer connection's thread (with a number after it).
pub const WRITER_THREAD: &str = "sqlite-write";

/// Unix time in milliseconds, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Db {
    /// Connect (creating the SQLite file and its folder if needed) and run pending migrations.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Db, DbErr> {
        let url = settings.url.as_str();
        let db = if url.starts_with("sqlite:") {
            prepare_sqlite_dir(url)?;
            // Checkpoints off the writer (see `checkpoint`), for a file only.
            let checkpointer = match sqlite_path(url) {
                Some(path) => checkpoint::Checkpointer::for_file(
                    settings,
                    path,
                    settings.sqlite_wal_autocheckpoint,
                    "sqlite-ckpt",
                )?,
                None => None,
            };
            // The writer gets a large page cache (`sqlite_cache_mib`: it touches the hot indexes
            // of every insert, and outcomes, receipts and firings update rows at random);
            // readers keep SQLite's small default so memory stays flat as the pool grows.
            let write = Database::connect(sqlite_options(
                url,
                settings,
                1,
                i64::from(settings.sqlite_cache_mib.max(1)) * 1024,
                settings.sqlite_wal_autocheckpoint.max(1),
                WRITER_THREAD,
                checkpointer.as_ref().map(|c| c.signal()),
            ))
            .await?;
            // Readers never write: their checkpoint setting is never used.
            let read = Database::connect(sqlite_options(
                url,
                settings,
                settings.max_connections.max(1),
                2 * 1024,
                settings.sqlite_wal_autocheckpoint.max(1),
                "sqlite-read",
                None,
            ))
            .await?;
            Db {
                read,
                write,
                backend: DatabaseBackend::Sqlite,
                gate: Arc::default(),
                counts: Arc::default(),
                checkpointer,
            }
        } else {
            let mut opts = ConnectOptions::new(url.to_string());
            opts.max_connections(settings.max_connections.max(2))
                .min_connections(0)
                .idle_timeout(Duration::from_millis(settings.idle_timeout_ms.max(100)))
                .sqlx_logging(settings.log_statements)
                .acquire_timeout(Duration::from_secs(30));
            let conn = Database::connect(opts).await?;
            Db {
                read: conn.clone(),
                write: conn,
                backend: DatabaseBackend::Postgres,
                gate: Arc::default(),
                counts: Arc::default(),
                checkpointer: None,
            }
        };
        Migrator::up(&db.write, None).await?;
        Ok(db)
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// Mark the caller's coming write as urgent (see [`WriteGate`]) until the guard drops.
    pub fn urgent_write(&self) -> UrgentWrite {
        if self.backend != DatabaseBackend::Sqlite {
            return UrgentWrite { gate: None };
        }
        self.gate.urgent.fetch_add(1, Ordering::AcqRel);
        UrgentWrite {
            gate: Some(self.gate.clone()),
        }
    }

    /// Wait until no urgent or timely write is pending and no other bulk writer is queued,
    /// then hold the bulk slot until the guard drops (see [`WriteGate`]).
    pub async fn bulk_write(&self) -> BulkWrite<'_> {
        if self.backend != DatabaseBackend::Sqlite {
            return BulkWrite { _guard: None };
        }
        let guard = self.gate.bulk.lock().await;
        // Yield to urgent and timely writes, but never for long: under a sustained stream of
        // accepts the bulk work (outcomes, shard opens) must still move.
        let deadline = tokio::time::Instant::now() + MAX_BULK_YIELD;
        loop {
            let urgent_done = self.gate.urgent_done.notified();
            let timely_done = self.gate.timely_done.notified();
            if self.gate.urgent.load(Ordering::Acquire) == 0
                && self.gate.timely.load(Ordering::Acquire) == 0
            {
                break;
            }
            let either = async {
                tokio::select! {
                    _ = urgent_done => {},
                    _ = timely_done => {},
                }
            };
            if tokio::time::timeout_at(deadline, either).await.is_err() {
                break;
            }
        }
        BulkWrite {
            _guard: Some(guard),
        }
    }

    /// The writer's turn for dispatch work of a lane: real-time work (a transactional send's
    /// deliveries, outcomes and finish) is urgent, bulk work waits for it. Hold the guard
    /// until the transaction ends.
    pub async fn lane_write(&self, realtime: bool) -> LaneWrite<'_> {
        if realtime {
            LaneWrite::Urgent(self.urgent_write())
        } else {
            LaneWrite::Bulk(self.bulk_write().await)
        }
    }

    /// A write with a deadline (fallback timers): it does not queue behind bulk writers, which
    /// yield to it, and it yields to urgent writes for at most [`MAX_BULK_YIELD`]. Hold the
    /// guard until the transaction ends.
    pub async fn timely_write(&self) -> TimelyWrite {
        if self.backend != DatabaseBackend::Sqlite {
            return TimelyWrite { gate: None };
        }
        self.gate.timely.fetch_add(1, Ordering::AcqRel);
        let guard = TimelyWrite {
            gate: Some(self.gate.clone()),
        };
        let deadline = tokio::time::Instant::now() + MAX_BULK_YIELD;
        loop {
            let done = self.gate.urgent_done.notified();
            if self.gate.urgent.load(Ordering::Acquire) == 0
                || tokio::time::timeout_at(deadline, done).await.is_err()
            {
                return guard;
            }
        }
    }

    /// Pages the checkpointing thread copied back so far (SQLite with
    /// `sqlite_background_checkpoint`).
    pub fn checkpointed_pages(&self) -> Option<u64> {
        self.checkpointer.as_ref().map(|c| c.pages_copied())
    }

    /// The pool for reads that need no transaction.
    pub fn read(&self) -> &DatabaseConnection {
        &self.read
    }

    /// The pool for writes and transactions.
    pub fn write(&self) -> &DatabaseConnection {
        &self.write
    }

    /// A statement for this backend from `?`-placeholder SQL.
    pub fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend, self.placeholders(sql), values)
    }

    fn placeholders(&self, sql: &str) -> String {
        if self.backend != DatabaseBackend::Postgres {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub async fn ping(&self) -> Result<(), DbErr> {
        self.read.execute_unprepared("SELECT 1").await.map(|_| ())
    }

    pub async fn query_all(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.read.query_all_raw(self.stmt(sql, values)).await
    }

    pub async fn query_one(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        self.read.query_one_raw(self.stmt(sql, values)).await
    }

    /// A statement that writes and returns a row (`INSERT/UPDATE … RETURNING`).
    pub async fn query_one_rw(
        &self,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<QueryResult>, DbErr> {
        self.write.query_one_raw(self.stmt(sql, values)).await
    }

    /// The rows a keyed update or lookup of `n` rows is padded to ([`padded_rows`]), on
    /// SQLite. Postgres gets exact shapes: reused shapes would get generic plans there, blind
    /// to the values of their lists (a 200 000-user webhook blast ran at a third of the
    /// speed), and planning every run instead costs more than the shapes save.
    pub fn pad_to(&self, n: usize, max: usize) -> usize {
        if self.backend == DatabaseBackend::Sqlite {
            padded_rows(n, max)
        } else {
            n
        }
    }

    /// The rows an insert of `n` rows whose conflict clause skips a repeated row (`ON
    /// CONFLICT … DO NOTHING` on a unique key of the row) is padded to with copies of its
    /// last row ([`padded_insert_rows`]), on SQLite; exact on Postgres (see [`Db::pad_to`]).
    pub fn pad_insert_to(&self, n: usize, max: usize) -> usize {
        if self.backend == DatabaseBackend::Sqlite {
            padded_insert_rows(n, max)
        } else {
            n
        }
    }

    /// Insert rows cut into statements: power-of-two chunks on SQLite ([`pow2_chunks`]),
    /// chunks of `max` on Postgres (see [`Db::pad_to`]).
    pub fn chunks<'a, T>(&self, items: &'a [T], max: usize) -> Vec<&'a [T]> {
        if self.backend == DatabaseBackend::Sqlite {
            pow2_chunks(items, max)
        } else {
            items.chunks(max.max(1)).collect()
        }
    }

    /// The rows of `inner` (a `SELECT`, or on Postgres an `INSERT … RETURNING`, whose result
    /// columns include `cols`), packed by the
    /// database into one JSON array and read back as one row. On SQLite every result row
    /// otherwise crosses from sqlx's connection thread to the async side on its own, waking the
    /// runtime each time: for a lookup of hundreds of rows that hand-off costs more than the
    /// lookup. Values come back as JSON: integers, strings or null.
    pub async fn query_packed<C: ConnectionTrait>(
        &self,
        conn: &C,
        cols: &[&str],
        inner: &str,
        values: Vec<Value>,
    ) -> Result<Vec<PackedRow>, DbErr> {
        let fields = cols
            .iter()
            .map(|c| format!("p.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        // A common table expression, so `inner` may also be an `INSERT … RETURNING` on Postgres.
        let sql = if self.backend == DatabaseBackend::Postgres {
            format!(
                "WITH p AS ({inner}) SELECT json_agg(json_build_array({fields}))::text AS packed FROM p"
            )
        } else {
            format!(
                "WITH p AS ({inner}) SELECT json_group_array(json_array({fields})) AS packed FROM p"
            )
        };
        let Some(row) = conn.query_one_raw(self.stmt(&sql, values)).await? else {
            return Ok(Vec::new());
        };
        // Postgres aggregates no rows to NULL, SQLite to `[]`.
        let Some(text) = row.try_get::<Option<String>>("", "packed")? else {
            return Ok(Vec::new());
        };
        let rows: Vec<Vec<serde_json::Value>> =
            serde_json::from_str(&text).map_err(|e| DbErr::Custom(format!("packed rows: {e}")))?;
        Ok(rows.into_iter().map(PackedRow).collect())
    }

    pub async fn execute(&self, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
        Ok(self
            .write
            .execute_raw(self.stmt(sql, values))
            .await?
            .rows_affected())
    }
}

/// One row of [`Db::query_packed`], its columns in the order asked for.
#[derive(Debug)]
pub struct PackedRow(Vec<serde_json::Value>);

impl PackedRow {
    fn col(&self, i: usize) -> Result<&serde_json::Value, DbErr> {
        self.0
            .get(i)
            .ok_or_else(|| DbErr::Custom(format!("packed row without column {i}")))
    }

    pub fn i64(&self, i: usize) -> Result<i64, DbErr> {
        self.opt_i64(i)?
            .ok_or_else(|| DbErr::Custom(format!("packed column {i} is null")))
    }

    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, DbErr> {
        match self.col(i)? {
            serde_json::Value::Null => Ok(None),
            v => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| DbErr::Custom(format!("packed column {i} is not an integer"))),
        }
    }

    pub fn opt_string(&self, i: usize) -> Result<Option<String>, DbErr> {
        match self.col(i)? {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            _ => Err(DbErr::Custom(format!("packed column {i} is not text"))),
        }
    }

    pub fn string(&self, i: usize) -> Result<String, DbErr> {
        self.opt_string(i)?
            .ok_or_else(|| DbErr::Custom(format!("packed column {i} is null")))
    }
}

/// `(?, ?, ?), (?, ?, ?)` for `rows` rows of `cols` columns.
pub fn value_rows(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// `?, ?, ?` for an `IN (...)` list.
pub fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

// Multi-row statements come in few shapes, so each connection's statement cache keeps their
// prepared forms: preparing a 13-row `UPDATE … FROM (VALUES …)` takes SQLite about twice as
// long as running it, and batches of every size from 1 to 500 would each be prepared anew.

/// The row count a statement of `n` rows (where a repeated row changes nothing: an update or
/// lookup by key, an `IN` list) is padded to: the next power of two, at most `max` (itself a
/// power of two, and at least `n`).
pub fn padded_rows(n: usize, max: usize) -> usize {
    n.max(1).next_power_of_two().min(max).max(n)
}

/// The row count an insert of `n` rows that skips a repeated row is padded to: the next power
/// of two up to 64, then the next multiple of 128, at most `max` (and at least `n`). A thousand
/// rows go in one statement of one of fifteen shapes, not in six power-of-two statements:
/// each statement is a round trip to the writer's thread, which under load costs more than
/// the copies of a row that the unique key skips.
pub fn padded_insert_rows(n: usize, max: usize) -> usize {
    let n = n.max(1);
    let shape = if n <= 64 {
        n.next_power_of_two()
    } else {
        n.div_ceil(128) * 128
    };
    shape.min(max).max(n)
}

/// Pad `values`, whose last `cols` values are a row, with `extra` copies of that row.
pub fn repeat_last_row(values: &mut Vec<Value>, cols: usize, extra: usize) {
    if cols == 0 || values.len() < cols {
        return;
    }
    let last = values[values.len() - cols..].to_vec();
    for _ in 0..extra {
        values.extend(last.iter().cloned());
    }
}

/// `items` cut into chunks whose lengths are powers of two, largest first, none above `max`
/// (a power of two): for inserts, where a repeated row is not harmless, a few statements of
/// known shapes instead of one of a new shape.
pub fn pow2_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let fits = rest.len().min(max.max(1));
        let size = 1usize << (usize::BITS - 1 - fits.leading_zeros());
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
    }
    out
}

/// Connection options of a SQLite pool: WAL, the configured `synchronous`, a page cache of
/// `cache_kib`, and room for every shape of the padded multi-row statements.
pub(crate) fn sqlite_options(
    url: &str,
    settings: &DatabaseSettings,
    max: u32,
    cache_kib: i64,
    checkpoint: u32,
    thread: &'static str,
    wal: Option<&'static checkpoint::WalSignal>,
) -> ConnectOptions {
    let sync = match sync_level(settings) {
        "NORMAL" => SqliteSynchronous::Normal,
        "OFF" => SqliteSynchronous::Off,
        _ => SqliteSynchronous::Full,
    };
    let mut opts = ConnectOptions::new(url.to_string());
    opts.max_connections(max)
        .min_connections(1)
        .sqlx_logging(settings.log_statements)
        .map_sqlx_sqlite_opts(move |o: SqliteConnectOptions| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(Duration::from_secs(30))
                .pragma("cache_size", format!("-{cache_kib}"))
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", checkpoint.to_string())
                .statement_cache_capacity(256)
                .thread_name(move |id| format!("{thread}-{id}"))
        });
    if let Some(signal) = wal {
        // Every connection the writer pool opens wakes the checkpointing thread instead of
        // checkpointing after its commits.
        opts.map_sqlx_sqlite_pool_opts(move |o| {
            o.after_connect(move |conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    // SAFETY: the handle is locked: no statement runs on the connection
                    // while the hook is installed.
                    unsafe { checkpoint::install(handle.as_raw_handle().as_ptr(), signal) };
                    Ok(())
                })
            })
        });
    }
    opts
}

/// SQLite's `synchronous` pragma for the configured `database.sqlite_synchronous`, for every
/// connection that commits or checkpoints.
pub(crate) fn sync_level(settings: &DatabaseSettings) -> &'static str {
    match settings.sqlite_synchronous.as_str() {
        "normal" => "NORMAL",
        "off" => "OFF",
        _ => "FULL",
    }
}

/// Wait (at most 20 s) until `done` holds; whether it did.
#[cfg(test)]
pub(crate) async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// The file path of a `sqlite:` URL, or `None` for an in-memory database.
pub(crate) fn sqlite_path(url: &str) -> Option<&str> {
    let path = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:" && !url.contains("mode=memory")).then_some(path)
}

fn prepare_sqlite_dir(url: &str) -> Result<(), DbErr> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// A new, migrated Postgres database on `MSGHUB_TEST_DATABASE_URL`'s server, for the storage
/// modules' tests; `None` when that is not set.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) async fn test_postgres() -> Option<Db> {
    let base = std::env::var("MSGHUB_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = format!("msghub_test_{:016x}", rand::random::<u64>());
    Database::connect(&base)
        .await
        .expect("connect to MSGHUB_TEST_DATABASE_URL")
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    let db = Db::connect(&crate::settings::DatabaseSettings {
        url: format!("{prefix}/{name}"),
        ..crate::settings::DatabaseSettings::default()
    })
    .await
    .expect("test database");
    Some(db)
}

/// A migrated SQLite database in `dir`, for the storage modules' tests.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) async fn test_sqlite(dir: &tempfile::TempDir) -> Db {
    Db::connect(&crate::settings::DatabaseSettings {
        url: format!("sqlite://{}/t.db?mode=rwc", dir.path().display()),
        ..crate::settings::DatabaseSettings::default()
    })
    .await
    .expect("test database")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    async fn raw_db(url: &str) -> Db {
        let conn = Database::connect(url).await.expect("connect");
        Db {
            read: conn.clone(),
            write: conn,
            backend: if url.starts_with("sqlite:") {
                DatabaseBackend::Sqlite
            } else {
                DatabaseBackend::Postgres
            },
            gate: Arc::default(),
            counts: Arc::default(),
            checkpointer: None,
        }
    }

    #[tokio::test]
    async fn the_writers_log_is_copied_back_by_the_checkpointing_thread_not_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let threshold = 64;
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/t.db?mode=rwc", dir.path().display()),
            sqlite_wal_autocheckpoint: threshold,
            ..DatabaseSettings::default()
        };
        let db = Db::connect(&settings).await.unwrap();
        let file = dir.path().join("t.db");
        db.write()
            .execute_unprepared("CREATE TABLE scratch (b BLOB)")
            .await
            .unwrap();
        let copied_before = db.checkpointed_pages().unwrap();
        let size_before = std::fs::metadata(&file).unwrap().len();
        // About three pages per commit (the new leaf, the root, the file's header page):
        // past the threshold, below the four times of it at which the writer would try to
        // checkpoint itself.
        for _ in 0..80 {
            db.write()
                .execute_unprepared("INSERT INTO scratch (b) VALUES (zeroblob(3000))")
                .await
                .unwrap();
        }
        // Without the hook, the writer copies every page back itself as soon as the log
        // holds `threshold`, and nothing wakes the thread.
        assert!(
            eventually(|| db.checkpointed_pages().unwrap() - copied_before >= u64::from(threshold))
                .await,
            "the thread copied {} pages",
            db.checkpointed_pages().unwrap() - copied_before
        );
        assert!(std::fs::metadata(&file).unwrap().len() > size_before + 64 * 3000);
        // The rows read back from the database file and the log alike.
        let n = db
            .read()
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                "SELECT COUNT(*) AS n FROM scratch",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap();
        assert_eq!(n, 80);
    }

    #[tokio::test]
    async fn no_checkpoint_thread_without_the_setting_or_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/t.db?mode=rwc", dir.path().display()),
            sqlite_background_checkpoint: false,
            ..DatabaseSettings::default()
        };
        let db = Db::connect(&settings).await.unwrap();
        assert_eq!(db.checkpointed_pages(), None);
        let memory = Db::connect(&DatabaseSettings {
            url: "sqlite::memory:".into(),
            ..DatabaseSettings::default()
        })
        .await
        .unwrap();
        assert_eq!(memory.checkpointed_pages(), None, "no file, no thread");
    }

    /// Packed rows come back as they were: integers of any size, text with quotes, escapes
    /// and non-ASCII, nulls; no rows is an empty list on both engines.
    async fn packed_rows_round_trip(db: &Db) {
        let inner = "SELECT v.column1 AS n, v.column2 AS t, v.column3 AS o FROM (VALUES \
                     (?, ?, ?), (?, ?, ?)) AS v";
        let cast = |sql: &str| {
            if db.backend == DatabaseBackend::Postgres {
                // Untyped parameters of a VALUES list need their types on Postgres.
                sql.replacen("(?, ?, ?)", "(?::bigint, ?::text, ?::text)", 1)
            } else {
                sql.to_string()
            }
        };
        let text = "a \"quoted\" \\ back\nslash, 中文 ✓";
        let values: Vec<Value> = vec![
            i64::MAX.into(),
            text.into(),
            Value::from(None::<String>),
            (-7i64).into(),
            "".into(),
            "x".into(),
        ];
        let rows = db
            .query_packed(db.read(), &["n", "t", "o"], &cast(inner), values.clone())
            .await
            .expect("packed");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].i64(0).unwrap(), i64::MAX);
        assert_eq!(rows[0].string(1).unwrap(), text);
        assert_eq!(rows[0].opt_string(2).unwrap(), None);
        assert!(rows[0].string(2).is_err(), "a null is not text");
        assert_eq!(rows[1].i64(0).unwrap(), -7);
        assert_eq!(rows[1].string(1).unwrap(), "");
        assert_eq!(rows[1].opt_string(2).unwrap().as_deref(), Some("x"));
        assert!(rows[1].i64(1).is_err(), "text is not an integer");
        assert!(rows[1].i64(3).is_err(), "no such column");
        let none = db
            .query_packed(
                db.read(),
                &["n", "t", "o"],
                &format!("{} WHERE v.column1 < 0 AND v.column1 > 0", cast(inner)),
                values,
            )
            .await
            .expect("packed");
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn packed_rows_round_trip_on_sqlite() {
        packed_rows_round_trip(&raw_db("sqlite::memory:").await).await;
    }

    #[tokio::test]
    async fn packed_rows_round_trip_on_postgres() {
        let Ok(url) = std::env::var("MSGHUB_TEST_DATABASE_URL") else {
            return;
        };
        packed_rows_round_trip(&raw_db(&url).await).await;
    }

    #[test]
    fn statements_are_padded_and_cut_to_powers_of_two() {
        assert_eq!(padded_rows(1, 512), 1);
        assert_eq!(padded_rows(13, 512), 16);
        assert_eq!(padded_rows(300, 512), 512);
        assert_eq!(padded_rows(512, 512), 512);
        assert_eq!(padded_rows(0, 512), 1);
        assert_eq!(padded_insert_rows(0, 1024), 1);
        assert_eq!(padded_insert_rows(3, 1024), 4);
        assert_eq!(padded_insert_rows(64, 1024), 64);
        assert_eq!(padded_insert_rows(65, 1024), 128);
        assert_eq!(padded_insert_rows(1000, 1024), 1024);
        assert_eq!(padded_insert_rows(129, 1024), 256);
        assert_eq!(padded_insert_rows(700, 640), 700);
        // Fifteen shapes for every count from 1 to 1024.
        let shapes: std::collections::BTreeSet<usize> =
            (1..=1024).map(|n| padded_insert_rows(n, 1024)).collect();
        assert_eq!(shapes.len(), 15);
        let mut values: Vec<Value> = vec![0i64.into(), 1i64.into(), 2i64.into(), 3i64.into()];
        repeat_last_row(&mut values, 2, 2);
        let ints: Vec<Option<i64>> = values
            .iter()
            .map(|v| match v {
                Value::BigInt(i) => *i,
                _ => None,
            })
            .collect();
        let expected: Vec<Option<i64>> = [0, 1, 2, 3, 2, 3, 2, 3].into_iter().map(Some).collect();
        assert_eq!(ints, expected);
        let items: Vec<u32> = (0..50).collect();
        let chunks = pow2_chunks(&items, 16);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![16, 16, 16, 2]);
        assert_eq!(chunks.concat(), items);
        let sizes: Vec<usize> = pow2_chunks(&items, 1024).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![32, 16, 2]);
        assert!(pow2_chunks::<u32>(&[], 8).is_empty());
    }

    #[test]
    fn value_rows_and_in_lists_have_the_right_shape() {
        assert_eq!(value_rows(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(in_list(3), "?, ?, ?");
    }
}
