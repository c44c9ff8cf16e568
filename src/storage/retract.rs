//! Retracting a message: the state change that stops it, the check that keeps shards opened
//! afterwards empty, and the reads and writes of the recall that follows.

use std::collections::HashSet;

use msghub_actors::plan::{ChannelBatch, DeliveryStatus, OpenShard};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, TransactionTrait, Value};

use super::dispatch::Store;
use super::{Db, in_list, now_ms};

/// JUMS accepts a retract for 24 hours after the message was sent.
pub const RETRACT_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// States a retract stops; `cancelled` and `retracted` messages have nothing left to stop.
const RETRACTABLE: &str = "'scheduled', 'accepted', 'waiting', 'done'";

/// Delivery statuses of a send the provider accepted, which a recall may withdraw.
pub fn recallable_statuses() -> String {
    [
        DeliveryStatus::Submitted,
        DeliveryStatus::Delivered,
        DeliveryStatus::Clicked,
        DeliveryStatus::Undelivered,
    ]
    .iter()
    .map(|s| (*s as i16).to_string())
    .collect::<Vec<_>>()
    .join(", ")
}

/// What a retract request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetractOutcome {
    /// Stopped: the state it had, and how many queued deliveries will not be sent.
    Retracted {
        was: String,
        stopped: u64,
    },
    /// No such message, or another source's.
    NotFound,
    AlreadyRetracted,
    Cancelled,
    /// Sent longer ago than [`RETRACT_WINDOW_MS`].
    TooOld,
}

/// One delivery, as a retract reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetractedDelivery {
    pub id: i64,
    pub channel_id: i64,
    pub channel_type: String,
    pub userid: Option<String>,
    pub address: String,
    pub provider_id: Option<String>,
}

/// When a message was (or will be) sent: accepted (message ids carry the acceptance time), or
/// its scheduled time.
fn sent_at(msgid: i64, not_before: Option<i64>) -> i64 {
    (msgid >> 20).max(not_before.unwrap_or(0))
}

