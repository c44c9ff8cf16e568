//! `Planner`: turns accepted messages into shards and feeds the shard queues.
//!
//! The database is the queue of record. The accept path offers each stored message to the
//! planner without waiting; the planner runs at most `max_active` messages per lane, and a
//! sweep over unfinished messages picks up whatever was not taken (a full planner, a restart,
//! a crash), so memory stays bounded under any load and nothing stored is forgotten.
//! Tag and broadcast audiences are paged with keyset queries into persisted shards a page at a
//! time, and the planner waits for queue space before creating more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::direct::Claims;
use crate::local_time::QuietHours;
use crate::plan::{Lane, MessagePlan, Shard};
use crate::shard::{DispatchWrites, MessageFinished, MessageRun, ShardTask};
use crate::store::DispatchStore;

/// Start (or resume) dispatching a message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DispatchMessage {
    pub plan: MessagePlan,
    /// Shards created together with the message; `None` means "load the pending ones".
    pub shards: Option<Vec<Shard>>,
}

#[derive(Clone)]
pub struct ShardQueues {
    pub realtime: mpsc::Sender<ShardTask>,
    pub bulk: mpsc::Sender<ShardTask>,
}

impl ShardQueues {
    fn for_lane(&self, lane: Lane) -> &mpsc::Sender<ShardTask> {
        match lane {
            Lane::Realtime => &self.realtime,
            Lane::Bulk => &self.bulk,
        }
    }
}

/// The shards a message starts with.
enum Known {
    /// Created with the message a moment ago, never opened.
    Fresh(Vec<Shard>),
    /// Read from storage: pending, perhaps opened before a restart.
    Stored(Vec<Shard>),
    /// Not known yet: the message's pending shards are loaded when it starts.
    Load,
}

#[derive(Debug, Clone, Copy)]
pub struct PlannerConfig {
    pub shard_size: u32,
    /// Shards created per planning transaction.
    pub page_shards: u32,
    pub max_active_realtime: usize,
    pub max_active_bulk: usize,
    pub sweep_interval: Duration,
    pub sweep_batch: u32,
    /// Priority-3 messages are not dispatched inside this window; they wait for its end.
    pub quiet_hours: Option<QuietHours>,
}

pub struct Planner {
    store: Arc<dyn DispatchStore>,
    queues: ShardQueues,
    writes: DispatchWrites,
    /// Messages being sent as they were opened at acceptance: not started here.
    claims: Arc<Claims>,
    config: PlannerConfig,
    active: HashSet<i64>,
    /// Messages offered again while running (a fallback timer queued a next step): they are
    /// started again as soon as the current run ends.
    rerun: HashMap<i64, MessagePlan>,
    active_per_lane: [usize; 2],
    sweep_after: i64,
    sweeping: bool,
}

impl Planner {
    pub fn new(
        store: Arc<dyn DispatchStore>,
        queues: ShardQueues,
        writes: DispatchWrites,
        claims: Arc<Claims>,
        config: PlannerConfig,
    ) -> Planner {
        Planner {
            store,
            queues,
            writes,
            claims,
            config,
            active: HashSet::new(),
            rerun: HashMap::new(),
            active_per_lane: [0, 0],
            sweep_after: 0,
            sweeping: false,
        }
    }

    fn lane_index(lane: Lane) -> usize {
        match lane {
            Lane::Realtime => 0,
            Lane::Bulk => 1,
        }
    }

    fn has_room(&self, lane: Lane) -> bool {
        let max = match lane {
            Lane::Realtime => self.config.max_active_realtime,
            Lane::Bulk => self.config.max_active_bulk,
        };
        self.active_per_lane[Planner::lane_index(lane)] < max.max(1)
    }

