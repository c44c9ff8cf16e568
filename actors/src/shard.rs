//! `ShardWorker`: resolves a shard's users to addresses and feeds the channel actors.
//!
//! Workers pull from one of two shard queues (real-time and bulk), each served by its own
//! workers, so a message for one user never waits behind the shards of a broadcast. A worker
//! finishes a shard only when every delivery of it has a recorded outcome; until then the shard
//! stays pending in storage and is resumed after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::channel::{ChannelJob, ResultWriter};
use crate::plan::{DeliveryResult, DeliveryStatus, MessagePlan, Shard};
use crate::provider::OutcomeClass;
use crate::registry::ChannelRegistry;
use crate::store::DispatchStore;

/// Tracks a message's outstanding shards and finishes the message when the last one ends.
pub struct MessageRun {
    pub msgid: i64,
    outstanding: AtomicUsize,
    planned: AtomicBool,
    finished: AtomicBool,
    started: AtomicBool,
    store: Arc<dyn DispatchStore>,
}

impl MessageRun {
    pub fn new(msgid: i64, store: Arc<dyn DispatchStore>) -> Arc<MessageRun> {
        Arc::new(MessageRun {
            msgid,
            outstanding: AtomicUsize::new(0),
            planned: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            started: AtomicBool::new(false),
            store,
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

    async fn maybe_finish(&self) {
        if !self.planned.load(Ordering::SeqCst) || self.outstanding.load(Ordering::SeqCst) != 0 {
            return;
        }
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut delay = Duration::from_millis(100);
        while let Err(e) = self.store.finish_message(self.msgid).await {
            tracing::warn!(msgid = self.msgid, error = %e, "could not mark message done; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        metrics::counter!("msghub_messages_finished_total").increment(1);
    }
}

pub struct ShardTask {
    pub plan: Arc<MessagePlan>,
    pub shard: Shard,
    pub run: Arc<MessageRun>,
}

pub type ShardQueue = Arc<Mutex<mpsc::Receiver<ShardTask>>>;

pub struct ShardWorker {
    pub name: &'static str,
    pub queue: ShardQueue,
    pub store: Arc<dyn DispatchStore>,
    pub registry: Arc<ChannelRegistry>,
    pub writer: ResultWriter,
    /// The task being worked on, kept across restarts so a failure never drops it.
    pub current: Arc<Mutex<Option<ShardTask>>>,
    pub restarts: u32,
}

impl Actor for ShardWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let queue = self.queue.clone();
        let store = self.store.clone();
        let registry = self.registry.clone();
        let writer = self.writer.clone();
        let current = self.current.clone();
        let backoff = Duration::from_millis(200 * u64::from(self.restarts.min(50)));
        let name = self.name;
        let work = async move {
            tokio::time::sleep(backoff).await;
            loop {
                let mut slot = current.lock().await;
                if slot.is_none() {
                    let next = { queue.lock().await.recv().await };
                    match next {
                        Some(task) => *slot = Some(task),
                        None => return Ok(()),
                    }
                }
                let Some(task) = slot.as_ref() else { continue };
                process(&*store, &registry, &writer, task).await.map_err(|e| {
                    tracing::warn!(worker = name, msgid = task.plan.msgid, shard = task.shard.seq, error = %e, "shard failed; worker restarts");
                    e
                })?;
                *slot = None;
            }
        };
        ctx.spawn(
            work.into_actor(self)
                .map(|res: Result<(), String>, act, ctx| {
                    if res.is_err() {
                        act.restarts += 1;
                    }
                    ctx.stop();
                }),
        );
    }
}

impl Supervised for ShardWorker {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        metrics::counter!("msghub_actor_restarts_total", "actor" => "shard_worker").increment(1);
    }
}

async fn process(
    store: &dyn DispatchStore,
    registry: &ChannelRegistry,
    writer: &ResultWriter,
    task: &ShardTask,
) -> Result<(), String> {
    let ShardTask { plan, shard, run } = task;
    let batches = store
        .open_shard(plan, shard)
        .await
        .map_err(|e| e.to_string())?;
    let mut waits = Vec::with_capacity(batches.len());
    for batch in batches {
        if batch.targets.is_empty() {
            continue;
        }
        let lanes = match registry.lanes(batch.channel_id).await {
            Ok(lanes) => lanes,
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
                    })
                    .collect();
                writer.submit(results).await.map_err(|e| e.to_string())?;
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
            // The actor was replaced between lookup and enqueue; retry the shard.
            return Err(format!("channel {} lanes closed", batch.channel_id));
        }
        waits.push(wait);
    }
    let mut unrecorded = 0;
    for wait in waits {
        match wait.await {
            Ok(report) => unrecorded += report.unrecorded,
            Err(_) => return Err("channel actor dropped a job".to_string()),
        }
    }
    if unrecorded > 0 {
        // Outcomes of sent deliveries could not be stored. Retrying now would send them
        // again, so the shard is left pending for the next start to reconcile.
        metrics::counter!("msghub_shards_stalled_total").increment(1);
        tracing::error!(
            msgid = plan.msgid,
            shard = shard.seq,
            unrecorded,
            "shard left pending"
        );
        return Ok(());
    }
    store
        .finish_shard(shard.msgid, shard.seq)
        .await
        .map_err(|e| e.to_string())?;
    run.shard_finished().await;
    Ok(())
}
