//! The worker task: resolves each event's message to its callback, renders JUMS items, batches
//! them per (source, URL) and posts the batches with retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use msghub_actors::plan::MessagePlan;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::{Semaphore, mpsc};

use super::batch::Batches;
use super::item::CallbackItem;
use super::{Envelope, Route, Shared};
use crate::settings::CallbackSettings;
use crate::storage::Db;
use crate::storage::crypto::Crypto;

/// How long a source's signing credentials are reused before being read again (a rotated
/// secret takes effect within this time).
const SIGNER_TTL: Duration = Duration::from_secs(60);

/// POSTs in flight to one destination at once: half the shared slots, so a receiver that
/// starts hanging leaves the other half to everyone else.
pub(super) const POSTS_PER_DESTINATION: usize = 8;
/// ... and while its last POST failed (refused, timed out, unreachable): it holds at most
/// these slots for its timeouts and retries.
pub(super) const POSTS_PER_FAILING_DESTINATION: usize = 2;

/// What a batch is signed with. No `Debug`: it holds the source secret.
struct Signer {
    key: Arc<str>,
    authorization: Arc<str>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Destination {
    source_id: i64,
    url: Arc<str>,
}

/// What one destination is using: its POSTs in flight, its items held (batched or being
/// posted and retried), and whether its last POST failed.
#[derive(Clone)]
struct Usage {
    posts: Arc<Semaphore>,
    failing_posts: Arc<Semaphore>,
    held: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Usage {
    fn new() -> Usage {
        Usage {
            posts: Arc::new(Semaphore::new(POSTS_PER_DESTINATION)),
            failing_posts: Arc::new(Semaphore::new(POSTS_PER_FAILING_DESTINATION)),
            held: Arc::new(AtomicUsize::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    fn idle(&self) -> bool {
        self.held.load(Ordering::SeqCst) == 0
            && self.posts.available_permits() == POSTS_PER_DESTINATION
            && self.failing_posts.available_permits() == POSTS_PER_FAILING_DESTINATION
    }

    fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }
}

pub(super) struct Worker {
    db: Db,
    crypto: Crypto,
    client: reqwest::Client,
    shared: Arc<Shared>,
    batches: Batches<Destination, CallbackItem>,
    signers: HashMap<i64, (Instant, Option<Arc<Signer>>)>,
    posts: Arc<Semaphore>,
    destinations: HashMap<Destination, Usage>,
    /// Items a failing destination may hold: a quarter of `queue_capacity` (at least a batch),
    /// so a receiver that is down cannot use up what every other destination needs.
    destination_capacity: usize,
    retries: u32,
    retry_delay: Duration,
}

impl Worker {
    pub(super) fn new(
        db: Db,
        crypto: Crypto,
        client: reqwest::Client,
        settings: &CallbackSettings,
        shared: Arc<Shared>,
        concurrent_posts: usize,
    ) -> Worker {
        Worker {
            db,
            crypto,
            client,
            shared,
            batches: Batches::new(settings.batch_max, Duration::from_millis(settings.flush_ms)),
            signers: HashMap::new(),
            posts: Arc::new(Semaphore::new(concurrent_posts.max(1))),
            destinations: HashMap::new(),
            destination_capacity: (settings.queue_capacity / 4).max(settings.batch_max).max(1),
            retries: settings.retries,
            retry_delay: Duration::from_millis(settings.retry_delay_ms),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Envelope>) {
        loop {
            let deadline = self.batches.next_deadline();
            tokio::select! {
                envelope = rx.recv() => match envelope {
                    Some(envelope) => self.route(envelope).await,
                    None => break,
                },
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            for (dest, items) in self.batches.take_due(Instant::now()) {
                self.post(dest, items);
            }
        }
        for (dest, items) in self.batches.take_all() {
            self.post(dest, items);
        }
    }

    /// The message's route: cached, else read from its stored plan and cached. `Err` when the
    /// database could not say (nothing is cached then, so a later event tries again).
    async fn route_of(&self, msgid: i64) -> Result<Option<Arc<Route>>, ()> {
        if let Ok(routes) = self.shared.routes.lock()
            && let Some(route) = routes.get(msgid)
        {
            return Ok(route);
        }
        let route = match self.db.message_source_and_plan(msgid).await {
            Ok(Some((_, plan))) => match serde_json::from_str::<MessagePlan>(&plan) {
                Ok(plan) => Route::of(&plan).map(Arc::new),
                Err(e) => {
                    tracing::warn!(msgid, error = %e, "stored plan unreadable; no status callbacks for this message");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(msgid, error = %e, "looking up a message's status callback failed");
                return Err(());
            }
        };
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.insert(msgid, route.clone());
        }
        Ok(route)
    }

    /// The source's signing credentials; `None` when it has no stored secret to sign with.
    async fn signer(&mut self, source_id: i64) -> Result<Option<Arc<Signer>>, ()> {
        if let Some((at, signer)) = self.signers.get(&source_id)
            && at.elapsed() < SIGNER_TTL
        {
            return Ok(signer.clone());
        }
        let signer = match self.db.source_signing_secret(&self.crypto, source_id).await {
            Ok(Some((key, Some(secret)))) => Some(Arc::new(Signer {
                authorization: super::basic_auth(&key, &secret).into(),
                key: key.into(),
            })),
            Ok(_) => {
                tracing::warn!(
                    source_id,
                    "status callbacks dropped: the source has no stored secret to sign with (rotate it)"
                );
                None
            }
            Err(e) => {
                tracing::warn!(source_id, error = %e, "loading a source's signing secret failed");
                return Err(());
            }
        };
        if self.signers.len() > 10_000 {
            self.signers.retain(|_, (at, _)| at.elapsed() < SIGNER_TTL);
        }
        self.signers
            .insert(source_id, (Instant::now(), signer.clone()));
        Ok(signer)
    }

    async fn route(&mut self, envelope: Envelope) {
        let Envelope { msgid, items } = envelope;
        let n = items.len();
        let route = match self.route_of(msgid).await {
            Ok(Some(route)) => route,
            Ok(None) => return self.shared.release(n),
            Err(()) => return self.shared.drop_items(n, "lookup_failed"),
        };
        let signer = match self.signer(route.source_id).await {
            Ok(Some(signer)) => signer,
            Ok(None) => return self.shared.drop_items(n, "unsigned"),
            Err(()) => return self.shared.drop_items(n, "lookup_failed"),
        };
        let dest = Destination {
            source_id: route.source_id,
            url: route.url.clone(),
        };
        let usage = self.usage(&dest);
        let now = Instant::now();
        for pending in items {
            if usage.failing() && usage.held.load(Ordering::SeqCst) >= self.destination_capacity {
                self.shared.drop_items(1, "receiver_backlog");
                continue;
            }
            let mut event = pending.event;
            if let Some(id) = pending.channel_id {
                match route.channels.iter().find(|(c, _)| *c == id) {
                    Some((_, t)) => event.channel_type = *t,
                    None => {
                        self.shared.drop_items(1, "unknown_channel");
                        continue;
                    }
                }
            }
            let item = CallbackItem::new(signer.key.clone(), msgid, event, route.params.clone());
            usage.held.fetch_add(1, Ordering::SeqCst);
            if let Some(full) = self.batches.push(&dest, item, now) {
                self.post(dest.clone(), full);
            }
        }
    }

    /// The usage of a destination, created when it is first seen. Idle ones are forgotten when
    /// many are known.
    fn usage(&mut self, dest: &Destination) -> Usage {
        if self.destinations.len() > 10_000 {
            self.destinations.retain(|_, u| !u.idle());
        }
        self.destinations
            .entry(dest.clone())
            .or_insert_with(Usage::new)
            .clone()
    }

    /// Post one batch in the background, with retries; the items are released either way.
    fn post(&mut self, dest: Destination, items: Vec<CallbackItem>) {
        let n = items.len();
        let usage = self.usage(&dest);
        let signer = self
            .signers
            .get(&dest.source_id)
            .and_then(|(_, s)| s.clone());
        let (Some(signer), Ok(body)) = (signer, serde_json::to_vec(&items)) else {
            usage.held.fetch_sub(n, Ordering::SeqCst);
            return self.shared.drop_items(n, "unsigned");
        };
        drop(items);
        let client = self.client.clone();
        let shared = self.shared.clone();
        let posts = self.posts.clone();
        let (retries, delay) = (self.retries, self.retry_delay);
        tokio::spawn(async move {
            let finished = |how: Option<&'static str>| {
                usage.held.fetch_sub(n, Ordering::SeqCst);
                match how {
                    None => shared.release(n),
                    Some(reason) => shared.drop_items(n, reason),
                }
            };
            for attempt in 0..=retries {
                if attempt > 0 {
                    tokio::time::sleep(delay).await;
                }
                // The destination's own slots first: waiting for them holds none of the shared.
                let _failing = if usage.failing() {
                    match usage.failing_posts.acquire().await {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    }
                } else {
                    None
                };
                let Ok(_own) = usage.posts.acquire().await else {
                    break;
                };
                let Ok(_permit) = posts.acquire().await else {
                    break;
                };
                let result = client
                    .post(&*dest.url)
                    .header(AUTHORIZATION, &*signer.authorization)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let outcome = match &result {
                    Ok(resp) if resp.status() == StatusCode::OK => "ok",
                    Ok(_) => "refused",
                    Err(_) => "unreachable",
                };
                metrics::counter!("msghub_callback_posts_total", "result" => outcome).increment(1);
                usage.failing.store(outcome != "ok", Ordering::SeqCst);
                if outcome == "ok" {
                    return finished(None);
                }
                tracing::debug!(
                    source_id = dest.source_id,
                    attempt,
                    status = result.as_ref().ok().map(|r| r.status().as_u16()),
                    "status callback POST failed"
                );
            }
            tracing::warn!(
                source_id = dest.source_id,
                items = n,
                "status callback batch dropped after its retries"
            );
            finished(Some("undeliverable"));
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use msghub_actors::provider::ChannelType;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::{CallbackEvent, CallbackKind, Pending, RouteCache};
    use super::*;

    /// A receiver that takes connections and never answers: how many it took, and how many
    /// the client has not closed yet.
    async fn hanging_receiver() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cb", listener.local_addr().unwrap());
        let (taken, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, o) = (taken.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                t.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, taken, open)
    }

    /// A receiver that answers every POST with 200: a message per POST.
    async fn answering_receiver() -> (String, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cb", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut got = Vec::new();
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        // One request per connection is enough here: its body ends the JSON.
                        if got.ends_with(b"]") {
                            let _ = socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            let _ = tx.send(());
                            got.clear();
                        }
                    }
                });
            }
        });
        (url, rx)
    }

