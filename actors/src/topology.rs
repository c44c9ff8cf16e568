//! Starts the dispatch topology and hands the accept path its one entry point.
//!
//! ```text
//! accept ──DispatchMessage──▶ Planner ──ShardTask──▶ [realtime | bulk shard queue]
//!    │                                                   │ ShardWorker ×N each
//!    └── opened at acceptance (run_opened, claimed) ─────┤
//!                                                        ▼
//!                              ChannelActor (per channel) [realtime lane | bulk lane]
//!                                                        │ rate limiter, batching, retries
//!                                                        ▼
//!                                  Provider ──outcomes──▶ result writer (group commit)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::batcher::{Batcher, LaneWriters};
use crate::channel::ChannelTuning;
use crate::direct::{Claims, Ended};
use crate::plan::{ChannelBatch, DeliveryResult, Lane, MessagePlan, OpenShard, Shard};
use crate::planner::{DispatchMessage, Planner, PlannerConfig, ShardQueues};
use crate::provider::{Outcome, Provider, SendReport};
use crate::registry::{ChannelRegistry, ChannelUnavailable, ProviderFactory};
use crate::retract::Retractions;
use crate::shard::{DispatchWrites, Finished, ShardWorker};
use crate::store::DispatchStore;

#[derive(Debug, Clone, Copy)]
pub struct TopologyConfig {
    pub planner: PlannerConfig,
    /// Shards processed at once per lane.
    pub realtime_shard_concurrency: usize,
    pub bulk_shard_concurrency: usize,
    pub shard_queue_capacity: usize,
    /// Most items per group-commit transaction of the dispatch path.
    pub write_batch_max: usize,
    /// Most rows (deliveries opened or outcomes written) per transaction of those writers.
    pub write_batch_rows: usize,
    pub channel: ChannelTuning,
    pub timers: crate::timers::TimerConfig,
    /// Nice value of the dispatch thread (`server.background_nice`; 0 leaves it as it is).
    pub background_nice: i32,
    /// Time slice (µs) the deadline thread asks for (`server.request_slice_us`, see
    /// [`crate::threads::request_slice_current`]).
    pub deadline_slice_us: u32,
}

/// The running topology, shared by the HTTP layer.
#[derive(Clone)]
pub struct Dispatch {
    planner: Addr<Planner>,
    registry: Arc<ChannelRegistry>,
    retractions: Arc<Retractions>,
    arbiter: actix::dev::ArbiterHandle,
    writes: DispatchWrites,
    claims: Arc<Claims>,
    /// Real-time shards in progress, direct runs included.
    realtime: Arc<Semaphore>,
    /// Direct runs waiting for a permit of `realtime`, at most `max_waiting`; beyond that a
    /// message opened at acceptance is left to the sweep.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// The thread the fallback timers' and the scheduler's pages run on (see
    /// [`Dispatch::start`]); `None` when it could not be started (they run on the caller's).
    _deadlines: Option<Arc<crate::threads::OwnRuntime>>,
    /// The thread the fallback timers read ahead on, if it could be started.
    _timer_reads: Option<Arc<crate::threads::OwnRuntime>>,
}

fn batched_writes(store: &Arc<dyn DispatchStore>, max: usize, max_rows: usize) -> DispatchWrites {
    let s = store.clone();
    // Shard opens and outcomes are weighed in rows, so one transaction stays short (a send's
    // acceptance waits behind at most one of them on SQLite) while one-user work still shares
    // transactions by the hundred.
    let open = Batcher::spawn_weighted(
        "open_shards",
        4096,
        max,
        max_rows,
        OpenShard::weight,
        move |items: Vec<OpenShard>| {
            let store = s.clone();
            async move { store.open_shards(&items).await.map_err(|e| e.to_string()) }
        },
    );
    // Outcomes and finishes have a writer per lane: a transactional send's are recorded
    // before a blast's queued batches, on the writer's urgent turn.
    DispatchWrites {
        open,
        finish: LaneWriters::per_lane(|lane| finish_writer(store, lane, max)),
        results: LaneWriters::per_lane(|lane| result_writer(store, lane, max, max_rows)),
    }
}

