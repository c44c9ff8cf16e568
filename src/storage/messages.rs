//! Messages: durable acceptance in group-committed batches, and the status reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use msghub_actors::plan::{ChannelBatch, DeliveryStatus, MessagePlan, OpenShard, Shard};
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait, Value};
use serde::Serialize;

use super::dispatch::{Resolved, Store};
use super::{Db, now_ms, value_rows};

/// A validated send request ready to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub plan: MessagePlan,
    pub kind: &'static str,
    pub priority: i16,
    pub sendno: Option<String>,
    pub idempotency_key: Option<String>,
    /// The JSON body answered for this message, replayed for a repeated idempotency key.
    pub response: String,
    /// A scheduled send (`option.send_at`, unix ms): stored as `scheduled`, not dispatched
    /// before then.
    pub not_before: Option<i64>,
}

impl NewMessage {
    /// Opened in its acceptance transaction when there is room (see
    /// [`MessagePlan::opens_at_acceptance`]); a scheduled one waits for its time.
    pub fn opens_at_acceptance(&self) -> bool {
        self.not_before.is_none() && self.plan.opens_at_acceptance()
    }
}

/// What storing a batch did: an answer per message, and the messages opened in the same
/// transaction, with their deliveries per channel, for the caller to send.
#[derive(Debug, Default)]
pub struct AcceptedBatch {
    pub answers: Vec<Accepted>,
    pub opened: Vec<(MessagePlan, Vec<ChannelBatch>)>,
}

#[derive(Debug, Clone)]
pub enum Accepted {
    /// Newly stored; the shards were created in the same transaction (a simple message's one
    /// shard has no row and is given here as implied).
    Stored {
        plan: Box<MessagePlan>,
        shards: Vec<Shard>,
    },
    /// Newly stored and opened in the same transaction; the accept writer sends it (it is in
    /// [`AcceptedBatch::opened`]).
    Opened,
    /// The idempotency key was seen before: answer what was answered then, send nothing.
    Replayed { response: String },
    /// Stored in the intake journal (SQLite); the mover stores and dispatches it.
    Journaled,
}

/// Message ids: milliseconds since the epoch shifted left 20 bits, plus a sequence, so ids are
/// unique, increasing, and say when a message was accepted. Seeded from the largest stored id
/// so a clock that steps back after a restart cannot reuse an id.
pub struct MessageIds {
    last: AtomicI64,
}

impl MessageIds {
    pub fn new(floor: i64) -> MessageIds {
        MessageIds {
            last: AtomicI64::new(floor),
        }
    }

