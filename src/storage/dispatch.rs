//! The dispatch topology's storage port ([`DispatchStore`]) on SQLite and Postgres.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

    /// Every binding of the given users, in as few queries as the parameter limits allow: a
    /// burst of one-user messages is resolved with one query, not one per message.
    async fn bindings_of(
        &self,
        userids: &BTreeSet<&str>,
    ) -> Result<HashMap<String, Vec<(String, String)>>, DbErr> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let ids: Vec<&str> = userids.iter().copied().collect();
        for chunk in ids.chunks(2000) {
            let sql = format!(
                "SELECT userid, channel_type, address FROM bindings WHERE userid IN ({}) ORDER BY userid, channel_type, address",
                in_list(chunk.len())
            );
            let values = chunk.iter().map(|u| Value::from(*u)).collect();
            for r in self.db.query_all(&sql, values).await? {
                out.entry(r.try_get("", "userid")?)
                    .or_default()
                    .push((r.try_get("", "channel_type")?, r.try_get("", "address")?));
            }
        }
        Ok(out)
    }

    /// The deliveries a shard needs, from its plan and the bindings fetched in bulk.
    async fn resolve_all(&self, shards: &[OpenShard]) -> Result<Vec<Vec<Resolved>>, DbErr> {
        let mut listed: BTreeSet<&str> = BTreeSet::new();
        for s in shards {
            if let (ShardSpec::Listed, Audience::Userids(ids)) = (&s.shard.spec, &s.plan.audience) {
                listed.extend(ids.iter().map(String::as_str));
            }
        }
        let bindings = if listed.is_empty() {
            HashMap::new()
        } else {
            self.bindings_of(&listed).await?
        };
        let mut out = Vec::with_capacity(shards.len());
        for s in shards {
            let resolved = match (&s.shard.spec, &s.plan.audience) {
                (ShardSpec::Listed, Audience::Userids(ids)) => {
                    let types: Vec<&str> = s
                        .plan
                        .channels
                        .iter()
                        .map(|c| c.channel_type.code())
                        .collect();
                    ids.iter()
                        .flat_map(|u| {
                            bindings
                                .get(u)
                                .into_iter()
                                .flatten()
                                .filter(|(t, _)| types.contains(&t.as_str()))
                                .map(move |(t, a)| Resolved {
                                    userid: Some(u.clone()),
                                    channel_type: t.clone(),
                                    address: a.clone(),
                                })
                        })
                        .collect()
                }
                _ => self.resolve(&s.plan, &s.shard).await?,
            };
            out.push(resolved);
        }
        Ok(out)
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
            (ShardSpec::Range { after, last }, _) => Store::range_filter(plan, after, last),
            (ShardSpec::Listed, _) => {
                return Err(DbErr::Custom(
                    "listed shards of userids are resolved in bulk".into(),
                ));
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

    /// Insert one shard's deliveries (once per address) and return those still queued: for a
    /// fresh shard exactly the rows it inserted, otherwise read back (after a restart some may
    /// have been sent already).
    async fn open_one<C: ConnectionTrait>(
        &self,
        txn: &C,
        open: &OpenShard,
        resolved: &[Resolved],
        now: i64,
    ) -> Result<Vec<ChannelBatch>, DbErr> {
        let (plan, shard) = (&open.plan, &open.shard);
        let mut rows = Vec::new();
        let channel_of: HashMap<&str, i64> = plan
            .channels
            .iter()
            .map(|c| (c.channel_type.code(), c.channel_id))
            .collect();
        for chunk in resolved.chunks(1000) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 11);
            let mut n = 0;
            for r in chunk {
                let Some(&channel_id) = channel_of.get(r.channel_type.as_str()) else {
                    continue;
                };
                n += 1;
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
            if n == 0 {
                continue;
            }
            let sql = format!(
                "INSERT INTO deliveries (message_id, shard_seq, channel_id, channel_type, userid, address, step, \
                 status, attempts, updated_at) VALUES {} ON CONFLICT (message_id, channel_id, address) DO NOTHING{}",
                value_rows(n, 10),
                if open.fresh {
                    " RETURNING id, channel_id, userid, address"
                } else {
                    ""
                }
            );
            if open.fresh {
                rows.extend(txn.query_all_raw(self.db.stmt(&sql, values)).await?);
            } else {
                txn.execute_raw(self.db.stmt(&sql, values)).await?;
            }
        }
        if !open.fresh {
            let stmt = self.db.stmt(
                "SELECT id, channel_id, userid, address FROM deliveries WHERE message_id = ? AND shard_seq = ? \
                 AND status = 0 ORDER BY id",
                vec![plan.msgid.into(), shard.seq.into()],
            );
            rows = txn.query_all_raw(stmt).await?;
        }
        let mut by_channel: BTreeMap<i64, Vec<Target>> = BTreeMap::new();
        for r in rows {
            let channel_id: i64 = r.try_get("", "channel_id")?;
            by_channel.entry(channel_id).or_default().push(Target {
                delivery_id: r.try_get("", "id")?,
                address: r.try_get("", "address")?,
                userid: r.try_get("", "userid")?,
            });
        }
        // Ordered by id whichever way they were read, so a batch re-sent after a restart has
        // the same members (and the same provider idempotency key) as the first time.
        for targets in by_channel.values_mut() {
            targets.sort_by_key(|t| t.delivery_id);
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
                "SELECT plan FROM messages WHERE state = 'accepted' AND id > ? ORDER BY id LIMIT ?",
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
        let resolved = self.resolve_all(shards).await.map_err(err)?;
        let now = now_ms();
        let txn = self.db.write().begin().await.map_err(err)?;
        let mut out = Vec::with_capacity(shards.len());
        for (s, resolved) in shards.iter().zip(resolved) {
            out.push(self.open_one(&txn, s, &resolved, now).await.map_err(err)?);
        }
        txn.commit().await.map_err(err)?;
        Ok(out)
    }

    async fn write_results(&self, results: &[DeliveryResult]) -> StoreResult<()> {
        let now = now_ms();
        let txn = self.db.write().begin().await.map_err(err)?;
        // One statement per 500 outcomes: `UPDATE … FROM (VALUES …)` works on SQLite ≥ 3.33 and
        // Postgres alike, and VALUES columns are called column1… on both.
        for chunk in results.chunks(500) {
            let mut values: Vec<Value> = Vec::with_capacity(1 + chunk.len() * 7);
            values.push(now.into());
            for r in chunk {
                values.extend([
                    r.delivery_id.into(),
                    (r.status as i16).into(),
                    r.class.as_str().into(),
                    r.code.clone().into(),
                    r.provider_id.clone().into(),
                    r.error.clone().into(),
                    i32::try_from(r.attempts).unwrap_or(i32::MAX).into(),
                ]);
            }
            let sql = format!(
                "UPDATE deliveries SET updated_at = ?, status = v.column2, outcome = v.column3, code = v.column4, \
                 provider_id = v.column5, error = v.column6, attempts = v.column7 \
                 FROM (VALUES {}) AS v WHERE deliveries.id = v.column1",
                value_rows(chunk.len(), 7)
            );
            txn.execute_raw(self.db.stmt(&sql, values))
                .await
                .map_err(err)?;
        }
        txn.commit().await.map_err(err)
    }

    async fn finish(&self, shards: &[(i64, i32)], messages: &[i64]) -> StoreResult<()> {
        let now = now_ms();
        let txn = self.db.write().begin().await.map_err(err)?;
        for chunk in shards.chunks(500) {
            let mut values: Vec<Value> = Vec::with_capacity(1 + chunk.len() * 2);
            values.push(now.into());
            for (msgid, seq) in chunk {
                values.extend([Value::from(*msgid), Value::from(*seq)]);
            }
            let sql = format!(
                "UPDATE shards SET state = 'done', updated_at = ? FROM (VALUES {}) AS v \
                 WHERE shards.message_id = v.column1 AND shards.seq = v.column2",
                value_rows(chunk.len(), 2)
            );
            txn.execute_raw(self.db.stmt(&sql, values))
                .await
                .map_err(err)?;
        }
        for chunk in messages.chunks(500) {
            let mut values: Vec<Value> = vec![now.into()];
            values.extend(chunk.iter().map(|m| Value::from(*m)));
            // Never done while a shard is pending (a page of shards whose creation was
            // committed but not reported stays visible to the next sweep).
            let sql = format!(
                "UPDATE messages SET state = 'done', updated_at = ? WHERE id IN ({}) AND NOT EXISTS \
                 (SELECT 1 FROM shards s WHERE s.message_id = messages.id AND s.state = 'pending')",
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