fn finish_writer(store: &Arc<dyn DispatchStore>, lane: Lane, max: usize) -> Batcher<Finished, ()> {
    let name = match lane {
        Lane::Realtime => "finish_realtime",
        Lane::Bulk => "finish",
    };
    let s = store.clone();
    Batcher::spawn(name, 4096, max, move |items: Vec<Finished>| {
        let store = s.clone();
        async move {
            let mut shards = Vec::new();
            let mut messages = Vec::new();
            for f in &items {
                match *f {
                    Finished::Shard {
                        msgid,
                        seq,
                        generation,
                    } => shards.push((msgid, seq, generation)),
                    Finished::Message(msgid) => messages.push(msgid),
                }
            }
            store
                .finish(&shards, &messages, lane)
                .await
                .map_err(|e| e.to_string())?;
            Ok(vec![(); items.len()])
        }
    })
}

fn result_writer(
    store: &Arc<dyn DispatchStore>,
    lane: Lane,
    max: usize,
    max_rows: usize,
) -> Batcher<Vec<DeliveryResult>, ()> {
    let name = match lane {
        Lane::Realtime => "deliveries_realtime",
        Lane::Bulk => "deliveries",
    };
    let s = store.clone();
    Batcher::spawn_weighted(
        name,
        4096,
        max,
        max_rows,
        |r: &Vec<DeliveryResult>| r.len(),
        move |batches: Vec<Vec<DeliveryResult>>| {
            let store = s.clone();
            async move {
                let n = batches.len();
                let all: Vec<DeliveryResult> = batches.into_iter().flatten().collect();
                store
                    .write_results(&all, lane)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(vec![(); n])
            }
        },
    )
}

/// A runtime thread of its own, or `None` (logged) when it cannot be started: its work then
/// runs where it would without it.
fn own_runtime(name: &str, slice_us: u32) -> Option<Arc<crate::threads::OwnRuntime>> {
    match crate::threads::OwnRuntime::new(name, slice_us) {
        Ok(rt) => Some(Arc::new(rt)),
        Err(e) => {
            tracing::warn!(thread = name, error = %e, "starting a thread failed; its work runs on the caller's runtime");
            None
        }
    }
}

/// Fallback firings take up to this many times `write_batch_rows` users per transaction. Each
/// firing pays a fixed cost (the writer's turn behind a bulk transaction, a dozen statements,
/// a commit) that the timers of one transaction share; timers come due as fast as their first
/// step is sent, and under load one timer per transaction did not keep up.
const FIRING_BATCHES: usize = 4;