    fn route(url: &str) -> Arc<Route> {
        Arc::new(Route {
            source_id: 1,
            url: url.into(),
            params: None,
            channels: vec![(7, ChannelType::Sms)],
        })
    }

    fn events(n: usize) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                event: CallbackEvent {
                    kind: CallbackKind::Submitted,
                    userid: Some(format!("u{i}")),
                    channel_type: ChannelType::Sms,
                    address: "13900000001".into(),
                    error: None,
                    at_ms: 1_700_000_000_000,
                },
                channel_id: None,
            })
            .collect()
    }

    /// A worker whose messages 1 and 2 report to `first` and `second`, signed for source 1.
    async fn worker(
        settings: &CallbackSettings,
        first: &str,
        second: &str,
    ) -> (Worker, Arc<Shared>, tempfile::TempDir) {
        crate::startup::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::test_sqlite(&dir).await;
        let crypto = Crypto::from_base64(&format!("{}=", "A".repeat(43))).unwrap();
        let shared = Arc::new(Shared {
            routes: Mutex::new(RouteCache::new(16)),
            held: AtomicUsize::new(0),
            capacity: settings.queue_capacity,
        });
        if let Ok(mut routes) = shared.routes.lock() {
            routes.insert(1, Some(route(first)));
            routes.insert(2, Some(route(second)));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .unwrap();
        let mut worker = Worker::new(db, crypto, client, settings, shared.clone(), 16);
        worker.signers.insert(
            1,
            (
                Instant::now(),
                Some(Arc::new(Signer {
                    key: "k".into(),
                    authorization: "Basic azpz".into(),
                })),
            ),
        );
        (worker, shared, dir)
    }

    /// Report `n` events of message `msgid`, held first as `emit` holds them.
    async fn report(worker: &mut Worker, shared: &Shared, msgid: i64, n: usize) {
        assert!(shared.try_hold(n));
        worker
            .route(Envelope {
                msgid,
                items: events(n),
            })
            .await;
    }

    /// Wait for the answering receiver's next POST, which must come within 30 s.
    async fn posted_to(posts: &mut mpsc::UnboundedReceiver<()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(30), posts.recv())
            .await
            .expect(what)
            .expect("receiver");
    }

    fn settings(timeout_ms: u64, retries: u32) -> CallbackSettings {
        CallbackSettings {
            batch_max: 1,
            flush_ms: 10,
            retries,
            retry_delay_ms: 20,
            timeout_ms,
            queue_capacity: 80,
        }
    }

    #[tokio::test]
    async fn a_receiver_that_starts_hanging_leaves_half_the_slots_to_the_others() {
        let (hung_url, hung_taken, _) = hanging_receiver().await;
        let (ok_url, mut ok_posts) = answering_receiver().await;
        let (mut worker, shared, _dir) = worker(&settings(60_000, 0), &hung_url, &ok_url).await;
        // Forty one-item batches for the receiver that hangs: more than the 16 shared slots.
        report(&mut worker, &shared, 1, 40).await;
        report(&mut worker, &shared, 2, 1).await;
        // The other receiver is posted to at once, not after the hanging POSTs time out.
        posted_to(
            &mut ok_posts,
            "the answering receiver waited behind the hanging one",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(hung_taken.load(Ordering::SeqCst), POSTS_PER_DESTINATION);
        // Nothing failed yet: all forty are held, the answered one released.
        assert_eq!(shared.held.load(Ordering::SeqCst), 40);
    }

    #[tokio::test]
    async fn a_failing_receiver_holds_two_slots_and_a_quarter_of_the_budget() {
        let (hung_url, _, hung_open) = hanging_receiver().await;
        let (ok_url, mut ok_posts) = answering_receiver().await;
        // POSTs time out after 300 ms and are retried (nearly) forever.
        let (mut worker, shared, _dir) = worker(&settings(300, 1_000), &hung_url, &ok_url).await;
        report(&mut worker, &shared, 1, 10).await;
        let usage = worker.usage(&Destination {
            source_id: 1,
            url: hung_url.as_str().into(),
        });
        let started = Instant::now();
        while !usage.failing() {
            assert!(started.elapsed() < Duration::from_secs(30), "never failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Failing: it may hold a quarter of the 80 (20), so 10 of these 40 are taken.
        report(&mut worker, &shared, 1, 40).await;
        assert_eq!(shared.held.load(Ordering::SeqCst), 20);
        assert_eq!(usage.held.load(Ordering::SeqCst), 20);
        report(&mut worker, &shared, 2, 1).await;
        posted_to(
            &mut ok_posts,
            "the answering receiver waited behind the failing one",
        )
        .await;
        // Once the first POSTs timed out, its retries hold at most two connections at a time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen.push(hung_open.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            seen.iter().all(|n| *n <= POSTS_PER_FAILING_DESTINATION),
            "{seen:?}"
        );
        assert!(seen.iter().any(|n| *n > 0), "no retries seen: {seen:?}");
    }
}