    /// Start a message unless it runs already or its lane is full (then the sweep takes it
    /// later).
    fn start(&mut self, plan: MessagePlan, known: Known, ctx: &mut Context<Self>) -> bool {
        if self.active.contains(&plan.msgid) {
            if !matches!(known, Known::Fresh(_)) {
                self.rerun.insert(plan.msgid, plan);
            }
            return true;
        }
        if self.claims.holds(plan.msgid) {
            // Sent by its direct run, which offers it again if it could not finish.
            return true;
        }
        if let Some(until) = quiet_until(&plan, &self.config) {
            // Taken care of without a slot: stored with its not-before, the sweep takes it
            // again when the window ends (a failed write only means it is looked at again).
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.defer_message(plan.msgid, until).await {
                    tracing::warn!(msgid = plan.msgid, error = %e, "deferring a message failed");
                }
            });
            return true;
        }
        if !self.has_room(plan.lane) {
            return false;
        }
        self.active.insert(plan.msgid);
        self.active_per_lane[Planner::lane_index(plan.lane)] += 1;
        metrics::gauge!("msghub_messages_active", "lane" => plan.lane.as_str())
            .set(self.active_per_lane[Planner::lane_index(plan.lane)] as f64);
        let store = self.store.clone();
        let queues = self.queues.clone();
        let config = self.config;
        let run = MessageRun::new(&plan, self.writes.clone(), ctx.address().recipient());
        tokio::spawn(async move {
            let plan = Arc::new(plan);
            let mut known = Some(known);
            let mut delay = Duration::from_millis(100);
            let deferred = loop {
                match drive(&*store, &queues, &plan, &run, known.take(), config).await {
                    Ok(deferred) => break deferred,
                    Err(e) => {
                        tracing::warn!(msgid = plan.msgid, error = %e, "planning failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            };
            if let Some(until) = deferred {
                // Quiet hours began: the shards not queued yet wait in storage for the sweep.
                while let Err(e) = store.defer_message(plan.msgid, until).await {
                    tracing::warn!(msgid = plan.msgid, error = %e, "deferring failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                run.defer().await;
            }
        });
        true
    }

    /// Load a page of unfinished messages after the cursor and start those not running.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || !(self.has_room(Lane::Realtime) || self.has_room(Lane::Bulk)) {
            return;
        }
        self.sweeping = true;
        let store = self.store.clone();
        let (after, limit) = (self.sweep_after, self.config.sweep_batch.max(1));
        let claims = self.claims.clone();
        let load = async move { store.unfinished_messages(after, limit, &claims).await };
        ctx.spawn(load.into_actor(self).map(move |result, act, ctx| {
            act.sweeping = false;
            let page = match result {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed");
                    return;
                }
            };
            let (plans, complete_page) = (page.plans, page.full);
            let mut next_after = act.sweep_after;
            // A message whose lane is full is skipped, not waited for, so a full bulk lane never
            // holds back real-time messages behind it; the next pass starts again before the
            // first one skipped.
            let mut first_skipped = None;
            for (plan, shards) in plans {
                let msgid = plan.msgid;
                let known = shards.map_or(Known::Load, Known::Stored);
                if !act.start(plan, known, ctx) && first_skipped.is_none() {
                    first_skipped = Some(next_after);
                }
                next_after = msgid;
            }
            if first_skipped.is_none()
                && let Some(last) = page.last
            {
                // Claimed messages at the end of the page were read but not returned.
                next_after = next_after.max(last);
            }
            match first_skipped {
                Some(resume) => act.sweep_after = resume,
                None if complete_page => {
                    // More stored work is waiting: keep sweeping while there is room.
                    act.sweep_after = next_after;
                    act.sweep(ctx);
                }
                // At the end of the table, start over from the beginning next time.
                None => act.sweep_after = 0,
            }
        }));
    }
}

impl Actor for Planner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The accept path offers messages with `try_send`; a large mailbox keeps the sweep as
        // the exception under bursts rather than the rule.
        ctx.set_mailbox_capacity(4096);
        self.sweep(ctx);
        ctx.run_interval(self.config.sweep_interval, |act, ctx| act.sweep(ctx));
    }
}

impl Supervised for Planner {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        metrics::counter!("msghub_actor_restarts_total", "actor" => "planner").increment(1);
    }
}

impl Handler<DispatchMessage> for Planner {
    type Result = ();

    fn handle(&mut self, msg: DispatchMessage, ctx: &mut Self::Context) {
        let known = msg.shards.map_or(Known::Load, Known::Fresh);
        self.start(msg.plan, known, ctx);
    }
}

