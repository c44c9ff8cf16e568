//! Fallback timers' firings: which users of a step are due, what was read ahead for them,
//! and the transaction that moves them on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use msghub_actors::filters::AudienceFilters;
use msghub_actors::plan::{DeliveryStatus, FallbackStep, MessagePlan, StepCondition};
use msghub_actors::store::{Fired, TimerKey};
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait, Value};

use super::{Binding, Resolved, Store, filters, parse_plan, target_valid};
use crate::callbacks::CallbackEvent;
use crate::storage::{Db, PackedRow, in_list, now_ms};

/// Timers read ahead at most (a thousand users' bindings each).
const READ_AHEAD_TIMERS: usize = 32;
/// Reads older than this are not used: the firing reads again (bindings may have changed).
const READ_AHEAD_MAX_AGE_MS: i64 = 1_000;
/// A timer none of whose users is due yet, but one is within this many ms, is not fired until
/// then (see [`Store::fire_due`]).
const NOT_YET_MS: i64 = 100;
/// Timers read ahead at once, on as many reader connections.
const READ_AHEAD_CONCURRENCY: usize = 2;

/// What firing a timer needs: how many undecided users its step had, and what was read of
/// them.
type FiringReads = (usize, Option<Prefetched>);

/// What firing each timer needs, read ahead of its deadline ([`DispatchStore::prefetch_timers`]),
/// with when it was read. A firing takes its timer's entry, or waits for a read in flight
/// rather than read it again. A timer moved since (its key holds its due time) or never fired
/// leaves an entry that is dropped once too old, when the next read or firing comes (so at
/// most [`READ_AHEAD_TIMERS`] entries stay held while no timer is due).
#[derive(Default)]
pub(super) struct ReadAhead {
    state: std::sync::Mutex<ReadAheadState>,
    /// Told whenever a read in flight ends.
    ended: tokio::sync::Notify,
}

#[derive(Default)]
struct ReadAheadState {
    held: HashMap<TimerKey, (i64, FiringReads)>,
    in_flight: HashSet<TimerKey>,
}

impl ReadAheadState {
    /// Whether another entry may be held or read.
    fn has_room(&self) -> bool {
        self.held.len() + self.in_flight.len() < READ_AHEAD_TIMERS
    }

    /// Drop what is too old to be used.
    fn prune(&mut self, now: i64) {
        self.held
            .retain(|_, (at, _)| now - *at <= READ_AHEAD_MAX_AGE_MS);
    }
}

/// Keys claimed for reading ahead, ended unread when dropped before their reads ended.
struct ReadClaims<'a> {
    ahead: &'a ReadAhead,
    keys: Vec<TimerKey>,
}

impl Drop for ReadClaims<'_> {
    fn drop(&mut self) {
        for key in self.keys.drain(..) {
            self.ahead.end(key, 0, None);
        }
    }
}

impl ReadAhead {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReadAheadState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claim `key` for reading: not held or in flight yet, and there is room.
    fn claim(&self, key: &TimerKey, now: i64) -> bool {
        let mut state = self.lock();
        state.prune(now);
        if !state.has_room() || state.held.contains_key(key) || state.in_flight.contains(key) {
            return false;
        }
        state.in_flight.insert(*key);
        true
    }

    /// End the read of a claimed key: held when it succeeded.
    fn end(&self, key: TimerKey, now: i64, read: Option<FiringReads>) {
        let mut state = self.lock();
        state.in_flight.remove(&key);
        if let Some(read) = read {
            state.held.insert(key, (now, read));
        }
        drop(state);
        self.ended.notify_waiters();
    }

    /// Hold what a firing read for `key` at `at`, for its firing later (when there is room).
    fn hold(&self, key: TimerKey, at: i64, read: FiringReads) {
        let mut state = self.lock();
        if state.has_room() {
            state.held.insert(key, (at, read));
        }
    }

    /// The entry of `key` when it is fresh, waiting for its read if one is in flight.
    async fn take(&self, key: &TimerKey) -> Option<FiringReads> {
        loop {
            let ended = self.ended.notified();
            {
                let mut state = self.lock();
                let now = now_ms();
                if let Some((at, read)) = state.held.remove(key) {
                    return (now - at <= READ_AHEAD_MAX_AGE_MS).then_some(read);
                }
                state.prune(now);
                if !state.in_flight.contains(key) {
                    return None;
                }
            }
            ended.await;
        }
    }
}

/// The later steps' bindings of the users a fallback firing will judge, read on a reader
/// before the firing takes the writer: a thousand users' bindings are a lookup of a millisecond
/// or two that would otherwise hold the one SQLite writer, which accepts and outcomes wait for.
/// Users the firing finds due that this did not cover (due since, or their rows appeared
/// since) are looked up in the firing's transaction.
#[derive(Default)]
struct BindingsAhead {
    /// The step's users that were due when it was read.
    covered: HashSet<String>,
    /// Their bindings on the later steps' channel types.
    bindings: HashMap<String, Vec<Binding>>,
}

impl BindingsAhead {
    /// Cover `users` too: the bindings on the `later` channel types of those not covered yet
    /// are read on `conn`.
    async fn cover<C: ConnectionTrait>(
        &mut self,
        store: &Store,
        conn: &C,
        users: &BTreeSet<&str>,
        later: &BTreeSet<&str>,
    ) -> Result<(), DbErr> {
        let missing: BTreeSet<&str> = users
            .iter()
            .filter(|u| !self.covered.contains(**u))
            .copied()
            .collect();
        if !missing.is_empty() {
            let found = store.bindings_of(conn, &missing, Some(later)).await?;
            self.covered.extend(missing.into_iter().map(String::from));
            self.bindings.extend(found);
        }
        Ok(())
    }

    /// The bindings of `users` on the `later` channel types: from what was read before,
    /// and for users that read did not cover, from `conn`.
    async fn bindings_of<C: ConnectionTrait>(
        mut self,
        store: &Store,
        conn: &C,
        users: &BTreeSet<&str>,
        later: &BTreeSet<&str>,
    ) -> Result<HashMap<String, Vec<Binding>>, DbErr> {
        self.cover(store, conn, users, later).await?;
        Ok(users
            .iter()
            .filter_map(|u| Some(((*u).to_string(), self.bindings.remove(*u)?)))
            .collect())
    }
}

/// What a firing reads before it takes the writer, ahead of its deadline
/// ([`DispatchStore::prefetch_timers`]) or just before it: the message's plan (fixed once the
/// message has timers), the step's undecided rows, and the later steps' bindings of the users
/// due by then.
struct Prefetched {
    /// When it was read (unix ms): reads older than [`READ_AHEAD_MAX_AGE_MS`] are not used.
    read_at: i64,
    plan: MessagePlan,
    rows: StepRows,
    bindings: BindingsAhead,
}

/// A firing worked out before it takes the writer ([`Store::prepare`]): who is due, and, when
/// no audience filter applies, each due user's next deliveries. In its transaction the firing
/// only checks that the step's rows did not change since ([`StepFingerprint`]), reads who was
/// reached, and writes: judging a thousand users and choosing their addresses no longer holds
/// the one SQLite writer.
struct Prepared {
    plan: MessagePlan,
    ahead: StepAhead,
}

