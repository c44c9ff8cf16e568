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
use crate::timers::TimerConfig;

pub struct SendScheduler {
    store: Arc<dyn DispatchStore>,
    planner: Recipient<DispatchMessage>,
    config: TimerConfig,
    busy: bool,
}

impl SendScheduler {
    pub fn new(
        store: Arc<dyn DispatchStore>,
        planner: Recipient<DispatchMessage>,
        config: TimerConfig,
    ) -> SendScheduler {
        SendScheduler {
            store,
            planner,
            config,
            busy: false,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let store = self.store.clone();
        let planner = self.planner.clone();
        let limit = self.config.batch.max(1);
        let work = async move { release_due(&*store, &planner, limit).await };
        ctx.spawn(work.into_actor(self).map(move |more, act, ctx| {
            act.busy = false;
            if more {
                act.poll(ctx);
            }
        }));
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

impl Actor for SendScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll(ctx);
        ctx.run_interval(self.config.poll_interval, |act, ctx| act.poll(ctx));
    }
}

impl Supervised for SendScheduler {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.busy = false;
        metrics::counter!("msghub_actor_restarts_total", "actor" => "send_scheduler").increment(1);
    }
}
