//! The worker task: resolves each event's message to its callback, renders JUMS items, batches
//! them per (source, URL) and posts the batches with retries.

use std::collections::HashMap;
use std::sync::Arc;
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

pub(super) struct Worker {
    db: Db,
    crypto: Crypto,
    client: reqwest::Client,
    shared: Arc<Shared>,
    batches: Batches<Destination, CallbackItem>,
    signers: HashMap<i64, (Instant, Option<Arc<Signer>>)>,
    posts: Arc<Semaphore>,
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
        let now = Instant::now();
        for pending in items {
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
            if let Some(full) = self.batches.push(&dest, item, now) {
                self.post(dest.clone(), full);
            }
        }
    }

    /// Post one batch in the background, with retries; the items are released either way.
    fn post(&self, dest: Destination, items: Vec<CallbackItem>) {
        let n = items.len();
        let signer = self
            .signers
            .get(&dest.source_id)
            .and_then(|(_, s)| s.clone());
        let (Some(signer), Ok(body)) = (signer, serde_json::to_vec(&items)) else {
            return self.shared.drop_items(n, "unsigned");
        };
        drop(items);
        let client = self.client.clone();
        let shared = self.shared.clone();
        let posts = self.posts.clone();
        let (retries, delay) = (self.retries, self.retry_delay);
        tokio::spawn(async move {
            for attempt in 0..=retries {
                if attempt > 0 {
                    tokio::time::sleep(delay).await;
                }
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
                if outcome == "ok" {
                    return shared.release(n);
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
            shared.drop_items(n, "undeliverable");
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}
