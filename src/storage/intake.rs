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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use msghub_actors::plan::MessagePlan;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, TransactionTrait, Value};
use tokio::sync::{Notify, watch};

use super::messages::{Accepted, NewMessage};
use super::{
    Db, in_list, now_ms, padded_rows, pow2_chunks, repeat_last_row, sqlite_options, sqlite_path,
    value_rows,
};
use crate::settings::DatabaseSettings;

/// The columns of a journaled message, in `intake` and in `intake_failed`.
const MESSAGE_COLUMNS_DDL: &str = "id INTEGER PRIMARY KEY NOT NULL, source_id INTEGER NOT NULL, \
     kind TEXT NOT NULL, priority INTEGER NOT NULL, plan TEXT NOT NULL, sendno TEXT, \
     idempotency_key TEXT, response TEXT NOT NULL, not_before INTEGER, accepted_at INTEGER NOT NULL";

fn schema() -> [String; 3] {
    [
        format!("CREATE TABLE IF NOT EXISTS intake ({MESSAGE_COLUMNS_DDL})"),
        "CREATE UNIQUE INDEX IF NOT EXISTS intake_key ON intake (source_id, idempotency_key) \
         WHERE idempotency_key IS NOT NULL"
            .to_string(),
        // Rows the mover could not store (a plan this build cannot read, a row the main
        // database refuses while others go in): kept with the reason, never dropped.
        format!(
            "CREATE TABLE IF NOT EXISTS intake_failed ({MESSAGE_COLUMNS_DDL}, \
             error TEXT NOT NULL, failed_at INTEGER NOT NULL)"
        ),
    ]
}

const COLUMNS: usize = 10;

pub struct Intake {
    conn: DatabaseConnection,
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
}

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

impl Intake {
    /// Open the journal of a SQLite database, creating it with `create`; without, only an
    /// existing one (accepts that go to the main database directly still drain what an
    /// earlier run journaled). `None` for Postgres and in-memory databases.
    pub async fn open(settings: &DatabaseSettings, create: bool) -> Result<Option<Intake>, DbErr> {
        let Some(url) = journal_url(&settings.url) else {
            return Ok(None);
        };
        let exists = sqlite_path(&url).is_some_and(|p| std::path::Path::new(p).exists());
        if !create && !exists {
            return Ok(None);
        }
        // One connection: accept batches and the mover's reads and deletes take turns.
        let conn = Database::connect(sqlite_options(
            &url,
            settings,
            1,
            2 * 1024,
            1000,
            "sqlite-intake",
        ))
        .await?;
        for sql in schema() {
            conn.execute_unprepared(&sql).await?;
        }
        let intake = Intake {
            conn,
            written: AtomicU64::new(0),
            answered: AtomicI64::new(0),
            moved: watch::Sender::new(0),
            wake: Notify::new(),
            suspect: AtomicBool::new(false),
            backlog: AtomicI64::new(0),
            max_backlog: AtomicI64::new(i64::MAX),
        };
        let left = intake.count().await?;
        intake.add_backlog(left);
        if left > 0 {
            // Rows from before this start: suspect, and counted as written and answered, so
            // reads settle until the mover has moved them.
            intake.suspect.store(true, Ordering::Release);
            intake.written.store(1, Ordering::Release);
            intake
                .answered
                .store(intake.max_id().await?, Ordering::Release);
        }
        Ok(Some(intake))
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

    async fn count(&self) -> Result<i64, DbErr> {
        let row = self
            .conn
            .query_one_raw(stmt("SELECT COUNT(*) AS n FROM intake", vec![]))
            .await?;
        Ok(row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0))
    }

