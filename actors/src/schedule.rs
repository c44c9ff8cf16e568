//! `SendScheduler`: releases scheduled messages (`option.send_at`) when they fall due.
//!
//! A scheduled message is stored with its send time and is invisible to the planner until then.
//! The scheduler polls storage for due ones; releasing moves them to `accepted` in one
//! transaction, so a restart loses nothing (the first poll releases everything that fell due
//! while the process was down) and a concurrent cancel or reschedule either wins or finds the
//! message already released. Released plans are offered to the planner; when its mailbox is
//! full, its sweep over accepted messages takes them a moment later.

use std::sync::Arc;

use actix::prelude::*;

use crate::plan::now_ms;
use crate::planner::DispatchMessage;
use crate::store::DispatchStore;
use crate::timers::{DueWork, Next, Poller};

/// Releases due scheduled messages.
pub type SendScheduler = Poller<ReleaseScheduled>;

/// The scheduler's work: release a page of due messages.
pub struct ReleaseScheduled;

#[async_trait::async_trait]
impl DueWork for ReleaseScheduled {
    const NAME: &'static str = "send_scheduler";

    async fn run(
        &self,
        store: &Arc<dyn DispatchStore>,
        planner: &Recipient<DispatchMessage>,
        limit: u32,
    ) -> Next {
        if release_due(&**store, planner, limit).await {
            Next::Now
        } else {
            Next::Tick
        }
    }
}

/// Release one page of due messages; true when the page was full (more may be due).
async fn release_due(
    store: &dyn DispatchStore,
    planner: &Recipient<DispatchMessage>,
    limit: u32,
) -> bool {
    let plans = match store.release_scheduled(now_ms(), limit).await {
        Ok(plans) => plans,
        Err(e) => {
            // Nothing changed; the next poll tries again.
            tracing::warn!(error = %e, "releasing scheduled messages failed");
            return false;
        }
    };
    let full = plans.len() as u32 == limit;
    for plan in plans {
        metrics::counter!("msghub_scheduled_released_total").increment(1);
        // Already `accepted` in storage: if the planner is saturated, its sweep starts it.
        if planner
            .try_send(DispatchMessage { plan, shards: None })
            .is_err()
        {
            metrics::counter!("msghub_dispatch_deferred_total").increment(1);
        }
    }
    full
}