impl Dispatch {
    /// Start every actor. The planner's first sweep resumes every unfinished message.
    pub fn start(
        store: Arc<dyn DispatchStore>,
        factory: Arc<dyn ProviderFactory>,
        config: TopologyConfig,
    ) -> Dispatch {
        let writes = batched_writes(
            &store,
            config.write_batch_max.max(1),
            config.write_batch_rows.max(1),
        );
        // Channel actors and shard workers share one arbiter: adapters are built on the runtime
        // that runs them (pooled SMTP connections are bound to it).
        let arbiter = Arbiter::new();
        let nice = config.background_nice;
        arbiter.spawn_fn(move || crate::threads::name_current("msghub-dispatch", nice));
        let retractions = Arc::new(Retractions::default());
        let registry = Arc::new(ChannelRegistry::new(
            store.clone(),
            factory,
            config.channel,
            writes.results.clone(),
            arbiter.handle(),
            retractions.clone(),
        ));
        let (rt_tx, rt_rx) = mpsc::channel(config.shard_queue_capacity.max(1));
        let (bulk_tx, bulk_rx) = mpsc::channel(config.shard_queue_capacity.max(1));
        let realtime = Arc::new(Semaphore::new(config.realtime_shard_concurrency.max(1)));
        for (lane, rx, concurrency) in [
            (Lane::Realtime, rt_rx, realtime.clone()),
            (
                Lane::Bulk,
                bulk_rx,
                Arc::new(Semaphore::new(config.bulk_shard_concurrency.max(1))),
            ),
        ] {
            let worker = ShardWorker {
                lane,
                queue: Arc::new(Mutex::new(rx)),
                concurrency,
                registry: registry.clone(),
                writes: writes.clone(),
                retractions: retractions.clone(),
            };
            // Workers take work from their queue, not their mailbox; the address is only kept
            // by the supervisor.
            let _ = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| worker);
        }
        let queues = ShardQueues {
            realtime: rt_tx,
            bulk: bulk_tx,
        };
        let planner_config = config.planner;
        let planner_store = store.clone();
        let claims = Arc::new(Claims::default());
        let (planner_writes, planner_claims) = (writes.clone(), claims.clone());
        let planner = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            Planner::new(
                planner_store,
                queues,
                planner_writes,
                planner_claims,
                planner_config,
            )
        });
        let timer_config = config.timers;
        // The storage writers (group-commit batchers) run on the caller's runtime. Work with a
        // deadline (the timers' and the scheduler's pages) gets a thread of its own, on the
        // short slice of the request threads: a firing is a chain of a dozen statements, and
        // on the caller's runtime each of their continuations waits behind the writers' tasks
        // (a blast's shard opens and outcomes, building and parsing thousands of rows).
        let deadlines = own_runtime("msghub-deadline", config.deadline_slice_us);
        // The timers' reads ahead of their deadlines get another (see `FireTimers::reading_on`).
        let timer_reads = own_runtime("msghub-timer-reads", config.deadline_slice_us);
        let writers = deadlines
            .as_ref()
            .map(|rt| rt.handle().clone())
            .unwrap_or_else(tokio::runtime::Handle::current);
        let write_batch_rows = config.write_batch_rows.max(1);
        let recipient = planner.clone().recipient();
        let (timer_store, timer_writers) = (store.clone(), writers.clone());
        let reads = timer_reads.as_ref().map(|rt| rt.handle().clone());
        let _timers = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            crate::timers::FallbackTimers::new(
                crate::timers::FireTimers::new((FIRING_BATCHES * write_batch_rows) as u64)
                    .reading_on(reads.clone()),
                timer_store,
                recipient,
                timer_config,
                timer_writers,
            )
        });
        let recipient = planner.clone().recipient();
        let _scheduler = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            crate::schedule::SendScheduler::new(
                crate::schedule::ReleaseScheduled,
                store,
                recipient,
                timer_config,
                writers,
            )
        });
        let dispatch = Dispatch {
            planner,
            registry,
            retractions,
            arbiter: arbiter.handle(),
            writes,
            claims,
            realtime,
            waiting: Arc::default(),
            max_waiting: 4 * config.realtime_shard_concurrency.max(1),
            _deadlines: deadlines,
            _timer_reads: timer_reads,
        };
        let reporter = dispatch.registry.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                reporter.report_depths().await;
            }
        });
        // The arbiter lives until `stop` or the end of the process.
        std::mem::forget(arbiter);
        dispatch
    }

    /// Stop every actor of the topology (and with them their adapters and storage handles).
    /// Work they held stays stored and resumes at the next start.
    pub fn stop(&self) {
        self.arbiter.stop();
    }

    /// Offer an accepted (already durable) message to the planner without waiting. When the
    /// planner is saturated the message is left to its sweep over stored messages.
    pub fn dispatch(&self, plan: MessagePlan, shards: Option<Vec<Shard>>) {
        if self
            .planner
            .try_send(DispatchMessage { plan, shards })
            .is_err()
        {
            metrics::counter!("msghub_dispatch_deferred_total").increment(1);
        }
    }

    /// Claim messages about to be stored opened (see [`crate::direct`]): call before their
    /// transaction commits, and give back with [`Dispatch::release`] what was not stored.
    pub fn claim(&self, msgids: &[i64]) {
        self.claims.claim(msgids);
    }

    /// Whether `n` more messages opened at acceptance would find room to wait for the
    /// real-time lane. When they would not, the hub is behind: accepting without opening
    /// (the planner opens them later, in bulk) costs less than opening now and again later.
    pub fn room_for_opened(&self, n: usize) -> bool {
        self.waiting.load(Ordering::SeqCst) + n <= self.max_waiting
    }

    pub fn release(&self, msgids: &[i64]) {
        self.claims.release(msgids);
    }

    /// Send a claimed message whose deliveries were created with its acceptance, as soon as
    /// the real-time lane has room. When too many wait already, it is left to the planner's
    /// sweep, which reads them back: memory stays bounded under any accept rate.
    pub fn run_opened(&self, plan: MessagePlan, batches: Vec<ChannelBatch>) {
        let msgid = plan.msgid;
        let waiting = self.waiting.clone();
        if waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            waiting.fetch_sub(1, Ordering::SeqCst);
            self.claims.release(&[msgid]);
            metrics::counter!("msghub_direct_deferred_total").increment(1);
            return;
        }
        let (registry, writes, claims, realtime) = (
            self.registry.clone(),
            self.writes.clone(),
            self.claims.clone(),
            self.realtime.clone(),
        );
        let planner = self.planner.clone();
        self.arbiter.spawn(async move {
            let permit = realtime.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::SeqCst);
            let Ok(permit) = permit else {
                // The topology is stopping: the message stays stored for the next start.
                return;
            };
            let plan = Arc::new(plan);
            let ended = crate::direct::run(&registry, &writes, &plan, batches, permit).await;
            match ended {
                Ended::Finished => claims.release(&[msgid]),
                Ended::Stalled => {}
                Ended::Resume => {
                    claims.release(&[msgid]);
                    let plan = Arc::unwrap_or_clone(plan);
                    if planner
                        .try_send(DispatchMessage { plan, shards: None })
                        .is_err()
                    {
                        metrics::counter!("msghub_dispatch_deferred_total").increment(1);
                    }
                }
            }
        });
    }

    /// Make the next job of this channel use freshly loaded settings.
    pub async fn channel_changed(&self, channel_id: i64) {
        self.registry.invalidate(channel_id).await;
    }

    /// Stop the in-memory work of a message storage has just retracted: no provider call of it
    /// starts from now on.
    pub fn retract(&self, msgid: i64) {
        self.retractions.retract(msgid);
    }

    /// Wait until the provider calls of `msgid` under way have recorded their outcomes (at most
    /// `limit`); true when none is left.
    pub async fn wait_calls_done(&self, msgid: i64, limit: Duration) -> bool {
        self.retractions.wait_idle(msgid, limit).await
    }

    /// Ask a channel's provider to withdraw accepted sends (one outcome per id).
    pub async fn recall(
        &self,
        channel_id: i64,
        provider_ids: &[String],
    ) -> Result<Vec<Outcome>, ChannelUnavailable> {
        let ids = provider_ids.to_vec();
        let interrupted = Outcome::failed(
            crate::provider::OutcomeClass::Retry,
            "internal",
            "the recall was interrupted",
        );
        let n = ids.len();
        self.on_adapters(
            channel_id,
            move |p| async move { p.recall(&ids).await },
            vec![interrupted; n],
        )
        .await
    }

    /// Ask a channel's provider what became of accepted sends (one answer per id), for the
    /// channel types whose receipts are pulled.
    pub async fn pull_receipts(
        &self,
        channel_id: i64,
        provider_ids: &[String],
    ) -> Result<Vec<Result<SendReport, Outcome>>, ChannelUnavailable> {
        let ids = provider_ids.to_vec();
        let interrupted = Outcome::failed(
            crate::provider::OutcomeClass::Retry,
            "internal",
            "the receipt pull was interrupted",
        );
        let n = ids.len();
        self.on_adapters(
            channel_id,
            move |p| async move { p.pull_receipts(&ids).await },
            vec![Err(interrupted); n],
        )
        .await
    }

    /// Run `call` with a channel's provider on the adapters' runtime, like their sends;
    /// `interrupted` answers when that runtime drops it.
    async fn on_adapters<T, F, Fut>(
        &self,
        channel_id: i64,
        call: F,
        interrupted: T,
    ) -> Result<T, ChannelUnavailable>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Provider>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        let provider = self.registry.provider(channel_id).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.registry.spawn(async move {
            let _ = tx.send(call(provider).await);
        });
        Ok(rx.await.unwrap_or(interrupted))
    }
}
