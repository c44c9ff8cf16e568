//! `ShardWorker`: resolves shards' users to addresses and feeds the channel actors.
//!
//! There is one worker per lane, each with its own bounded queue and its own concurrency, so a
//! message for one user never waits behind the shards of a broadcast. A shard is finished only
//! when every delivery of it has a recorded outcome; until then it stays pending in storage and
//! is resumed after a restart. Opening and finishing shards go through group-commit batchers,
//! so a burst of one-user messages costs a few transactions, not a few per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use crate::batcher::Batcher;
use crate::channel::{ChannelJob, ResultWriter};
use crate::plan::{
    ChannelBatch, DeliveryResult, DeliveryStatus, Lane, MessagePlan, OpenShard, Shard,
};
use crate::provider::OutcomeClass;
use crate::registry::{ChannelRegistry, ChannelUnavailable};
use crate::retract::Retractions;

/// A shard or message whose work is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Shard {
        msgid: i64,
        seq: i32,
        generation: i32,
    },
    Message(i64),
}

/// The batched storage writes of the dispatch path.
#[derive(Clone)]
pub struct DispatchWrites {
    pub open: Batcher<OpenShard, Vec<ChannelBatch>>,
    pub finish: crate::batcher::LaneWriters<Finished, ()>,
    pub results: ResultWriter,
}

/// Told to the planner when a message has no work left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MessageFinished {
    pub msgid: i64,
    pub lane: Lane,
}

/// Tracks a message's outstanding shards and finishes the message when the last one ends.
pub struct MessageRun {
    pub msgid: i64,
    lane: Lane,
    outstanding: AtomicUsize,
    planned: AtomicBool,
    finished: AtomicBool,
    started: AtomicBool,
    /// The rest of the message waits for later (quiet hours): when the queued shards end, the
    /// planner gets its slot back but the message is not finished.
    deferred: AtomicBool,
    writes: DispatchWrites,
    planner: Recipient<MessageFinished>,
}

impl MessageRun {
    pub fn new(
        plan: &MessagePlan,
        writes: DispatchWrites,
        planner: Recipient<MessageFinished>,
    ) -> Arc<MessageRun> {
        Arc::new(MessageRun {
            msgid: plan.msgid,
            lane: plan.lane,
            outstanding: AtomicUsize::new(0),
            planned: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            started: AtomicBool::new(false),
            deferred: AtomicBool::new(false),
            writes,
            planner,
        })
    }

    /// Whether the shards that existed at dispatch time were queued already.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    pub fn shard_added(&self) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    pub async fn shard_finished(&self) {
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.maybe_finish().await;
        }
    }

    pub async fn planning_complete(&self) {
        self.planned.store(true, Ordering::SeqCst);
        self.maybe_finish().await;
    }

    /// Stop here: the shards not queued stay pending in storage for a later run.
    pub async fn defer(&self) {
        self.deferred.store(true, Ordering::SeqCst);
        self.maybe_finish().await;
    }

    async fn maybe_finish(&self) {
        let planned = self.planned.load(Ordering::SeqCst);
        if !(planned || self.deferred.load(Ordering::SeqCst))
            || self.outstanding.load(Ordering::SeqCst) != 0
        {
            return;
        }
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        if planned {
            retry_forever("finish message", || {
                self.writes
                    .finish
                    .lane(self.lane)
                    .submit(Finished::Message(self.msgid))
            })
            .await;
            metrics::counter!("msghub_messages_finished_total").increment(1);
        }
        let _ = self
            .planner
            .send(MessageFinished {
                msgid: self.msgid,
                lane: self.lane,
            })
            .await;
    }
}

/// Repeat a storage write until it succeeds: the work it records was done and must not be
/// redone, so giving up is never better than waiting for the database to come back.
pub(crate) async fn retry_forever<F, Fut, T, E>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub struct ShardTask {
    pub plan: Arc<MessagePlan>,
    pub shard: Shard,
    pub run: Arc<MessageRun>,
    /// Created in this process and not opened yet (see [`OpenShard::fresh`]).
    pub fresh: bool,
}

pub struct ShardWorker {
    pub lane: Lane,
    pub queue: Arc<Mutex<mpsc::Receiver<ShardTask>>>,
    /// Shards of this lane processed at once.
    pub concurrency: Arc<Semaphore>,
    pub registry: Arc<ChannelRegistry>,
    pub writes: DispatchWrites,
    /// An open counts as a call of its message in progress, so a retract's follow-up waits
    /// for it (see [`process`]).
    pub retractions: Arc<Retractions>,
}

impl Actor for ShardWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let queue = self.queue.clone();
        let concurrency = self.concurrency.clone();
        let registry = self.registry.clone();
        let writes = self.writes.clone();
        let retractions = self.retractions.clone();
        let lane = self.lane;
        let work = async move {
            loop {
                // The task first: an idle worker holds no permit, which the real-time lane's
                // direct runs share (one task waits here for a permit, no more).
                let task = { queue.lock().await.recv().await };
                let Some(task) = task else { return };
                let Ok(permit) = concurrency.clone().acquire_owned().await else {
                    return;
                };
                let registry = registry.clone();
                let writes = writes.clone();
                let retractions = retractions.clone();
                tokio::spawn(async move {
                    run_shard(lane, &registry, &writes, &retractions, task).await;
                    drop(permit);
                });
            }
        };
        ctx.spawn(work.into_actor(self).map(|_, _act, ctx| ctx.stop()));
    }
}

