//! `Retractions`: the messages whose work still in memory must not be sent.
//!
//! Retracting a message is decided in storage: its state and its still-queued deliveries change
//! in one transaction, and shards opened afterwards create no deliveries. What storage cannot
//! reach is work already handed to channel actors (jobs waiting in a lane, for the rate limiter,
//! or between retries). Channel actors ask [`Retractions::begin_call`] before every provider
//! call; a retracted message's targets are dropped there. The same lock counts the calls in
//! progress per message, so the retract path can wait until every call that was already under
//! way has recorded its outcome before it recalls what was sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Retracted messages remembered at most. Retracts are rare, and a retracted message's jobs
/// leave the lanes quickly (they are dropped, not sent), so the oldest entry is safe to forget.
const REMEMBERED: usize = 65_536;

#[derive(Default)]
struct Inner {
    retracted: HashSet<i64>,
    order: VecDeque<i64>,
    /// Provider calls in progress, per message.
    calls: HashMap<i64, usize>,
}

/// Shared by the topology's channel actors and the retract path.
#[derive(Default)]
pub struct Retractions {
    inner: Mutex<Inner>,
}

impl Retractions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on, no new provider call of this message starts.
    pub fn retract(&self, msgid: i64) {
        let mut inner = self.lock();
        if inner.retracted.insert(msgid) {
            inner.order.push_back(msgid);
        }
        while inner.order.len() > REMEMBERED {
            if let Some(old) = inner.order.pop_front() {
                inner.retracted.remove(&old);
            }
        }
    }

    pub fn is_retracted(&self, msgid: i64) -> bool {
        let inner = self.lock();
        !inner.retracted.is_empty() && inner.retracted.contains(&msgid)
    }

    /// Register a provider call of `msgid` about to start; `None` when the message was
    /// retracted (the call must not be made). The call counts as in progress until the guard
    /// is dropped, which must be after its outcomes are recorded.
    pub fn begin_call(self: &Arc<Self>, msgid: i64) -> Option<CallGuard> {
        let mut inner = self.lock();
        if inner.retracted.contains(&msgid) {
            return None;
        }
        *inner.calls.entry(msgid).or_insert(0) += 1;
        Some(CallGuard {
            owner: self.clone(),
            msgid,
        })
    }

    /// Provider calls of `msgid` in progress.
    pub fn calls_in_progress(&self, msgid: i64) -> usize {
        self.lock().calls.get(&msgid).copied().unwrap_or(0)
    }

    /// Wait until no call of `msgid` is in progress, or `limit` passed; true when idle.
    pub async fn wait_idle(&self, msgid: i64, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.calls_in_progress(msgid) == 0 {
                return true;
            }
            if started.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A provider call in progress; see [`Retractions::begin_call`].
pub struct CallGuard {
    owner: Arc<Retractions>,
    msgid: i64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut inner = self.owner.lock();
        if let Some(n) = inner.calls.get_mut(&self.msgid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.calls.remove(&self.msgid);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_retracted_message_starts_no_call_and_others_are_counted_until_done() {
        let r = Arc::new(Retractions::default());
        let a = r.begin_call(1).unwrap();
        let b = r.begin_call(1).unwrap();
        assert_eq!(r.calls_in_progress(1), 2);
        r.retract(1);
        assert!(r.is_retracted(1) && !r.is_retracted(2));
        assert!(r.begin_call(1).is_none());
        assert!(r.begin_call(2).is_some());
        drop(a);
        assert_eq!(r.calls_in_progress(1), 1);
        drop(b);
        assert_eq!(r.calls_in_progress(1), 0);
        assert!(
            r.lock().calls.is_empty(),
            "finished messages leave no entry"
        );
    }

    #[test]
    fn only_the_most_recent_retractions_are_remembered() {
        let r = Retractions::default();
        for id in 0..(REMEMBERED as i64 + 2) {
            r.retract(id);
        }
        assert!(!r.is_retracted(0) && !r.is_retracted(1));
        assert!(r.is_retracted(REMEMBERED as i64 + 1));
        assert_eq!(r.lock().retracted.len(), REMEMBERED);
    }

    #[tokio::test]
    async fn waiting_for_idle_ends_when_the_last_call_ends() {
        let r = Arc::new(Retractions::default());
        let guard = r.begin_call(5).unwrap();
        r.retract(5);
        assert!(!r.wait_idle(5, Duration::from_millis(50)).await);
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_idle(5, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(guard);
        assert!(waiter.await.unwrap());
    }
}
