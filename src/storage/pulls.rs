//! Sends whose receipts are asked for (`receipt_pulls`): DingTalk work notices, whose
//! provider reports per `task_id` (`getsendresult`) and pushes nothing.
//!
//! The outcome writer records a row per accepted provider call in the same transaction as the
//! outcomes that name it ([`record_pulls`]), so a send the hub recorded as submitted is always
//! followed. The receipt poller (`crate::pulls`) reads the rows that are due, asks the
//! provider, applies what it says as receipts, and then either forgets the row (every delivery
//! settled, or the report window over) or sets when it is asked about next.

use std::collections::BTreeMap;

use msghub_actors::plan::DeliveryResult;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait, Value};

use super::{Db, repeat_last_row, value_rows};

/// One followed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub channel_id: i64,
    /// The provider's id for the call (DingTalk `task_id`).
    pub provider_id: String,
    pub msgid: i64,
    /// Deliveries the call carried.
    pub targets: i64,
    pub created_at: i64,
    /// How often the provider was asked so far.
    pub pulls: i32,
}

/// Record the calls of `results` whose receipts are pulled, due at `next_at`: a row per
/// (channel, provider id), counting its deliveries. A call's outcomes are recorded together,
/// so a row already there is this call's, written again (a retried write), or an old call
/// whose id the provider gave out again: either way the new row replaces it.
pub(crate) async fn record_pulls<C: ConnectionTrait>(
    db: &Db,
    conn: &C,
    results: &[&DeliveryResult],
    now: i64,
    next_at: i64,
) -> Result<(), DbErr> {
    let mut calls: BTreeMap<(i64, &str), (i64, i64)> = BTreeMap::new();
    for r in results.iter().filter(|r| r.pull_receipt) {
        if let Some(pid) = r.provider_id.as_deref() {
            calls.entry((r.channel_id, pid)).or_insert((r.msgid, 0)).1 += 1;
        }
    }
    let calls: Vec<_> = calls.into_iter().collect();
    for chunk in calls.chunks(256) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 7);
        for ((channel_id, pid), (msgid, targets)) in chunk {
            values.extend([
                Value::from(*channel_id),
                Value::from(pid.to_string()),
                Value::from(*msgid),
                Value::from(*targets),
                Value::from(now),
                Value::from(next_at),
                Value::from(0i32),
            ]);
        }
        let sql = format!(
            "INSERT INTO receipt_pulls (channel_id, provider_id, message_id, targets, created_at, \
             next_at, pulls) VALUES {} ON CONFLICT (channel_id, provider_id) DO UPDATE SET \
             message_id = excluded.message_id, targets = excluded.targets, \
             created_at = excluded.created_at, next_at = excluded.next_at, pulls = 0",
            value_rows(chunk.len(), 7)
        );
        conn.execute_raw(db.stmt(&sql, values)).await?;
    }
    Ok(())
}

/// What becomes of a followed send after the provider was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullNext {
    /// Nothing more to learn: forget it.
    Done,
    /// Ask again at this time (unix ms).
    At(i64),
}

