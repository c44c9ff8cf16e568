//! Scheduled messages: release when due, and the management reads and edits (list,
//! reschedule, cancel). Every edit is one `UPDATE … WHERE state = 'scheduled'`, so it either
//! happens before the release or finds the message already released: never both.

use msghub_actors::plan::{Audience, MessagePlan};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use serde::Serialize;

use super::{Db, now_ms};
use crate::domain::schedule::rfc3339;

/// A message as the management list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageItem {
    pub msgid: String,
    pub source_id: i64,
    /// The source's name (`null` if the source was deleted).
    pub source: Option<String>,
    pub state: String,
    pub kind: String,
    pub priority: i16,
    pub sendno: Option<String>,
    /// When a scheduled message will be sent (RFC 3339, UTC); `null` once it is not scheduled.
    pub send_at: Option<String>,
    pub audience: AudienceSummary,
    pub created_at: i64,
}

/// Who a message is for, without its (possibly long) lists.
#[derive(Debug, Clone, Serialize)]
pub struct AudienceSummary {
    /// `userids`, `tags`, `all` or `raw`.
    pub kind: &'static str,
    /// Userids, tags or raw addresses listed; `null` for `all`.
    pub count: Option<usize>,
}

impl AudienceSummary {
    fn of(audience: &Audience) -> AudienceSummary {
        let (kind, count) = match audience {
            Audience::Userids(ids) => ("userids", Some(ids.len())),
            Audience::Tags(tags) => ("tags", Some(tags.len())),
            Audience::All => ("all", None),
            Audience::Raw(raw) => ("raw", Some(raw.iter().map(|r| r.addresses.len()).sum())),
        };
        AudienceSummary { kind, count }
    }
}

/// What an edit of a scheduled message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleEdit {
    Done,
    NotFound,
    /// The message is no longer (or never was) scheduled; its current state.
    NotScheduled(String),
}

const ITEM_COLUMNS: &str = "m.id, m.source_id, s.name AS source_name, m.state, m.kind, m.priority, \
     m.sendno, m.not_before, m.created_at, m.plan";

fn item(r: &QueryResult) -> Result<MessageItem, DbErr> {
    let state: String = r.try_get("", "state")?;
    let not_before: Option<i64> = r.try_get("", "not_before")?;
    let plan: String = r.try_get("", "plan")?;
    let plan: MessagePlan =
        serde_json::from_str(&plan).map_err(|e| DbErr::Custom(format!("stored plan: {e}")))?;
    Ok(MessageItem {
        msgid: r.try_get::<i64>("", "id")?.to_string(),
        source_id: r.try_get("", "source_id")?,
        source: r.try_get("", "source_name")?,
        send_at: not_before.filter(|_| state == "scheduled").map(rfc3339),
        state,
        kind: r.try_get("", "kind")?,
        priority: r.try_get("", "priority")?,
        sendno: r.try_get("", "sendno")?,
        audience: AudienceSummary::of(&plan.audience),
        created_at: r.try_get("", "created_at")?,
    })
}

