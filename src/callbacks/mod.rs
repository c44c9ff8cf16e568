//! Status callbacks to business systems, in the JUMS format.
//!
//! [`Callbacks`] is a cheap-clone handle. [`Callbacks::emit`] never blocks and never fails the
//! caller: it looks the message up in an in-memory route cache (most messages have no callback
//! and stop there), and otherwise hands the event to one worker task through a bounded queue.
//! The worker finds the message's callback (the cache, else the stored plan), renders the JUMS
//! item, batches items per (source, URL), and POSTs each batch as a JSON array signed with the
//! source's `Basic base64(key:secret)`: when `batch_max` items are waiting or `flush_ms` after
//! the first. A POST not answered with HTTP 200 is retried `retries` times, `retry_delay_ms`
//! apart, then dropped. Items held in memory (queued, batched, being retried) never exceed
//! `queue_capacity`; beyond it new items are dropped and counted. A destination (source, URL)
//! has at most 8 POSTs in flight (of 16 in all); while its last POST failed, at most 2, and it
//! may hold at most a quarter of `queue_capacity`, so a receiver that is down slows down its
//! own callbacks and leaves the others room.

mod batch;
mod item;
mod verify;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msghub_actors::plan::{CallbackSpec, DeliveryResult, DeliveryStatus, MessagePlan};
use msghub_actors::provider::ChannelType;
use tokio::sync::mpsc;

pub use item::{CallbackEvent, CallbackItem, CallbackKind, ItemError, sender_code};
pub use verify::Unverified;

use crate::settings::CallbackSettings;
use crate::storage::Db;
use crate::storage::crypto::Crypto;

/// Messages whose callback (or lack of one) is remembered. Ids are time-ordered and outcomes
/// arrive soon after acceptance, so the oldest entry is the one to forget.
const ROUTE_CACHE_ENTRIES: usize = 100_000;
/// Batch POSTs in flight at once, across all destinations.
const MAX_CONCURRENT_POSTS: usize = 16;

/// Where a message's items go.
pub(crate) struct Route {
    source_id: i64,
    url: Arc<str>,
    params: Option<item::Params>,
    channels: Vec<(i64, ChannelType)>,
}

impl Route {
    fn of(plan: &MessagePlan) -> Option<Route> {
        let CallbackSpec { url, params } = plan.callback.as_ref()?;
        Some(Route {
            source_id: plan.source_id,
            url: url.as_str().into(),
            params: (!params.is_null()).then(|| item::Params(Arc::new(params.clone()))),
            channels: plan
                .channels
                .iter()
                .map(|c| (c.channel_id, c.channel_type))
                .collect(),
        })
    }
}

/// msgid → its route (`None`: the message has no callback), bounded, oldest out first.
struct RouteCache {
    map: HashMap<i64, Option<Arc<Route>>>,
    order: VecDeque<i64>,
    cap: usize,
}

