//! `FallbackTimers`: fires the persisted fallback timers (one per shard and step).
//!
//! Deadlines live in the database, not in memory, so a million users waiting in fallback
//! chains cost no memory here, and a restart loses no timer: the first poll after start fires
//! every timer that fell due while the process was down. The actor polls at a short interval
//! for the timers due now and those due within [`READ_AHEAD_MS`]: it fires the due ones, a
//! few per transaction, while what the others' firings will read is read ahead, and it wakes
//! at the first of their deadlines. A timer that queues a next step hands the message back to
//! the planner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::plan::now_ms;
use crate::planner::DispatchMessage;
use crate::store::{DispatchStore, Fired, TimerKey};

#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// How often timers are looked for; bounds how late a timer fires that was armed, or
    /// brought forward by a failure, less than [`READ_AHEAD_MS`] before its deadline. Timers
    /// seen ahead of their deadline, or moved by a firing, are fired at it.
    pub poll_interval: Duration,
    /// Timers fired per poll at most (the next poll continues at once when there were more).
    pub batch: u32,
}

/// When a [`Poller`] looks for due work again after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// At once: the page was full, more may be due.
    Now,
    /// At this time (unix ms): the earliest work seen that was not due yet.
    At(i64),
    /// At the next tick of the poll interval.
    Tick,
}

/// What a [`Poller`] does on each tick: one page of due work, offering messages that became
/// ready to the planner. Returns when to look again.
#[async_trait::async_trait]
pub trait DueWork: Send + Sync + 'static {
    /// The actor's name in `msghub_actor_restarts_total`.
    const NAME: &'static str;

    async fn run(
        &self,
        store: &Arc<dyn DispatchStore>,
        planner: &Recipient<DispatchMessage>,
        limit: u32,
    ) -> Next;
}

/// A supervised actor that polls storage for due work at a short interval: deadlines live in
/// the database, so nothing is lost across restarts and nothing waits in memory.
pub struct Poller<W: DueWork> {
    work: Arc<W>,
    store: Arc<dyn DispatchStore>,
    planner: Recipient<DispatchMessage>,
    config: TimerConfig,
    /// Where each page of work runs: the deadline thread's runtime (see [`crate::Dispatch`]),
    /// not the dispatch arbiter this actor lives on. A page is a chain of statements in one
    /// transaction that holds the writer; on the arbiter, each statement's continuation would
    /// queue behind the provider calls of the steps it just queued, and on the main runtime
    /// behind the storage writers' tasks.
    runtime: tokio::runtime::Handle,
    busy: bool,
    /// A poll came while a page was running: look again as soon as it ends.
    again: bool,
    /// The time (unix ms) of the earliest poll scheduled for work seen ahead of its time.
    wake_at: Option<i64>,
}

/// Fires due fallback timers.
pub type FallbackTimers = Poller<FireTimers>;

impl<W: DueWork> Poller<W> {
    pub fn new(
        work: W,
        store: Arc<dyn DispatchStore>,
        planner: Recipient<DispatchMessage>,
        config: TimerConfig,
        runtime: tokio::runtime::Handle,
    ) -> Poller<W> {
        Poller {
            work: Arc::new(work),
            store,
            planner,
            config,
            runtime,
            busy: false,
            again: false,
            wake_at: None,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        self.again = false;
        let work = self.work.clone();
        let store = self.store.clone();
        let planner = self.planner.clone();
        let limit = self.config.batch.max(1);
        let run = self
            .runtime
            .spawn(async move { work.run(&store, &planner, limit).await });
        ctx.spawn(run.into_actor(self).map(move |next, act, ctx| {
            act.busy = false;
            // A page that panicked was reported by the panic hook; the next tick polls again.
            match next.unwrap_or(Next::Tick) {
                Next::Now => act.poll(ctx),
                Next::At(at) => {
                    if std::mem::take(&mut act.again) || at <= now_ms() {
                        act.poll(ctx);
                    } else {
                        act.wake(ctx, at);
                    }
                }
                Next::Tick => {
                    if std::mem::take(&mut act.again) {
                        act.poll(ctx);
                    }
                }
            }
        }));
    }

    /// Poll at `at` (unix ms), unless a poll is already scheduled by then: work seen ahead of
    /// its time is done on time, not up to a poll interval late.
    fn wake(&mut self, ctx: &mut Context<Self>, at: i64) {
        let now = now_ms();
        if self.wake_at.is_some_and(|w| w > now && w <= at) {
            return;
        }
        self.wake_at = Some(at);
        let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
        ctx.run_later(delay, move |act, ctx| {
            if act.wake_at == Some(at) {
                act.wake_at = None;
            }
            act.poll(ctx);
        });
    }
}

impl<W: DueWork> Actor for Poller<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll(ctx);
        ctx.run_interval(self.config.poll_interval, |act, ctx| act.poll(ctx));
    }
}

impl<W: DueWork> Supervised for Poller<W> {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.busy = false;
        self.again = false;
        self.wake_at = None;
        metrics::counter!("msghub_actor_restarts_total", "actor" => W::NAME).increment(1);
    }
}