impl Db {
    /// Retract a message of `source_id` in one transaction: its state becomes `retracted`, its
    /// still-queued deliveries `Retracted`, its fallback timers go. Shards opened afterwards
    /// create no deliveries ([`Store::stopped_messages`]).
    pub async fn retract_message(
        &self,
        msgid: i64,
        source_id: i64,
    ) -> Result<RetractOutcome, DbErr> {
        let now = now_ms();
        let txn = self.write().begin().await?;
        let row = txn
            .query_one_raw(self.stmt(
                "SELECT source_id, state, not_before FROM messages WHERE id = ?",
                vec![msgid.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(RetractOutcome::NotFound);
        };
        if row.try_get::<i64>("", "source_id")? != source_id {
            return Ok(RetractOutcome::NotFound);
        }
        let state: String = row.try_get("", "state")?;
        let not_before: Option<i64> = row.try_get("", "not_before")?;
        if state != "scheduled" && now - sent_at(msgid, not_before) > RETRACT_WINDOW_MS {
            return Ok(RetractOutcome::TooOld);
        }
        let updated = txn
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE messages SET state = 'retracted', updated_at = ? WHERE id = ? \
                     AND state IN ({RETRACTABLE})"
                ),
                vec![now.into(), msgid.into()],
            ))
            .await?
            .rows_affected();
        if updated == 0 {
            // Already stopped, perhaps by a concurrent request: say how.
            let state: Option<String> = txn
                .query_one_raw(self.stmt(
                    "SELECT state FROM messages WHERE id = ?",
                    vec![msgid.into()],
                ))
                .await?
                .map(|r| r.try_get("", "state"))
                .transpose()?;
            return Ok(match state.as_deref() {
                Some("retracted") => RetractOutcome::AlreadyRetracted,
                Some("cancelled") => RetractOutcome::Cancelled,
                _ => RetractOutcome::NotFound,
            });
        }
        let stopped = txn
            .execute_raw(self.stmt(
                "UPDATE deliveries SET status = ?, updated_at = ? WHERE message_id = ? AND status = ?",
                vec![
                    (DeliveryStatus::Retracted as i16).into(),
                    now.into(),
                    msgid.into(),
                    (DeliveryStatus::Queued as i16).into(),
                ],
            ))
            .await?
            .rows_affected();
        txn.execute_raw(self.stmt(
            "DELETE FROM fallback_timers WHERE message_id = ?",
            vec![msgid.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(RetractOutcome::Retracted {
            was: state,
            stopped,
        })
    }

    /// Deliveries of `msgid` with `status` among `statuses` and an id above `after`, by id.
    pub async fn deliveries_in(
        &self,
        msgid: i64,
        statuses: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<RetractedDelivery>, DbErr> {
        let rows = self
            .query_all(
                &format!(
                    "SELECT id, channel_id, channel_type, userid, address, provider_id FROM deliveries \
                     WHERE message_id = ? AND status IN ({statuses}) AND id > ? ORDER BY id LIMIT ?"
                ),
                vec![msgid.into(), after.into(), i64::from(limit).into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RetractedDelivery {
                    id: r.try_get("", "id")?,
                    channel_id: r.try_get("", "channel_id")?,
                    channel_type: r.try_get("", "channel_type")?,
                    userid: r.try_get("", "userid")?,
                    address: r.try_get("", "address")?,
                    provider_id: r.try_get("", "provider_id")?,
                })
            })
            .collect()
    }

    /// Mark deliveries whose provider withdrew the send as `Retracted`.
    pub async fn mark_recalled(&self, delivery_ids: &[i64]) -> Result<(), DbErr> {
        let now = now_ms();
        for chunk in delivery_ids.chunks(500) {
            let mut values: Vec<Value> =
                vec![(DeliveryStatus::Retracted as i16).into(), now.into()];
            values.extend(chunk.iter().map(|id| Value::from(*id)));
            self.execute(
                &format!(
                    "UPDATE deliveries SET status = ?, updated_at = ? WHERE id IN ({}) AND status IN ({})",
                    in_list(chunk.len()),
                    recallable_statuses()
                ),
                values,
            )
            .await?;
        }
        Ok(())
    }
}

impl Store {
    /// The messages among `shards`' that are retracted or cancelled: their shards open to
    /// nothing. Read inside the opening transaction; with `lock` (Postgres) the rows are
    /// share-locked until it commits.
    pub(crate) async fn stopped_messages<C: ConnectionTrait>(
        &self,
        txn: &C,
        shards: &[OpenShard],
        lock: bool,
    ) -> Result<HashSet<i64>, DbErr> {
        let ids: Vec<i64> = shards
            .iter()
            .map(|s| s.plan.msgid)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let lock = if lock { " FOR SHARE" } else { "" };
        let mut stopped = HashSet::new();
        for chunk in ids.chunks(500) {
            let values = chunk.iter().map(|id| Value::from(*id)).collect();
            let rows = txn
                .query_all_raw(self.db.stmt(
                    &format!(
                        "SELECT id, state FROM messages WHERE id IN ({}){lock}",
                        in_list(chunk.len())
                    ),
                    values,
                ))
                .await?;
            for r in rows {
                let state: String = r.try_get("", "state")?;
                if matches!(state.as_str(), "retracted" | "cancelled") {
                    stopped.insert(r.try_get("", "id")?);
                }
            }
        }
        Ok(stopped)
    }

    /// At the end of an opening transaction on Postgres, where writers run concurrently: look
    /// again, share-locking the messages, and stop what was opened for one retracted since the
    /// first look. A retract either committed before this read (it is seen here, and the
    /// deliveries just created are retracted like it would have) or waits for this commit (and
    /// then retracts them itself). SQLite has one writer: the first look is final.
    pub(crate) async fn recheck_stopped<C: ConnectionTrait>(
        &self,
        txn: &C,
        shards: &[OpenShard],
        seen: &HashSet<i64>,
        batches: &mut [Vec<ChannelBatch>],
    ) -> Result<(), DbErr> {
        if self.db.backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let now_stopped = self.stopped_messages(txn, shards, true).await?;
        for msgid in now_stopped.difference(seen) {
            txn.execute_raw(self.db.stmt(
                "UPDATE deliveries SET status = ?, updated_at = ? WHERE message_id = ? AND status = ?",
                vec![
                    (DeliveryStatus::Retracted as i16).into(),
                    now_ms().into(),
                    (*msgid).into(),
                    (DeliveryStatus::Queued as i16).into(),
                ],
            ))
            .await?;
            txn.execute_raw(self.db.stmt(
                "DELETE FROM fallback_timers WHERE message_id = ?",
                vec![(*msgid).into()],
            ))
            .await?;
            for (shard, batch) in shards.iter().zip(batches.iter_mut()) {
                if shard.plan.msgid == *msgid {
                    batch.clear();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_counts_as_sent_when_accepted_or_when_scheduled_for() {
        let accepted_ms = 1_780_000_000_000_i64;
        let msgid = accepted_ms << 20 | 7;
        assert_eq!(sent_at(msgid, None), accepted_ms);
        assert_eq!(sent_at(msgid, Some(accepted_ms + 5)), accepted_ms + 5);
        assert_eq!(sent_at(msgid, Some(1)), accepted_ms);
    }

    #[test]
    fn recallable_statuses_are_the_accepted_ones() {
        assert_eq!(recallable_statuses(), "1, 3, 4, 5");
    }
}