/// [`Prepared`] but the plan.
struct StepAhead {
    /// When it was read (see [`Prefetched`]).
    read_at: i64,
    rows: StepRows,
    /// The judgement when it was prepared.
    judgement: StepJudgement,
    /// The later steps' bindings of the users due then.
    bindings: BindingsAhead,
    /// Without audience filters and suppressed addresses among the due users': their next
    /// deliveries ([`next_deliveries`]).
    next: Option<Vec<(Resolved, i16)>>,
}

/// The undecided deliveries of a fallback step of a shard (message, shard, step): read with
/// [`UNDECIDED_COLUMNS`] by [`StepRows::read`] and counted by [`StepFingerprint::read`].
/// Read through the step index and grouped in Rust: a `GROUP BY userid` makes SQLite walk
/// every delivery of the message in userid order instead.
const UNDECIDED: &str = "FROM deliveries \
     WHERE message_id = ? AND shard_seq = ? AND step = ? AND judged = 0 AND userid IS NOT NULL";
/// The columns of the undecided rows, in the order [`StepRows::of`] reads them.
const UNDECIDED_COLUMNS: [&str; 6] = [
    "userid",
    "sent_at",
    "created_at",
    "status",
    "updated_at",
    "id",
];

/// What tells whether a step's undecided rows changed, since they were read, in a way that
/// could change who is due. Rows join the set only when inserted and leave it only when this
/// timer's firing judges them, and no delivery goes back to queued: the same counts of rows
/// and of queued rows mean the same rows, with the same ones still being sent. Failed rows
/// are counted and their ids summed, so a failure and a "delivered" receipt for a failed row
/// between the read and the firing do not cancel out; rows with a recorded send are counted,
/// for a send recorded after its receipt. What else can change leaves the judgement as it
/// was: receipts that reach a due user are read by the firing itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StepFingerprint {
    rows: i64,
    /// Rows whose send was recorded (a receipt can come before it).
    sent: i64,
    queued: i64,
    failed: i64,
    failed_ids: i64,
}

impl StepFingerprint {
    /// The fingerprint of the step's rows as they are now, counted by the database.
    async fn read<C: ConnectionTrait>(db: &Db, conn: &C, key: TimerKey) -> Result<Self, DbErr> {
        let (queued, failed, undelivered) = (
            DeliveryStatus::Queued as i16,
            DeliveryStatus::Failed as i16,
            DeliveryStatus::Undelivered as i16,
        );
        let sql = format!(
            "SELECT COUNT(*) AS n_rows, COUNT(sent_at) AS n_sent, \
             COALESCE(SUM(CASE WHEN status = {queued} THEN 1 ELSE 0 END), 0) AS n_queued, \
             COALESCE(SUM(CASE WHEN status IN ({failed}, {undelivered}) THEN 1 ELSE 0 END), 0) AS n_failed, \
             CAST(COALESCE(SUM(CASE WHEN status IN ({failed}, {undelivered}) THEN id ELSE 0 END), 0) AS BIGINT) AS failed_ids \
             {UNDECIDED}"
        );
        let row = conn
            .query_one_raw(db.stmt(
                &sql,
                vec![key.msgid.into(), key.seq.into(), key.step.into()],
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("an aggregate returned no row".into()))?;
        Ok(StepFingerprint {
            rows: row.try_get("", "n_rows")?,
            sent: row.try_get("", "n_sent")?,
            queued: row.try_get("", "n_queued")?,
            failed: row.try_get("", "n_failed")?,
            failed_ids: row.try_get("", "failed_ids")?,
        })
    }
}

/// What a step's undecided rows say of one user.
#[derive(Debug, Clone, Copy, PartialEq)]
struct UserStep {
    /// The last send to the user on the step (its creation, for a delivery not sent yet).
    sent: i64,
    /// Some delivery is still being sent.
    sending: bool,
    /// Every delivery failed.
    all_failed: bool,
    /// When the last failure was recorded (an outcome, or a "not delivered" receipt that came
    /// later than the send); `sent` when none failed.
    failed_at: i64,
}

/// The undecided rows ([`UNDECIDED`]) per user, in userid order, and their fingerprint.
struct StepRows {
    users: Vec<(String, UserStep)>,
    fingerprint: StepFingerprint,
}

impl StepRows {
    /// The undecided rows of the timer `key`'s step, read on `conn`.
    async fn read<C: ConnectionTrait>(db: &Db, conn: &C, key: TimerKey) -> Result<StepRows, DbErr> {
        let sql = format!("SELECT {} {UNDECIDED}", UNDECIDED_COLUMNS.join(", "));
        let packed = db
            .query_packed(
                conn,
                &UNDECIDED_COLUMNS,
                &sql,
                vec![key.msgid.into(), key.seq.into(), key.step.into()],
            )
            .await?;
        StepRows::of(&packed)
    }

    fn of(rows: &[PackedRow]) -> Result<StepRows, DbErr> {
        let mut users: BTreeMap<String, UserStep> = BTreeMap::new();
        let mut fingerprint = StepFingerprint::default();
        for r in rows {
            let userid = r.string(0)?;
            let sent_at = r.opt_i64(1)?;
            let sent = sent_at.unwrap_or(r.i64(2)?);
            let status = r.i64(3)?;
            let sending = status == DeliveryStatus::Queued as i64;
            let failed = status == DeliveryStatus::Failed as i64
                || status == DeliveryStatus::Undelivered as i64;
            let failed_at = if failed {
                r.opt_i64(4)?.unwrap_or(sent).max(sent)
            } else {
                sent
            };
            fingerprint.rows += 1;
            fingerprint.sent += i64::from(sent_at.is_some());
            fingerprint.queued += i64::from(sending);
            if failed {
                fingerprint.failed += 1;
                fingerprint.failed_ids = fingerprint.failed_ids.wrapping_add(r.i64(5)?);
            }
            let e = users.entry(userid).or_insert(UserStep {
                sent,
                sending,
                all_failed: failed,
                failed_at,
            });
            e.sent = e.sent.max(sent);
            e.sending |= sending;
            e.all_failed &= failed;
            e.failed_at = e.failed_at.max(failed_at);
        }
        Ok(StepRows {
            users: users.into_iter().collect(),
            fingerprint,
        })
    }

