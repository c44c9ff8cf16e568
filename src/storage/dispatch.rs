//! The dispatch topology's storage port ([`DispatchStore`]) on SQLite and Postgres.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use msghub_actors::direct::Claims;
use msghub_actors::filters::SkipReason;
use msghub_actors::plan::{
    Audience, ChannelBatch, DeliveryResult, DeliveryStatus, Lane, MessagePlan, OpenShard, Shard,
    ShardSpec,
};
use msghub_actors::provider::{ChannelType, OutcomeClass, Target};
use msghub_actors::store::{
    ChannelSpec, DispatchStore, Fired, PlannedPage, StoreError, StoreResult, SweptPage, TimerKey,
};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, QueryResult, TransactionTrait, Value};

use super::crypto::Crypto;
use super::suppressions::{
    SUPPRESSED, SuppressReason, Suppressed, count_added, opted_out, suppress_deliveries,
};
use super::{Db, PackedRow, in_list, now_ms, repeat_last_row, value_rows};
use crate::callbacks::{CallbackEvent, CallbackKind};

/// [`Db`] with the key that opens channel credentials.
#[derive(Clone)]
pub struct Store {
    pub db: Db,
    pub crypto: Crypto,
    /// Told about every stored outcome (status callbacks 2 and 3); never blocks.
    pub callbacks: crate::callbacks::Callbacks,
    /// Fallback firings' reads done ahead of their deadline.
    read_ahead: std::sync::Arc<ReadAhead>,
    /// How long after its acceptance a send whose receipts are pulled is first asked about
    /// (`providers.receipt_pull_first_ms`).
    pub pull_first_ms: i64,
}

impl Store {
    pub fn new(db: Db, crypto: Crypto, callbacks: crate::callbacks::Callbacks) -> Store {
        Store {
            db,
            crypto,
            callbacks,
            read_ahead: std::sync::Arc::default(),
            pull_first_ms: 5_000,
        }
    }
}

fn err(e: DbErr) -> StoreError {
    StoreError(e.to_string())
}

fn parse_plan(r: &QueryResult) -> Result<MessagePlan, DbErr> {
    let text: String = r.try_get("", "plan")?;
    serde_json::from_str(&text).map_err(|e| DbErr::Custom(format!("stored plan: {e}")))
}

/// A `shards` row (seq, spec, generation) of message `msgid`.
fn parse_shard(r: &QueryResult, msgid: i64) -> Result<Shard, DbErr> {
    let spec: String = r.try_get("", "spec")?;
    Ok(Shard {
        msgid,
        seq: r.try_get("", "seq")?,
        spec: parse_spec(&spec)?,
        generation: r.try_get("", "generation")?,
    })
}

/// The pending shards of an unfinished message: a simple message's one shard has no row.
fn implied_if_none(plan: &MessagePlan, shards: Vec<Shard>) -> Vec<Shard> {
    if shards.is_empty() && plan.is_simple() {
        vec![Shard::implied(plan.msgid)]
    } else {
        shards
    }
}

fn parse_spec(text: &str) -> Result<ShardSpec, DbErr> {
    serde_json::from_str(text).map_err(|e| DbErr::Custom(format!("stored shard: {e}")))
}

/// A paced message is cut into at most this many shards ...
pub const MAX_PACED_SHARDS: u64 = 10_000;
/// ... and at most this many per second of its spread.
pub const PACED_SHARDS_PER_SECOND: u64 = 10;

/// Statuses only receipts set; the outcome writer never overwrites them (a receipt can arrive
/// before the provider call's outcome is recorded).
pub const STICKY_STATUSES: &str = "3, 4, 5";

mod fallback;
mod filters;

use fallback::ReadAhead;

/// A queued delivery as opening a shard reads it: inserted, or left from before a restart.
pub(super) struct Opened {
    msgid: i64,
    seq: i32,
    id: i64,
    channel_id: i64,
    userid: Option<String>,
    address: String,
}

/// Inserts of this many rows or more are read back packed on SQLite (see
/// [`Store::insert_rows`]); below it, the two extra statements cost more than the rows'
/// hand-offs they save.
const PACK_FROM_ROWS: usize = 32;

/// The columns of [`Opened`], in the order [`Opened::of`] reads them.
const OPENED_COLUMNS: [&str; 6] = [
    "message_id",
    "shard_seq",
    "id",
    "channel_id",
    "userid",
    "address",
];

impl Opened {
    fn of(r: &PackedRow) -> Result<Opened, DbErr> {
        Ok(Opened {
            msgid: r.i64(0)?,
            seq: i32::try_from(r.i64(1)?)
                .map_err(|_| DbErr::Custom("shard_seq out of range".into()))?,
            id: r.i64(2)?,
            channel_id: r.i64(3)?,
            userid: r.opt_string(4)?,
            address: r.string(5)?,
        })
    }

    fn of_row(r: &QueryResult) -> Result<Opened, DbErr> {
        Ok(Opened {
            msgid: r.try_get("", "message_id")?,
            seq: r.try_get("", "shard_seq")?,
            id: r.try_get("", "id")?,
            channel_id: r.try_get("", "channel_id")?,
            userid: r.try_get("", "userid")?,
            address: r.try_get("", "address")?,
        })
    }

    fn target(self) -> Target {
        Target {
            delivery_id: self.id,
            address: self.address,
            userid: self.userid,
        }
    }
}

/// One resolved (user, channel type, address) of a shard.
#[derive(Clone)]
pub(super) struct Resolved {
    userid: Option<String>,
    channel_type: String,
    address: String,
    /// The address is suppressed: the target gets a skipped delivery (code `suppressed`).
    suppressed: bool,
}

/// A user's binding as the dispatch reads it: (channel type, address, its suppression).
pub(super) type Binding = (String, String, Suppressed);

/// A delivery row to insert: a resolved target of a shard, on a step, on the message's channel
/// of its type.
struct NewDelivery<'a> {
    msgid: i64,
    seq: i32,
    channel_id: i64,
    resolved: &'a Resolved,
    step: i16,
}

impl<'a> NewDelivery<'a> {
    /// `None` when the message has no channel of the target's type.
    fn of(plan: &MessagePlan, seq: i32, resolved: &'a Resolved, step: i16) -> Option<Self> {
        let channel = plan
            .channels
            .iter()
            .find(|c| c.channel_type.code() == resolved.channel_type)?;
        Some(NewDelivery {
            msgid: plan.msgid,
            seq,
            channel_id: channel.channel_id,
            resolved,
            step,
        })
    }
}