impl Handler<MessageFinished> for Planner {
    type Result = ();

    fn handle(&mut self, msg: MessageFinished, ctx: &mut Self::Context) {
        if self.active.remove(&msg.msgid) {
            let i = Planner::lane_index(msg.lane);
            self.active_per_lane[i] = self.active_per_lane[i].saturating_sub(1);
            metrics::gauge!("msghub_messages_active", "lane" => msg.lane.as_str())
                .set(self.active_per_lane[i] as f64);
        }
        if let Some(plan) = self.rerun.remove(&msg.msgid) {
            // Shards reopened while it ran; if the lane is full the sweep takes it.
            self.start(plan, Known::Load, ctx);
        }
    }
}

/// When a message must wait for the end of quiet hours: priority 3 inside the window.
fn quiet_until(plan: &MessagePlan, config: &PlannerConfig) -> Option<i64> {
    match config.quiet_hours {
        Some(quiet) if plan.is_marketing() => quiet.end_of_window(crate::plan::now_ms()),
        _ => None,
    }
}

/// Queue the known or pending shards, then keep planning until the audience is covered.
/// Safe to call again after an error: queued shards are counted once, and planning continues
/// from the persisted cursor. Stops early with the window's end when quiet hours begin
/// (priority 3): what was not queued yet stays pending in storage.
async fn drive(
    store: &dyn DispatchStore,
    queues: &ShardQueues,
    plan: &Arc<MessagePlan>,
    run: &Arc<MessageRun>,
    known: Option<Known>,
    config: PlannerConfig,
) -> Result<Option<i64>, String> {
    let tx = queues.for_lane(plan.lane);
    if !run.started() {
        // Shards handed over by the accept path were created with the message a moment ago;
        // pending shards read from storage may have been opened before a restart.
        let (shards, fresh) = match known.unwrap_or(Known::Load) {
            Known::Fresh(shards) => (shards, true),
            Known::Stored(shards) => (shards, false),
            Known::Load => (
                store
                    .pending_shards(plan)
                    .await
                    .map_err(|e| e.to_string())?,
                false,
            ),
        };
        // Marked before queueing: a retry after a later error must not queue these again.
        run.mark_started();
        for shard in shards {
            if let Some(until) = quiet_until(plan, &config) {
                return Ok(Some(until));
            }
            if let Some(until) = enqueue(tx, plan, run, shard, fresh, &config).await? {
                return Ok(Some(until));
            }
        }
    }
    let mut planned = plan.is_single_shard()
        || store
            .planning_state(plan.msgid)
            .await
            .map_err(|e| e.to_string())?;
    while !planned {
        if let Some(until) = quiet_until(plan, &config) {
            return Ok(Some(until));
        }
        let page = store
            .plan_shards(plan, config.shard_size.max(1), config.page_shards.max(1))
            .await
            .map_err(|e| e.to_string())?;
        for shard in page.shards {
            if let Some(until) = quiet_until(plan, &config) {
                return Ok(Some(until));
            }
            if let Some(until) = enqueue(tx, plan, run, shard, true, &config).await? {
                return Ok(Some(until));
            }
        }
        planned = page.complete;
    }
    run.planning_complete().await;
    Ok(None)
}

/// Queue a shard, after its slot of the spread when it is paced. `Some(until)` when quiet
/// hours began while it waited for its slot: it is not queued, and stays pending in storage.
async fn enqueue(
    tx: &mpsc::Sender<ShardTask>,
    plan: &Arc<MessagePlan>,
    run: &Arc<MessageRun>,
    shard: Shard,
    fresh: bool,
    config: &PlannerConfig,
) -> Result<Option<i64>, String> {
    if let Some(at) = shard.spec.not_before() {
        // A paced shard waits for its slot of the spread.
        let wait = at - crate::plan::now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
            if let Some(until) = quiet_until(plan, config) {
                return Ok(Some(until));
            }
        }
    }
    run.shard_added();
    tx.send(ShardTask {
        plan: plan.clone(),
        shard,
        run: run.clone(),
        fresh,
    })
    .await
    .map_err(|_| "shard queue closed".to_string())?;
    Ok(None)
}