    /// Who is due for a step with `wait` ms at `now`.
    fn judge(&self, wait: i64, now: i64) -> StepJudgement {
        let mut out = StepJudgement {
            examined: self.users.len(),
            due: Vec::new(),
            next_due: None,
            sending: 0,
            first_deadline: None,
        };
        for (userid, u) in &self.users {
            if u.all_failed || (!u.sending && u.sent + wait <= now) {
                let deadline = if u.all_failed {
                    u.failed_at
                } else {
                    u.sent + wait
                };
                out.first_deadline = Some(out.first_deadline.map_or(deadline, |d| d.min(deadline)));
                out.due.push(userid.clone());
            } else {
                out.sending += usize::from(u.sending);
                let d = if u.sending {
                    now + wait.min(1000)
                } else {
                    u.sent + wait
                };
                out.next_due = Some(out.next_due.map_or(d, |n: i64| n.min(d)));
            }
        }
        out
    }
}

/// Which undecided users of a fallback step are due at a time.
#[derive(Debug, PartialEq)]
struct StepJudgement {
    /// Users with undecided deliveries on the step.
    examined: usize,
    /// Users whose wait has passed since the step was last sent to them, or all of whose
    /// deliveries on it failed (they move on without waiting); in userid order.
    due: Vec<String>,
    /// The earliest time another of them is due: a user still being sent to (a paced or
    /// throttled step, whose wait starts when its outcome is recorded) is looked at again
    /// shortly.
    next_due: Option<i64>,
    /// Users not due who are still being sent to.
    sending: usize,
    /// The earliest deadline among the due users: the last send plus the wait, or, for a
    /// user all of whose deliveries failed, the last failure.
    first_deadline: Option<i64>,
}

/// The step of timer `key` in `plan`, when a later step follows it (a timer of the last step,
/// or of a plan without it, only ends).
fn timer_step(plan: &MessagePlan, key: TimerKey) -> Option<&FallbackStep> {
    let steps = plan.strategy.steps();
    let k = key.step as usize;
    steps.get(k).filter(|_| k + 1 < steps.len())
}

/// A step's wait in ms.
fn wait_of(step: &FallbackStep) -> i64 {
    i64::try_from(step.wait_ms).unwrap_or(i64::MAX / 2)
}

/// The channel types of the steps after step `k`: only their bindings matter to a firing.
fn later_types(steps: &[FallbackStep], k: usize) -> BTreeSet<&'static str> {
    steps
        .iter()
        .skip(k + 1)
        .map(|s| s.channel_type.code())
        .collect()
}

/// Each of `users`' deliveries on the first step after step `k` they have an address for, as
/// (target, step), grouped by user in the order given; a user with none gets nothing.
fn next_deliveries<'a>(
    steps: &[FallbackStep],
    k: usize,
    users: impl IntoIterator<Item = &'a str>,
    bindings: &HashMap<String, Vec<Binding>>,
) -> Vec<(Resolved, i16)> {
    let mut out = Vec::new();
    for user in users {
        let Some(bound) = bindings.get(user) else {
            continue;
        };
        for (j, s) in steps.iter().enumerate().skip(k + 1) {
            let t = s.channel_type.code();
            let before = out.len();
            let j = i16::try_from(j).unwrap_or(i16::MAX);
            out.extend(bound.iter().filter(|(ty, _, _)| ty == t).map(|(_, a, _)| {
                (
                    Resolved {
                        userid: Some(user.to_string()),
                        channel_type: t.to_string(),
                        address: a.clone(),
                        suppressed: false,
                    },
                    j,
                )
            }));
            if out.len() > before {
                break;
            }
        }
    }
    out
}

/// Whether users with these bindings go through the audience filters
/// ([`Store::choose_next`]): the plan has some, or an address is suppressed (skipped like a
/// filtered one, and counted).
fn filters_apply<'a>(
    plan: &MessagePlan,
    bindings: impl IntoIterator<Item = &'a Vec<Binding>>,
) -> bool {
    let marketing = plan.is_marketing();
    plan.filters.is_some() || bindings.into_iter().flatten().any(|b| b.2.skips(marketing))
}

/// How many users `deliveries` (grouped by user) go to.
fn users_in(deliveries: &[(Resolved, i16)]) -> u64 {
    deliveries.chunk_by(|a, b| a.0.userid == b.0.userid).count() as u64
}