/// Make the fallback timers of these deliveries' steps due now (a permanent failure, or a
/// receipt saying "not delivered", moves the user on without waiting). Persisted, so it holds
/// across a restart.
pub async fn bring_timers_forward<C: ConnectionTrait>(
    db: &super::Db,
    txn: &C,
    delivery_ids: &[i64],
    now: i64,
) -> Result<(), DbErr> {
    for chunk in delivery_ids.chunks(500) {
        let mut values: Vec<Value> = vec![now.into(), now.into()];
        values.extend(chunk.iter().map(|id| Value::from(*id)));
        let sql = format!(
            "UPDATE fallback_timers SET due_at = ? WHERE due_at > ? AND EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.id IN ({}) AND d.message_id = fallback_timers.message_id \
             AND d.shard_seq = fallback_timers.shard_seq AND d.step = fallback_timers.step)",
            in_list(chunk.len())
        );
        txn.execute_raw(db.stmt(&sql, values)).await?;
    }
    Ok(())
}

/// Status callback item 0: a delivery was created for this target.
fn target_valid(
    channel_type: ChannelType,
    userid: Option<String>,
    address: String,
    now: i64,
) -> CallbackEvent {
    CallbackEvent {
        kind: CallbackKind::TargetValid,
        userid,
        channel_type,
        address,
        error: None,
        at_ms: now,
    }
}

/// Status callback items for a shard just opened: 0 (target valid) for every delivery it got,
/// and, for a listed audience, 1 (target invalid) for every user with no address on one of the
/// message's channel types (`no_address`), or only suppressed ones there (`suppressed`);
/// `resolved` holds every address found, on every type.
fn target_events(
    plan: &MessagePlan,
    users: Option<&[String]>,
    resolved: &[Resolved],
    batches: &[ChannelBatch],
    now: i64,
) -> Vec<CallbackEvent> {
    let mut events = Vec::new();
    for b in batches {
        let Some(channel) = plan.channels.iter().find(|c| c.channel_id == b.channel_id) else {
            continue;
        };
        events.extend(b.targets.iter().map(|t| {
            target_valid(
                channel.channel_type,
                t.userid.clone(),
                t.address.clone(),
                now,
            )
        }));
    }
    let Some(users) = users else {
        return events;
    };
    let found: HashSet<(&str, &str)> = resolved
        .iter()
        .filter(|r| !r.suppressed)
        .filter_map(user_and_type)
        .collect();
    let suppressed: HashSet<(&str, &str)> = resolved
        .iter()
        .filter(|r| r.suppressed)
        .filter_map(user_and_type)
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    for user in users.iter().filter(|u| seen.insert(u.as_str())) {
        for c in &plan.channels {
            let t = c.channel_type.code();
            if !found.contains(&(user.as_str(), t)) {
                let error = if suppressed.contains(&(user.as_str(), t)) {
                    (
                        "suppressed",
                        format!("the user's {t} address is suppressed"),
                    )
                } else {
                    ("no_address", format!("the user has no {t} address bound"))
                };
                events.push(CallbackEvent {
                    kind: CallbackKind::TargetInvalid,
                    userid: Some(user.clone()),
                    channel_type: c.channel_type,
                    address: String::new(),
                    error: Some((error.0.into(), error.1)),
                    at_ms: now,
                });
            }
        }
    }
    events
}

fn user_and_type(r: &Resolved) -> Option<(&str, &str)> {
    Some((r.userid.as_deref()?, r.channel_type.as_str()))
}

/// The userids a shard of a listed audience covers (all of them, or a paced slice).
fn listed_users(s: &OpenShard) -> Option<&[String]> {
    let Audience::Userids(ids) = &s.plan.audience else {
        return None;
    };
    match s.shard.spec {
        ShardSpec::Listed => Some(ids),
        ShardSpec::Slice { from, to, .. } => {
            let to = (to as usize).min(ids.len());
            Some(&ids[(from as usize).min(to)..to])
        }
        ShardSpec::Range { .. } => None,
    }
}