impl RouteCache {
    fn new(cap: usize) -> RouteCache {
        RouteCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// `None` when the message is not known here.
    fn get(&self, msgid: i64) -> Option<Option<Arc<Route>>> {
        self.map.get(&msgid).cloned()
    }

    fn insert(&mut self, msgid: i64, route: Option<Arc<Route>>) {
        if self.map.insert(msgid, route).is_none() {
            self.order.push_back(msgid);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

struct Pending {
    event: CallbackEvent,
    /// Delivery results name the message's channel by id; the worker sets `event.channel_type`
    /// from the message's route.
    channel_id: Option<i64>,
}

struct Envelope {
    msgid: i64,
    items: Vec<Pending>,
}

/// State the handle and the worker share.
struct Shared {
    routes: Mutex<RouteCache>,
    /// Items accepted by `emit` and not yet posted or dropped.
    held: AtomicUsize,
    capacity: usize,
}

impl Shared {
    /// Whether the message is known to have no callback.
    fn known_silent(&self, msgid: i64) -> bool {
        self.routes
            .lock()
            .map(|r| matches!(r.get(msgid), Some(None)))
            .unwrap_or(false)
    }

    fn try_hold(&self, n: usize) -> bool {
        let before = self.held.fetch_add(n, Ordering::SeqCst);
        if before + n > self.capacity {
            self.held.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::SeqCst);
    }

    /// Held items that will not be reported, counted by why.
    fn drop_items(&self, n: usize, reason: &'static str) {
        self.release(n);
        count_dropped(n, reason);
    }
}

/// The status callback service; clone it freely.
#[derive(Clone)]
pub struct Callbacks {
    tx: mpsc::Sender<Envelope>,
    shared: Arc<Shared>,
    client: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("held", &self.shared.held.load(Ordering::Relaxed))
            .finish()
    }
}

impl Callbacks {
    /// Start the worker task (on the current runtime) and return its handle.
    pub fn start(
        db: Db,
        crypto: Crypto,
        settings: &CallbackSettings,
    ) -> Result<Callbacks, reqwest::Error> {
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would carry the source's credentials to a URL nobody verified.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let capacity = settings.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity.min(65_536));
        let shared = Arc::new(Shared {
            routes: Mutex::new(RouteCache::new(ROUTE_CACHE_ENTRIES)),
            held: AtomicUsize::new(0),
            capacity,
        });
        let worker = worker::Worker::new(
            db,
            crypto,
            client.clone(),
            settings,
            shared.clone(),
            MAX_CONCURRENT_POSTS,
        );
        tokio::spawn(worker.run(rx));
        Ok(Callbacks {
            tx,
            shared,
            client,
            timeout,
        })
    }

    /// Report an event of message `msgid`. Returns at once: the item is queued, or dropped and
    /// counted when the queue is full; nothing happens when the message has no callback.
    pub fn emit(&self, msgid: i64, event: CallbackEvent) {
        if self.shared.known_silent(msgid) {
            return;
        }
        self.enqueue(Envelope {
            msgid,
            items: vec![Pending {
                event,
                channel_id: None,
            }],
        });
    }

    /// Whether message `msgid` is known to have no callback: events for it need not even be
    /// built.
    pub fn silent(&self, msgid: i64) -> bool {
        self.shared.known_silent(msgid)
    }

    /// Report several events of message `msgid` at once; like [`Callbacks::emit`].
    pub fn emit_all(&self, msgid: i64, events: Vec<CallbackEvent>) {
        if events.is_empty() || self.shared.known_silent(msgid) {
            return;
        }
        self.enqueue(Envelope {
            msgid,
            items: events
                .into_iter()
                .map(|event| Pending {
                    event,
                    channel_id: None,
                })
                .collect(),
        });
    }

    /// Report the outcomes the dispatch path just stored: type 2 (submitted; plus 4 when the
    /// provider's answer is itself the delivery, as for webhooks) or 3 (submit failed).
    pub fn emit_results(&self, results: &[DeliveryResult]) {
        if results.is_empty() {
            return;
        }
        let mut wanted: HashMap<i64, Vec<Pending>> = HashMap::new();
        if let Ok(routes) = self.shared.routes.lock() {
            for r in results {
                if !wanted.contains_key(&r.msgid) && !matches!(routes.get(r.msgid), Some(None)) {
                    wanted.insert(r.msgid, Vec::new());
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let at_ms = crate::storage::now_ms();
        for r in results {
            let Some(items) = wanted.get_mut(&r.msgid) else {
                continue;
            };
            let kinds: &[CallbackKind] = match r.status {
                DeliveryStatus::Submitted => &[CallbackKind::Submitted],
                DeliveryStatus::Delivered => &[CallbackKind::Submitted, CallbackKind::Delivered],
                DeliveryStatus::Failed => &[CallbackKind::SubmitFailed],
                _ => &[],
            };
            for kind in kinds {
                let error = kind
                    .has_error()
                    .then(|| (r.code.clone(), r.error.clone().unwrap_or_default()));
                items.push(Pending {
                    event: CallbackEvent {
                        kind: *kind,
                        userid: r.userid.clone(),
                        // Set from the route, by `channel_id`.
                        channel_type: ChannelType::App,
                        address: r.address.clone(),
                        error,
                        at_ms,
                    },
                    channel_id: Some(r.channel_id),
                });
            }
        }
        for (msgid, items) in wanted {
            if !items.is_empty() {
                self.enqueue(Envelope { msgid, items });
            }
        }
    }

    /// Remember an accepted message's callback, so its outcomes need no lookup.
    pub fn remember(&self, plan: &MessagePlan) {
        let route = Route::of(plan).map(Arc::new);
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.insert(plan.msgid, route);
        }
    }

    /// Check a URL with the echostr handshake, signed as the callbacks will be.
    pub async fn verify_url(
        &self,
        url: &str,
        source_key: &str,
        source_secret: &str,
    ) -> Result<(), Unverified> {
        verify::echostr(&self.client, self.timeout, url, source_key, source_secret).await
    }

    /// Items currently held (queued, batched or being retried).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    fn enqueue(&self, envelope: Envelope) {
        let n = envelope.items.len();
        if !self.shared.try_hold(n) {
            count_dropped(n, "queue_full");
            return;
        }
        // Shed rather than wait: the caller is the accept or outcome path.
        if self.tx.try_send(envelope).is_err() {
            self.shared.drop_items(n, "queue_full");
        }
    }
}

fn count_dropped(n: usize, reason: &'static str) {
    metrics::counter!("msghub_callback_items_dropped_total", "reason" => reason)
        .increment(n as u64);
}

/// `Basic base64(key:secret)`, the header JUMS signs callbacks and the echostr check with.
pub fn basic_auth(key: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_route_cache_forgets_its_oldest_entries() {
        let mut c = RouteCache::new(2);
        c.insert(1, None);
        c.insert(2, None);
        c.insert(2, None);
        c.insert(3, None);
        assert!(c.get(1).is_none());
        assert!(matches!(c.get(2), Some(None)));
        assert!(matches!(c.get(3), Some(None)));
        assert_eq!(c.order.len(), 2);
    }

    #[test]
    fn the_item_budget_refuses_what_exceeds_it() {
        let s = Shared {
            routes: Mutex::new(RouteCache::new(1)),
            held: AtomicUsize::new(0),
            capacity: 10,
        };
        assert!(s.try_hold(6));
        assert!(!s.try_hold(5));
        assert!(s.try_hold(4));
        s.release(10);
        assert_eq!(s.held.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn basic_auth_is_base64_of_key_and_secret() {
        assert_eq!(basic_auth("k", "s"), "Basic azpz");
    }
}
