//! The intake journal (SQLite): where an accepted send is made durable before it is answered.
//!
//! On SQLite every write of the main database shares one connection, so an accept that wrote
//! there waited for whatever dispatch transaction held it (shard opens, outcomes, receipts of a
//! running blast). The journal is a second SQLite file (`<db>-intake.db`) with a writer of its
//! own: an accept batch checks its idempotency keys, appends its messages there, commits and is
//! answered, whatever the main writer is doing. A mover (`crate::accept`) then copies the
//! journaled messages into the main database in batches, exactly as an accept used to store
//! them (opening one-user sends in the same transaction), and deletes them from the journal.
//!
//! Nothing acknowledged is lost: a message is in the journal from its answer until the main
//! database holds it. A crash between the mover's commit and its delete leaves rows that are
//! already moved; they are marked *suspect* at start (and after any failed move) and checked
//! by id before they are moved, so none is stored twice. Reads that must see every answered
//! message (status, deliveries, retract, schedule edits) first [`Intake::settle`].
//!
//! Postgres has concurrent writers and no journal: accepts write the main database directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use msghub_actors::plan::MessagePlan;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sea_orm::{DbErr, Value};
use tokio::sync::{Notify, watch};

use super::messages::{Accepted, NewMessage};
use super::{Db, in_list, now_ms, sqlite_path};
use crate::settings::DatabaseSettings;

/// The columns of a journaled message, in `intake` and in `intake_failed`.
const MESSAGE_COLUMNS_DDL: &str = "id INTEGER PRIMARY KEY NOT NULL, source_id INTEGER NOT NULL, \
     kind TEXT NOT NULL, priority INTEGER NOT NULL, plan TEXT NOT NULL, sendno TEXT, \
     idempotency_key TEXT, response TEXT NOT NULL, not_before INTEGER, accepted_at INTEGER NOT NULL";

fn schema() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS intake ({MESSAGE_COLUMNS_DDL});
         CREATE UNIQUE INDEX IF NOT EXISTS intake_key ON intake (source_id, idempotency_key)
             WHERE idempotency_key IS NOT NULL;
         CREATE TABLE IF NOT EXISTS intake_failed ({MESSAGE_COLUMNS_DDL},
             error TEXT NOT NULL, failed_at INTEGER NOT NULL);"
    )
}

/// The journal's one connection. It is driven directly (rusqlite), not through sqlx's worker
/// thread: an append runs its statements and its commit on the accept thread itself, so an
/// accept is two thread hand-offs (request worker → accept thread → request worker) rather than
/// four. The others (the mover's reads and deletes, settling reads) run on the blocking pool.
type Journal = Arc<tokio::sync::Mutex<Connection>>;

pub struct Intake {
    conn: Journal,
    /// Accept batches committed to the journal so far.
    written: AtomicU64,
    /// The largest message id committed to the journal (or found there at start).
    answered: AtomicI64,
    /// Every batch up to this count is known to be in the main database; changed (notifying
    /// readers waiting to settle) after each pass of the mover.
    moved: watch::Sender<u64>,
    /// Rung after each commit, for the mover.
    wake: Notify,
    /// Rows may already be in the main database (left by a crash between the mover's commit
    /// and its delete, or by a move whose outcome is unknown): check before moving.
    suspect: AtomicBool,
    /// Rows in the journal (appended and not yet moved or set aside).
    backlog: AtomicI64,
    /// Appends wait while the journal holds this many rows (`accept.max_backlog`).
    max_backlog: AtomicI64,
    /// The `synchronous` setting of the journal's commits (`FULL` by default).
    sync: &'static str,
    /// The thread that checkpoints the journal's WAL, off the accept thread.
    _checkpointer: Option<Arc<super::checkpoint::Checkpointer>>,
}

/// Log pages after which the journal is checkpointed (SQLite's default `wal_autocheckpoint`).
const JOURNAL_CHECKPOINT_PAGES: u32 = 1000;