/// The deliveries that open a shard: everything for a concurrent message; for a fallback
/// chain, each user's addresses on the first step they have an address for (a user without
/// one on step 0 starts at once on the next step).
fn first_steps<'a>(plan: &MessagePlan, resolved: &'a [Resolved]) -> Vec<(&'a Resolved, i16)> {
    let steps = plan.strategy.steps();
    if steps.is_empty() {
        return resolved.iter().map(|r| (r, 0)).collect();
    }
    let step_of = |r: &Resolved| {
        steps
            .iter()
            .position(|s| s.channel_type.code() == r.channel_type)
            .and_then(|p| i16::try_from(p).ok())
    };
    let mut first: HashMap<&str, i16> = HashMap::new();
    for r in resolved {
        if let (Some(u), Some(step)) = (r.userid.as_deref(), step_of(r)) {
            let e = first.entry(u).or_insert(step);
            *e = (*e).min(step);
        }
    }
    resolved
        .iter()
        .filter_map(|r| {
            let step = step_of(r)?;
            let u = r.userid.as_deref()?;
            (first.get(u) == Some(&step)).then_some((r, step))
        })
        .collect()
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
    /// `types`, when given, limits the result to those channel types. Read on `conn`: inside a
    /// transaction that holds row locks, that must be the transaction itself (on Postgres a
    /// second pooled connection could wait for writers that wait for those locks).
    async fn bindings_of<C: ConnectionTrait>(
        &self,
        conn: &C,
        userids: &BTreeSet<&str>,
        types: Option<&BTreeSet<&str>>,
    ) -> Result<HashMap<String, Vec<Binding>>, DbErr> {
        let mut out: HashMap<String, Vec<Binding>> = HashMap::new();
        let ids: Vec<&str> = userids.iter().copied().collect();
        let type_filter = match types {
            Some(t) => format!(" AND b.channel_type IN ({})", in_list(t.len())),
            None => String::new(),
        };
        for chunk in ids.chunks(2048) {
            let rows = self.db.pad_to(chunk.len(), 2048);
            let sql = format!(
                "SELECT b.userid, b.channel_type, b.address, {SUPPRESSED} AS suppressed FROM bindings b \
                 WHERE b.userid IN ({}){type_filter}",
                in_list(rows)
            );
            let mut values: Vec<Value> = chunk.iter().map(|u| Value::from(*u)).collect();
            repeat_last_row(&mut values, 1, rows - chunk.len());
            values.extend(types.into_iter().flatten().map(|t| Value::from(*t)));
            let cols = ["userid", "channel_type", "address", "suppressed"];
            for r in self.db.query_packed(conn, &cols, &sql, values).await? {
                out.entry(r.string(0)?).or_default().push((
                    r.string(1)?,
                    r.string(2)?,
                    Suppressed::of(r.opt_string(3)?.as_deref()),
                ));
            }
        }
        // Each user's bindings in (channel type, address) order, however they were read.
        for bindings in out.values_mut() {
            bindings.sort_unstable();
        }
        Ok(out)
    }

    /// Report a freshly opened shard's targets (items 0 and 1, see [`target_events`]) when its
    /// message may have a callback; call after the opening commits.
    pub(super) fn report_targets(
        &self,
        open: &OpenShard,
        resolved: &[Resolved],
        batches: &[ChannelBatch],
        now: i64,
    ) {
        let msgid = open.plan.msgid;
        if !self.callbacks.silent(msgid) {
            let events = target_events(&open.plan, listed_users(open), resolved, batches, now);
            self.callbacks.emit_all(msgid, events);
        }
    }

    /// The deliveries a shard needs, from its plan and the bindings fetched in bulk.
    pub(super) async fn resolve_all(
        &self,
        shards: &[OpenShard],
    ) -> Result<Vec<Vec<Resolved>>, DbErr> {
        let mut listed: BTreeSet<&str> = BTreeSet::new();
        for s in shards {
            if let (Some(ids), Audience::Userids(_)) = (listed_users(s), &s.plan.audience) {
                listed.extend(ids.iter().map(String::as_str));
            }
        }
        let bindings = if listed.is_empty() {
            HashMap::new()
        } else {
            self.bindings_of(self.db.read(), &listed, None).await?
        };
        let mut out = Vec::with_capacity(shards.len());
        for s in shards {
            let resolved = match (listed_users(s), &s.plan.audience) {
                (Some(ids), Audience::Userids(_)) => {
                    let types: Vec<&str> = s
                        .plan
                        .channels
                        .iter()
                        .map(|c| c.channel_type.code())
                        .collect();
                    let marketing = s.plan.is_marketing();
                    ids.iter()
                        .flat_map(|u| {
                            bindings
                                .get(u)
                                .into_iter()
                                .flatten()
                                .filter(|(t, _, _)| types.contains(&t.as_str()))
                                .map(move |(t, a, suppressed)| Resolved {
                                    userid: Some(u.clone()),
                                    channel_type: t.clone(),
                                    address: a.clone(),
                                    suppressed: suppressed.skips(marketing),
                                })
                        })
                        .collect()
                }
                // A fallback or filtered shard opened before is only read back (`open_one`):
                // resolving its audience again, as a timer's next step re-opens it, would
                // read every binding of the shard for nothing. Deliveries are never deleted,
                // so what this read finds, the opening transaction finds too.
                _ if self.opened_before(s).await? => Vec::new(),
                _ => self.resolve(&s.plan, &s.shard).await?,
            };
            out.push(resolved);
        }
        Ok(out)
    }

    /// Whether this shard is one that is opened once and was opened already (see
    /// [`Store::open_one`]).
    async fn opened_before(&self, s: &OpenShard) -> Result<bool, DbErr> {
        if s.fresh || (s.plan.strategy.steps().is_empty() && s.plan.filters.is_none()) {
            return Ok(false);
        }
        Ok(self
            .db
            .read()
            .query_one_raw(self.db.stmt(
                "SELECT id FROM deliveries WHERE message_id = ? AND shard_seq = ? LIMIT 1",
                vec![s.plan.msgid.into(), s.shard.seq.into()],
            ))
            .await?
            .is_some())
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
            (ShardSpec::Listed | ShardSpec::Slice { .. }, Audience::Raw(raw)) => {
                let (from, to) = match shard.spec {
                    ShardSpec::Slice { from, to, .. } => (from as usize, to as usize),
                    _ => (0, usize::MAX),
                };
                let mut resolved: Vec<Resolved> = raw
                    .iter()
                    .flat_map(|r| r.addresses.iter().map(move |a| (r.channel_type, a)))
                    .enumerate()
                    .filter(|(i, (t, _))| *i >= from && *i < to && types.contains(&t.code()))
                    .map(|(_, (t, a))| Resolved {
                        userid: None,
                        channel_type: t.code().to_string(),
                        address: a.clone(),
                        suppressed: false,
                    })
                    .collect();
                // The sender names raw addresses itself: only an opt-out of marketing stops
                // them, and only for marketing.
                if plan.is_marketing() {
                    let keys: Vec<(&str, &str)> = resolved
                        .iter()
                        .map(|r| (r.channel_type.as_str(), r.address.as_str()))
                        .collect();
                    let opted = opted_out(&self.db, self.db.read(), &keys).await?;
                    for r in &mut resolved {
                        r.suppressed = opted.contains(&(r.channel_type.clone(), r.address.clone()));
                    }
                }
                return Ok(resolved);
            }
            (ShardSpec::Range { after, last, .. }, _) => Store::range_filter(plan, after, last),
            (ShardSpec::Listed | ShardSpec::Slice { .. }, _) => {
                return Err(DbErr::Custom(
                    "listed shards of userids are resolved in bulk".into(),
                ));
            }
        };
        let sql = format!(
            "SELECT b.userid, b.channel_type, b.address, {SUPPRESSED} AS suppressed FROM bindings b \
             WHERE b.channel_type IN ({}) AND {filter}",
            in_list(types.len())
        );
        let mut all: Vec<Value> = types.iter().map(|t| Value::from(*t)).collect();
        all.append(&mut values);
        let marketing = plan.is_marketing();
        let cols = ["userid", "channel_type", "address", "suppressed"];
        let mut resolved = self
            .db
            .query_packed(self.db.read(), &cols, &sql, all)
            .await?
            .iter()
            .map(|r| {
                Ok(Resolved {
                    userid: Some(r.string(0)?),
                    channel_type: r.string(1)?,
                    address: r.string(2)?,
                    suppressed: Suppressed::of(r.opt_string(3)?.as_deref()).skips(marketing),
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        // In (user, channel type, address) order, however they were read.
        resolved.sort_unstable_by(|a, b| {
            (&a.userid, &a.channel_type, &a.address).cmp(&(&b.userid, &b.channel_type, &b.address))
        });
        Ok(resolved)
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
        let steps = plan.strategy.steps();
        // A fallback shard is opened once: later steps are queued by its timers, and a
        // re-open (restart, reopened by a timer) must not start the chain again. Nor must a
        // filtered one count its targets against dedup and caps again.
        let opened_before = !open.fresh
            && (!steps.is_empty() || plan.filters.is_some())
            && txn
                .query_one_raw(self.db.stmt(
                    "SELECT id FROM deliveries WHERE message_id = ? AND shard_seq = ? LIMIT 1",
                    vec![plan.msgid.into(), shard.seq.into()],
                ))
                .await?
                .is_some();
        let mut rows = Vec::new();
        if !opened_before {
            let (stepped, skipped) = self.first_steps_filtered(txn, plan, resolved, now).await?;
            let returning = open.fresh;
            rows = self
                .insert_deliveries(txn, plan, shard.seq, &stepped, now, returning)
                .await?;
            self.insert_skipped(txn, plan, shard.seq, &skipped, now)
                .await?;
            self.arm_timers(txn, plan, shard.seq, &stepped, now).await?;
        }
        if !open.fresh {
            // Everything whose provider call has no recorded outcome: still queued, or given a
            // receipt before the crash took its outcome (attempts = 0). The re-sent batch then
            // has the same members, so the provider's idempotency key (JPush cid) matches and
            // the receipted ones are not delivered twice.
            rows = self
                .db
                .query_packed(
                    txn,
                    &OPENED_COLUMNS,
                    &format!(
                        "SELECT {} FROM deliveries WHERE message_id = ? AND shard_seq = ? \
                         AND (status = 0 OR (status IN (3, 4, 5) AND attempts = 0))",
                        OPENED_COLUMNS.join(", ")
                    ),
                    vec![plan.msgid.into(), shard.seq.into()],
                )
                .await?
                .iter()
                .map(Opened::of)
                .collect::<Result<_, _>>()?;
        }
        let mut by_channel: BTreeMap<i64, Vec<Target>> = BTreeMap::new();
        for r in rows {
            by_channel.entry(r.channel_id).or_default().push(r.target());
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

    /// A shard opened with the others of its batch in bulk: the whole audience of a
    /// concurrent message without filters (a one-user transactional send, mostly).
    fn is_simple(s: &OpenShard) -> bool {
        s.plan.is_simple() && matches!(s.shard.spec, ShardSpec::Listed)
    }

    /// Open simple shards (see [`Store::is_simple`]) of many messages together: one INSERT
    /// for all their deliveries, returning those of fresh shards, and one read-back of what is
    /// still queued for those opened before a restart — a few statements per batch instead of
    /// one or two per message. `out[i]` receives shard `i`'s batches.
    pub(super) async fn open_simple<C: ConnectionTrait>(
        &self,
        txn: &C,
        shards: &[(usize, &OpenShard, &[Resolved])],
        now: i64,
        out: &mut [Vec<ChannelBatch>],
    ) -> Result<(), DbErr> {
        if shards.is_empty() {
            return Ok(());
        }
        let mut targets: HashMap<(i64, i32), BTreeMap<i64, Vec<Target>>> = HashMap::new();
        let mut push = |r: Opened| {
            targets
                .entry((r.msgid, r.seq))
                .or_default()
                .entry(r.channel_id)
                .or_default()
                .push(r.target());
        };
        for fresh in [true, false] {
            let rows: Vec<NewDelivery> = shards
                .iter()
                .filter(|(_, o, _)| o.fresh == fresh)
                .flat_map(|(_, o, resolved)| {
                    resolved
                        .iter()
                        .filter(|r| !r.suppressed)
                        .filter_map(|r| NewDelivery::of(&o.plan, o.shard.seq, r, 0))
                })
                .collect();
            for r in self.insert_rows(txn, &rows, now, fresh).await? {
                push(r);
            }
        }
        // Suppressed addresses: counted as skipped, never sent.
        for (_, o, resolved) in shards {
            let skipped: Vec<filters::SkippedRow> = resolved
                .iter()
                .filter(|r| r.suppressed)
                .map(|r| (r, 0, SkipReason::Suppressed))
                .collect();
            if !skipped.is_empty() {
                self.insert_skipped(txn, &o.plan, o.shard.seq, &skipped, now)
                    .await?;
            }
        }
        // Opened before a restart: whatever has no recorded outcome (see `open_one`).
        let stale: BTreeSet<(i64, i32)> = shards
            .iter()
            .filter(|(_, o, _)| !o.fresh)
            .map(|(_, o, _)| (o.plan.msgid, o.shard.seq))
            .collect();
        let stale_ids: Vec<i64> = stale
            .iter()
            .map(|(m, _)| *m)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for chunk in stale_ids.chunks(500) {
            let sql = format!(
                "SELECT {} FROM deliveries \
                 WHERE message_id IN ({}) AND (status = 0 OR (status IN (3, 4, 5) AND attempts = 0))",
                OPENED_COLUMNS.join(", "),
                in_list(chunk.len())
            );
            let values = chunk.iter().map(|m| Value::from(*m)).collect();
            for r in self
                .db
                .query_packed(txn, &OPENED_COLUMNS, &sql, values)
                .await?
            {
                let r = Opened::of(&r)?;
                if stale.contains(&(r.msgid, r.seq)) {
                    push(r);
                }
            }
        }
        for (i, open, _) in shards {
            let Some(by_channel) = targets.remove(&(open.plan.msgid, open.shard.seq)) else {
                continue;
            };
            // Ordered by id, so a batch re-sent after a restart has the same members (and the
            // same provider idempotency key) as the first time.
            out[*i] = by_channel
                .into_iter()
                .map(|(channel_id, mut targets)| {
                    targets.sort_by_key(|t| t.delivery_id);
                    ChannelBatch {
                        channel_id,
                        targets,
                    }
                })
                .collect();
        }
        Ok(())
    }

    /// Insert deliveries `(resolved, step)` of one shard once per address; with `returning`,
    /// the inserted rows (see [`Store::insert_rows`]).
    async fn insert_deliveries<C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        seq: i32,
        stepped: &[(&Resolved, i16)],
        now: i64,
        returning: bool,
    ) -> Result<Vec<Opened>, DbErr> {
        let rows: Vec<NewDelivery> = stepped
            .iter()
            .filter_map(|(r, step)| NewDelivery::of(plan, seq, r, *step))
            .collect();
        self.insert_rows(txn, &rows, now, returning).await
    }

    /// Insert deliveries, of any messages and shards, once per address, 1024 per statement
    /// (padded with copies of the last row, which the unique address skips: [`Db::pad_insert_to`]);
    /// with `returning`, the inserted rows. Postgres returns them from the insert itself
    /// (`RETURNING`, packed by [`Db::query_packed`]); SQLite cannot pack a `RETURNING`, so
    /// from [`PACK_FROM_ROWS`] rows it reads back the rows with ids above the largest before
    /// the insert: ids only grow (`AUTOINCREMENT`) and this transaction is the only writer.
    /// `txn` must therefore be a transaction on the write connection, as in every caller.
    async fn insert_rows<C: ConnectionTrait>(
        &self,
        txn: &C,
        rows: &[NewDelivery<'_>],
        now: i64,
        returning: bool,
    ) -> Result<Vec<Opened>, DbErr> {
        let mut out = Vec::new();
        let sqlite = self.db.backend() == DatabaseBackend::Sqlite;
        let columns = OPENED_COLUMNS.join(", ");
        for chunk in rows.chunks(1024) {
            // A repeated row conflicts with the first and is skipped: padded to few shapes.
            let shape = self.db.pad_insert_to(chunk.len(), 1024);
            let mut values: Vec<Value> = Vec::with_capacity(shape * 11);
            for d in chunk {
                values.extend([
                    d.msgid.into(),
                    d.seq.into(),
                    d.channel_id.into(),
                    d.resolved.channel_type.clone().into(),
                    d.resolved.userid.clone().into(),
                    d.resolved.address.clone().into(),
                    d.step.into(),
                    0i16.into(),
                    0i32.into(),
                    now.into(),
                    now.into(),
                ]);
            }
            repeat_last_row(&mut values, 11, shape - chunk.len());
            let insert = format!(
                "INSERT INTO deliveries (message_id, shard_seq, channel_id, channel_type, userid, address, step, \
                 status, attempts, updated_at, created_at) VALUES {} \
                 ON CONFLICT (message_id, channel_id, address) DO NOTHING",
                value_rows(shape, 11),
            );
            if !returning {
                txn.execute_raw(self.db.stmt(&insert, values)).await?;
                continue;
            }
            let with_returning = format!("{insert} RETURNING {columns}");
            let packed = if !sqlite {
                self.db
                    .query_packed(txn, &OPENED_COLUMNS, &with_returning, values)
                    .await?
            } else if chunk.len() < PACK_FROM_ROWS {
                // A few rows (one-user sends): one statement, its rows handed over one by one.
                for r in txn
                    .query_all_raw(self.db.stmt(&with_returning, values))
                    .await?
                {
                    out.push(Opened::of_row(&r)?);
                }
                continue;
            } else {
                let before: i64 = txn
                    .query_one_raw(
                        self.db
                            .stmt("SELECT COALESCE(MAX(id), 0) AS m FROM deliveries", vec![]),
                    )
                    .await?
                    .map(|r| r.try_get("", "m"))
                    .transpose()?
                    .unwrap_or(0);
                txn.execute_raw(self.db.stmt(&insert, values)).await?;
                let sql = format!("SELECT {columns} FROM deliveries WHERE id > ?");
                self.db
                    .query_packed(txn, &OPENED_COLUMNS, &sql, vec![before.into()])
                    .await?
            };
            for r in &packed {
                out.push(Opened::of(r)?);
            }
        }
        Ok(out)
    }

    /// Start (or bring forward) the timer of every step that got deliveries and has a later
    /// step.
    async fn arm_timers<C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        seq: i32,
        stepped: &[(&Resolved, i16)],
        now: i64,
    ) -> Result<(), DbErr> {
        let steps = plan.strategy.steps();
        let used: BTreeSet<i16> = stepped.iter().map(|(_, s)| *s).collect();
        for step in used {
            let Some(def) = steps.get(step as usize) else {
                continue;
            };
            if step as usize + 1 >= steps.len() {
                continue;
            }
            let due = now + i64::try_from(def.wait_ms).unwrap_or(i64::MAX / 2);
            txn.execute_raw(self.db.stmt(
                "INSERT INTO fallback_timers (message_id, shard_seq, step, due_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (message_id, shard_seq, step) DO UPDATE SET due_at = \
                 CASE WHEN excluded.due_at < fallback_timers.due_at THEN excluded.due_at ELSE fallback_timers.due_at END",
                vec![plan.msgid.into(), seq.into(), step.into(), due.into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// On Postgres, lock these messages' rows (in id order) before deciding whether they are
    /// done: a firing that deletes a message's last timer and a finish that sees that timer
    /// still there would otherwise each leave the other to end the message, and it would stay
    /// `waiting` for good. The statements after the lock see what the other committed.
    /// SQLite has one writer: nothing to do.
    async fn lock_messages<C: ConnectionTrait>(
        &self,
        txn: &C,
        msgids: &[i64],
    ) -> Result<(), DbErr> {
        if self.db.backend() != DatabaseBackend::Postgres || msgids.is_empty() {
            return Ok(());
        }
        let ids: BTreeSet<i64> = msgids.iter().copied().collect();
        let ids: Vec<i64> = ids.into_iter().collect();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id FROM messages WHERE id IN ({}) ORDER BY id FOR UPDATE",
                in_list(chunk.len())
            );
            let values = chunk.iter().map(|m| Value::from(*m)).collect();
            txn.query_all_raw(self.db.stmt(&sql, values)).await?;
        }
        Ok(())
    }

    /// A paced message's shards: the audience cut into at most [`MAX_PACED_SHARDS`] parts
    /// (and at most ten per second of the spread), each with its send time, evenly spaced.
    async fn plan_paced<C: ConnectionTrait>(
        &self,
        conn: &C,
        plan: &MessagePlan,
        spread_seconds: u32,
        max_size: u32,
    ) -> Result<Vec<Shard>, DbErr> {
        let n: u64 = match &plan.audience {
            Audience::Userids(ids) => ids.len() as u64,
            Audience::Raw(raw) => raw.iter().map(|r| r.addresses.len() as u64).sum(),
            Audience::Tags(tags) => {
                let sql = format!(
                    "SELECT COUNT(DISTINCT userid) AS n FROM user_tags WHERE tag IN ({})",
                    in_list(tags.len())
                );
                let values = tags.iter().map(|t| Value::from(t.clone())).collect();
                let r = conn.query_one_raw(self.db.stmt(&sql, values)).await?;
                r.map(|r| r.try_get::<i64>("", "n"))
                    .transpose()?
                    .unwrap_or(0)
                    .max(0) as u64
            }
            Audience::All => {
                let r = conn
                    .query_one_raw(self.db.stmt("SELECT COUNT(*) AS n FROM users", vec![]))
                    .await?;
                r.map(|r| r.try_get::<i64>("", "n"))
                    .transpose()?
                    .unwrap_or(0)
                    .max(0) as u64
            }
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let parts = n
            .min(u64::from(spread_seconds) * PACED_SHARDS_PER_SECOND)
            .min(MAX_PACED_SHARDS)
            .max(n.div_ceil(u64::from(max_size.max(1))))
            .max(1);
        let size = n.div_ceil(parts);
        let parts = n.div_ceil(size);
        let start = now_ms();
        let interval = i64::from(spread_seconds) * 1000 / i64::try_from(parts).unwrap_or(1);
        let at = |k: u64| start + i64::try_from(k).unwrap_or(0) * interval;
        let mut shards = Vec::with_capacity(parts as usize);
        match &plan.audience {
            Audience::Userids(_) | Audience::Raw(_) => {
                for k in 0..parts {
                    shards.push(Shard {
                        msgid: plan.msgid,
                        seq: i32::try_from(k).unwrap_or(i32::MAX),
                        spec: ShardSpec::Slice {
                            from: u32::try_from(k * size).unwrap_or(u32::MAX),
                            to: u32::try_from(((k + 1) * size).min(n)).unwrap_or(u32::MAX),
                            not_before: at(k),
                        },
                        generation: 0,
                    });
                }
            }
            Audience::Tags(_) | Audience::All => {
                let mut after: Option<String> = None;
                let size = u32::try_from(size).unwrap_or(u32::MAX);
                let mut k = 0u64;
                while let Some(last) = self
                    .next_boundary(conn, plan, after.as_deref().unwrap_or_default(), size)
                    .await?
                {
                    shards.push(Shard {
                        msgid: plan.msgid,
                        seq: i32::try_from(k).unwrap_or(i32::MAX),
                        spec: ShardSpec::Range {
                            after: after.clone(),
                            last: last.clone(),
                            not_before: Some(at(k.min(parts - 1))),
                        },
                        generation: 0,
                    });
                    k += 1;
                    after = Some(last);
                }
            }
        }
        Ok(shards)
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
    async fn unfinished_messages(
        &self,
        after: i64,
        limit: u32,
        claims: &Claims,
    ) -> StoreResult<SweptPage> {
        let rows = self
            .db
            .query_all(
                "SELECT id, plan FROM messages WHERE state = 'accepted' AND id > ? \
                 AND (not_before IS NULL OR not_before <= ?) ORDER BY id LIMIT ?",
                vec![after.into(), now_ms().into(), i64::from(limit).into()],
            )
            .await
            .map_err(err)?;
        let mut last = None;
        let mut plans: Vec<MessagePlan> = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("", "id").map_err(err)?;
            last = Some(id);
            // Being sent as it was opened at acceptance: not the sweep's.
            if !claims.holds(id) {
                plans.push(parse_plan(r).map_err(err)?);
            }
        }
        // Their outcomes will be reported: spare the callback service a read of each plan.
        for p in &plans {
            self.callbacks.remember(p);
        }
        // A backlog of one-user messages is swept a page at a time: their pending shards in
        // one query per page, not one per message.
        let single: Vec<i64> = plans
            .iter()
            .filter(|p| p.is_single_shard())
            .map(|p| p.msgid)
            .collect();
        let mut pending: HashMap<i64, Vec<Shard>> =
            single.iter().map(|m| (*m, Vec::new())).collect();
        for chunk in single.chunks(500) {
            let rows = self
                .db
                .query_all(
                    &format!(
                        "SELECT message_id, seq, spec, generation FROM shards WHERE message_id IN ({}) \
                         AND state = 'pending' ORDER BY message_id, seq",
                        in_list(chunk.len())
                    ),
                    chunk.iter().map(|m| Value::from(*m)).collect(),
                )
                .await
                .map_err(err)?;
            for r in &rows {
                let msgid: i64 = r.try_get("", "message_id").map_err(err)?;
                let shard = parse_shard(r, msgid).map_err(err)?;
                pending.entry(msgid).or_default().push(shard);
            }
        }
        let plans = plans
            .into_iter()
            .map(|p| {
                let shards = pending
                    .remove(&p.msgid)
                    .map(|rows| implied_if_none(&p, rows));
                (p, shards)
            })
            .collect();
        Ok(SweptPage {
            plans,
            last,
            full: rows.len() as u32 == limit,
        })
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

    async fn pending_shards(&self, plan: &MessagePlan) -> StoreResult<Vec<Shard>> {
        let msgid = plan.msgid;
        let rows = self
            .db
            .query_all(
                "SELECT seq, spec, generation FROM shards WHERE message_id = ? AND state = 'pending' ORDER BY seq",
                vec![msgid.into()],
            )
            .await
            .map_err(err)?;
        let shards = rows
            .iter()
            .map(|r| parse_shard(r, msgid))
            .collect::<Result<_, DbErr>>()
            .map_err(err)?;
        Ok(implied_if_none(plan, shards))
    }

    async fn plan_shards(
        &self,
        plan: &MessagePlan,
        shard_size: u32,
        max_shards: u32,
    ) -> StoreResult<PlannedPage> {
        let _bulk = self.db.bulk_write().await;
        let txn = self.db.write().begin().await.map_err(err)?;
        let stmt = self.db.stmt(
            "SELECT planned, plan_cursor, shard_count, state FROM messages WHERE id = ?",
            vec![plan.msgid.into()],
        );
        let row = txn
            .query_one_raw(stmt)
            .await
            .map_err(err)?
            .ok_or_else(|| StoreError(format!("message {} not found", plan.msgid)))?;
        let planned: bool = row.try_get("", "planned").map_err(err)?;
        // A retracted message gets no further shards.
        let retracted = row.try_get::<String>("", "state").map_err(err)? == "retracted";
        if planned || retracted {
            return Ok(PlannedPage {
                shards: Vec::new(),
                complete: true,
            });
        }
        let mut cursor: Option<String> = row.try_get("", "plan_cursor").map_err(err)?;
        let mut seq: i32 = row.try_get("", "shard_count").map_err(err)?;
        let mut shards = Vec::new();
        let mut complete = false;
        if let Some(spread) = plan.spread_seconds {
            // Paced: the whole audience is cut at once into shards with their send times.
            shards = self
                .plan_paced(&txn, plan, spread, shard_size)
                .await
                .map_err(err)?;
            seq = i32::try_from(shards.len()).unwrap_or(i32::MAX);
            complete = true;
        }
        for _ in 0..if complete { 0 } else { max_shards.max(1) } {
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
                            not_before: None,
                        },
                        generation: 0,
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
        // Real-time shards (a transactional send's deliveries) go before bulk writes.
        let realtime = shards.iter().any(|s| s.plan.lane == Lane::Realtime);
        let _turn = self.db.lane_write(realtime).await;
        let txn = self.db.write().begin().await.map_err(err)?;
        // Retracted (or cancelled) messages: their shards open to no deliveries.
        let stopped = self
            .stopped_messages(&txn, shards, false)
            .await
            .map_err(err)?;
        let mut out = vec![Vec::new(); shards.len()];
        let mut simple = Vec::new();
        for (i, (s, resolved)) in shards.iter().zip(&resolved).enumerate() {
            if stopped.contains(&s.plan.msgid) {
                continue;
            }
            if Store::is_simple(s) {
                simple.push((i, s, resolved.as_slice()));
            } else {
                out[i] = self.open_one(&txn, s, resolved, now).await.map_err(err)?;
            }
        }
        self.open_simple(&txn, &simple, now, &mut out)
            .await
            .map_err(err)?;
        self.recheck_stopped(&txn, shards, &stopped, &mut out)
            .await
            .map_err(err)?;
        txn.commit().await.map_err(err)?;
        for ((s, resolved), batches) in shards.iter().zip(&resolved).zip(&out) {
            // A shard opened again (restart, a timer) reported its targets the first time; a
            // stopped message's shard opened to nothing and reports nothing.
            if s.fresh && !stopped.contains(&s.plan.msgid) {
                self.report_targets(s, resolved, batches, now);
            }
        }
        Ok(out)
    }

    async fn write_results(&self, results: &[DeliveryResult], lane: Lane) -> StoreResult<()> {
        let now = now_ms();
        let _turn = self.db.lane_write(lane == Lane::Realtime).await;
        let txn = self.db.write().begin().await.map_err(err)?;
        // In id order, so rows are locked in the same order as the receipts writer's, which
        // runs concurrently on Postgres (opposite orders deadlock).
        let mut sorted: Vec<&DeliveryResult> = results.iter().collect();
        sorted.sort_unstable_by_key(|r| r.delivery_id);
        // One statement per 500 outcomes: `UPDATE … FROM (VALUES …)` works on SQLite ≥ 3.33 and
        // Postgres alike, and VALUES columns are called column1… on both.
        for chunk in sorted.chunks(512) {
            let rows = self.db.pad_to(chunk.len(), 512);
            let mut values: Vec<Value> = Vec::with_capacity(2 + rows * 7);
            values.push(now.into());
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
            repeat_last_row(&mut values, 7, rows - chunk.len());
            let sql = format!(
                "UPDATE deliveries SET updated_at = ?, sent_at = ?, \
                 status = CASE WHEN deliveries.status IN ({sticky}) THEN deliveries.status ELSE v.column2 END, \
                 outcome = v.column3, code = v.column4, \
                 provider_id = v.column5, error = v.column6, attempts = v.column7 \
                 FROM (VALUES {}) AS v WHERE deliveries.id = v.column1",
                value_rows(rows, 7),
                sticky = STICKY_STATUSES,
            );
            txn.execute_raw(self.db.stmt(&sql, values))
                .await
                .map_err(err)?;
        }
        let failed: Vec<i64> = results
            .iter()
            .filter(|r| r.status == DeliveryStatus::Failed)
            .map(|r| r.delivery_id)
            .collect();
        // A permanent failure moves a fallback user on at once.
        bring_timers_forward(&self.db, &txn, &failed, now)
            .await
            .map_err(err)?;
        // An address its provider called gone is not resolved again (see `suppressions`).
        let gone: Vec<i64> = sorted
            .iter()
            .filter(|r| r.class == OutcomeClass::Gone)
            .map(|r| r.delivery_id)
            .collect();
        let suppressed =
            suppress_deliveries(&self.db, &txn, &gone, SuppressReason::Gone, None, now)
                .await
                .map_err(err)?;
        // Sends whose receipts are asked for are followed from the commit that records them.
        super::pulls::record_pulls(
            &self.db,
            &txn,
            &sorted,
            now,
            now.saturating_add(self.pull_first_ms),
        )
        .await
        .map_err(err)?;
        txn.commit().await.map_err(err)?;
        count_added(SuppressReason::Gone, suppressed);
        self.callbacks.emit_results(results);
        Ok(())
    }

    async fn finish(
        &self,
        shards: &[(i64, i32, i32)],
        messages: &[i64],
        lane: Lane,
    ) -> StoreResult<()> {
        let now = now_ms();
        let _turn = self.db.lane_write(lane == Lane::Realtime).await;
        let txn = self.db.write().begin().await.map_err(err)?;
        self.lock_messages(&txn, messages).await.map_err(err)?;
        for chunk in shards.chunks(512) {
            let rows = self.db.pad_to(chunk.len(), 512);
            let mut values: Vec<Value> = Vec::with_capacity(1 + rows * 3);
            values.push(now.into());
            for (msgid, seq, generation) in chunk {
                values.extend([
                    Value::from(*msgid),
                    Value::from(*seq),
                    Value::from(*generation),
                ]);
            }
            repeat_last_row(&mut values, 3, rows - chunk.len());
            let sql = format!(
                "UPDATE shards SET state = 'done', updated_at = ? FROM (VALUES {}) AS v \
                 WHERE shards.message_id = v.column1 AND shards.seq = v.column2 AND shards.generation = v.column3",
                value_rows(rows, 3)
            );
            txn.execute_raw(self.db.stmt(&sql, values))
                .await
                .map_err(err)?;
        }
        for chunk in messages.chunks(512) {
            let rows = self.db.pad_to(chunk.len(), 512);
            let mut values: Vec<Value> = vec![now.into()];
            values.extend(chunk.iter().map(|m| Value::from(*m)));
            repeat_last_row(&mut values, 1, rows - chunk.len());
            // Never done while a shard is pending (a page of shards whose creation was
            // committed but not reported stays visible to the next sweep).
            let sql = format!(
                "UPDATE messages SET updated_at = ?, state = CASE WHEN EXISTS \
                 (SELECT 1 FROM fallback_timers t WHERE t.message_id = messages.id) THEN 'waiting' ELSE 'done' END \
                 WHERE id IN ({}) AND state = 'accepted' AND NOT EXISTS \
                 (SELECT 1 FROM shards s WHERE s.message_id = messages.id AND s.state = 'pending')",
                in_list(rows)
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

    async fn due_timers(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<TimerKey>> {
        let rows = self
            .db
            .query_all(
                "SELECT message_id, shard_seq, step, due_at FROM fallback_timers WHERE due_at <= ? \
                 ORDER BY due_at LIMIT ?",
                vec![now_ms.into(), i64::from(limit).into()],
            )
            .await
            .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(TimerKey {
                    msgid: r.try_get("", "message_id")?,
                    seq: r.try_get("", "shard_seq")?,
                    step: r.try_get("", "step")?,
                    due_at_ms: r.try_get("", "due_at")?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .map_err(err)
    }

    async fn fire_timers(&self, keys: &[TimerKey], max_users: u64) -> StoreResult<Vec<Fired>> {
        self.fire_due(keys, max_users).await.map_err(err)
    }

    async fn prefetch_timers(&self, keys: &[TimerKey], at_ms: i64) {
        self.read_ahead_of(keys, at_ms).await
    }

    async fn defer_message(&self, msgid: i64, until_ms: i64) -> StoreResult<()> {
        self.db
            .execute(
                "UPDATE messages SET not_before = ?, updated_at = ? WHERE id = ? AND state = 'accepted'",
                vec![until_ms.into(), now_ms().into(), msgid.into()],
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn release_scheduled(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<MessagePlan>> {
        self.db.release_scheduled(now_ms, limit).await.map_err(err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::settings::CallbackSettings;

    /// A listed user's channel is reported valid when a delivery was queued, invalid with
    /// `suppressed` when every address there is suppressed, `no_address` when none is bound.
    #[test]
    fn target_events_tell_a_suppressed_address_from_a_missing_one() {
        use msghub_actors::plan::{Lane, PlannedChannel, Strategy};
        let users: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let plan = MessagePlan {
            msgid: 1,
            source_id: 1,
            lane: Lane::Realtime,
            audience: Audience::Userids(users.clone()),
            channels: vec![PlannedChannel {
                channel_id: 7,
                channel_type: ChannelType::Sms,
                content: serde_json::json!({}),
            }],
            ttl_seconds: None,
            send_at_ms: None,
            spread_seconds: None,
            strategy: Strategy::Concurrent,
            callback: None,
            priority: None,
            filters: None,
        };
        let resolved = |userid: &str, suppressed| Resolved {
            userid: Some(userid.into()),
            channel_type: "sms".into(),
            address: format!("{userid}-phone"),
            suppressed,
        };
        let resolved = vec![resolved("a", false), resolved("b", true)];
        let batches = vec![ChannelBatch {
            channel_id: 7,
            targets: vec![Target {
                delivery_id: 1,
                address: "a-phone".into(),
                userid: Some("a".into()),
            }],
        }];
        let events = target_events(&plan, Some(&users), &resolved, &batches, 5);
        let got: Vec<(CallbackKind, Option<&str>, Option<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.userid.as_deref(),
                    e.error.as_ref().map(|(code, _)| code.as_str()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (CallbackKind::TargetValid, Some("a"), None),
                (CallbackKind::TargetInvalid, Some("b"), Some("suppressed")),
                (CallbackKind::TargetInvalid, Some("c"), Some("no_address")),
            ]
        );
    }

    pub(super) async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        store_of(crate::storage::test_sqlite(dir).await)
    }

    /// A store on `db`, with a key of 32 zero bytes.
    pub(super) fn store_of(db: Db) -> Store {
        let crypto = Crypto::from_base64(&format!("{}=", "A".repeat(43))).unwrap();
        crate::startup::install_crypto_provider();
        let callbacks = crate::callbacks::Callbacks::start(
            db.clone(),
            crypto.clone(),
            &CallbackSettings::default(),
        )
        .unwrap();
        Store::new(db, crypto, callbacks)
    }

    #[tokio::test]
    async fn real_time_outcomes_and_finishes_go_before_queued_bulk_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(sqlite_store(&dir).await);
        // A bulk writer holds the bulk turn (a blast's transaction, with more queued behind).
        let held = store.db.bulk_write().await;
        let s = store.clone();
        let bulk = tokio::spawn(async move { s.write_results(&[], Lane::Bulk).await });
        let s = store.clone();
        let bulk_finish = tokio::spawn(async move { s.finish(&[], &[1], Lane::Bulk).await });
        // A transactional send's outcome and finish do not queue behind it.
        let limit = std::time::Duration::from_secs(60);
        let realtime = async {
            store.write_results(&[], Lane::Realtime).await.unwrap();
            store.finish(&[], &[1], Lane::Realtime).await.unwrap();
        };
        assert!(
            tokio::time::timeout(limit, realtime).await.is_ok(),
            "real-time writes waited for the bulk writer"
        );
        assert!(!bulk.is_finished() && !bulk_finish.is_finished());
        drop(held);
        bulk.await.unwrap().unwrap();
        bulk_finish.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn padded_delivery_inserts_store_and_return_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        // Counts on both sides of the returning paths and of the shapes: 3 → 4, 100 → 128,
        // 1000 → 1024, 1500 → 1024 + 512.
        for (msgid, n) in [(1i64, 3usize), (2, 100), (3, 1000), (4, 1500)] {
            let resolved: Vec<Resolved> = (0..n)
                .map(|i| Resolved {
                    userid: Some(format!("u{i}")),
                    channel_type: "sms".into(),
                    address: format!("1300{i:07}"),
                    suppressed: false,
                })
                .collect();
            let rows: Vec<NewDelivery> = resolved
                .iter()
                .map(|r| NewDelivery {
                    msgid,
                    seq: 0,
                    channel_id: 7,
                    resolved: r,
                    step: 0,
                })
                .collect();
            let txn = store.db.write().begin().await.unwrap();
            let opened = store.insert_rows(&txn, &rows, 1, true).await.unwrap();
            let again = store.insert_rows(&txn, &rows, 1, true).await.unwrap();
            txn.commit().await.unwrap();
            let mut addresses: Vec<String> = opened.iter().map(|o| o.address.clone()).collect();
            addresses.sort();
            let mut expected: Vec<String> = resolved.iter().map(|r| r.address.clone()).collect();
            expected.sort();
            assert_eq!(addresses, expected, "{n} rows");
            assert!(again.is_empty(), "{n} rows inserted twice");
            let stored = store
                .db
                .query_one(
                    "SELECT COUNT(*) AS n FROM deliveries WHERE message_id = ?",
                    vec![msgid.into()],
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.try_get::<i64>("", "n").unwrap(), n as i64);
        }
        // A chunk whose last row (the one copied to pad it) is stored already: the rest go
        // in, once each.
        let resolved: Vec<Resolved> = (0..10)
            .map(|i| Resolved {
                userid: Some(format!("v{i}")),
                channel_type: "sms".into(),
                address: format!("1390{i:07}"),
                suppressed: false,
            })
            .collect();
        let row = |r| NewDelivery {
            msgid: 5,
            seq: 0,
            channel_id: 7,
            resolved: r,
            step: 0,
        };
        let txn = store.db.write().begin().await.unwrap();
        let last = store
            .insert_rows(&txn, &[row(&resolved[9])], 1, true)
            .await
            .unwrap();
        let rows: Vec<NewDelivery> = resolved.iter().map(row).collect();
        let rest = store.insert_rows(&txn, &rows, 1, true).await.unwrap();
        txn.commit().await.unwrap();
        assert_eq!(last.len(), 1);
        let mut got: Vec<String> = rest.into_iter().map(|o| o.address).collect();
        got.sort();
        let expected: Vec<String> = resolved[..9].iter().map(|r| r.address.clone()).collect();
        assert_eq!(got, expected);
    }
}
