//! The live channel actors, started on first use and replaced when a channel is edited.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::Mutex;

use crate::channel::{ChannelActor, ChannelLanes, ChannelTuning, ResultWriter};
use crate::plan::Lane;
use crate::provider::Provider;
use crate::retract::Retractions;
use crate::store::{ChannelSpec, DispatchStore};

/// Builds an adapter for a channel's decrypted settings.
pub trait ProviderFactory: Send + Sync + 'static {
    fn build(&self, spec: &ChannelSpec) -> Result<Arc<dyn Provider>, String>;
}

/// Why a channel cannot take work now; recorded as the delivery's failure code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelUnavailable {
    #[error("channel_missing: the channel no longer exists")]
    Missing,
    #[error("channel_disabled: the channel is disabled")]
    Disabled,
    #[error("channel_config: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(String),
}

impl ChannelUnavailable {
    pub fn code(&self) -> &'static str {
        match self {
            ChannelUnavailable::Missing => "channel_missing",
            ChannelUnavailable::Disabled => "channel_disabled",
            ChannelUnavailable::Config(_) => "channel_config",
            ChannelUnavailable::Store(_) => "store",
        }
    }
}

struct Entry {
    lanes: ChannelLanes,
    /// The actor's adapter, also used for recalls.
    provider: Arc<dyn Provider>,
    // Held so the supervisor keeps the actor alive; dropping it lets the actor end.
    _addr: Addr<ChannelActor>,
}

pub struct ChannelRegistry {
    store: Arc<dyn DispatchStore>,
    factory: Arc<dyn ProviderFactory>,
    tuning: ChannelTuning,
    writer: ResultWriter,
    arbiter: ArbiterHandle,
    retractions: Arc<Retractions>,
    live: Mutex<HashMap<i64, Entry>>,
}

impl ChannelRegistry {
    pub fn new(
        store: Arc<dyn DispatchStore>,
        factory: Arc<dyn ProviderFactory>,
        tuning: ChannelTuning,
        writer: ResultWriter,
        arbiter: ArbiterHandle,
        retractions: Arc<Retractions>,
    ) -> ChannelRegistry {
        ChannelRegistry {
            store,
            factory,
            tuning,
            writer,
            arbiter,
            retractions,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The lanes of a channel, starting its actor if it is not running.
    pub async fn lanes(&self, channel_id: i64) -> Result<ChannelLanes, ChannelUnavailable> {
        self.entry(channel_id).await.map(|(lanes, _)| lanes)
    }

    /// The adapter of a channel (the one its actor uses), starting the actor if needed.
    pub async fn provider(&self, channel_id: i64) -> Result<Arc<dyn Provider>, ChannelUnavailable> {
        self.entry(channel_id).await.map(|(_, provider)| provider)
    }

    async fn entry(
        &self,
        channel_id: i64,
    ) -> Result<(ChannelLanes, Arc<dyn Provider>), ChannelUnavailable> {
        let mut live = self.live.lock().await;
        if let Some(entry) = live.get(&channel_id) {
            return Ok((entry.lanes.clone(), entry.provider.clone()));
        }
        let spec = self
            .store
            .channel(channel_id)
            .await
            .map_err(|e| ChannelUnavailable::Store(e.to_string()))?
            .ok_or(ChannelUnavailable::Missing)?;
        if !spec.enabled {
            return Err(ChannelUnavailable::Disabled);
        }
        let provider = self
            .factory
            .build(&spec)
            .map_err(ChannelUnavailable::Config)?;
        let (actor, lanes) = ChannelActor::new(
            spec.id,
            spec.channel_type,
            provider.clone(),
            spec.rate_per_second,
            self.tuning,
            self.writer.clone(),
            self.retractions.clone(),
        );
        let addr = Supervisor::start_in_arbiter(&self.arbiter, move |_| actor);
        live.insert(
            channel_id,
            Entry {
                lanes: lanes.clone(),
                provider: provider.clone(),
                _addr: addr,
            },
        );
        tracing::info!(channel_id, channel_type = %spec.channel_type, "channel actor started");
        Ok((lanes, provider))
    }

    /// Run a task on the runtime the adapters were built on (their connections are bound to it).
    pub fn spawn<F>(&self, task: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.arbiter.spawn(task)
    }

    /// Forget a channel's actor after an edit; queued work drains, new work gets a fresh actor
    /// built from the new settings.
    pub async fn invalidate(&self, channel_id: i64) {
        self.live.lock().await.remove(&channel_id);
    }

    /// Publish lane depths as gauges.
    pub async fn report_depths(&self) {
        let live = self.live.lock().await;
        for entry in live.values() {
            for lane in [Lane::Realtime, Lane::Bulk] {
                metrics::gauge!("msghub_lane_depth_jobs", "channel_type" => entry.lanes.channel_type.code(), "lane" => lane.as_str())
                    .set(entry.lanes.depth(lane) as f64);
            }
        }
    }
}
