//! The dispatch topology's storage port ([`DispatchStore`]) on SQLite and Postgres.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use msghub_actors::plan::{
    Audience, ChannelBatch, DeliveryResult, MessagePlan, OpenShard, Shard, ShardSpec,
};
use msghub_actors::provider::Target;
use msghub_actors::store::{ChannelSpec, DispatchStore, PlannedPage, StoreError, StoreResult};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, TransactionTrait, Value};

use super::crypto::Crypto;
use super::{Db, in_list, now_ms, value_rows};

/// [`Db`] with the key that opens channel credentials.
#[derive(Clone)]
pub struct Store {
    pub db: Db,
    pub crypto: Crypto,
}

fn err(e: DbErr) -> StoreError {
    StoreError(e.to_string())
}

fn parse_plan(r: &QueryResult) -> Result<MessagePlan, DbErr> {
    let text: String = r.try_get("", "plan")?;
    serde_json::from_str(&text).map_err(|e| DbErr::Custom(format!("stored plan: {e}")))
}

fn parse_spec(text: &str) -> Result<ShardSpec, DbErr> {
    serde_json::from_str(text).map_err(|e| DbErr::Custom(format!("stored shard: {e}")))
}

/// One resolved (user, channel type, address) of a shard.
struct Resolved {
    userid: Option<String>,
    channel_type: String,
    address: String,
}