impl Supervised for ShardWorker {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        metrics::counter!("msghub_actor_restarts_total", "actor" => "shard_worker").increment(1);
    }
}

/// Process a shard, retrying with backoff after storage errors: the shard is never dropped.
async fn run_shard(
    lane: Lane,
    registry: &ChannelRegistry,
    writes: &DispatchWrites,
    retractions: &Arc<Retractions>,
    task: ShardTask,
) {
    let mut delay = Duration::from_millis(100);
    let mut fresh = task.fresh;
    while let Err(e) = process(registry, writes, retractions, &task, fresh).await {
        // The failed attempt may have opened the shard: read its records back from now on.
        fresh = false;
        metrics::counter!("msghub_shard_failures_total", "lane" => lane.as_str()).increment(1);
        tracing::warn!(msgid = task.plan.msgid, shard = task.shard.seq, error = %e, "shard failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn process(
    registry: &ChannelRegistry,
    writes: &DispatchWrites,
    retractions: &Arc<Retractions>,
    task: &ShardTask,
    fresh: bool,
) -> Result<(), String> {
    let ShardTask {
        plan, shard, run, ..
    } = task;
    // Held while the shard is opened: a retract committed meanwhile retracts the deliveries
    // this open creates (Postgres looks again before committing), and its follow-up, which
    // waits for calls in progress, then reports them too. Without a guard the message was
    // retracted already, and the open creates nothing to send.
    let opening = retractions.begin_call(plan.msgid);
    let batches = writes
        .open
        .submit(OpenShard {
            plan: plan.clone(),
            shard: shard.clone(),
            fresh,
        })
        .await
        .map_err(|e| e.to_string())?;
    drop(opening);
    let unrecorded = send_batches(registry, writes, plan, batches).await?;
    if unrecorded > 0 {
        // Outcomes of sent deliveries could not be stored. Sending them again now would
        // duplicate them, so the shard is left pending for the next start to reconcile.
        metrics::counter!("msghub_shards_stalled_total").increment(1);
        tracing::error!(
            msgid = plan.msgid,
            shard = shard.seq,
            unrecorded,
            "shard left pending"
        );
        return Ok(());
    }
    retry_forever("finish shard", || {
        writes.finish.lane(plan.lane).submit(Finished::Shard {
            msgid: shard.msgid,
            seq: shard.seq,
            generation: shard.generation,
        })
    })
    .await;
    run.shard_finished().await;
    Ok(())
}

/// Hand an opened shard's batches to their channels and wait until every delivery has a
/// recorded outcome. Returns how many outcomes could not be stored; an `Err` means the shard
/// must be opened again (after the jobs already queued have finished).
pub(crate) async fn send_batches(
    registry: &ChannelRegistry,
    writes: &DispatchWrites,
    plan: &Arc<MessagePlan>,
    batches: Vec<ChannelBatch>,
) -> Result<u64, String> {
    let mut waits = Vec::with_capacity(batches.len());
    for batch in batches {
        if batch.targets.is_empty() {
            continue;
        }
        let lanes = match registry.lanes(batch.channel_id).await {
            Ok(lanes) => lanes,
            // A storage hiccup is not the channel's fault: retry the shard later.
            Err(ChannelUnavailable::Store(e)) => {
                wait_all(waits).await;
                return Err(format!("loading channel {}: {e}", batch.channel_id));
            }
            Err(unavailable) => {
                let results: Vec<DeliveryResult> = batch
                    .targets
                    .iter()
                    .map(|t| DeliveryResult {
                        delivery_id: t.delivery_id,
                        status: DeliveryStatus::Failed,
                        class: OutcomeClass::Perm,
                        code: unavailable.code().to_string(),
                        provider_id: None,
                        error: Some(unavailable.to_string()),
                        attempts: 0,
                        msgid: plan.msgid,
                        channel_id: batch.channel_id,
                        userid: t.userid.clone(),
                        address: t.address.clone(),
                        pull_receipt: false,
                    })
                    .collect();
                if let Err(e) = writes.results.lane(plan.lane).submit(results).await {
                    wait_all(waits).await;
                    return Err(e.to_string());
                }
                continue;
            }
        };
        let (done, wait) = oneshot::channel();
        let job = ChannelJob {
            plan: plan.clone(),
            targets: batch.targets,
            done,
        };
        if lanes.enqueue(plan.lane, job).await.is_err() {
            // The actor was replaced between lookup and enqueue; open the shard again once the
            // jobs already queued have finished, so nothing of theirs is sent twice.
            wait_all(waits).await;
            return Err(format!("channel {} lanes closed", batch.channel_id));
        }
        waits.push(wait);
    }
    let (unrecorded, dropped) = wait_all(waits).await;
    if dropped {
        return Err("channel actor dropped a job".to_string());
    }
    Ok(unrecorded)
}

/// Wait for every job of a shard: (outcomes not recorded, whether a job was dropped).
async fn wait_all(waits: Vec<oneshot::Receiver<crate::channel::JobReport>>) -> (u64, bool) {
    let mut unrecorded = 0;
    let mut dropped = false;
    for wait in waits {
        match wait.await {
            Ok(report) => unrecorded += report.unrecorded,
            Err(_) => dropped = true,
        }
    }
    (unrecorded, dropped)
}