/// How long an accept batch waits for the mover to make room in a full journal before it is
/// refused (the mover is failing, or delivery is far behind for that long).
const ROOM_LIMIT: Duration = Duration::from_secs(30);

/// The journal's file beside the main database: `msghub.db` → `msghub-intake.db`.
pub fn journal_url(url: &str) -> Option<String> {
    let path = sqlite_path(url)?;
    let journal = match path.strip_suffix(".db") {
        Some(stem) => format!("{stem}-intake.db"),
        None => format!("{path}-intake"),
    };
    Some(format!("sqlite://{journal}?mode=rwc"))
}

fn journal_error(e: rusqlite::Error) -> DbErr {
    DbErr::Custom(format!("intake journal: {e}"))
}

/// Open the journal file: WAL, `synchronous` as configured for the main database, the schema.
fn connect(path: &str, settings: &DatabaseSettings) -> Result<Connection, DbErr> {
    let conn = open_journal(path, settings).map_err(journal_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(journal_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbErr::Custom(format!(
            "intake journal {path}: the file system refused WAL mode (journal_mode {mode})"
        )));
    }
    conn.execute_batch(&schema()).map_err(journal_error)?;
    Ok(conn)
}

fn open_journal(path: &str, settings: &DatabaseSettings) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "synchronous", super::sync_level(settings))?;
    conn.pragma_update(None, "cache_size", -2048)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Run `f` (a transaction whose loss in a power cut is harmless) committing without a sync of
/// its own: in WAL mode, `NORMAL` writes the commit to the log and leaves it to the next
/// synced commit (the next accept's) or checkpoint to reach the disk. The connection's
/// setting is put back whatever `f` returned.
fn unsynced<R>(
    conn: &mut Connection,
    sync: &str,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    if sync != "FULL" {
        return f(conn);
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let out = f(conn);
    let restored = conn.pragma_update(None, "synchronous", sync);
    let out = out?;
    restored?;
    Ok(out)
}

/// Roll back a transaction left open by an operation that failed part-way (an append whose
/// idempotency lookup in the main database failed) or was cancelled (its task dropped at an
/// await while holding the connection), so the next one starts clean: every use of the
/// connection calls this first, so no one ever reads rows that were not committed.
fn clean(conn: &Connection) -> rusqlite::Result<()> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    Ok(())
}

fn count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COUNT(*) FROM intake", [], |r| r.get(0))
}

fn max_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM intake", [], |r| r.get(0))
}

fn journaled_response(
    conn: &Connection,
    source_id: i64,
    key: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT response FROM intake WHERE source_id = ?1 AND idempotency_key = ?2",
    )?
    .query_row(params![source_id, key], |r| r.get(0))
    .optional()
}

fn insert(conn: &Connection, m: &NewMessage, plan: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO intake (id, source_id, kind, priority, plan, sendno, idempotency_key, \
         response, not_before, accepted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        m.plan.msgid,
        m.plan.source_id,
        m.kind,
        m.priority,
        plan,
        m.sendno,
        m.idempotency_key,
        m.response,
        m.not_before,
        now,
    ])?;
    Ok(())
}

/// A journaled row as read, its plan not parsed yet.
struct JournaledRow {
    id: i64,
    kind: String,
    priority: i16,
    plan: String,
    sendno: Option<String>,
    idempotency_key: Option<String>,
    response: String,
    not_before: Option<i64>,
}