    pub fn next(&self) -> i64 {
        let candidate = now_ms() << msghub_actors::plan::MSGID_TIME_SHIFT;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

const MESSAGE_COLUMNS: usize = 16;

impl Db {
    pub async fn max_message_id(&self) -> Result<i64, DbErr> {
        let r = self
            .query_one("SELECT MAX(id) AS m FROM messages", vec![])
            .await?;
        Ok(
            r.and_then(|r| r.try_get::<Option<i64>>("", "m").ok().flatten())
                .unwrap_or(0),
        )
    }
}

impl Store {
    /// Store a batch of messages in one transaction. With `open`, simple real-time messages
    /// that are not scheduled are opened in it too: their users' bindings are read first
    /// (outside the transaction) and their deliveries inserted with the messages, so the
    /// caller can hand them to their channels at once. `check_keys: false` skips the
    /// idempotency lookups, for messages whose keys the intake journal checked.
    pub async fn accept_messages(
        &self,
        items: Vec<NewMessage>,
        open: bool,
        check_keys: bool,
    ) -> Result<AcceptedBatch, DbErr> {
        // Which items to open (by index), and their shards, resolved before the transaction.
        let opening: Vec<usize> = (0..items.len())
            .filter(|&i| open && items[i].opens_at_acceptance())
            .collect();
        let shards: Vec<OpenShard> = opening
            .iter()
            .map(|&i| OpenShard {
                plan: Arc::new(items[i].plan.clone()),
                shard: Shard::implied(items[i].plan.msgid),
                fresh: true,
            })
            .collect();
        let resolved = self.resolve_all(&shards).await?;
        let db = &self.db;
        // A caller waits for this commit: bulk writers let it go first.
        let _urgent = db.urgent_write();
        let txn = db.write().begin().await?;
        let mut out: Vec<Option<Accepted>> = vec![None; items.len()];
        let mut first_of_key: HashMap<(i64, String), usize> = HashMap::new();
        let mut fresh: Vec<usize> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(key) = item.idempotency_key.as_ref().filter(|_| check_keys) {
                let k = (item.plan.source_id, key.clone());
                if let Some(&first) = first_of_key.get(&k) {
                    out[i] = Some(Accepted::Replayed {
                        response: items[first].response.clone(),
                    });
                    continue;
                }
                let stmt = db.stmt(
                    "SELECT response FROM messages WHERE source_id = ? AND idempotency_key = ?",
                    vec![item.plan.source_id.into(), key.clone().into()],
                );
                if let Some(row) = txn.query_one_raw(stmt).await? {
                    out[i] = Some(Accepted::Replayed {
                        response: row.try_get("", "response")?,
                    });
                    continue;
                }
                first_of_key.insert(k, i);
            }
            fresh.push(i);
        }
        let now = now_ms();
        let mut shard_rows: Vec<[Value; 5]> = Vec::new();
        for chunk in db.chunks(&fresh, 512) {
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * MESSAGE_COLUMNS);
            for &i in chunk {
                let m = &items[i];
                let single = m.plan.is_single_shard();
                // A simple message's one shard is implied, not stored.
                let shard_row = single && !m.plan.is_simple();
                let plan_json =
                    serde_json::to_string(&m.plan).map_err(|e| DbErr::Custom(e.to_string()))?;
                values.extend([
                    m.plan.msgid.into(),
                    m.plan.source_id.into(),
                    m.kind.into(),
                    m.priority.into(),
                    m.plan.lane.as_str().into(),
                    if m.not_before.is_some() {
                        "scheduled"
                    } else {
                        "accepted"
                    }
                    .into(),
                    plan_json.into(),
                    m.sendno.clone().into(),
                    m.idempotency_key.clone().into(),
                    m.response.clone().into(),
                    single.into(),
                    Value::from(None::<String>),
                    i32::from(single).into(),
                    now.into(),
                    now.into(),
                    m.not_before.into(),
                ]);
                if shard_row {
                    shard_rows.push([
                        m.plan.msgid.into(),
                        0i32.into(),
                        LISTED_SPEC.into(),
                        "pending".into(),
                        now.into(),
                    ]);
                }
            }
            let sql = format!(
                "INSERT INTO messages (id, source_id, kind, priority, lane, state, plan, sendno, idempotency_key, \
                 response, planned, plan_cursor, shard_count, created_at, updated_at, not_before) VALUES {}",
                value_rows(chunk.len(), MESSAGE_COLUMNS)
            );
            txn.execute_raw(db.stmt(&sql, values)).await?;
        }
        for chunk in db.chunks(&shard_rows, 512) {
            let sql = format!(
                "INSERT INTO shards (message_id, seq, spec, state, updated_at) VALUES {}",
                value_rows(chunk.len(), 5)
            );
            txn.execute_raw(db.stmt(&sql, chunk.concat())).await?;
        }
        // Open the simple real-time ones that were stored (not replayed); `batches[i]` gets
        // item `i`'s deliveries.
        let stored: HashSet<usize> = fresh.iter().copied().collect();
        let to_open: Vec<(usize, &OpenShard, &[Resolved])> = opening
            .iter()
            .zip(shards.iter().zip(&resolved))
            .filter(|(i, _)| stored.contains(i))
            .map(|(&i, (open, resolved))| (i, open, resolved.as_slice()))
            .collect();
        let mut batches = vec![Vec::new(); items.len()];
        self.open_simple(&txn, &to_open, now, &mut batches).await?;
        txn.commit().await?;
        let mut opened = Vec::with_capacity(to_open.len());
        for (i, open, resolved) in &to_open {
            let plan = &items[*i].plan;
            // Known before its first outcome, so none of them looks its route up.
            self.callbacks.remember(plan);
            self.report_targets(open, resolved, &batches[*i], now);
            opened.push((plan.clone(), std::mem::take(&mut batches[*i])));
            out[*i] = Some(Accepted::Opened);
        }
        for i in fresh {
            if out[i].is_some() {
                continue;
            }
            let plan = items[i].plan.clone();
            let shards = if plan.is_single_shard() {
                vec![Shard::implied(plan.msgid)]
            } else {
                Vec::new()
            };
            out[i] = Some(Accepted::Stored {
                plan: Box::new(plan),
                shards,
            });
        }
        let answers = out
            .into_iter()
            .map(|a| a.ok_or_else(|| DbErr::Custom("accept: item without outcome".into())))
            .collect::<Result<_, _>>()?;
        Ok(AcceptedBatch { answers, opened })
    }
}

