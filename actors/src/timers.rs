//! `FallbackTimers`: fires the persisted fallback timers (one per shard and step).
//!
//! Deadlines live in the database, not in memory, so a million users waiting in fallback
//! chains cost no memory here, and a restart loses no timer: the first poll after start fires
//! every timer that fell due while the process was down. The actor polls for due timers at a
//! short interval and fires each in its own transaction; a timer that queues a next step
//! hands the message back to the planner.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::plan::now_ms;
use crate::planner::DispatchMessage;
use crate::store::DispatchStore;

#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// How often due timers are looked for; bounds how late a timer fires.
    pub poll_interval: Duration,
    /// Timers fired per poll at most (the next poll continues at once when there were more).
    pub batch: u32,
}

/// What a [`Poller`] does on each tick: one page of due work, offering messages that became
/// ready to the planner. Returns true when the page was full (more may be due at once).
#[async_trait::async_trait]
pub trait DueWork: Send + Sync + 'static {
    /// The actor's name in `msghub_actor_restarts_total`.
    const NAME: &'static str;

    async fn run(
        &self,
        store: &dyn DispatchStore,
        planner: &Recipient<DispatchMessage>,
        limit: u32,
    ) -> bool;
}

/// A supervised actor that polls storage for due work at a short interval: deadlines live in
/// the database, so nothing is lost across restarts and nothing waits in memory.
pub struct Poller<W: DueWork> {
    work: Arc<W>,
    store: Arc<dyn DispatchStore>,
    planner: Recipient<DispatchMessage>,
    config: TimerConfig,
    /// Where each page of work runs: the runtime of the storage writers, not the dispatch
    /// arbiter this actor lives on. A page is a chain of statements in one transaction that
    /// holds the writer; on the arbiter, each statement's continuation would queue behind the
    /// provider calls of the steps it just queued.
    runtime: tokio::runtime::Handle,
    busy: bool,
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
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let work = self.work.clone();
        let store = self.store.clone();
        let planner = self.planner.clone();
        let limit = self.config.batch.max(1);
        let run = self
            .runtime
            .spawn(async move { work.run(&*store, &planner, limit).await });
        ctx.spawn(run.into_actor(self).map(move |more, act, ctx| {
            act.busy = false;
            // A page that panicked was reported by the panic hook; the next tick polls again.
            if more.unwrap_or(false) {
                act.poll(ctx);
            }
        }));
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
        metrics::counter!("msghub_actor_restarts_total", "actor" => W::NAME).increment(1);
    }
}

/// The fallback timers' work: fire every due timer of a page, about `max_users` users per
/// transaction.
pub struct FireTimers {
    pub max_users: u64,
}

#[async_trait::async_trait]
impl DueWork for FireTimers {
    const NAME: &'static str = "fallback_timers";

    async fn run(
        &self,
        store: &dyn DispatchStore,
        planner: &Recipient<DispatchMessage>,
        limit: u32,
    ) -> bool {
        fire_due(store, planner, limit, self.max_users.max(1)).await
    }
}

/// Fire every due timer of one page, many per transaction; true when the page was full (more
/// may be due).
async fn fire_due(
    store: &dyn DispatchStore,
    planner: &Recipient<DispatchMessage>,
    limit: u32,
    max_users: u64,
) -> bool {
    let due = match store.due_timers(now_ms(), limit).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "loading due fallback timers failed");
            return false;
        }
    };
    let full = due.len() as u32 == limit;
    let mut rest = &due[..];
    while !rest.is_empty() {
        let fired = match store.fire_timers(rest, max_users).await {
            Ok(fired) => fired,
            Err(e) => {
                // The timers stay in the table and are fired again by a later poll.
                tracing::warn!(msgid = rest[0].msgid, seq = rest[0].seq, step = rest[0].step, error = %e,
                    "firing fallback timers failed; retrying");
                return false;
            }
        };
        // Late by the time its users were moved on (the commit, not the start), against the
        // deadline of the first of them to become due: the timer row's due time is armed when
        // the shard is opened, before its step is even sent.
        let committed = now_ms();
        for (key, fired) in rest.iter().zip(&fired) {
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
        if fired.is_empty() {
            return false;
        }
        rest = &rest[fired.len().min(rest.len())..];
    }
    full
}