/// How far ahead of their deadline timers are looked at: what their firing will read (the
/// later steps' bindings of their users) is read then, on a reader, so that at the deadline
/// only the firing's own transaction is left to do.
pub const READ_AHEAD_MS: i64 = 250;

/// The fallback timers' work: fire every due timer of a page, about `max_users` users per
/// transaction.
pub struct FireTimers {
    max_users: u64,
    /// Set while a read-ahead task runs (one at a time).
    reading: Arc<AtomicBool>,
    /// Where read-ahead tasks run; the firings' runtime when `None`.
    reads: Option<tokio::runtime::Handle>,
}

impl FireTimers {
    pub fn new(max_users: u64) -> FireTimers {
        FireTimers {
            max_users: max_users.max(1),
            reading: Arc::default(),
            reads: None,
        }
    }

    /// Read ahead on `runtime` (when given), beside the firings: a firing holds the one
    /// SQLite writer while its statements' continuations run, and on the firings' own thread
    /// each of them would wait behind a read-ahead parsing a thousand users' rows.
    pub fn reading_on(mut self, runtime: Option<tokio::runtime::Handle>) -> FireTimers {
        self.reads = runtime;
        self
    }

    /// Read ahead for `keys` in a task of its own, unless one runs already (the next page
    /// hands it the timers it did not reach): neither the firings nor the next poll wait for
    /// these reads.
    fn read_ahead(&self, store: &Arc<dyn DispatchStore>, keys: &[TimerKey]) {
        if keys.is_empty() || self.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends.
        struct Reading(Arc<AtomicBool>);
        impl Drop for Reading {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let reading = Reading(self.reading.clone());
        let (store, keys) = (store.clone(), keys.to_vec());
        let read = async move {
            let _reading = reading;
            store.prefetch_timers(&keys, now_ms() + READ_AHEAD_MS).await;
        };
        match &self.reads {
            Some(runtime) => runtime.spawn(read),
            None => tokio::spawn(read),
        };
    }

    /// Fire every due timer of one page, many per transaction, while the page's other timers
    /// (due now or within [`READ_AHEAD_MS`], see [`read_ahead_from`]) are read ahead beside
    /// them; say when the first timer not due yet is.
    async fn fire_due(
        &self,
        store: &Arc<dyn DispatchStore>,
        planner: &Recipient<DispatchMessage>,
        limit: u32,
    ) -> Next {
        let now = now_ms();
        let page = match store.due_timers(now + READ_AHEAD_MS, limit).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "loading due fallback timers failed");
                return Next::Tick;
            }
        };
        let full = page.len() as u32 == limit;
        // Ordered by due time: the due ones first, then those due soon.
        let due = page.partition_point(|k| k.due_at_ms <= now);
        self.read_ahead(store, &page[read_ahead_from(due)..]);
        let mut done = 0;
        let mut due_again: Option<i64> = None;
        // Whether every due timer was left for its users to become due: their rows stay
        // due, so a full page of them is not a sign that more are due beyond it.
        let mut all_not_yet = true;
        while done < due {
            let rest = &page[done..due];
            let fired = match store.fire_timers(rest, self.max_users).await {
                Ok(fired) => fired,
                Err(e) => {
                    // The timers stay in the table and are fired again by a later poll.
                    tracing::warn!(msgid = rest[0].msgid, seq = rest[0].seq, step = rest[0].step, error = %e,
                        "firing fallback timers failed; retrying");
                    return Next::Tick;
                }
            };
            record(rest, &fired, planner);
            all_not_yet &= fired.iter().all(|f| f.not_yet);
            due_again = fired
                .iter()
                .filter_map(|f| f.due_again_ms)
                .chain(due_again)
                .min();
            if fired.is_empty() {
                return Next::Tick;
            }
            done += fired.len().min(rest.len());
            // A reader that stopped when enough was held goes on from here.
            self.read_ahead(store, page.get(done + 1..).unwrap_or_default());
        }
        next_after(&page, due, full, all_not_yet, due_again)
    }
}

#[async_trait::async_trait]
impl DueWork for FireTimers {
    const NAME: &'static str = "fallback_timers";

    async fn run(
        &self,
        store: &Arc<dyn DispatchStore>,
        planner: &Recipient<DispatchMessage>,
        limit: u32,
    ) -> Next {
        self.fire_due(store, planner, limit).await
    }
}

/// Where the read-ahead of a page starts when its first `due` timers are due: after the
/// first of them, whose firing starts at once and reads for it itself (beside the
/// read-ahead); at the first timer when none is due yet.
fn read_ahead_from(due: usize) -> usize {
    due.min(1)
}

/// When to poll again after the first `due` timers of `page` were fired or, if
/// `all_not_yet`, all left for their users to become due (at `due_again`, the earliest time
/// a fired or left timer is due again): their rows stay due, so a full page of them does not
/// mean more are due beyond it, and polling at once would find the same page.
fn next_after(
    page: &[TimerKey],
    due: usize,
    full: bool,
    all_not_yet: bool,
    due_again: Option<i64>,
) -> Next {
    sooner(next_poll(page, due, full && !all_not_yet), due_again)
}

