//! Messages opened at acceptance.
//!
//! A simple real-time message (one shard, all channels at once, nothing filtered: a
//! transactional send) has its deliveries created in the transaction that accepts it, and is
//! handed straight to its channels from there: no planner, no shard queue, no transaction of
//! its own to open it, no `shards` row. Until its outcomes are recorded it is *claimed*, so the
//! planner's sweep, which sees it as an unfinished stored message, leaves it alone. A run that
//! cannot finish (its outcomes could not be stored, a channel went away) gives the claim back
//! and offers the message to the planner, which opens its implied shard again and sends only
//! what is still queued — the same path a restart takes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use crate::plan::{ChannelBatch, MessagePlan};
use crate::registry::ChannelRegistry;
use crate::shard::{DispatchWrites, Finished, retry_forever, send_batches};

/// Messages being sent by a direct run, which the planner must not start.
#[derive(Default)]
pub struct Claims {
    held: Mutex<HashSet<i64>>,
}

impl Claims {
    /// Claim messages before the transaction that stores them commits, so no sweep can see
    /// them unclaimed.
    pub fn claim(&self, msgids: &[i64]) {
        if let Ok(mut held) = self.held.lock() {
            held.extend(msgids.iter().copied());
        }
    }

    pub fn release(&self, msgids: &[i64]) {
        if let Ok(mut held) = self.held.lock() {
            for m in msgids {
                held.remove(m);
            }
        }
    }

    pub fn holds(&self, msgid: i64) -> bool {
        self.held
            .lock()
            .map(|h| h.contains(&msgid))
            .unwrap_or(false)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }
}

/// How a direct run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Finished,
    /// Some outcomes could not be stored: sending again would duplicate them, so the message
    /// stays claimed (untouched) until the next start reconciles it, like a stalled shard.
    Stalled,
    /// Nothing was lost, but not everything was sent: resume it from storage.
    Resume,
}

/// Send a message opened at acceptance and finish it.
pub(crate) async fn run(
    registry: &ChannelRegistry,
    writes: &DispatchWrites,
    plan: &Arc<MessagePlan>,
    batches: Vec<ChannelBatch>,
    _permit: OwnedSemaphorePermit,
) -> Ended {
    match send_batches(registry, writes, plan, batches).await {
        Ok(0) => {
            // How long a transactional send took to leave: from its acceptance (the time in
            // its id) until every provider call was answered and its outcome recorded.
            let waited = crate::plan::now_ms() - crate::plan::accepted_at_ms(plan.msgid);
            metrics::histogram!("msghub_realtime_sent_seconds")
                .record(waited.max(0) as f64 / 1000.0);
            retry_forever("finish message", || {
                writes
                    .finish
                    .lane(plan.lane)
                    .submit(Finished::Message(plan.msgid))
            })
            .await;
            metrics::counter!("msghub_messages_finished_total").increment(1);
            Ended::Finished
        }
        Ok(unrecorded) => {
            metrics::counter!("msghub_shards_stalled_total").increment(1);
            tracing::error!(
                msgid = plan.msgid,
                unrecorded,
                "outcomes not recorded; the message stays pending"
            );
            Ended::Stalled
        }
        Err(e) => {
            metrics::counter!("msghub_shard_failures_total", "lane" => plan.lane.as_str())
                .increment(1);
            tracing::warn!(msgid = plan.msgid, error = %e, "sending failed; resuming from storage");
            Ended::Resume
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_held_until_released() {
        let claims = Claims::default();
        claims.claim(&[1, 2, 3]);
        assert!(claims.holds(2));
        claims.release(&[2]);
        assert!(!claims.holds(2));
        assert!(claims.holds(1) && claims.holds(3));
        assert_eq!(claims.len(), 2);
    }
}