    /// The largest message id in the journal (0 when empty): new ids start above it.
    pub async fn max_id(&self) -> Result<i64, DbErr> {
        let row = self
            .conn
            .query_one_raw(stmt("SELECT MAX(id) AS m FROM intake", vec![]))
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<Option<i64>>("", "m").ok().flatten())
            .unwrap_or(0))
    }

    /// Store a batch of messages in the journal, in one transaction. A repeated idempotency
    /// key (in the batch, the journal or the main database) replays the first answer and stores
    /// nothing. The others are answered `Stored` once the commit returns.
    pub async fn append(&self, db: &Db, items: Vec<NewMessage>) -> Result<Vec<Accepted>, DbErr> {
        self.room().await?;
        let txn = self.conn.begin().await?;
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
                // journal only after the main database committed it, and this transaction
                // holds the journal's one connection, so a key is always found in one of them.
                let values = vec![item.plan.source_id.into(), key.clone().into()];
                let sql = "SELECT response FROM intake WHERE source_id = ? AND idempotency_key = ?";
                let found = match txn.query_one_raw(stmt(sql, values.clone())).await? {
                    Some(row) => Some(row.try_get::<String>("", "response")?),
                    None => db
                        .query_one(
                            "SELECT response FROM messages WHERE source_id = ? AND idempotency_key = ?",
                            values,
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
        // Power-of-two chunks: a few statement shapes, prepared once.
        for chunk in pow2_chunks(&fresh, 256) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * COLUMNS);
            for &i in chunk {
                let m = &items[i];
                let plan =
                    serde_json::to_string(&m.plan).map_err(|e| DbErr::Custom(e.to_string()))?;
                values.extend([
                    m.plan.msgid.into(),
                    m.plan.source_id.into(),
                    m.kind.into(),
                    m.priority.into(),
                    plan.into(),
                    m.sendno.clone().into(),
                    m.idempotency_key.clone().into(),
                    m.response.clone().into(),
                    m.not_before.into(),
                    now.into(),
                ]);
            }
            let sql = format!(
                "INSERT INTO intake (id, source_id, kind, priority, plan, sendno, idempotency_key, \
                 response, not_before, accepted_at) VALUES {}",
                value_rows(chunk.len(), COLUMNS)
            );
            txn.execute_raw(stmt(&sql, values)).await?;
        }
        txn.commit().await?;
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
        let rows = self
            .conn
            .query_all_raw(stmt(
                "SELECT id, kind, priority, plan, sendno, idempotency_key, response, not_before \
                 FROM intake ORDER BY id LIMIT ?",
                vec![i64::try_from(limit).unwrap_or(i64::MAX).into()],
            ))
            .await?;
        let mut out = Pending {
            written,
            rows: rows.len(),
            messages: Vec::with_capacity(rows.len()),
            unreadable: Vec::new(),
        };
        for r in rows {
            let id: i64 = r.try_get("", "id")?;
            let plan: String = r.try_get("", "plan")?;
            let plan: MessagePlan = match serde_json::from_str(&plan) {
                Ok(plan) => plan,
                Err(e) => {
                    out.unreadable.push((id, format!("plan: {e}")));
                    continue;
                }
            };
            let kind: String = r.try_get("", "kind")?;
            out.messages.push(NewMessage {
                plan,
                kind: if kind == "broadcast" {
                    "broadcast"
                } else {
                    "sent"
                },
                priority: r.try_get("", "priority")?,
                sendno: r.try_get("", "sendno")?,
                idempotency_key: r.try_get("", "idempotency_key")?,
                response: r.try_get("", "response")?,
                not_before: r.try_get("", "not_before")?,
            });
        }
        Ok(out)
    }

    /// Move rows the mover cannot store to `intake_failed`, with the reason.
    pub async fn quarantine(&self, failed: &[(i64, String)]) -> Result<(), DbErr> {
        let txn = self.conn.begin().await?;
        let now = now_ms();
        for (id, error) in failed {
            txn.execute_raw(stmt(
                "INSERT OR REPLACE INTO intake_failed (id, source_id, kind, priority, plan, sendno, \
                 idempotency_key, response, not_before, accepted_at, error, failed_at) \
                 SELECT id, source_id, kind, priority, plan, sendno, idempotency_key, response, \
                 not_before, accepted_at, ?, ? FROM intake WHERE id = ?",
                vec![error.clone().into(), now.into(), (*id).into()],
            ))
            .await?;
            txn.execute_raw(stmt("DELETE FROM intake WHERE id = ?", vec![(*id).into()]))
                .await?;
        }
        txn.commit().await?;
        self.add_backlog(-(failed.len() as i64));
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
    /// next start finds suspect and checks by id.
    pub async fn remove(&self, ids: &[i64]) -> Result<(), DbErr> {
        let txn = self.conn.begin().await?;
        for chunk in ids.chunks(512) {
            // Padded to a power of two with the last id: a few statement shapes.
            let rows = padded_rows(chunk.len(), 512);
            let mut values: Vec<Value> = chunk.iter().map(|id| Value::from(*id)).collect();
            repeat_last_row(&mut values, 1, rows - chunk.len());
            let sql = format!("DELETE FROM intake WHERE id IN ({})", in_list(rows));
            txn.execute_raw(stmt(&sql, values)).await?;
        }
        txn.commit().await?;
        self.add_backlog(-(ids.len() as i64));
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
        self.wait_until_gone("SELECT 1 AS x FROM intake WHERE id = ?", msgid)
            .await
    }

    /// Wait until every message answered before this call is in the main database, for reads
    /// that list messages: until the journal holds no id up to the largest answered so far.
    /// The mover takes rows in id order, so under a sustained stream of sends this is a pass
    /// or two, not a drained journal. False as for [`Intake::settle_message`].
    pub async fn settle_all(&self) -> bool {
        let target = self.answered.load(Ordering::Acquire);
        self.wait_until_gone("SELECT 1 AS x FROM intake WHERE id <= ? LIMIT 1", target)
            .await
    }

    /// Wait until `probe` (a query of the journal with one id parameter) finds no row, looking
    /// again after each pass of the mover; at most [`SETTLE_LIMIT`].
    async fn wait_until_gone(&self, probe: &str, id: i64) -> bool {
        let mut moved = self.moved.subscribe();
        if *moved.borrow() >= self.written.load(Ordering::Acquire) {
            // Drained since the last batch was written: nothing to wait for.
            return true;
        }
        let wait = async {
            loop {
                match self.conn.query_one_raw(stmt(probe, vec![id.into()])).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return true,
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

fn stmt(sql: &str, values: Vec<Value>) -> sea_orm::Statement {
    sea_orm::Statement::from_sql_and_values(sea_orm::DatabaseBackend::Sqlite, sql, values)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(msgid: i64) -> NewMessage {
        use msghub_actors::plan::{Audience, Lane, MessagePlan, Strategy};
        NewMessage {
            plan: MessagePlan {
                msgid,
                source_id: 1,
                lane: Lane::Realtime,
                audience: Audience::Userids(vec!["u".into()]),
                channels: Vec::new(),
                ttl_seconds: None,
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
        let ids: Vec<i64> = intake
            .pending(10)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.plan.msgid)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        // A journal found with rows at start counts them.
        let again = Intake::open(&settings, false).await.unwrap().unwrap();
        assert_eq!(again.backlog.load(Ordering::Acquire), 2);
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