impl Store {
    /// The audience filter of a user range: SQL condition over `b.userid` plus its values.
    fn range_filter(
        plan: &MessagePlan,
        after: &Option<String>,
        last: &str,
    ) -> (String, Vec<Value>) {
        let mut sql = String::from("b.userid > ? AND b.userid <= ?");
        let mut values: Vec<Value> = vec![after.clone().unwrap_or_default().into(), last.into()];
        if let Audience::Tags(tags) = &plan.audience {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM user_tags t WHERE t.userid = b.userid AND t.tag IN ({}))",
                in_list(tags.len())
            ));
            values.extend(tags.iter().map(|t| Value::from(t.clone())));
        }
        (sql, values)
    }

    async fn resolve(&self, plan: &MessagePlan, shard: &Shard) -> Result<Vec<Resolved>, DbErr> {
        let types: Vec<&'static str> = plan
            .channels
            .iter()
            .map(|c| c.channel_type.code())
            .collect();
        if types.is_empty() {
            return Ok(Vec::new());
        }
        let (filter, mut values) = match (&shard.spec, &plan.audience) {
            (ShardSpec::Listed, Audience::Raw(raw)) => {
                return Ok(raw
                    .iter()
                    .filter(|r| types.contains(&r.channel_type.code()))
                    .flat_map(|r| {
                        r.addresses.iter().map(|a| Resolved {
                            userid: None,
                            channel_type: r.channel_type.code().to_string(),
                            address: a.clone(),
                        })
                    })
                    .collect());
            }
            (ShardSpec::Listed, Audience::Userids(ids)) => {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                (
                    format!("b.userid IN ({})", in_list(ids.len())),
                    ids.iter()
                        .map(|u| Value::from(u.clone()))
                        .collect::<Vec<_>>(),
                )
            }
            (ShardSpec::Range { after, last }, _) => Store::range_filter(plan, after, last),
            (ShardSpec::Listed, _) => {
                return Err(DbErr::Custom("listed shard of a paged audience".into()));
            }
        };
        let sql = format!(
            "SELECT b.userid, b.channel_type, b.address FROM bindings b WHERE b.channel_type IN ({}) AND {filter} \
             ORDER BY b.userid, b.channel_type, b.address",
            in_list(types.len())
        );
        let mut all: Vec<Value> = types.iter().map(|t| Value::from(*t)).collect();
        all.append(&mut values);
        let rows = self.db.query_all(&sql, all).await?;
        rows.iter()
            .map(|r| {
                Ok(Resolved {
                    userid: Some(r.try_get("", "userid")?),
                    channel_type: r.try_get("", "channel_type")?,
                    address: r.try_get("", "address")?,
                })
            })
            .collect()
    }

    /// Insert one shard's deliveries (once per address) and read back those still queued.
    async fn open_one<C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        shard: &Shard,
        resolved: &[Resolved],
        now: i64,
    ) -> Result<Vec<ChannelBatch>, DbErr> {
        let channel_of: HashMap<&str, i64> = plan
            .channels
            .iter()
            .map(|c| (c.channel_type.code(), c.channel_id))
            .collect();
        for chunk in resolved.chunks(1000) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 11);
            let mut rows = 0;
            for r in chunk {
                let Some(&channel_id) = channel_of.get(r.channel_type.as_str()) else {
                    continue;
                };
                rows += 1;
                values.extend([
                    plan.msgid.into(),
                    shard.seq.into(),
                    channel_id.into(),
                    r.channel_type.clone().into(),
                    r.userid.clone().into(),
                    r.address.clone().into(),
                    0i16.into(),
                    0i16.into(),
                    0i32.into(),
                    now.into(),
                ]);
            }
            if rows == 0 {
                continue;
            }
            let sql = format!(
                "INSERT INTO deliveries (message_id, shard_seq, channel_id, channel_type, userid, address, step, \
                 status, attempts, updated_at) VALUES {} ON CONFLICT (message_id, channel_id, address) DO NOTHING",
                value_rows(rows, 10)
            );
            txn.execute_raw(self.db.stmt(&sql, values)).await?;
        }
        let stmt = self.db.stmt(
            "SELECT id, channel_id, userid, address FROM deliveries WHERE message_id = ? AND shard_seq = ? \
             AND status = 0 ORDER BY id",
            vec![plan.msgid.into(), shard.seq.into()],
        );
        let rows = txn.query_all_raw(stmt).await?;
        let mut by_channel: BTreeMap<i64, Vec<Target>> = BTreeMap::new();
        for r in rows {
            let channel_id: i64 = r.try_get("", "channel_id")?;
            by_channel.entry(channel_id).or_default().push(Target {
                delivery_id: r.try_get("", "id")?,
                address: r.try_get("", "address")?,
                userid: r.try_get("", "userid")?,
            });
        }
        Ok(by_channel
            .into_iter()
            .map(|(channel_id, targets)| ChannelBatch {
                channel_id,
                targets,
            })
            .collect())
    }

    /// The userid `size` places after `after` in the audience, or the audience's last userid
    /// when fewer remain; `None` when nothing remains.
    async fn next_boundary<C: ConnectionTrait>(
        &self,
        conn: &C,
        plan: &MessagePlan,
        after: &str,
        size: u32,
    ) -> Result<Option<String>, DbErr> {
        let (from, mut values): (String, Vec<Value>) = match &plan.audience {
            Audience::Tags(tags) => (
                format!(
                    "FROM user_tags WHERE tag IN ({}) AND userid > ?",
                    in_list(tags.len())
                ),
                tags.iter().map(|t| Value::from(t.clone())).collect(),
            ),
            _ => ("FROM users WHERE userid > ?".to_string(), Vec::new()),
        };
        values.push(after.into());
        let mut offset_values = values.clone();
        offset_values.push(i64::from(size.saturating_sub(1)).into());
        let sql = format!("SELECT DISTINCT userid {from} ORDER BY userid LIMIT 1 OFFSET ?");
        if let Some(r) = conn
            .query_one_raw(self.db.stmt(&sql, offset_values))
            .await?
        {
            return Ok(Some(r.try_get("", "userid")?));
        }
        let sql = format!("SELECT MAX(userid) AS userid {from}");
        match conn.query_one_raw(self.db.stmt(&sql, values)).await? {
            Some(r) => r.try_get::<Option<String>>("", "userid"),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl DispatchStore for Store {
    async fn unfinished_messages(&self, after: i64, limit: u32) -> StoreResult<Vec<MessagePlan>> {
        let rows = self
            .db
            .query_all(
                "SELECT plan FROM messages WHERE state <> 'done' AND id > ? ORDER BY id LIMIT ?",
                vec![after.into(), i64::from(limit).into()],
            )
            .await
            .map_err(err)?;
        rows.iter().map(|r| parse_plan(r).map_err(err)).collect()
    }

    async fn planning_state(&self, msgid: i64) -> StoreResult<bool> {
        let r = self
            .db
            .query_one(
                "SELECT planned FROM messages WHERE id = ?",
                vec![msgid.into()],
            )
            .await
            .map_err(err)?;
        match r {
            Some(r) => r.try_get("", "planned").map_err(err),
            None => Err(StoreError(format!("message {msgid} not found"))),
        }
    }

    async fn pending_shards(&self, msgid: i64) -> StoreResult<Vec<Shard>> {
        let rows = self
            .db
            .query_all(
                "SELECT seq, spec FROM shards WHERE message_id = ? AND state = 'pending' ORDER BY seq",
                vec![msgid.into()],
            )
            .await
            .map_err(err)?;
        rows.iter()
            .map(|r| {
                let spec: String = r.try_get("", "spec")?;
                Ok(Shard {
                    msgid,
                    seq: r.try_get("", "seq")?,
                    spec: parse_spec(&spec)?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .map_err(err)
    }

    async fn plan_shards(
        &self,
        plan: &MessagePlan,
        shard_size: u32,
        max_shards: u32,
    ) -> StoreResult<PlannedPage> {
        let txn = self.db.write().begin().await.map_err(err)?;
        let stmt = self.db.stmt(
            "SELECT planned, plan_cursor, shard_count FROM messages WHERE id = ?",
            vec![plan.msgid.into()],
        );
        let row = txn
            .query_one_raw(stmt)
            .await
            .map_err(err)?
            .ok_or_else(|| StoreError(format!("message {} not found", plan.msgid)))?;
        let planned: bool = row.try_get("", "planned").map_err(err)?;
        if planned {
            return Ok(PlannedPage {
                shards: Vec::new(),
                complete: true,
            });
        }
        let mut cursor: Option<String> = row.try_get("", "plan_cursor").map_err(err)?;
        let mut seq: i32 = row.try_get("", "shard_count").map_err(err)?;
        let mut shards = Vec::new();
        let mut complete = false;
        for _ in 0..max_shards.max(1) {
            let after = cursor.clone().unwrap_or_default();
            match self
                .next_boundary(&txn, plan, &after, shard_size)
                .await
                .map_err(err)?
            {
                Some(last) => {
                    shards.push(Shard {
                        msgid: plan.msgid,
                        seq,
                        spec: ShardSpec::Range {
                            after: cursor.clone(),
                            last: last.clone(),
                        },
                    });
                    seq += 1;
                    cursor = Some(last);
                }
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let now = now_ms();
        if !shards.is_empty() {
            let mut values: Vec<Value> = Vec::with_capacity(shards.len() * 5);
            for s in &shards {
                let spec = serde_json::to_string(&s.spec).map_err(|e| StoreError(e.to_string()))?;
                values.extend([
                    s.msgid.into(),
                    s.seq.into(),
                    spec.into(),
                    "pending".into(),
                    now.into(),
                ]);
            }
            let sql = format!(
                "INSERT INTO shards (message_id, seq, spec, state, updated_at) VALUES {}",
                value_rows(shards.len(), 5)
            );
            txn.execute_raw(self.db.stmt(&sql, values))
                .await
                .map_err(err)?;
        }
        let stmt = self.db.stmt(
            "UPDATE messages SET planned = ?, plan_cursor = ?, shard_count = ?, updated_at = ? WHERE id = ?",
            vec![complete.into(), cursor.into(), seq.into(), now.into(), plan.msgid.into()],
        );
        txn.execute_raw(stmt).await.map_err(err)?;
        txn.commit().await.map_err(err)?;
        Ok(PlannedPage { shards, complete })
    }

    async fn open_shards(&self, shards: &[OpenShard]) -> StoreResult<Vec<Vec<ChannelBatch>>> {
        let mut resolved = Vec::with_capacity(shards.len());
        for s in shards {
            resolved.push(self.resolve(&s.plan, &s.shard).await.map_err(err)?);
        }
        let now = now_ms();
        let txn = self.db.write().begin().await.map_err(err)?;
        let mut out = Vec::with_capacity(shards.len());
        for (s, resolved) in shards.iter().zip(resolved) {
            out.push(
                self.open_one(&txn, &s.plan, &s.shard, &resolved, now)
                    .await
                    .map_err(err)?,
            );
        }
        txn.commit().await.map_err(err)?;
        Ok(out)
    }

    async fn write_results(&self, results: &[DeliveryResult]) -> StoreResult<()> {
        type Key<'a> = (i16, &'a str, &'a str, Option<&'a str>, Option<&'a str>, u32);
        let mut groups: HashMap<Key<'_>, Vec<i64>> = HashMap::new();
        for r in results {
            let key = (
                r.status as i16,
                r.class.as_str(),
                r.code.as_str(),
                r.provider_id.as_deref(),
                r.error.as_deref(),
                r.attempts,
            );
            groups.entry(key).or_default().push(r.delivery_id);
        }
        let now = now_ms();
        let txn = self.db.write().begin().await.map_err(err)?;
        for ((status, class, code, provider_id, error, attempts), ids) in groups {
            for chunk in ids.chunks(900) {
                let mut values: Vec<Value> = vec![
                    status.into(),
                    class.into(),
                    code.into(),
                    provider_id.map(str::to_string).into(),
                    error.map(str::to_string).into(),
                    i32::try_from(attempts).unwrap_or(i32::MAX).into(),
                    now.into(),
                ];
                values.extend(chunk.iter().map(|id| Value::from(*id)));
                let sql = format!(
                    "UPDATE deliveries SET status = ?, outcome = ?, code = ?, provider_id = ?, error = ?, attempts = ?, \
                     updated_at = ? WHERE id IN ({})",
                    in_list(chunk.len())
                );
                txn.execute_raw(self.db.stmt(&sql, values))
                    .await
                    .map_err(err)?;
            }
        }
        txn.commit().await.map_err(err)
    }

    async fn finish(&self, shards: &[(i64, i32)], messages: &[i64]) -> StoreResult<()> {
        let now = now_ms();
        let txn = self.db.write().begin().await.map_err(err)?;
        for (msgid, seq) in shards {
            let stmt = self.db.stmt(
                "UPDATE shards SET state = 'done', updated_at = ? WHERE message_id = ? AND seq = ?",
                vec![now.into(), (*msgid).into(), (*seq).into()],
            );
            txn.execute_raw(stmt).await.map_err(err)?;
        }
        for chunk in messages.chunks(500) {
            let mut values: Vec<Value> = vec![now.into()];
            values.extend(chunk.iter().map(|m| Value::from(*m)));
            let sql = format!(
                "UPDATE messages SET state = 'done', updated_at = ? WHERE id IN ({})",
                in_list(chunk.len())
            );
            txn.execute_raw(self.db.stmt(&sql, values))
                .await
                .map_err(err)?;
        }
        txn.commit().await.map_err(err)
    }

    async fn channel(&self, channel_id: i64) -> StoreResult<Option<ChannelSpec>> {
        self.db
            .channel_spec(&self.crypto, channel_id)
            .await
            .map_err(err)
    }
}
