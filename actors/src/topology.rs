//! Starts the dispatch topology and hands the accept path its one entry point.
//!
//! ```text
//! accept ──DispatchMessage──▶ Planner ──ShardTask──▶ [realtime | bulk shard queue]
//!                                                        │ ShardWorker ×N each
//!                                                        ▼
//!                              ChannelActor (per channel) [realtime lane | bulk lane]
//!                                                        │ rate limiter, batching, retries
//!                                                        ▼
//!                                  Provider ──outcomes──▶ result writer (group commit)
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{Mutex, mpsc};

use crate::batcher::Batcher;
use crate::channel::{ChannelTuning, ResultWriter};
use crate::plan::{DeliveryResult, MessagePlan, Shard};
use crate::planner::{DispatchMessage, Planner, ShardQueues};
use crate::registry::{ChannelRegistry, ProviderFactory};
use crate::shard::ShardWorker;
use crate::store::{DispatchStore, StoreError};

#[derive(Debug, Clone, Copy)]
pub struct TopologyConfig {
    pub shard_size: u32,
    pub page_shards: u32,
    pub realtime_shard_workers: usize,
    pub bulk_shard_workers: usize,
    pub shard_queue_capacity: usize,
    pub result_batch_max: usize,
    pub channel: ChannelTuning,
}

/// The running topology, shared by the HTTP layer.
#[derive(Clone)]
pub struct Dispatch {
    planner: Addr<Planner>,
    registry: Arc<ChannelRegistry>,
}

impl Dispatch {
    /// Start every actor, then resume every unfinished message.
    pub async fn start(
        store: Arc<dyn DispatchStore>,
        factory: Arc<dyn ProviderFactory>,
        config: TopologyConfig,
    ) -> Result<Dispatch, StoreError> {
        let writer_store = store.clone();
        let writer: ResultWriter = Batcher::spawn(
            "deliveries",
            4096,
            config.result_batch_max.max(1),
            move |batches: Vec<Vec<DeliveryResult>>| {
                let store = writer_store.clone();
                async move {
                    let n = batches.len();
                    let all: Vec<DeliveryResult> = batches.into_iter().flatten().collect();
                    store.write_results(&all).await.map_err(|e| e.to_string())?;
                    Ok(vec![(); n])
                }
            },
        );
        // Channel actors and shard workers share one arbiter: adapters are built on the runtime
        // that runs them (pooled SMTP connections are bound to it).
        let worker_arbiter = Arbiter::new();
        let registry = Arc::new(ChannelRegistry::new(
            store.clone(),
            factory,
            config.channel,
            writer.clone(),
            worker_arbiter.handle(),
        ));
        let (rt_tx, rt_rx) = mpsc::channel(config.shard_queue_capacity.max(1));
        let (bulk_tx, bulk_rx) = mpsc::channel(config.shard_queue_capacity.max(1));
        let rt_rx = Arc::new(Mutex::new(rt_rx));
        let bulk_rx = Arc::new(Mutex::new(bulk_rx));
        for (name, queue, count) in [
            ("realtime", rt_rx, config.realtime_shard_workers),
            ("bulk", bulk_rx, config.bulk_shard_workers),
        ] {
            for _ in 0..count.max(1) {
                let worker = ShardWorker {
                    name,
                    queue: queue.clone(),
                    store: store.clone(),
                    registry: registry.clone(),
                    writer: writer.clone(),
                    current: Arc::new(Mutex::new(None)),
                    restarts: 0,
                };
                // The address is dropped on purpose: workers take work from their queue, not
                // their mailbox, and are stopped with the arbiter.
                let _ = Supervisor::start_in_arbiter(&worker_arbiter.handle(), move |_| worker);
            }
        }
        let planner_store = store.clone();
        let queues = ShardQueues {
            realtime: rt_tx,
            bulk: bulk_tx,
        };
        let planner = Supervisor::start_in_arbiter(&worker_arbiter.handle(), move |_| Planner {
            store: planner_store,
            queues,
            shard_size: config.shard_size.max(1),
            page_shards: config.page_shards.max(1),
        });
        let dispatch = Dispatch { planner, registry };
        let reporter = dispatch.registry.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                reporter.report_depths().await;
            }
        });
        // Arbiters live as long as the process; dropping the handles would not stop them.
        std::mem::forget(worker_arbiter);
        for plan in store.unfinished_messages().await? {
            tracing::info!(msgid = plan.msgid, "resuming unfinished message");
            dispatch.dispatch(plan, None).await;
        }
        Ok(dispatch)
    }

    /// Hand an accepted (already durable) message to the planner.
    pub async fn dispatch(&self, plan: MessagePlan, shards: Option<Vec<Shard>>) {
        if let Err(e) = self.planner.send(DispatchMessage { plan, shards }).await {
            // The message is stored; it is resumed at the next start.
            tracing::error!(error = %e, "planner unavailable");
        }
    }

    /// Make the next job of this channel use freshly loaded settings.
    pub async fn channel_changed(&self, channel_id: i64) {
        self.registry.invalidate(channel_id).await;
    }
}