impl Db {
    /// Move due scheduled messages to `accepted` and return their plans (see
    /// `DispatchStore::release_scheduled`). A cheap indexed read comes first, so the frequent
    /// polls take the writer only when something is due.
    pub async fn release_scheduled(&self, now: i64, limit: u32) -> Result<Vec<MessagePlan>, DbErr> {
        let due = self
            .query_one(
                "SELECT id FROM messages WHERE state = 'scheduled' AND not_before <= ? LIMIT 1",
                vec![now.into()],
            )
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        // One statement: the outer WHERE is checked again on each row as it is updated, so a
        // message cancelled or moved later meanwhile is left alone.
        let rows = self
            .write()
            .query_all_raw(self.stmt(
                "UPDATE messages SET state = 'accepted', updated_at = ? \
                 WHERE state = 'scheduled' AND not_before <= ? AND id IN \
                 (SELECT id FROM messages WHERE state = 'scheduled' AND not_before <= ? \
                  ORDER BY not_before LIMIT ?) RETURNING plan, not_before",
                vec![
                    now_ms().into(),
                    now.into(),
                    now.into(),
                    i64::from(limit).into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("", "plan")?;
                let mut plan: MessagePlan = serde_json::from_str(&text)
                    .map_err(|e| DbErr::Custom(format!("stored plan: {e}")))?;
                // A plan stored by an earlier build has no send time of its own: its TTL
                // counts from the row's.
                if plan.send_at_ms.is_none() {
                    plan.send_at_ms = r.try_get::<Option<i64>>("", "not_before")?;
                }
                Ok(plan)
            })
            .collect()
    }

    /// Messages in `state` (every state when `None`) with an id above `after`, by id.
    pub async fn list_messages(
        &self,
        state: Option<&str>,
        after: i64,
        limit: u64,
    ) -> Result<Vec<MessageItem>, DbErr> {
        let mut values: Vec<Value> = Vec::new();
        let mut sql = format!(
            "SELECT {ITEM_COLUMNS} FROM messages m LEFT JOIN sources s ON s.id = m.source_id WHERE "
        );
        if let Some(state) = state {
            sql.push_str("m.state = ? AND ");
            values.push(state.into());
        }
        sql.push_str("m.id > ? ORDER BY m.id LIMIT ?");
        values.push(after.into());
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        self.query_all(&sql, values)
            .await?
            .iter()
            .map(item)
            .collect()
    }

    pub async fn message_item(&self, msgid: i64) -> Result<Option<MessageItem>, DbErr> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM messages m LEFT JOIN sources s ON s.id = m.source_id WHERE m.id = ?"
        );
        self.read()
            .query_one_raw(self.stmt(&sql, vec![msgid.into()]))
            .await?
            .as_ref()
            .map(item)
            .transpose()
    }

    /// Move a scheduled message to `not_before` (unix ms; now or earlier sends it at the next
    /// poll). Its plan's `send_at_ms`, from which its offline validity counts, moves with it,
    /// in the same statement.
    pub async fn reschedule(&self, msgid: i64, not_before: i64) -> Result<ScheduleEdit, DbErr> {
        let row = self
            .query_one(
                "SELECT plan FROM messages WHERE id = ? AND state = 'scheduled'",
                vec![msgid.into()],
            )
            .await?;
        let Some(row) = row else {
            return self.edit_result(msgid, 0).await;
        };
        let text: String = row.try_get("", "plan")?;
        let mut plan: MessagePlan =
            serde_json::from_str(&text).map_err(|e| DbErr::Custom(format!("stored plan: {e}")))?;
        plan.send_at_ms = Some(not_before);
        let text = serde_json::to_string(&plan).map_err(|e| DbErr::Custom(e.to_string()))?;
        let n = self
            .execute(
                "UPDATE messages SET not_before = ?, plan = ?, updated_at = ? WHERE id = ? AND state = 'scheduled'",
                vec![not_before.into(), text.into(), now_ms().into(), msgid.into()],
            )
            .await?;
        self.edit_result(msgid, n).await
    }

    /// Cancel a scheduled message: it becomes `cancelled` and is never sent.
    pub async fn cancel_scheduled(&self, msgid: i64) -> Result<ScheduleEdit, DbErr> {
        let n = self
            .execute(
                "UPDATE messages SET state = 'cancelled', updated_at = ? WHERE id = ? AND state = 'scheduled'",
                vec![now_ms().into(), msgid.into()],
            )
            .await?;
        self.edit_result(msgid, n).await
    }

    async fn edit_result(&self, msgid: i64, updated: u64) -> Result<ScheduleEdit, DbErr> {
        if updated > 0 {
            return Ok(ScheduleEdit::Done);
        }
        let row = self
            .query_one(
                "SELECT state FROM messages WHERE id = ?",
                vec![msgid.into()],
            )
            .await?;
        Ok(match row {
            Some(r) => ScheduleEdit::NotScheduled(r.try_get("", "state")?),
            None => ScheduleEdit::NotFound,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plan_stored_without_its_send_time_is_released_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::test_sqlite(&dir).await;
        let not_before = now_ms() - 1_000;
        let msgid = (not_before - 60_000) << 20;
        // Serialized as an earlier build stored it: no `send_at_ms`.
        let mut plan = crate::storage::intake::tests::message(msgid).plan;
        plan.ttl_seconds = Some(30);
        let text = serde_json::to_string(&plan).unwrap();
        assert!(!text.contains("send_at_ms"), "{text}");
        db.execute(
            "INSERT INTO messages (id, source_id, kind, priority, lane, state, plan, response, \
             planned, shard_count, created_at, updated_at, not_before) \
             VALUES (?, 1, 'targeted', 2, 'realtime', 'scheduled', ?, '{}', ?, 0, ?, ?, ?)",
            vec![
                msgid.into(),
                text.into(),
                false.into(),
                now_ms().into(),
                now_ms().into(),
                not_before.into(),
            ],
        )
        .await
        .unwrap();
        let released = db.release_scheduled(now_ms(), 10).await.unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].send_at_ms, Some(not_before));
        // Accepted a minute before its send time, valid for 30 s from it: not expired.
        assert!(!released[0].expired(now_ms()));
    }
}