impl Db {
    pub async fn message_status(&self, msgid: i64) -> Result<Option<MessageStatus>, DbErr> {
        let Some(r) = self
            .query_one(
                "SELECT id, source_id, kind, priority, lane, state, sendno, planned, shard_count, created_at, updated_at, \
                 not_before FROM messages WHERE id = ?",
                vec![msgid.into()],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut status = MessageStatus {
            msgid: r.try_get::<i64>("", "id")?.to_string(),
            source_id: r.try_get("", "source_id")?,
            kind: r.try_get("", "kind")?,
            priority: r.try_get("", "priority")?,
            lane: r.try_get("", "lane")?,
            state: r.try_get("", "state")?,
            sendno: r.try_get("", "sendno")?,
            planned: r.try_get("", "planned")?,
            shards: r.try_get("", "shard_count")?,
            created_at: r.try_get("", "created_at")?,
            updated_at: r.try_get("", "updated_at")?,
            not_before: r.try_get("", "not_before")?,
            counts_at: 0,
            channels: Vec::new(),
            steps: Vec::new(),
        };
        let (counts_at, rows) = self.delivery_counts(msgid, &status.state).await?;
        status.counts_at = counts_at;
        for (channel_id, channel_type, st, step, n) in rows {
            let entry = match status
                .channels
                .iter_mut()
                .position(|c| c.channel_id == channel_id)
            {
                Some(i) => &mut status.channels[i],
                None => {
                    status.channels.push(ChannelCounts {
                        channel_id,
                        channel_type: channel_type.clone(),
                        ..ChannelCounts::default()
                    });
                    let last = status.channels.len() - 1;
                    &mut status.channels[last]
                }
            };
            entry.add(st, n);
            let step_entry = match status.steps.iter_mut().position(|c| c.step == step) {
                Some(i) => &mut status.steps[i],
                None => {
                    status.steps.push(StepCounts {
                        step,
                        counts: ChannelCounts {
                            channel_id,
                            channel_type,
                            ..ChannelCounts::default()
                        },
                    });
                    let last = status.steps.len() - 1;
                    &mut status.steps[last]
                }
            };
            step_entry.counts.add(st, n);
        }
        status.steps.sort_by_key(|s| s.step);
        if status.steps.len() <= 1 && status.steps.iter().all(|s| s.step == 0) {
            // Concurrent messages have one step; the channel counts say it all.
            status.steps.clear();
        }
        Ok(Some(status))
    }

    /// A message's delivery counts by (channel, type, status, step), and when they were
    /// counted. Counting reads every delivery of the message, so for large messages a count
    /// is reused while the message's state is unchanged, for ten times as long as it took
    /// (at least a second): a console polling a 10M-user broadcast costs a reader at most a
    /// tenth of its time. Messages under [`COUNTS_CACHED_FROM`] deliveries are always
    /// counted afresh.
    async fn delivery_counts(
        &self,
        msgid: i64,
        state: &str,
    ) -> Result<(i64, Vec<CountRow>), DbErr> {
        let now = now_ms();
        if let Ok(cache) = self.counts.lock()
            && let Some(c) = cache.get(&msgid)
            && c.state == state
            && now < c.fresh_until
        {
            return Ok((c.counted_at, c.rows.clone()));
        }
        let started = std::time::Instant::now();
        let rows = self
            .query_all(
                "SELECT channel_id, channel_type, step, status, COUNT(*) AS n FROM deliveries WHERE message_id = ? \
                 GROUP BY channel_id, channel_type, step, status ORDER BY channel_id, step",
                vec![msgid.into()],
            )
            .await?;
        let rows: Vec<CountRow> = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("", "channel_id")?,
                    row.try_get("", "channel_type")?,
                    row.try_get("", "status")?,
                    row.try_get("", "step")?,
                    row.try_get("", "n")?,
                ))
            })
            .collect::<Result<_, DbErr>>()?;
        let total: i64 = rows.iter().map(|r| r.4).sum();
        if total >= COUNTS_CACHED_FROM
            && let Ok(mut cache) = self.counts.lock()
        {
            if cache.len() >= 256 {
                cache.retain(|_, c| c.fresh_until > now);
            }
            let took = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX / 20);
            cache.insert(
                msgid,
                CachedCounts {
                    state: state.to_string(),
                    counted_at: now,
                    fresh_until: now + (10 * took).max(1000),
                    rows: rows.clone(),
                },
            );
        }
        Ok((now, rows))
    }

    pub async fn message_source(&self, msgid: i64) -> Result<Option<i64>, DbErr> {
        let r = self
            .query_one(
                "SELECT source_id FROM messages WHERE id = ?",
                vec![msgid.into()],
            )
            .await?;
        r.map(|r| r.try_get("", "source_id")).transpose()
    }

    pub async fn deliveries(
        &self,
        msgid: i64,
        userid: Option<&str>,
        after_id: i64,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>, DbErr> {
        let mut values: Vec<Value> = vec![msgid.into(), after_id.into()];
        let mut sql = "SELECT id, channel_id, channel_type, userid, address, step, status, attempts, outcome, code, \
                       provider_id, error, updated_at FROM deliveries WHERE message_id = ? AND id > ?"
            .to_string();
        if let Some(u) = userid {
            sql.push_str(" AND userid = ?");
            values.push(u.into());
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let rows = self.query_all(&sql, values).await?;
        rows.iter()
            .map(|r| {
                let status: i16 = r.try_get("", "status")?;
                Ok(DeliveryRow {
                    id: r.try_get("", "id")?,
                    channel_id: r.try_get("", "channel_id")?,
                    channel_type: r.try_get("", "channel_type")?,
                    userid: r.try_get("", "userid")?,
                    address: r.try_get("", "address")?,
                    step: r.try_get("", "step")?,
                    status: msghub_actors::plan::DeliveryStatus::from_i16(status)
                        .map(|s| s.as_str())
                        .unwrap_or("unknown"),
                    attempts: r.try_get("", "attempts")?,
                    outcome: r.try_get("", "outcome")?,
                    code: r.try_get("", "code")?,
                    provider_id: r.try_get("", "provider_id")?,
                    error: r.try_get("", "error")?,
                    updated_at: r.try_get("", "updated_at")?,
                })
            })
            .collect()
    }
}

pub(crate) const LISTED_SPEC: &str = "\"listed\"";

#[derive(Debug, Clone, Serialize)]
pub struct MessageStatus {
    pub msgid: String,
    pub source_id: i64,
    pub kind: String,
    pub priority: i16,
    pub lane: String,
    pub state: String,
    pub sendno: Option<String>,
    pub planned: bool,
    pub shards: i32,
    pub created_at: i64,
    pub updated_at: i64,
    /// Not sent before this time (unix ms): the send time of a scheduled message, or the end of
    /// the quiet hours a low-priority one waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// When the counts below were taken (unix ms): large messages are counted at most about
    /// once a second while their state is unchanged.
    pub counts_at: i64,
    pub channels: Vec<ChannelCounts>,
    /// Fallback chains: the counts of each step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepCounts>,
}

/// (channel id, channel type, status, step, deliveries)
type CountRow = (i64, String, i16, i16, i64);

/// Messages with at least this many deliveries have their counts reused for a while.
pub const COUNTS_CACHED_FROM: i64 = 10_000;

/// A large message's counts, reused while its state is unchanged and they are fresh.
pub struct CachedCounts {
    state: String,
    counted_at: i64,
    fresh_until: i64,
    rows: Vec<CountRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepCounts {
    pub step: i16,
    #[serde(flatten)]
    pub counts: ChannelCounts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelCounts {
    pub channel_id: i64,
    pub channel_type: String,
    pub target: i64,
    pub queued: i64,
    /// Accepted by the provider (receipts may have followed).
    pub sent: i64,
    /// Refused by the provider, or given up.
    pub failed: i64,
    /// Receipts said it arrived (clicked ones included).
    pub delivered: i64,
    pub clicked: i64,
    /// Receipts said it did not arrive.
    pub undelivered: i64,
    /// Stopped by a retract before it was sent, or recalled from the provider after.
    pub retracted: i64,
    /// Left out by an audience filter (blacklist, whitelist, dedup, frequency cap): never sent.
    pub skipped: i64,
}

impl ChannelCounts {
    fn add(&mut self, status: i16, n: i64) {
        self.target += n;
        match DeliveryStatus::from_i16(status) {
            Some(DeliveryStatus::Queued) | None => self.queued += n,
            Some(DeliveryStatus::Failed) => self.failed += n,
            Some(DeliveryStatus::Submitted) => self.sent += n,
            Some(DeliveryStatus::Delivered) => {
                self.sent += n;
                self.delivered += n;
            }
            Some(DeliveryStatus::Clicked) => {
                self.sent += n;
                self.delivered += n;
                self.clicked += n;
            }
            Some(DeliveryStatus::Undelivered) => {
                self.sent += n;
                self.undelivered += n;
            }
            Some(DeliveryStatus::Skipped) => self.skipped += n,
            Some(DeliveryStatus::Retracted) => self.retracted += n,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub channel_id: i64,
    pub channel_type: String,
    pub userid: Option<String>,
    pub address: String,
    pub step: i16,
    pub status: &'static str,
    pub attempts: i32,
    pub outcome: Option<String>,
    pub code: Option<String>,
    pub provider_id: Option<String>,
    pub error: Option<String>,
    pub updated_at: i64,
}