/// The oldest `limit` journaled rows.
fn journaled_rows(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<JournaledRow>> {
    let mut select = conn.prepare_cached(
        "SELECT id, kind, priority, plan, sendno, idempotency_key, response, not_before \
         FROM intake ORDER BY id LIMIT ?1",
    )?;
    let rows = select.query_map([limit], |r| {
        Ok(JournaledRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            priority: r.get(2)?,
            plan: r.get(3)?,
            sendno: r.get(4)?,
            idempotency_key: r.get(5)?,
            response: r.get(6)?,
            not_before: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Parse journaled rows into messages; a row whose plan this build cannot read is named with
/// the reason.
fn parse_rows(rows: Vec<JournaledRow>, written: u64) -> Pending {
    let mut out = Pending {
        written,
        rows: rows.len(),
        messages: Vec::with_capacity(rows.len()),
        unreadable: Vec::new(),
    };
    for r in rows {
        let plan: MessagePlan = match serde_json::from_str(&r.plan) {
            Ok(plan) => plan,
            Err(e) => {
                out.unreadable.push((r.id, format!("plan: {e}")));
                continue;
            }
        };
        out.messages.push(NewMessage {
            plan,
            kind: if r.kind == "broadcast" {
                "broadcast"
            } else {
                "sent"
            },
            priority: r.priority,
            sendno: r.sendno,
            idempotency_key: r.idempotency_key,
            response: r.response,
            not_before: r.not_before,
        });
    }
    out
}

impl Intake {
    /// Open the journal of a SQLite database, creating it with `create`; without, only an
    /// existing one (accepts that go to the main database directly still drain what an
    /// earlier run journaled). `None` for Postgres and in-memory databases.
    pub async fn open(settings: &DatabaseSettings, create: bool) -> Result<Option<Intake>, DbErr> {
        let Some(url) = journal_url(&settings.url) else {
            return Ok(None);
        };
        let Some(path) = sqlite_path(&url) else {
            return Ok(None);
        };
        if !create && !std::path::Path::new(path).exists() {
            return Ok(None);
        }
        // One connection: accept batches and the mover's reads and deletes take turns.
        let conn = connect(path, settings)?;
        // The accept thread's commits wake a thread that checkpoints the journal (see
        // `storage::checkpoint`), at SQLite's default log size: the journal's rows are small
        // and deleted soon, so a short log is copied back quickly.
        let checkpointer = super::checkpoint::Checkpointer::for_file(
            settings,
            path,
            JOURNAL_CHECKPOINT_PAGES,
            "intake-ckpt",
        )?;
        if let Some(c) = &checkpointer {
            // SAFETY: the connection is open and used by nothing else yet.
            unsafe { super::checkpoint::install(conn.handle(), c.signal()) };
        }
        let left = count(&conn).map_err(journal_error)?;
        let last = max_id(&conn).map_err(journal_error)?;
        let intake = Intake {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
            written: AtomicU64::new(0),
            answered: AtomicI64::new(0),
            moved: watch::Sender::new(0),
            wake: Notify::new(),
            suspect: AtomicBool::new(false),
            backlog: AtomicI64::new(0),
            max_backlog: AtomicI64::new(i64::MAX),
            sync: super::sync_level(settings),
            _checkpointer: checkpointer,
        };
        intake.add_backlog(left);
        if left > 0 {
            // Rows from before this start: suspect, and counted as written and answered, so
            // reads settle until the mover has moved them.
            intake.suspect.store(true, Ordering::Release);
            intake.written.store(1, Ordering::Release);
            intake.answered.store(last, Ordering::Release);
        }
        Ok(Some(intake))
    }

    /// Run `f` with the journal's connection on the blocking pool (callers on a runtime that
    /// must not wait for the disk).
    async fn with_conn<R, F>(&self, f: F) -> Result<R, DbErr>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.blocking_lock();
            clean(&conn)?;
            f(&mut conn)
        })
        .await
        .map_err(|e| DbErr::Custom(format!("intake journal: {e}")))?
        .map_err(journal_error)
    }

    /// Bound the journal: appends wait (and their senders with them) while it holds `max`
    /// rows, until the mover has moved some. Acceptance can run ahead of delivery for a
    /// while, not without end.
    pub fn limit_backlog(&self, max: usize) {
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        self.max_backlog.store(max, Ordering::Release);
    }

    /// Whether the journal holds `accept.max_backlog` messages (appends wait for room).
    pub fn is_full(&self) -> bool {
        self.backlog.load(Ordering::Acquire) >= self.max_backlog.load(Ordering::Acquire)
    }

    fn add_backlog(&self, n: i64) {
        let now = self.backlog.fetch_add(n, Ordering::AcqRel) + n;
        metrics::gauge!("msghub_intake_backlog").set(now as f64);
    }

    /// Wait until the journal has room (see [`Intake::limit_backlog`]).
    async fn room(&self) -> Result<(), DbErr> {
        let max = self.max_backlog.load(Ordering::Acquire);
        if self.backlog.load(Ordering::Acquire) < max {
            return Ok(());
        }
        metrics::counter!("msghub_intake_full_total").increment(1);
        let mut moved = self.moved.subscribe();
        let wait = async {
            while self.backlog.load(Ordering::Acquire) >= max {
                if moved.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(ROOM_LIMIT, wait).await {
            Ok(true) => Ok(()),
            _ => Err(DbErr::Custom(format!(
                "the intake journal is full ({max} messages not yet moved); retry later"
            ))),
        }
    }

    /// The largest message id in the journal (0 when empty): new ids start above it.
    pub async fn max_id(&self) -> Result<i64, DbErr> {
        self.with_conn(|conn| max_id(conn)).await
    }

    /// Store a batch of messages in the journal, in one transaction. A repeated idempotency
    /// key (in the batch, the journal or the main database) replays the first answer and stores
    /// nothing. The others are answered `Stored` once the commit returns.
    ///
    /// The statements and the commit run on the caller's thread (the accept thread): no hand-off
    /// to a connection thread and back while the senders wait.
    pub async fn append(&self, db: &Db, items: Vec<NewMessage>) -> Result<Vec<Accepted>, DbErr> {
        self.room().await?;
        let plans = items
            .iter()
            .map(|m| serde_json::to_string(&m.plan))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        let conn = self.conn.lock().await;
        clean(&conn).map_err(journal_error)?;
        // Accepts commit at the configured level even if a delete of the mover's (unsynced)
        // could not put the setting back: a statement without I/O, once per batch.
        conn.pragma_update(None, "synchronous", self.sync)
            .map_err(journal_error)?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(journal_error)?;
        let mut out: Vec<Option<Accepted>> = vec![None; items.len()];
        let mut first_of_key: HashMap<(i64, &str), usize> = HashMap::new();
        let mut fresh: Vec<usize> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(key) = &item.idempotency_key {
                let k = (item.plan.source_id, key.as_str());
                if let Some(&first) = first_of_key.get(&k) {
                    out[i] = Some(Accepted::Replayed {
                        response: items[first].response.clone(),
                    });
                    continue;
                }
                // The journal first, then the main database: the mover deletes a row from the
                // journal only after the main database committed it, and this append holds the
                // journal's one connection, so a key is always found in one of them.
                let journaled = journaled_response(&conn, item.plan.source_id, key);
                let found = match journaled.map_err(journal_error)? {
                    Some(response) => Some(response),
                    None => db
                        .query_one(
                            "SELECT response FROM messages WHERE source_id = ? AND idempotency_key = ?",
                            vec![item.plan.source_id.into(), key.clone().into()],
                        )
                        .await?
                        .map(|row| row.try_get::<String>("", "response"))
                        .transpose()?,
                };
                if let Some(response) = found {
                    out[i] = Some(Accepted::Replayed { response });
                    continue;
                }
                first_of_key.insert(k, i);
            }
            fresh.push(i);
        }
        let now = now_ms();
        let written = fresh
            .iter()
            .try_for_each(|&i| insert(&conn, &items[i], &plans[i], now))
            .and_then(|()| conn.execute_batch("COMMIT"));
        if let Err(e) = written {
            // A failed insert leaves the transaction open; a failed commit may not.
            let _ = clean(&conn);
            return Err(journal_error(e));
        }
        drop(conn);
        if let Some(max) = fresh.iter().map(|&i| items[i].plan.msgid).max() {
            self.answered.fetch_max(max, Ordering::AcqRel);
        }
        if !fresh.is_empty() {
            self.add_backlog(fresh.len() as i64);
            self.written.fetch_add(1, Ordering::AcqRel);
            self.wake.notify_one();
        }
        for i in fresh {
            out[i] = Some(Accepted::Journaled);
        }
        out.into_iter()
            .map(|a| a.ok_or_else(|| DbErr::Custom("intake: item without outcome".into())))
            .collect()
    }

    /// The oldest journaled messages, at most `limit`, with the count of committed batches
    /// they include (every batch up to it is among them when fewer than `limit` came back),
    /// and the ids of rows whose plan this build cannot read, with the reason.
    pub async fn pending(&self, limit: usize) -> Result<Pending, DbErr> {
        // Read before the select: every batch counted had committed, so the select sees it.
        let written = self.written.load(Ordering::Acquire);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // The rows are read under the lock; their plans are parsed after it is released,
            // so accepts do not wait for the parsing.
            let rows = {
                let conn = conn.blocking_lock();
                clean(&conn)?;
                journaled_rows(&conn, limit)?
            };
            Ok(parse_rows(rows, written))
        })
        .await
        .map_err(|e| DbErr::Custom(format!("intake journal: {e}")))?
        .map_err(journal_error)
    }

    /// Move rows the mover cannot store to `intake_failed`, with the reason.
    pub async fn quarantine(&self, failed: &[(i64, String)]) -> Result<(), DbErr> {
        let n = failed.len() as i64;
        let failed = failed.to_vec();
        self.with_conn(move |conn| {
            let txn = conn.transaction()?;
            let now = now_ms();
            for (id, error) in &failed {
                txn.prepare_cached(
                    "INSERT OR REPLACE INTO intake_failed (id, source_id, kind, priority, plan, \
                     sendno, idempotency_key, response, not_before, accepted_at, error, failed_at) \
                     SELECT id, source_id, kind, priority, plan, sendno, idempotency_key, \
                     response, not_before, accepted_at, ?1, ?2 FROM intake WHERE id = ?3",
                )?
                .execute(params![error, now, id])?;
                txn.prepare_cached("DELETE FROM intake WHERE id = ?1")?
                    .execute([id])?;
            }
            txn.commit()
        })
        .await?;
        self.add_backlog(-n);
        Ok(())
    }

    /// Of `ids`, those the main database already holds, when the journal is suspect; else none.
    pub async fn already_moved(&self, db: &Db, ids: &[i64]) -> Result<Vec<i64>, DbErr> {
        if !self.suspect.load(Ordering::Acquire) || ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id FROM messages WHERE id IN ({})",
                in_list(chunk.len())
            );
            let values = chunk.iter().map(|id| Value::from(*id)).collect();
            for r in db.query_all(&sql, values).await? {
                found.push(r.try_get::<i64>("", "id")?);
            }
        }
        Ok(found)
    }

    /// Mark the journal suspect: a move failed after it may have committed.
    pub fn suspect(&self) {
        self.suspect.store(true, Ordering::Release);
    }

    /// Delete moved messages from the journal. A delete lost in a crash leaves rows that the
    /// next start finds suspect and checks by id, so the delete's commit is not synced: the
    /// accepts, which share the connection, do not wait for a second sync per pass of the
    /// mover (the main database's commit of these rows was synced before).
    pub async fn remove(&self, ids: &[i64]) -> Result<(), DbErr> {
        let n = ids.len() as i64;
        let ids = ids.to_vec();
        let sync = self.sync;
        self.with_conn(move |conn| {
            unsynced(conn, sync, |conn| {
                let txn = conn.transaction()?;
                {
                    let mut delete = txn.prepare_cached("DELETE FROM intake WHERE id = ?1")?;
                    for id in &ids {
                        delete.execute([id])?;
                    }
                }
                txn.commit()
            })
        })
        .await?;
        self.add_backlog(-n);
        Ok(())
    }
    /// Record a pass of the mover: the moved rows are out of the journal, and when it found
    /// the journal drained, every batch up to `written` is in the main database (and the
    /// suspicion is cleared).
    pub fn moved(&self, written: u64, drained: bool) {
        if drained {
            self.suspect.store(false, Ordering::Release);
        }
        // Notifies every waiter, drained or not: each pass may have moved what it waits for.
        self.moved.send_modify(|m| {
            if drained {
                *m = (*m).max(written);
            }
        });
    }

    /// Wait until the mover has rung or `timeout` passed.
    pub async fn woken(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    /// Wait until message `msgid`, if it was answered, is in the main database: true once it
    /// is (or was never journaled); false when the wait gave up after [`SETTLE_LIMIT`] or the
    /// journal could not be read (the mover is failing).
    pub async fn settle_message(&self, msgid: i64) -> bool {
        self.wait_until_gone("SELECT 1 FROM intake WHERE id = ?1", msgid)
            .await
    }

    /// Wait until every message answered before this call is in the main database, for reads
    /// that list messages: until the journal holds no id up to the largest answered so far.
    /// The mover takes rows in id order, so under a sustained stream of sends this is a pass
    /// or two, not a drained journal. False as for [`Intake::settle_message`].
    pub async fn settle_all(&self) -> bool {
        let target = self.answered.load(Ordering::Acquire);
        self.wait_until_gone("SELECT 1 FROM intake WHERE id <= ?1 LIMIT 1", target)
            .await
    }

    /// Wait until `probe` (a query of the journal with one id parameter) finds no row, looking
    /// again after each pass of the mover; at most [`SETTLE_LIMIT`].
    async fn wait_until_gone(&self, probe: &'static str, id: i64) -> bool {
        let mut moved = self.moved.subscribe();
        if *moved.borrow() >= self.written.load(Ordering::Acquire) {
            // Drained since the last batch was written: nothing to wait for.
            return true;
        }
        let wait = async {
            loop {
                let found = self
                    .with_conn(move |conn| conn.prepare_cached(probe)?.exists([id]))
                    .await;
                match found {
                    Ok(true) => {}
                    Ok(false) => return true,
                    Err(e) => {
                        tracing::warn!(id, error = %e, "reading the intake journal failed");
                        return false;
                    }
                }
                if moved.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(SETTLE_LIMIT, wait)
            .await
            .unwrap_or(false)
    }
}

/// One pass's read of the journal (see [`Intake::pending`]).
pub struct Pending {
    pub written: u64,
    /// Rows read, readable or not.
    pub rows: usize,
    pub messages: Vec<NewMessage>,
    pub unreadable: Vec<(i64, String)>,
}

/// The longest a read waits for the mover.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A one-user real-time send to `u`, without channels.
    pub(crate) fn message(msgid: i64) -> NewMessage {
        use msghub_actors::plan::{Audience, Lane, MessagePlan, Strategy};
        NewMessage {
            plan: MessagePlan {
                msgid,
                source_id: 1,
                lane: Lane::Realtime,
                audience: Audience::Userids(vec!["u".into()]),
                channels: Vec::new(),
                ttl_seconds: None,
                send_at_ms: None,
                spread_seconds: None,
                strategy: Strategy::Concurrent,
                callback: None,
                priority: None,
                filters: None,
            },
            kind: "sent",
            priority: 2,
            sendno: None,
            idempotency_key: None,
            response: "{}".into(),
            not_before: None,
        }
    }

    /// The ids of the journaled messages, oldest first.
    async fn pending_ids(intake: &Intake) -> Vec<i64> {
        let pending = intake.pending(10).await.unwrap();
        pending.messages.iter().map(|m| m.plan.msgid).collect()
    }

    async fn database(dir: &tempfile::TempDir) -> (DatabaseSettings, Db) {
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/t.db?mode=rwc", dir.path().display()),
            ..DatabaseSettings::default()
        };
        let db = Db::connect(&settings).await.unwrap();
        (settings, db)
    }

    #[tokio::test]
    async fn a_send_refused_by_a_full_journal_is_told_to_slow_down() {
        use crate::error::jums;
        use crate::http::send::storing_failed;
        use actix_web::ResponseError;
        let dir = tempfile::tempdir().unwrap();
        let (settings, db) = database(&dir).await;
        let intake = Intake::open(&settings, true).await.unwrap().unwrap();
        let cause = "the intake journal is full";
        assert_eq!(
            storing_failed(Some(&intake), &cause).code,
            jums::SERVER_ERROR
        );
        intake.limit_backlog(1);
        intake.append(&db, vec![message(1)]).await.unwrap();
        let refused = storing_failed(Some(&intake), &cause);
        assert_eq!(refused.code, jums::RATE_LIMITED);
        assert_eq!(refused.status_code().as_u16(), 429);
        assert_eq!(storing_failed(None, &cause).code, jums::SERVER_ERROR);
    }

    /// The journal connection's `synchronous` pragma (2 = FULL, 1 = NORMAL).
    async fn synchronous(intake: &Intake) -> i64 {
        intake
            .with_conn(|conn| conn.query_row("PRAGMA synchronous", [], |r| r.get(0)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_movers_deletes_commit_unsynced_and_accepts_stay_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, db) = database(&dir).await;
        let intake = Intake::open(&settings, true).await.unwrap().unwrap();
        assert_eq!(synchronous(&intake).await, 2);
        intake
            .append(&db, vec![message(1), message(2)])
            .await
            .unwrap();
        intake.remove(&[1]).await.unwrap();
        assert_eq!(pending_ids(&intake).await, vec![2]);
        // The next accept commits synced again.
        assert_eq!(synchronous(&intake).await, 2);
        // Inside, the delete runs unsynced; a failing one puts the setting back too.
        let seen = intake
            .with_conn(|conn| {
                let mut inside = 0;
                let failed = unsynced(conn, "FULL", |conn| {
                    inside = conn.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))?;
                    conn.execute("DELETE FROM no_such_table", [])
                });
                Ok((inside, failed.is_err()))
            })
            .await
            .unwrap();
        assert_eq!(seen, (1, true));
        assert_eq!(synchronous(&intake).await, 2);
        // A setting left behind (a put-back that failed) is undone by the next accept.
        intake
            .with_conn(|conn| conn.pragma_update(None, "synchronous", "NORMAL"))
            .await
            .unwrap();
        assert_eq!(synchronous(&intake).await, 1);
        intake.append(&db, vec![message(3)]).await.unwrap();
        assert_eq!(synchronous(&intake).await, 2);
        // A journal configured unsynced is left as it is.
        let relaxed = DatabaseSettings {
            url: format!("sqlite://{}/n.db?mode=rwc", dir.path().display()),
            sqlite_synchronous: "normal".into(),
            ..DatabaseSettings::default()
        };
        let other = Intake::open(&relaxed, true).await.unwrap().unwrap();
        other.remove(&[7]).await.unwrap();
        assert_eq!(synchronous(&other).await, 1);
    }

    #[tokio::test]
    async fn a_full_journal_makes_accepts_wait_for_the_mover() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, db) = database(&dir).await;
        let intake = std::sync::Arc::new(Intake::open(&settings, true).await.unwrap().unwrap());
        intake.limit_backlog(2);
        intake
            .append(&db, vec![message(1), message(2)])
            .await
            .unwrap();
        let (i, d) = (intake.clone(), db.clone());
        let third = tokio::spawn(async move { i.append(&d, vec![message(3)]).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!third.is_finished(), "an append went past a full journal");
        // The mover moves one: room again.
        intake.remove(&[1]).await.unwrap();
        let pending = intake.pending(10).await.unwrap();
        intake.moved(pending.written, false);
        third.await.unwrap().unwrap();
        assert_eq!(pending_ids(&intake).await, vec![2, 3]);
        // A journal found with rows at start counts them.
        let again = Intake::open(&settings, false).await.unwrap().unwrap();
        assert_eq!(again.backlog.load(Ordering::Acquire), 2);
    }

    #[tokio::test]
    async fn the_journals_log_is_copied_back_by_its_own_thread_not_by_the_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, db) = database(&dir).await;
        let intake = Intake::open(&settings, true).await.unwrap().unwrap();
        let copied = || {
            intake
                ._checkpointer
                .as_ref()
                .map(|c| c.pages_copied())
                .unwrap()
        };
        // A page or more per message: past the journal's threshold, below four times it.
        let big = "x".repeat(4000);
        let mut id = 0;
        for _ in 0..15 {
            let batch = (0..100)
                .map(|_| {
                    id += 1;
                    NewMessage {
                        response: big.clone(),
                        ..message(id)
                    }
                })
                .collect();
            intake.append(&db, batch).await.unwrap();
        }
        // Without the hook the accept batches copy the log back themselves whenever it holds
        // the threshold, and nothing wakes the thread.
        assert!(
            crate::storage::eventually(|| copied() >= u64::from(JOURNAL_CHECKPOINT_PAGES)).await,
            "the thread copied {} pages",
            copied()
        );
        assert_eq!(intake.pending(2000).await.unwrap().rows, 1500);
    }

    /// Rows left by an earlier run: reads wait for the mover instead of finding nothing.
    #[tokio::test]
    async fn rows_left_from_before_a_start_are_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, db) = database(&dir).await;
        let message = message(42);
        let first = Intake::open(&settings, true).await.unwrap().unwrap();
        first.append(&db, vec![message]).await.unwrap();
        drop(first);
        let again = Intake::open(&settings, false).await.unwrap().unwrap();
        assert_eq!(again.max_id().await.unwrap(), 42);
        let wait = Duration::from_millis(200);
        assert!(
            tokio::time::timeout(wait, again.settle_message(42))
                .await
                .is_err(),
            "a journaled message was reported settled before it was moved"
        );
        assert!(
            tokio::time::timeout(wait, again.settle_all())
                .await
                .is_err()
        );
        // Once moved (the mover removes it and records its pass), both return at once.
        again.remove(&[42]).await.unwrap();
        let pending = again.pending(10).await.unwrap();
        again.moved(pending.written, true);
        assert!(again.settle_message(42).await);
        assert!(
            tokio::time::timeout(wait, again.settle_all())
                .await
                .unwrap()
        );
    }

    /// An operation cancelled inside its transaction (its task dropped while it held the
    /// connection) leaves nothing half-done: the next one rolls it back first.
    #[tokio::test]
    async fn a_transaction_left_open_is_rolled_back_before_the_next_use() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, db) = database(&dir).await;
        let intake = Intake::open(&settings, true).await.unwrap().unwrap();
        {
            let conn = intake.conn.lock().await;
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            insert(&conn, &message(7), "{}", 0).unwrap();
            // Dropped here without a commit, as a cancelled append would be.
        }
        assert_eq!(intake.pending(10).await.unwrap().rows, 0);
        assert_eq!(intake.max_id().await.unwrap(), 0);
        {
            let conn = intake.conn.lock().await;
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            insert(&conn, &message(8), "{}", 0).unwrap();
        }
        intake.append(&db, vec![message(9)]).await.unwrap();
        let again = Intake::open(&settings, false).await.unwrap().unwrap();
        assert_eq!(
            pending_ids(&again).await,
            vec![9],
            "only the committed append is in the journal"
        );
    }

    #[test]
    fn the_journal_lives_beside_the_database() {
        assert_eq!(
            journal_url("sqlite://msghub-data/msghub.db?mode=rwc").as_deref(),
            Some("sqlite://msghub-data/msghub-intake.db?mode=rwc")
        );
        assert_eq!(
            journal_url("sqlite:///tmp/x/hub?mode=rwc").as_deref(),
            Some("sqlite:///tmp/x/hub-intake?mode=rwc")
        );
        assert_eq!(journal_url("sqlite::memory:"), None);
        assert_eq!(journal_url("postgres://postgres@127.0.0.1/db"), None);
    }
}