impl Store {
    /// [`DispatchStore::fire_timers`]: the timers' reads and their judgements are done before
    /// the writer is ours (see [`Prepared`]); deadlines go before throughput work (shard
    /// opens, outcomes), after accepts.
    pub(super) async fn fire_due(
        &self,
        keys: &[TimerKey],
        max_users: u64,
    ) -> Result<Vec<Fired>, DbErr> {
        let started = std::time::Instant::now();
        let prefetched = self.prefetch_firings(keys, max_users).await;
        let at = now_ms();
        let mut prepared = HashMap::with_capacity(prefetched.len());
        for (key, p) in prefetched {
            match self.prepare(key, p, at).await {
                Ok(Some(p)) => {
                    prepared.insert(key, p);
                }
                Ok(None) => {}
                // Its firing reads and judges in its transaction.
                Err(e) => {
                    tracing::debug!(msgid = key.msgid, seq = key.seq, error = %e, "preparing a fallback firing failed");
                }
            }
        }
        // Timers armed when their step was opened often come due a few ms before their users
        // do (the step is sent after): when none of a timer's users is due yet, none is still
        // being sent to (whose rows will change), and the first will be due soon, it is not
        // fired now, for nothing. What was read is held for its firing then, which the poller
        // wakes for (`due_again_ms`); its row stays due, so a restart fires it.
        let mut not_yet: HashMap<TimerKey, Fired> = HashMap::new();
        let soon: Vec<TimerKey> = prepared
            .iter()
            .filter(|(_, p)| {
                let j = &p.ahead.judgement;
                j.due.is_empty()
                    && j.sending == 0
                    && j.next_due.is_some_and(|d| d <= at + NOT_YET_MS)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in soon {
            if let Some(p) = prepared.remove(&key) {
                let j = &p.ahead.judgement;
                not_yet.insert(
                    key,
                    Fired {
                        examined: j.examined as u64,
                        due_again_ms: j.next_due,
                        not_yet: true,
                        ..Fired::default()
                    },
                );
                let examined = j.examined;
                let read_at = p.ahead.read_at;
                let read = Prefetched {
                    read_at,
                    plan: p.plan,
                    rows: p.ahead.rows,
                    bindings: p.ahead.bindings,
                };
                self.read_ahead.hold(key, read_at, (examined, Some(read)));
            }
        }
        let read = started.elapsed();
        let (mut gated, mut begun) = (read, read);
        let mut txn = None;
        let mut now = at;
        let mut out = Vec::new();
        let mut users = 0u64;
        let mut events = Vec::new();
        for key in keys {
            if !out.is_empty() && users >= max_users {
                break;
            }
            if let Some(fired) = not_yet.remove(key) {
                users += fired.examined.max(1);
                out.push(fired);
                continue;
            }
            let t = match &txn {
                Some((_, t)) => t,
                None => {
                    let timely = self.db.timely_write().await;
                    gated = started.elapsed();
                    let t = self.db.write().begin().await?;
                    begun = started.elapsed();
                    let msgids: Vec<i64> = keys.iter().map(|k| k.msgid).collect();
                    self.lock_messages(&t, &msgids).await?;
                    // Who was reached is read against the time the writer was ours, not
                    // when the poll began.
                    now = now_ms();
                    &txn.insert((timely, t)).1
                }
            };
            let fired = self
                .fire(t, *key, now, &mut events, prepared.remove(key))
                .await?;
            users += fired.examined.max(1);
            out.push(fired);
        }
        let worked = started.elapsed();
        if let Some((_timely, t)) = txn {
            t.commit().await?;
        }
        // Where a late firing's time went: its reads and judgements, the wait for its turn
        // and for the writer connection, its statements, the commit.
        tracing::debug!(
            timers = out.len(),
            users,
            read_ms = read.as_secs_f64() * 1e3,
            gate_ms = (gated - read).as_secs_f64() * 1e3,
            begin_ms = (begun - gated).as_secs_f64() * 1e3,
            work_ms = (worked - begun).as_secs_f64() * 1e3,
            commit_ms = (started.elapsed() - worked).as_secs_f64() * 1e3,
            "fallback timers' transaction"
        );
        for (msgid, events) in events {
            self.callbacks.emit_all(msgid, events);
        }
        Ok(out)
    }

    /// [`DispatchStore::prefetch_timers`].
    pub(super) async fn read_ahead_of(&self, keys: &[TimerKey], at_ms: i64) {
        let mut rest = keys.iter();
        loop {
            // A few at once; each is claimed only when its read starts, so a firing never
            // waits for a read that has not begun.
            let now = now_ms();
            let claimed: Vec<TimerKey> = rest
                .by_ref()
                .filter(|key| self.read_ahead.claim(key, now))
                .take(READ_AHEAD_CONCURRENCY)
                .copied()
                .collect();
            if claimed.is_empty() {
                return;
            }
            // Ends the claims however this ends (cancelled, a panic): nothing waits on them.
            let mut claims = ReadClaims {
                ahead: &self.read_ahead,
                keys: claimed,
            };
            // Each read ends as soon as it is done: a firing waiting for one does not wait for
            // the other.
            futures::future::join_all(claims.keys.iter().map(|key| async move {
                let read = self.prefetch_firing(*key, at_ms).await;
                if let Err(e) = &read {
                    tracing::debug!(msgid = key.msgid, seq = key.seq, error = %e, "reading ahead for a fallback timer failed");
                }
                self.read_ahead.end(*key, now_ms(), read.ok());
            }))
            .await;
            claims.keys.clear();
        }
    }

    /// Read, on a reader connection, the bindings a firing of each of the first `keys` (about
    /// `max_users` users) will need for its later steps: those of the users already due. A key
    /// whose reads fail is left out: its firing reads them itself.
    async fn prefetch_firings(
        &self,
        keys: &[TimerKey],
        max_users: u64,
    ) -> HashMap<TimerKey, Prefetched> {
        let mut out = HashMap::new();
        let mut users = 0u64;
        for key in keys {
            if users >= max_users {
                break;
            }
            // Counted like the firings count them, so the same timers are read ahead.
            let read = match self.read_ahead.take(key).await {
                Some(held) => {
                    metrics::counter!("msghub_fallback_reads_total", "when" => "ahead")
                        .increment(1);
                    Ok(held)
                }
                None => {
                    metrics::counter!("msghub_fallback_reads_total", "when" => "at_firing")
                        .increment(1);
                    self.prefetch_firing(*key, now_ms()).await
                }
            };
            if let Ok((examined, p)) = read {
                users += examined.max(1) as u64;
                if let Some(p) = p {
                    out.insert(*key, p);
                }
            }
        }
        out
    }

    /// The step's undecided users (how many there are) and, when there are some, what a
    /// firing needs of them: the plan, their rows, and the later steps' bindings of those due
    /// by `at` (the others are still being sent to or still waiting, and are not judged by
    /// this firing: their bindings would be read for nothing).
    async fn prefetch_firing(
        &self,
        key: TimerKey,
        at: i64,
    ) -> Result<(usize, Option<Prefetched>), DbErr> {
        let read_at = now_ms();
        let read = self.db.read();
        let Some(row) = read
            .query_one_raw(self.db.stmt(
                "SELECT plan FROM messages WHERE id = ?",
                vec![key.msgid.into()],
            ))
            .await?
        else {
            return Ok((0, None));
        };
        let plan = parse_plan(&row)?;
        let k = key.step as usize;
        let Some(step) = timer_step(&plan, key) else {
            return Ok((0, None));
        };
        let rows = StepRows::read(&self.db, read, key).await?;
        let judged = rows.judge(wait_of(step), at);
        if judged.examined == 0 {
            return Ok((0, None));
        }
        let mut bindings = BindingsAhead::default();
        let due: BTreeSet<&str> = judged.due.iter().map(String::as_str).collect();
        bindings
            .cover(self, read, &due, &later_types(plan.strategy.steps(), k))
            .await?;
        Ok((
            judged.examined,
            Some(Prefetched {
                read_at,
                plan,
                rows,
                bindings,
            }),
        ))
    }

    /// Work out a firing from what was read before it (see [`Prepared`]), judged at `at`:
    /// the bindings of due users the read did not cover are looked up on a reader, and
    /// without audience filters or suppressed addresses each due user's next deliveries are
    /// chosen. `None` when the timer's step has no later step (its firing only ends it).
    async fn prepare(
        &self,
        key: TimerKey,
        p: Prefetched,
        at: i64,
    ) -> Result<Option<Prepared>, DbErr> {
        let (steps, k) = (p.plan.strategy.steps(), key.step as usize);
        let Some(step) = timer_step(&p.plan, key) else {
            return Ok(None);
        };
        let judgement = p.rows.judge(wait_of(step), at);
        let mut bindings = p.bindings;
        let due: BTreeSet<&str> = judgement.due.iter().map(String::as_str).collect();
        bindings
            .cover(self, self.db.read(), &due, &later_types(steps, k))
            .await?;
        let filtered = filters_apply(
            &p.plan,
            judgement
                .due
                .iter()
                .filter_map(|u| bindings.bindings.get(u)),
        );
        let next = (!filtered).then(|| {
            next_deliveries(
                steps,
                k,
                judgement.due.iter().map(String::as_str),
                &bindings.bindings,
            )
        });
        Ok(Some(Prepared {
            plan: p.plan,
            ahead: StepAhead {
                read_at: p.read_at,
                rows: p.rows,
                judgement,
                bindings,
                next,
            },
        }))
    }

    /// The next deliveries of the `advancing` users of the timer `key`'s step, chosen in the
    /// firing's transaction, and how many users they go to. Through the audience filters when
    /// the plan has some or an address is suppressed: those read and record their state in
    /// the transaction, and skipped targets get their rows here.
    async fn choose_next<C: ConnectionTrait>(
        &self,
        txn: &C,
        plan: &MessagePlan,
        key: TimerKey,
        advancing: &BTreeSet<&str>,
        bindings_ahead: Option<BindingsAhead>,
        now: i64,
    ) -> Result<(Vec<(Resolved, i16)>, u64), DbErr> {
        let steps = plan.strategy.steps();
        let k = key.step as usize;
        let later = later_types(steps, k);
        let bindings = match bindings_ahead {
            Some(b) => b.bindings_of(self, txn, advancing, &later).await?,
            None => self.bindings_of(txn, advancing, Some(&later)).await?,
        };
        if !filters_apply(plan, bindings.values()) {
            let next = next_deliveries(steps, k, advancing.iter().copied(), &bindings);
            let advanced = users_in(&next);
            return Ok((next, advanced));
        }
        // The filters pick each user's step among all later ones.
        let none = AudienceFilters::default();
        let f = plan.filters.as_deref().unwrap_or(&none);
        let later = filters::later_rows(plan, k + 1, &bindings, advancing);
        let chosen = self.choose(txn, plan, f, &later, k + 1, now).await?;
        self.insert_skipped(txn, plan, key.seq, &chosen.skipped, now)
            .await?;
        let live = chosen
            .live
            .iter()
            .map(|(r, j)| ((*r).clone(), *j))
            .collect();
        Ok((live, chosen.reached))
    }

    /// Fire one fallback timer (see [`DispatchStore::fire_timers`]), with what was prepared
    /// for it before the writer was taken, if anything.
    /// Status callback items 0 for the later steps' deliveries it queues are added to
    /// `events`, to be reported once the firing commits.
    async fn fire<C: ConnectionTrait>(
        &self,
        txn: &C,
        key: TimerKey,
        now: i64,
        events: &mut Vec<(i64, Vec<CallbackEvent>)>,
        prepared: Option<Prepared>,
    ) -> Result<Fired, DbErr> {
        let mut fired = Fired::default();
        let delete_timer = self.db.stmt(
            "DELETE FROM fallback_timers WHERE message_id = ? AND shard_seq = ? AND step = ?",
            vec![key.msgid.into(), key.seq.into(), key.step.into()],
        );
        // A plan read ahead stands (it does not change once its message has timers): only
        // the state is read here.
        let sql = if prepared.is_some() {
            "SELECT state FROM messages WHERE id = ?"
        } else {
            "SELECT plan, state FROM messages WHERE id = ?"
        };
        let row = txn
            .query_one_raw(self.db.stmt(sql, vec![key.msgid.into()]))
            .await?;
        let Some(row) = row else {
            txn.execute_raw(delete_timer).await?;
            return Ok(fired);
        };
        if row.try_get::<String>("", "state")? == "retracted" {
            txn.execute_raw(delete_timer).await?;
            return Ok(fired);
        }
        let (plan, ahead) = match prepared {
            Some(p) => (p.plan, Some(p.ahead)),
            None => (parse_plan(&row)?, None),
        };
        let Some(step) = timer_step(&plan, key) else {
            txn.execute_raw(delete_timer).await?;
            return Ok(fired);
        };
        let wait = wait_of(step);
        // What was worked out before stands unless the step's rows changed since; the
        // bindings read before are used either way.
        let mut bindings_ahead = None;
        let mut judgement = None;
        let mut next = None;
        if let Some(a) = ahead {
            bindings_ahead = Some(a.bindings);
            let unchanged = StepFingerprint::read(&self.db, txn, key).await? == a.rows.fingerprint;
            metrics::counter!("msghub_fallback_rows_checked_total",
                "changed" => if unchanged { "no" } else { "yes" })
            .increment(1);
            if unchanged {
                judgement = Some(match a.judgement.next_due {
                    // Someone not due then may be due now.
                    Some(d) if d <= now => a.rows.judge(wait, now),
                    // Nobody else is due yet: the judgement and the deliveries chosen with it
                    // stand.
                    _ => {
                        next = a.next;
                        a.judgement
                    }
                });
            }
        }
        let judgement = match judgement {
            Some(j) => j,
            None => StepRows::read(&self.db, txn, key).await?.judge(wait, now),
        };
        let StepJudgement {
            examined,
            due,
            next_due,
            first_deadline,
            ..
        } = judgement;
        fired.examined = examined as u64;
        fired.deadline_ms = first_deadline;
        if !due.is_empty() {
            // Reached on any channel so far (the chain ends for them).
            let reached_statuses = match step.condition {
                StepCondition::NotDelivered => format!(
                    "{}, {}",
                    DeliveryStatus::Delivered as i16,
                    DeliveryStatus::Clicked as i16
                ),
                StepCondition::NotClicked => format!("{}", DeliveryStatus::Clicked as i16),
            };
            // Every user's deliveries of a message are in the one shard, on every step. Not
            // DISTINCT: SQLite would then walk the whole message in userid order.
            let mut reached: BTreeSet<String> = BTreeSet::new();
            let rows = self
                .db
                .query_packed(
                    txn,
                    &["userid"],
                    &format!(
                        "SELECT userid FROM deliveries WHERE message_id = ? AND shard_seq = ? \
                         AND status IN ({reached_statuses}) AND userid IS NOT NULL"
                    ),
                    vec![key.msgid.into(), key.seq.into()],
                )
                .await?;
            let due_set: BTreeSet<&str> = due.iter().map(String::as_str).collect();
            for r in rows {
                let userid = r.string(0)?;
                if due_set.contains(userid.as_str()) {
                    reached.insert(userid);
                }
            }
            if due.len() == examined {
                // Everyone undecided is due (the usual case): no list of users needed.
                txn.execute_raw(self.db.stmt(
                    "UPDATE deliveries SET judged = 1 WHERE message_id = ? AND shard_seq = ? AND step = ? \
                     AND judged = 0 AND userid IS NOT NULL",
                    vec![key.msgid.into(), key.seq.into(), key.step.into()],
                ))
                .await?;
            } else {
                for chunk in due.chunks(500) {
                    let mut values: Vec<Value> =
                        vec![key.msgid.into(), key.seq.into(), key.step.into()];
                    values.extend(chunk.iter().map(|u| Value::from(u.clone())));
                    txn.execute_raw(self.db.stmt(
                        &format!(
                            "UPDATE deliveries SET judged = 1 WHERE message_id = ? AND shard_seq = ? AND step = ? \
                             AND judged = 0 AND userid IN ({})",
                            in_list(chunk.len())
                        ),
                        values,
                    ))
                    .await?;
                }
            }
            let advancing: BTreeSet<&str> = due
                .iter()
                .filter(|u| !reached.contains(*u))
                .map(String::as_str)
                .collect();
            fired.reached = reached.len() as u64;
            if !advancing.is_empty() {
                let (resolved, advanced) = match next {
                    // Chosen before the writer was ours: those of users reached since go.
                    Some(mut next) => {
                        if !reached.is_empty() {
                            next.retain(|(r, _)| {
                                r.userid.as_deref().is_none_or(|u| !reached.contains(u))
                            });
                        }
                        let advanced = users_in(&next);
                        (next, advanced)
                    }
                    None => {
                        self.choose_next(txn, &plan, key, &advancing, bindings_ahead, now)
                            .await?
                    }
                };
                fired.advanced += advanced;
                fired.exhausted += (advancing.len() as u64).saturating_sub(advanced);
                let stepped: Vec<(&Resolved, i16)> =
                    resolved.iter().map(|(r, j)| (r, *j)).collect();
                self.insert_deliveries(txn, &plan, key.seq, &stepped, now, false)
                    .await?;
                if !stepped.is_empty() && !self.callbacks.silent(plan.msgid) {
                    let valid = stepped
                        .iter()
                        .filter_map(|(r, _)| {
                            let c = plan
                                .channels
                                .iter()
                                .find(|c| c.channel_type.code() == r.channel_type)?;
                            Some(target_valid(
                                c.channel_type,
                                r.userid.clone(),
                                r.address.clone(),
                                now,
                            ))
                        })
                        .collect();
                    events.push((plan.msgid, valid));
                }
                self.arm_timers(txn, &plan, key.seq, &stepped, now).await?;
                if !stepped.is_empty() {
                    txn.execute_raw(self.db.stmt(
                        "UPDATE shards SET state = 'pending', generation = generation + 1, updated_at = ? WHERE message_id = ? AND seq = ?",
                        vec![now.into(), key.msgid.into(), key.seq.into()],
                    ))
                    .await?;
                    txn.execute_raw(self.db.stmt(
                        "UPDATE messages SET state = 'accepted', updated_at = ? WHERE id = ? AND state IN ('waiting', 'done')",
                        vec![now.into(), key.msgid.into()],
                    ))
                    .await?;
                    fired.reopened = Some(plan.clone());
                }
            }
        }
        fired.due_again_ms = next_due;
        match next_due {
            Some(d) => {
                txn.execute_raw(self.db.stmt(
                    "UPDATE fallback_timers SET due_at = ? WHERE message_id = ? AND shard_seq = ? AND step = ?",
                    vec![d.into(), key.msgid.into(), key.seq.into(), key.step.into()],
                ))
                .await?;
            }
            None => {
                txn.execute_raw(delete_timer).await?;
            }
        }
        if fired.reopened.is_none() {
            // The last timer of a message waiting for nothing else ends it.
            txn.execute_raw(self.db.stmt(
                "UPDATE messages SET state = 'done', updated_at = ? WHERE id = ? AND state = 'waiting' \
                 AND NOT EXISTS (SELECT 1 FROM fallback_timers t WHERE t.message_id = messages.id) \
                 AND NOT EXISTS (SELECT 1 FROM shards s WHERE s.message_id = messages.id AND s.state = 'pending')",
                vec![now.into(), key.msgid.into()],
            ))
            .await?;
        }
        Ok(fired)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::dispatch::tests::{sqlite_store, store_of};
    use crate::storage::suppressions::{SuppressReason, Suppressed};
    use msghub_actors::provider::ChannelType;

    fn judge(rows: &[PackedRow], wait: i64, now: i64) -> Result<StepJudgement, DbErr> {
        Ok(StepRows::of(rows)?.judge(wait, now))
    }

    fn row(
        userid: &str,
        sent_at: Option<i64>,
        created_at: i64,
        status: DeliveryStatus,
    ) -> PackedRow {
        row_updated(
            userid,
            sent_at,
            created_at,
            status,
            sent_at.unwrap_or(created_at),
        )
    }

    fn row_updated(
        userid: &str,
        sent_at: Option<i64>,
        created_at: i64,
        status: DeliveryStatus,
        updated_at: i64,
    ) -> PackedRow {
        PackedRow(vec![
            userid.into(),
            sent_at.map_or(serde_json::Value::Null, Into::into),
            created_at.into(),
            (status as i16).into(),
            updated_at.into(),
            0.into(),
        ])
    }

    #[test]
    fn a_step_judges_users_by_their_last_send_and_failures() {
        use DeliveryStatus::*;
        let rows = [
            // Waited long enough since its last delivery on the step.
            row("a", Some(1_000), 0, Submitted),
            row("a", Some(1_500), 0, Delivered),
            // Sent too recently: due when its wait has passed.
            row("b", Some(9_000), 0, Submitted),
            // Everything failed: due at once.
            row("c", Some(9_500), 0, Failed),
            // ... the last of it by a "not delivered" receipt recorded at 9550.
            row_updated("c", Some(9_400), 0, Undelivered, 9_550),
            // One delivery still being sent: looked at again shortly.
            row("d", Some(9_000), 0, Failed),
            row("d", None, 9_000, Queued),
        ];
        let j = judge(&rows, 5_000, 10_000).unwrap();
        assert_eq!(j.examined, 4);
        assert_eq!(j.due, vec!["a".to_string(), "c".to_string()]);
        // b at 9000 + 5000; d at now + min(wait, 1000).
        assert_eq!(j.next_due, Some(11_000));
        assert_eq!(j.sending, 1);
        // The first of them due: a, 1500 + 5000 (c's failure came later).
        assert_eq!(j.first_deadline, Some(6_500));
        let later = judge(&rows, 5_000, 14_000).unwrap();
        assert_eq!(later.due, vec!["a", "b", "c"]);
        assert_eq!(later.next_due, Some(15_000));
        // Failed users are due at their last failure, not after the wait.
        let failed = judge(&rows[3..5], 5_000, 9_600).unwrap();
        assert_eq!(failed.due, vec!["c"]);
        assert_eq!(failed.first_deadline, Some(9_550));
        let none = judge(&rows[2..3], 5_000, 10_000).unwrap();
        assert_eq!(none.first_deadline, None);
    }

    #[tokio::test]
    async fn read_ahead_is_taken_once_while_fresh_and_bounded() {
        let ahead = ReadAhead::default();
        let key = |seq| TimerKey {
            msgid: 1,
            seq,
            step: 0,
            due_at_ms: 5_000,
        };
        let now = now_ms();
        assert!(ahead.claim(&key(0), now));
        assert!(!ahead.claim(&key(0), now), "read twice at once");
        // A firing waits for the read in flight instead of reading again.
        let first = key(0);
        let mut waiting = Box::pin(ahead.take(&first));
        assert!(futures::poll!(&mut waiting).is_pending(), "did not wait");
        ahead.end(key(0), now_ms(), Some((1000, None)));
        assert_eq!(waiting.await.map(|(n, _)| n), Some(1000));
        assert!(ahead.take(&key(0)).await.is_none(), "taken twice");
        // A failed read leaves the reading to the firing; a key never read is not waited for.
        assert!(ahead.claim(&key(1), now));
        ahead.end(key(1), now, None);
        assert!(ahead.take(&key(1)).await.is_none());
        assert!(ahead.take(&key(9)).await.is_none());
        // Too old to use: the firing reads again.
        assert!(ahead.claim(&key(2), now));
        ahead.end(key(2), now - READ_AHEAD_MAX_AGE_MS - 1, Some((10, None)));
        assert!(ahead.take(&key(2)).await.is_none());
        // Bounded; old entries make room.
        for seq in 0..READ_AHEAD_TIMERS as i32 {
            assert!(ahead.claim(&key(seq), now));
            ahead.end(key(seq), now, Some((1, None)));
        }
        assert!(!ahead.claim(&key(-1), now));
        assert!(ahead.claim(&key(-1), now + READ_AHEAD_MAX_AGE_MS + 1));
    }

    #[tokio::test]
    async fn prefetched_bindings_are_used_and_uncovered_users_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        for (user, kind, address) in [
            ("a", "sms", "1301"),
            ("b", "sms", "1302"),
            ("b", "app", "rb"),
        ] {
            store
                .db
                .execute(
                    "INSERT INTO bindings (userid, channel_type, address, bind_key) VALUES (?, ?, ?, ?)",
                    vec![user.into(), kind.into(), address.into(), "k".into()],
                )
                .await
                .unwrap();
        }
        // "b"'s number is suppressed: read with its flag.
        store
            .db
            .add_suppressions(ChannelType::Sms, &["1302"], SuppressReason::Manual, None)
            .await
            .unwrap();
        // "a" was read ahead (with an address the database no longer has: the read-ahead is
        // what is used), "c" was read ahead and has none; "b" was not covered.
        let prefetched = BindingsAhead {
            covered: ["a", "c"].into_iter().map(String::from).collect(),
            bindings: [(
                "a".to_string(),
                vec![("sms".to_string(), "1300".to_string(), Suppressed::No)],
            )]
            .into_iter()
            .collect(),
        };
        let users: BTreeSet<&str> = ["a", "b", "c"].into_iter().collect();
        let later: BTreeSet<&str> = ["sms"].into_iter().collect();
        let got = prefetched
            .bindings_of(&store, store.db.read(), &users, &later)
            .await
            .unwrap();
        let mut got: Vec<_> = got.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "a".to_string(),
                    vec![("sms".to_string(), "1300".to_string(), Suppressed::No)]
                ),
                (
                    "b".to_string(),
                    vec![("sms".to_string(), "1302".to_string(), Suppressed::All)]
                ),
            ]
        );
    }

    /// A two-step chain app (wait 1 s, not delivered) → sms, stored as message `msgid` with
    /// app deliveries on step 0 for `users` (sent at `sent`) and the step's timer due.
    async fn chain(store: &Store, msgid: i64, users: &[&str], sent: i64) -> TimerKey {
        use msghub_actors::plan::{Audience, Lane, PlannedChannel, Strategy};
        let channel = |channel_id, channel_type| PlannedChannel {
            channel_id,
            channel_type,
            content: serde_json::json!({}),
        };
        let step = |channel_type, wait_ms| FallbackStep {
            channel_type,
            wait_ms,
            condition: StepCondition::NotDelivered,
        };
        let plan = MessagePlan {
            msgid,
            source_id: 1,
            lane: Lane::Realtime,
            audience: Audience::Userids(users.iter().map(|u| u.to_string()).collect()),
            channels: vec![channel(1, ChannelType::App), channel(2, ChannelType::Sms)],
            ttl_seconds: None,
            send_at_ms: None,
            spread_seconds: None,
            strategy: Strategy::Fallback {
                rule_id: 1,
                steps: vec![step(ChannelType::App, 1_000), step(ChannelType::Sms, 0)],
            },
            callback: None,
            priority: None,
            filters: None,
        };
        store
            .db
            .execute(
                "INSERT INTO messages (id, source_id, kind, priority, lane, state, plan, response, \
                 planned, shard_count, created_at, updated_at) \
                 VALUES (?, 1, 'sent', 2, 'realtime', 'waiting', ?, '{}', TRUE, 1, ?, ?)",
                vec![
                    msgid.into(),
                    serde_json::to_string(&plan).unwrap().into(),
                    sent.into(),
                    sent.into(),
                ],
            )
            .await
            .unwrap();
        for user in users {
            add_app_delivery(store, msgid, user, sent).await;
        }
        store
            .db
            .execute(
                "INSERT INTO fallback_timers (message_id, shard_seq, step, due_at) VALUES (?, 0, 0, ?)",
                vec![msgid.into(), (sent + 1_000).into()],
            )
            .await
            .unwrap();
        TimerKey {
            msgid,
            seq: 0,
            step: 0,
            due_at_ms: sent + 1_000,
        }
    }

    /// A step-0 app delivery to `user`, submitted at `sent`, and the user's sms number.
    async fn add_app_delivery(store: &Store, msgid: i64, user: &str, sent: i64) {
        store
            .db
            .execute(
                "INSERT INTO deliveries (message_id, shard_seq, channel_id, channel_type, userid, \
                 address, step, status, attempts, updated_at, created_at, sent_at) \
                 VALUES (?, 0, 1, 'app', ?, ?, 0, ?, 1, ?, ?, ?)",
                vec![
                    msgid.into(),
                    user.into(),
                    format!("reg-{user}").into(),
                    (DeliveryStatus::Submitted as i16).into(),
                    sent.into(),
                    sent.into(),
                    sent.into(),
                ],
            )
            .await
            .unwrap();
        store
            .db
            .execute(
                "INSERT INTO bindings (userid, channel_type, address, bind_key) VALUES (?, 'sms', ?, 'k') \
                 ON CONFLICT DO NOTHING",
                vec![user.into(), format!("tel-{user}").into()],
            )
            .await
            .unwrap();
    }

    /// Set the status of `user`'s deliveries of message `msgid`.
    async fn set_status(store: &Store, msgid: i64, user: &str, status: DeliveryStatus) {
        store
            .db
            .execute(
                "UPDATE deliveries SET status = ? WHERE message_id = ? AND userid = ?",
                vec![(status as i16).into(), msgid.into(), user.into()],
            )
            .await
            .unwrap();
    }

    /// The users of message `msgid` with a delivery on `step`, and whether each is judged.
    async fn on_step(store: &Store, msgid: i64, step: i16) -> Vec<(String, i64)> {
        store
            .db
            .query_all(
                "SELECT userid, CAST(judged AS BIGINT) AS judged FROM deliveries WHERE message_id = ? AND step = ? ORDER BY userid",
                vec![msgid.into(), step.into()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get("", "userid").unwrap(), r.try_get("", "judged").unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn the_fingerprint_counted_by_sqlite_is_the_one_of_the_rows_read() {
        let dir = tempfile::tempdir().unwrap();
        fingerprints(sqlite_store(&dir).await).await;
    }

    #[tokio::test]
    async fn the_fingerprint_counted_by_postgres_is_the_one_of_the_rows_read() {
        if let Some(db) = crate::storage::test_postgres().await {
            fingerprints(store_of(db)).await;
        }
    }

    async fn fingerprints(store: Store) {
        let now = now_ms();
        let key = chain(&store, 1, &["a", "b", "c", "d", "e"], now - 5_000).await;
        // Queued, failed, not delivered, delivered; one already judged; another step's row.
        for (user, status) in [
            ("a", DeliveryStatus::Queued),
            ("b", DeliveryStatus::Failed),
            ("c", DeliveryStatus::Undelivered),
            ("d", DeliveryStatus::Delivered),
        ] {
            set_status(&store, 1, user, status).await;
        }
        store
            .db
            .execute(
                "UPDATE deliveries SET judged = 1 WHERE userid = 'e'",
                vec![],
            )
            .await
            .unwrap();
        let read = || async {
            let rows = StepRows::read(&store.db, store.db.read(), key)
                .await
                .unwrap()
                .fingerprint;
            let counted = StepFingerprint::read(&store.db, store.db.read(), key)
                .await
                .unwrap();
            assert_eq!(rows, counted);
            rows
        };
        let before = read().await;
        assert_eq!((before.rows, before.queued, before.failed), (4, 1, 2));
        // One failed row delivered and another failed: as many failed rows, other ids.
        for (user, status) in [
            ("b", DeliveryStatus::Delivered),
            ("d", DeliveryStatus::Failed),
        ] {
            set_status(&store, 1, user, status).await;
        }
        let after = read().await;
        assert_eq!(after.failed, before.failed);
        assert_ne!(after, before);
        // A send recorded for a row that had none (after its receipt, say).
        store
            .db
            .execute(
                "UPDATE deliveries SET sent_at = NULL WHERE userid = ?",
                vec!["d".into()],
            )
            .await
            .unwrap();
        let unsent = read().await;
        set_status(&store, 1, "d", DeliveryStatus::Delivered).await;
        let delivered = read().await;
        store
            .db
            .execute(
                "UPDATE deliveries SET sent_at = ? WHERE userid = ?",
                vec![now.into(), "d".into()],
            )
            .await
            .unwrap();
        let sent = read().await;
        assert_eq!((delivered.rows, delivered.sent + 1), (sent.rows, sent.sent));
        assert_ne!(unsent, after);
    }

    #[tokio::test]
    async fn a_firing_worked_out_before_the_writer_stands_only_while_the_rows_are_unchanged_on_sqlite()
     {
        let dir = tempfile::tempdir().unwrap();
        firing_ahead(sqlite_store(&dir).await).await;
    }

    #[tokio::test]
    async fn a_firing_worked_out_before_the_writer_stands_only_while_the_rows_are_unchanged_on_postgres()
     {
        if let Some(db) = crate::storage::test_postgres().await {
            firing_ahead(store_of(db)).await;
        }
    }

    async fn firing_ahead(store: Store) {
        let now = now_ms();
        let sent = now - 5_000;
        let same = chain(&store, 1, &["a", "b", "c"], sent).await;
        let changed = chain(&store, 2, &["a", "b", "c"], sent).await;
        store.read_ahead_of(&[same, changed], now).await;
        // After the read, in both messages, "c"'s send moved to now. No delivery changes
        // that way, but the fingerprint cannot see it: where the judgement prepared from the
        // read stands, "c" moves on, which shows it was used.
        store
            .db
            .execute(
                "UPDATE deliveries SET sent_at = ? WHERE userid = 'c'",
                vec![now.into()],
            )
            .await
            .unwrap();
        // Message 1, after the read: "b" was delivered.
        set_status(&store, 1, "b", DeliveryStatus::Delivered).await;
        // Message 2, after the read: new rows on the step, one due ("d") and one just sent
        // ("e"). The rows are read again in the firing.
        add_app_delivery(&store, 2, "d", sent).await;
        add_app_delivery(&store, 2, "e", now).await;
        let fired = store.fire_due(&[same, changed], 10_000).await.unwrap();
        let sms = |users: &[&str]| -> Vec<(String, i64)> {
            users.iter().map(|u| (u.to_string(), 0)).collect()
        };
        // Reached since the read: not moved on, and judged.
        assert_eq!(on_step(&store, 1, 1).await, sms(&["a", "c"]));
        assert_eq!(
            on_step(&store, 1, 0).await,
            vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
        assert_eq!((fired[0].advanced, fired[0].reached), (2, 1));
        // What appeared since is judged as it is now; the user not due stays undecided.
        assert_eq!(on_step(&store, 2, 1).await, sms(&["a", "b", "d"]));
        assert_eq!(
            on_step(&store, 2, 0).await,
            vec![
                ("a".into(), 1),
                ("b".into(), 1),
                ("c".into(), 0),
                ("d".into(), 1),
                ("e".into(), 0)
            ]
        );
        assert_eq!((fired[1].advanced, fired[1].examined), (3, 5));
        assert!(fired[1].due_again_ms.is_some());
    }

    #[tokio::test]
    async fn a_timer_whose_users_are_due_soon_waits_for_them_with_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let soon = chain(&store, 1, &["a", "b"], 0).await;
        // The same, but "c" is still being sent to: fired now, its row moved.
        let sending = chain(&store, 2, &["a", "c"], 0).await;
        set_status(&store, 2, "c", DeliveryStatus::Queued).await;
        // Sent 920 ms ago with a 1 s wait: due in 80 ms. The timers' rows were armed when
        // the step was opened, before it was sent, and came due before.
        let now = now_ms();
        store
            .db
            .execute(
                "UPDATE deliveries SET sent_at = ?",
                vec![(now - 920).into()],
            )
            .await
            .unwrap();
        store
            .db
            .execute(
                "UPDATE fallback_timers SET due_at = ?",
                vec![(now - 100).into()],
            )
            .await
            .unwrap();
        let fired = store.fire_due(&[soon, sending], 10_000).await.unwrap();
        assert_eq!(fired.len(), 2);
        assert!(fired[0].not_yet && !fired[1].not_yet);
        assert_eq!((fired[0].examined, fired[0].advanced), (2, 0));
        assert_eq!(fired[0].due_again_ms, Some(now + 80));
        let due_at = |msgid: i64| {
            let store = &store;
            async move {
                store
                    .db
                    .query_one(
                        "SELECT due_at FROM fallback_timers WHERE message_id = ?",
                        vec![msgid.into()],
                    )
                    .await
                    .unwrap()
                    .map(|r| r.try_get::<i64>("", "due_at").unwrap())
            }
        };
        assert_eq!(due_at(1).await, Some(now - 100), "fired for nothing");
        assert_eq!(due_at(2).await, Some(now + 80), "not fired");
        assert_eq!(
            on_step(&store, 1, 0).await,
            vec![("a".into(), 0), ("b".into(), 0)]
        );
        // "b"'s send moved after the read (see the test above): the firing that comes when
        // they are due uses what was read, and moves both on.
        store
            .db
            .execute(
                "UPDATE deliveries SET sent_at = ? WHERE message_id = 1 AND userid = 'b'",
                vec![now_ms().into()],
            )
            .await
            .unwrap();
        while now_ms() < now + 80 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let fired = store.fire_due(&[soon], 10_000).await.unwrap();
        assert_eq!(fired[0].advanced, 2);
        assert_eq!(
            on_step(&store, 1, 1).await,
            vec![("a".into(), 0), ("b".into(), 0)]
        );
        assert_eq!(due_at(1).await, None);
    }

    #[tokio::test]
    async fn a_firing_judges_again_when_someone_became_due_since_it_was_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let now = now_ms();
        // "a" due long ago; "b" due in 500 ms (1 s wait).
        let key = chain(&store, 1, &["a", "b"], now - 4_000).await;
        store
            .db
            .execute(
                "UPDATE deliveries SET sent_at = ? WHERE userid = 'b'",
                vec![(now - 500).into()],
            )
            .await
            .unwrap();
        let (_, read) = store.prefetch_firing(key, now).await.unwrap();
        let prepared = store
            .prepare(key, read.unwrap(), now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(prepared.ahead.judgement.due, vec!["a"]);
        // Fired (the rows unchanged) once "b" is due too: both move on.
        let txn = store.db.write().begin().await.unwrap();
        let fired = store
            .fire(&txn, key, now + 600, &mut Vec::new(), Some(prepared))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(fired.advanced, 2);
        assert_eq!(
            on_step(&store, 1, 1).await,
            vec![("a".into(), 0), ("b".into(), 0)]
        );
    }
}