impl Db {
    /// The followed sends due at `now`, at most `per_channel` of each channel, earliest first
    /// (a channel with many due sends does not hide the others').
    pub async fn due_pulls(&self, now: i64, per_channel: u32) -> Result<Vec<Pull>, DbErr> {
        let rows = self
            .query_all(
                "SELECT channel_id, provider_id, message_id, targets, created_at, pulls FROM \
                 (SELECT channel_id, provider_id, message_id, targets, created_at, pulls, next_at, \
                 ROW_NUMBER() OVER (PARTITION BY channel_id ORDER BY next_at) AS place \
                 FROM receipt_pulls WHERE next_at <= ?) due WHERE place <= ? ORDER BY next_at",
                vec![now.into(), i64::from(per_channel).into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Pull {
                    channel_id: r.try_get("", "channel_id")?,
                    provider_id: r.try_get("", "provider_id")?,
                    msgid: r.try_get("", "message_id")?,
                    targets: r.try_get::<i32>("", "targets").map(i64::from)?,
                    created_at: r.try_get("", "created_at")?,
                    pulls: r.try_get("", "pulls")?,
                })
            })
            .collect()
    }

    /// Forget or reschedule followed sends after a pull, in one transaction.
    pub async fn after_pulls(&self, done: &[(&Pull, PullNext)]) -> Result<(), DbErr> {
        if done.is_empty() {
            return Ok(());
        }
        let txn = self.write().begin().await?;
        let mut forget: Vec<&Pull> = Vec::new();
        let mut again: Vec<(&Pull, i64)> = Vec::new();
        for (p, next) in done {
            match next {
                PullNext::Done => forget.push(p),
                PullNext::At(at) => again.push((p, *at)),
            }
        }
        for chunk in forget.chunks(256) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 2);
            for p in chunk {
                values.extend([p.channel_id.into(), p.provider_id.clone().into()]);
            }
            let sql = format!(
                "DELETE FROM receipt_pulls WHERE (channel_id, provider_id) IN (VALUES {})",
                value_rows(chunk.len(), 2)
            );
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        for chunk in again.chunks(256) {
            let rows = self.pad_to(chunk.len(), 256);
            let mut values: Vec<Value> = Vec::with_capacity(rows * 4);
            for (p, at) in chunk {
                values.extend([
                    p.channel_id.into(),
                    p.provider_id.clone().into(),
                    (*at).into(),
                    (p.pulls.saturating_add(1)).into(),
                ]);
            }
            repeat_last_row(&mut values, 4, rows - chunk.len());
            let sql = format!(
                "UPDATE receipt_pulls SET next_at = v.column3, pulls = v.column4 \
                 FROM (VALUES {}) AS v \
                 WHERE receipt_pulls.channel_id = v.column1 AND receipt_pulls.provider_id = v.column2",
                value_rows(rows, 4)
            );
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        txn.commit().await
    }

    /// Stop following sends (recalled ones: a retracted delivery takes no receipt).
    pub async fn forget_pulls(
        &self,
        channel_id: i64,
        provider_ids: &[String],
    ) -> Result<(), DbErr> {
        for chunk in provider_ids.chunks(256) {
            let mut values: Vec<Value> = vec![channel_id.into()];
            values.extend(chunk.iter().map(|p| Value::from(p.clone())));
            let sql = format!(
                "DELETE FROM receipt_pulls WHERE channel_id = ? AND provider_id IN ({})",
                super::in_list(chunk.len())
            );
            self.execute(&sql, values).await?;
        }
        Ok(())
    }

    /// How many sends are followed (`msghub_receipt_pulls_pending`).
    pub async fn pending_pulls(&self) -> Result<i64, DbErr> {
        let row = self
            .query_one("SELECT COUNT(*) AS n FROM receipt_pulls", vec![])
            .await?;
        row.map_or(Ok(0), |r| r.try_get("", "n"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use msghub_actors::plan::DeliveryStatus;
    use msghub_actors::provider::OutcomeClass;

    use super::*;

    fn result(delivery: i64, channel: i64, pid: Option<&str>, pull: bool) -> DeliveryResult {
        DeliveryResult {
            delivery_id: delivery,
            status: DeliveryStatus::Submitted,
            class: OutcomeClass::Ok,
            code: "0".into(),
            provider_id: pid.map(str::to_string),
            error: None,
            attempts: 1,
            msgid: 77,
            channel_id: channel,
            userid: None,
            address: format!("u{delivery}"),
            pull_receipt: pull,
        }
    }

    async fn record(db: &Db, results: &[DeliveryResult], now: i64, next_at: i64) {
        let refs: Vec<&DeliveryResult> = results.iter().collect();
        let txn = db.write().begin().await.unwrap();
        record_pulls(db, &txn, &refs, now, next_at).await.unwrap();
        txn.commit().await.unwrap();
    }

    async fn calls_are_followed_until_done(db: Db) {
        let results = vec![
            result(1, 5, Some("task-1"), true),
            result(2, 5, Some("task-1"), true),
            result(3, 5, Some("task-2"), true),
            // Not pulled, or without an id: not followed.
            result(4, 5, Some("task-3"), false),
            result(5, 5, None, true),
            // Another channel's call with the same id is another call.
            result(6, 6, Some("task-1"), true),
        ];
        // Written twice (a retried write): the same row, not twice the deliveries.
        record(&db, &results, 1000, 4000).await;
        record(&db, &results, 1000, 4000).await;
        assert_eq!(db.pending_pulls().await.unwrap(), 3);
        assert!(db.due_pulls(3999, 10).await.unwrap().is_empty());
        let due = db.due_pulls(4000, 10).await.unwrap();
        let seen: Vec<(i64, &str, i64, i64, i32)> = due
            .iter()
            .map(|p| {
                (
                    p.channel_id,
                    p.provider_id.as_str(),
                    p.targets,
                    p.created_at,
                    p.pulls,
                )
            })
            .collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![
                (5, "task-1", 2, 1000, 0),
                (5, "task-2", 1, 1000, 0),
                (6, "task-1", 1, 1000, 0)
            ]
        );
        assert!(due.iter().all(|p| p.msgid == 77));
        // At most one per channel: one of channel 5's, and channel 6's.
        let one_each = db.due_pulls(4000, 1).await.unwrap();
        let channels: Vec<i64> = one_each.iter().map(|p| p.channel_id).collect();
        assert_eq!(channels.len(), 2);
        assert!(
            channels.contains(&5) && channels.contains(&6),
            "{channels:?}"
        );

        let task = |channel: i64, pid: &str| {
            due.iter()
                .find(|p| p.channel_id == channel && p.provider_id == pid)
                .unwrap()
        };
        db.after_pulls(&[
            (task(5, "task-1"), PullNext::Done),
            (task(5, "task-2"), PullNext::At(9000)),
            (task(6, "task-1"), PullNext::At(6000)),
        ])
        .await
        .unwrap();
        assert_eq!(db.pending_pulls().await.unwrap(), 2);
        assert!(db.due_pulls(5999, 10).await.unwrap().is_empty());
        let due = db.due_pulls(9000, 10).await.unwrap();
        let order: Vec<(i64, &str, i32)> = due
            .iter()
            .map(|p| (p.channel_id, p.provider_id.as_str(), p.pulls))
            .collect();
        assert_eq!(order, vec![(6, "task-1", 1), (5, "task-2", 1)]);

        // A task id given out again for another message: the new call replaces the old row.
        let mut again = result(8, 5, Some("task-2"), true);
        again.msgid = 99;
        record(&db, &[again], 20_000, 25_000).await;
        let due = db.due_pulls(25_000, 10).await.unwrap();
        let task2 = due.iter().find(|p| p.provider_id == "task-2").unwrap();
        assert_eq!(
            (task2.msgid, task2.targets, task2.created_at, task2.pulls),
            (99, 1, 20_000, 0)
        );
        db.forget_pulls(5, &["task-2".to_string(), "never".to_string()])
            .await
            .unwrap();
        assert_eq!(db.pending_pulls().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn calls_are_followed_until_done_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        calls_are_followed_until_done(crate::storage::test_sqlite(&dir).await).await;
    }

    #[tokio::test]
    async fn calls_are_followed_until_done_on_postgres() {
        if let Some(db) = crate::storage::test_postgres().await {
            calls_are_followed_until_done(db).await;
        }
    }
}