/// When to poll again after firing the first `due` timers of `page` (ordered by due time):
/// at the first one not due yet; at once when every timer of a full page was due (more may
/// be); else at the next tick.
fn next_poll(page: &[TimerKey], due: usize, full: bool) -> Next {
    match page.get(due) {
        Some(first) => Next::At(first.due_at_ms),
        None if full => Next::Now,
        None => Next::Tick,
    }
}

/// `next`, or a poll at `due_again` (a timer just moved to it) when that is sooner: a timer
/// fired before its users were due is fired again when they are, not at the next tick.
fn sooner(next: Next, due_again: Option<i64>) -> Next {
    match (next, due_again) {
        (Next::Now, _) | (_, None) => next,
        (Next::At(at), Some(again)) => Next::At(at.min(again)),
        (Next::Tick, Some(again)) => Next::At(again),
    }
}

/// Report what the firings of `keys` did (`fired` is for a prefix of them), and hand the
/// messages that got a next step to the planner.
fn record(keys: &[TimerKey], fired: &[Fired], planner: &Recipient<DispatchMessage>) {
    // Late by the time its users were moved on (the commit, not the start), against the
    // deadline of the first of them to become due: the timer row's due time is armed when
    // the shard is opened, before its step is even sent.
    let committed = now_ms();
    for (key, fired) in keys.iter().zip(fired) {
        if fired.not_yet {
            tracing::debug!(
                msgid = key.msgid,
                seq = key.seq,
                step = key.step,
                due_in_ms = fired.due_again_ms.map(|d| d - committed),
                examined = fired.examined,
                "fallback timer not fired: its users are not due yet"
            );
            continue;
        }
        tracing::debug!(
            msgid = key.msgid,
            seq = key.seq,
            step = key.step,
            late_ms = fired.deadline_ms.map(|d| committed - d),
            since_armed_ms = committed - key.due_at_ms,
            examined = fired.examined,
            advanced = fired.advanced,
            "fallback timer fired"
        );
        if let Some(deadline) = fired.deadline_ms {
            metrics::histogram!("msghub_fallback_timer_lateness_seconds")
                .record((committed - deadline).max(0) as f64 / 1000.0);
        }
        metrics::counter!("msghub_fallback_users_total", "result" => "advanced")
            .increment(fired.advanced);
        metrics::counter!("msghub_fallback_users_total", "result" => "reached")
            .increment(fired.reached);
        metrics::counter!("msghub_fallback_users_total", "result" => "exhausted")
            .increment(fired.exhausted);
        if let Some(plan) = &fired.reopened {
            planner.do_send(DispatchMessage {
                plan: plan.clone(),
                shards: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(due_at_ms: i64) -> TimerKey {
        TimerKey {
            msgid: 1,
            seq: 0,
            step: 0,
            due_at_ms,
        }
    }

    #[test]
    fn the_next_poll_is_at_the_first_deadline_not_yet_due() {
        let page = [key(10), key(20), key(300), key(400)];
        // Two were due: wake at the third's deadline, even when the page was full (the ones
        // due later are not more work now).
        assert_eq!(next_poll(&page, 2, false), Next::At(300));
        assert_eq!(next_poll(&page, 2, true), Next::At(300));
        // All due and the page full: more may be due at once.
        assert_eq!(next_poll(&page, 4, true), Next::Now);
        // All due, page not full; or nothing at all.
        assert_eq!(next_poll(&page, 4, false), Next::Tick);
        assert_eq!(next_poll(&[], 0, false), Next::Tick);
    }

    #[test]
    fn a_full_page_of_timers_whose_users_are_not_due_yet_is_polled_for_at_their_deadline() {
        let page = [key(10), key(20)];
        assert_eq!(next_after(&page, 2, true, true, Some(80)), Next::At(80));
        assert_eq!(next_after(&page, 2, true, false, Some(80)), Next::Now);
        assert_eq!(next_after(&page, 2, false, true, None), Next::Tick);
    }

    #[test]
    fn a_timer_moved_to_a_later_deadline_is_polled_for_then() {
        assert_eq!(sooner(Next::Tick, Some(50)), Next::At(50));
        assert_eq!(sooner(Next::At(300), Some(50)), Next::At(50));
        assert_eq!(sooner(Next::At(30), Some(50)), Next::At(30));
        assert_eq!(sooner(Next::Now, Some(50)), Next::Now);
        assert_eq!(sooner(Next::At(300), None), Next::At(300));
        assert_eq!(sooner(Next::Tick, None), Next::Tick);
    }

    #[test]
    fn every_timer_not_firing_at_once_is_read_ahead() {
        let page = [key(10), key(20), key(300)];
        // None due: the first, due soonest, is read ahead too.
        assert_eq!(&page[read_ahead_from(0)..], &page[..]);
        // Some due: the first fires at once and reads for itself; the rest are read ahead.
        assert_eq!(&page[read_ahead_from(2)..], &page[1..]);
    }
}
