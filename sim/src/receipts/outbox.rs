//! Delivery of receipts to the receiver: per-URL batching, bounded queues, retries, records.
//!
//! One [`Outbox`] per channel (and per reset epoch) owns a bounded queue and a batching task per
//! receiver URL. A batch is POSTed when it holds `batch_max` receipts or `batch_ms` after its
//! first; at most [`MAX_IN_FLIGHT_POSTS`] batches per URL are in flight, each retried after every
//! `retry_delays_ms` and then dropped. Memory stays bounded: at most [`MAX_PENDING_ITEMS`]
//! receipts wait per channel; beyond that new receipts are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use super::config::ReceiptConfig;
use super::courier::{Courier, loopback_host};
use crate::state::lock;

/// Receipts scheduled, queued or in flight per channel before new ones are dropped.
const MAX_PENDING_ITEMS: u64 = 200_000;
/// Receipts buffered per receiver URL between the schedulers and its batching task.
const QUEUE_CAPACITY: usize = 10_000;
/// Concurrent POSTs (with their retries) per receiver URL.
pub(super) const MAX_IN_FLIGHT_POSTS: usize = 4;
/// Addresses kept for `GET /sim/receipts` per channel; later receipts are only counted.
const MAX_RECORDED: usize = 2_000_000;
/// A batching task with nothing to do for this long exits; the next receipt starts a new one.
const IDLE_AFTER: Duration = Duration::from_secs(30);

/// Which receipt an item carries, for the acknowledged lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Delivered,
    Failed,
    Clicked,
}

/// Why receipts were dropped (each reason is warned about once per reset epoch).
#[derive(Clone, Copy, Debug)]
enum DropReason {
    NotLoopback,
    NoRuntime,
    NoClient,
    TooManyPending,
    RetriesExhausted,
}

impl DropReason {
    fn message(self) -> &'static str {
        match self {
            DropReason::NotLoopback => "receipt URL is not a loopback http(s) URL; not connecting",
            DropReason::NoRuntime => "no tokio runtime to send receipts from",
            DropReason::NoClient => "no HTTP client to send receipts with",
            DropReason::TooManyPending => "too many receipts pending; dropping new ones",
            DropReason::RetriesExhausted => {
                "receipt batch dropped: the receiver never answered 200"
            }
        }
    }
}

/// How a receipt batch travels.
#[derive(Clone, Debug)]
pub(crate) enum Wire {
    /// One POST per batch: a JSON array of the items (JPush, Aliyun, Tencent).
    JsonArray,
    /// One POST per item: its XML document, signed in the query as WeChat signs event pushes
    /// (`signature = sha1(sort(token, timestamp, nonce))`), and in the compatible and safe
    /// modes of the channel's configuration wrapped in an `Encrypt` envelope.
    WechatXml(WechatAccount),
}

/// What a WeChat account signs and encrypts its pushes with.
#[derive(Clone, Debug)]
pub(crate) struct WechatAccount {
    pub token: String,
    pub appid: String,
    pub original_id: String,
    pub encoding_aes_key: String,
}

/// One receipt, already serialised as a JSON array element (or, for WeChat, an XML document).
pub(crate) struct Item {
    /// msghub's msgid (JPush `params.msgid`, Aliyun `out_id`) for the per-msgid lists; for
    /// mini-program events, which carry none, the WeChat msgid in decimal.
    pub key: Arc<str>,
    /// Registration id, phone number or openid, as posted.
    pub address: String,
    pub event: Event,
    pub json: String,
}

#[derive(Default)]
struct Stats {
    posted_batches: AtomicU64,
    posted_items: AtomicU64,
    failed_posts: AtomicU64,
    dropped_items: AtomicU64,
    pending: AtomicU64,
}

#[derive(Default)]
struct Lists {
    delivered: Vec<String>,
    failed: Vec<String>,
    clicked: Vec<String>,
}

#[derive(Default)]
struct Records {
    by_msgid: HashMap<Arc<str>, Lists>,
    count: usize,
}

/// What `GET /sim/receipts` shows for one channel. Address lists hold acknowledged receipts
/// only (the receiver answered 200), sorted and without duplicates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceiptReport {
    /// The channel's current receipt configuration.
    pub config: ReceiptConfig,
    /// POSTs answered 200.
    pub posted_batches: u64,
    /// Receipts in those POSTs.
    pub posted_items: u64,
    /// POST attempts that failed (non-200 or transport error), retries included.
    pub failed_posts: u64,
    /// Receipts given up: retries exhausted, non-loopback URL, too many pending, no runtime or
    /// HTTP client.
    pub dropped_items: u64,
    /// Receipts scheduled, queued or in flight.
    pub pending: u64,
    /// Addresses with an acknowledged delivered receipt (JPush type 1, SmsReport success).
    pub delivered: Vec<String>,
    /// Addresses with an acknowledged failed receipt (JPush type 4, SmsReport failure).
    pub failed: Vec<String>,
    /// Addresses with an acknowledged clicked receipt (JPush type 2).
    pub clicked: Vec<String>,
}

/// How receipts of one channel reach their receivers, until the next reset.
pub(crate) struct Outbox {
    config: Mutex<ReceiptConfig>,
    stats: Stats,
    records: Mutex<Records>,
    queues: Mutex<HashMap<Arc<str>, mpsc::Sender<Item>>>,
    closed: AtomicBool,
    /// Bit per [`DropReason`] already warned about; later drops log at debug.
    warned: AtomicU8,
    /// `Authorization` header value (JPush: Basic app_key:master_secret; Aliyun: none).
    auth: Option<String>,
    wire: Wire,
    courier: Arc<Courier>,
}

impl Outbox {
    pub(crate) fn new(auth: Option<String>, courier: Arc<Courier>) -> Outbox {
        Outbox::with_wire(auth, Wire::JsonArray, courier)
    }

    pub(crate) fn with_wire(auth: Option<String>, wire: Wire, courier: Arc<Courier>) -> Outbox {
        Outbox {
            config: Mutex::new(ReceiptConfig::default()),
            stats: Stats::default(),
            records: Mutex::new(Records::default()),
            queues: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            warned: AtomicU8::new(0),
            auth,
            wire,
            courier,
        }
    }

    pub(crate) fn config(&self) -> ReceiptConfig {
        lock(&self.config).clone()
    }

    pub(crate) fn set_config(&self, config: ReceiptConfig) {
        *lock(&self.config) = config;
    }

    /// Stops every task of this epoch: queued and scheduled receipts are abandoned.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        lock(&self.queues).clear();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Schedules `groups` of receipts for `url`: each group waits its delay (after the previous
    /// group) and is then queued for batching. Drops and counts everything that cannot be sent.
    pub(crate) fn schedule(self: &Arc<Self>, url: &str, mut groups: Vec<(Duration, Vec<Item>)>) {
        while groups.last().is_some_and(|(_, items)| items.is_empty()) {
            groups.pop();
        }
        let n: u64 = groups.iter().map(|(_, items)| items.len() as u64).sum();
        if n == 0 || self.is_closed() {
            return;
        }
        let Some(host) = loopback_host(url) else {
            return self.drop_items(n, DropReason::NotLoopback);
        };
        let Some(runtime) = self.courier.runtime() else {
            return self.drop_items(n, DropReason::NoRuntime);
        };
        if self.courier.client().is_none() {
            return self.drop_items(n, DropReason::NoClient);
        }
        let before = self.stats.pending.fetch_add(n, Ordering::Relaxed);
        if before + n > MAX_PENDING_ITEMS {
            self.stats.pending.fetch_sub(n, Ordering::Relaxed);
            return self.drop_items(n, DropReason::TooManyPending);
        }
        tracing::trace!(%host, items = n, "receipts scheduled");
        let outbox = self.clone();
        let url: Arc<str> = url.into();
        runtime.spawn(async move {
            for (delay, items) in groups {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if !outbox.enqueue(&url, items).await {
                    return;
                }
            }
        });
    }

    fn drop_items(&self, n: u64, why: DropReason) {
        self.stats.dropped_items.fetch_add(n, Ordering::Relaxed);
        let bit = 1u8 << (why as u8);
        if self.warned.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            tracing::warn!(
                items = n,
                "{} (further such drops log at debug)",
                why.message()
            );
        } else {
            tracing::debug!(items = n, "{}", why.message());
        }
    }

    /// Queues items for `url`'s batching task, waiting when its queue is full. False once the
    /// outbox is closed.
    async fn enqueue(self: &Arc<Self>, url: &Arc<str>, items: Vec<Item>) -> bool {
        for mut item in items {
            loop {
                let Some(tx) = self.queue(url) else {
                    return false;
                };
                match tx.send(item).await {
                    Ok(()) => break,
                    // The batching task went idle and closed its queue: start another.
                    Err(mpsc::error::SendError(back)) => {
                        item = back;
                        self.forget_closed(url);
                    }
                }
            }
        }
        true
    }

    /// The queue of `url`, starting its batching task on first use.
    fn queue(self: &Arc<Self>, url: &Arc<str>) -> Option<mpsc::Sender<Item>> {
        if self.is_closed() {
            return None;
        }
        let runtime = self.courier.runtime()?;
        let mut queues = lock(&self.queues);
        if let Some(tx) = queues.get(url).filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        queues.insert(url.clone(), tx.clone());
        runtime.spawn(batch_and_post(self.clone(), url.clone(), rx));
        Some(tx)
    }

    fn forget_closed(&self, url: &Arc<str>) {
        let mut queues = lock(&self.queues);
        if queues.get(url).is_some_and(mpsc::Sender::is_closed) {
            queues.remove(url);
        }
    }

    /// POSTs one batch (or, one by one, its XML items), retrying after each configured delay,
    /// then drops what was not acknowledged and counts it.
    async fn deliver(&self, url: &str, batch: Vec<Item>) {
        if let Wire::WechatXml(account) = &self.wire {
            let mode = lock(&self.config).wechat_mode;
            for item in batch {
                let xml = item.json.clone();
                self.post_with_retries(vec![item], || {
                    let (url, body) = wechat_push(url, account, mode, &xml);
                    self.post(url, body, "text/xml")
                })
                .await;
            }
            return;
        }
        let mut body =
            String::with_capacity(batch.iter().map(|i| i.json.len() + 1).sum::<usize>() + 2);
        body.push('[');
        for (i, item) in batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&item.json);
        }
        body.push(']');
        self.post_with_retries(batch, || {
            self.post(url.to_string(), body.clone(), "application/json")
        })
        .await;
    }

    async fn post_with_retries<F, Fut>(&self, batch: Vec<Item>, attempt_post: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let delays = lock(&self.config).retry_delays_ms.clone();
        for attempt in 0..=delays.len() {
            if let Some(wait) = attempt.checked_sub(1).and_then(|i| delays.get(i)) {
                tokio::time::sleep(Duration::from_millis(*wait)).await;
            }
            if self.is_closed() {
                return;
            }
            match attempt_post().await {
                Ok(()) => return self.acknowledged(batch),
                Err(reason) => {
                    self.stats.failed_posts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(attempt, %reason, items = batch.len(), "receipt POST failed");
                }
            }
        }
        let n = batch.len() as u64;
        // Counted dropped before it stops being pending (see `acknowledged`).
        self.drop_items(n, DropReason::RetriesExhausted);
        self.stats.pending.fetch_sub(n, Ordering::Release);
    }

    async fn post(&self, url: String, body: String, content_type: &str) -> Result<(), String> {
        let client = self.courier.client().ok_or("no HTTP client")?;
        let mut request = client
            .post(url)
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        // Read the body so the connection goes back to the pool.
        let _ = response.bytes().await;
        if status == reqwest::StatusCode::OK {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }

    /// Record an acknowledged batch. The addresses and counters go in before `pending` drops
    /// (released), and [`Outbox::report`] reads `pending` first (acquired): a report that
    /// shows nothing pending holds every acknowledged address.
    fn acknowledged(&self, batch: Vec<Item>) {
        let n = batch.len() as u64;
        self.stats.posted_batches.fetch_add(1, Ordering::Relaxed);
        self.stats.posted_items.fetch_add(n, Ordering::Relaxed);
        {
            let mut records = lock(&self.records);
            for item in batch {
                if records.count >= MAX_RECORDED {
                    break;
                }
                records.count += 1;
                let lists = records.by_msgid.entry(item.key).or_default();
                match item.event {
                    Event::Delivered => lists.delivered.push(item.address),
                    Event::Failed => lists.failed.push(item.address),
                    Event::Clicked => lists.clicked.push(item.address),
                }
            }
        }
        self.stats.pending.fetch_sub(n, Ordering::Release);
    }

    /// Counters and acknowledged addresses, for every msgid or for one.
    pub(crate) fn report(&self, msgid: Option<&str>) -> ReceiptReport {
        // First: whatever stopped being pending by now is in the lists and counters read below.
        let pending = self.stats.pending.load(Ordering::Acquire);
        let (mut delivered, mut failed, mut clicked) = (Vec::new(), Vec::new(), Vec::new());
        {
            let records = lock(&self.records);
            let mut take = |lists: &Lists| {
                delivered.extend_from_slice(&lists.delivered);
                failed.extend_from_slice(&lists.failed);
                clicked.extend_from_slice(&lists.clicked);
            };
            match msgid {
                Some(id) => records.by_msgid.get(id).into_iter().for_each(&mut take),
                None => records.by_msgid.values().for_each(&mut take),
            }
        }
        for list in [&mut delivered, &mut failed, &mut clicked] {
            list.sort_unstable();
            list.dedup();
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReceiptReport {
            config: self.config(),
            posted_batches: get(&self.stats.posted_batches),
            posted_items: get(&self.stats.posted_items),
            failed_posts: get(&self.stats.failed_posts),
            dropped_items: get(&self.stats.dropped_items),
            pending,
            delivered,
            failed,
            clicked,
        }
    }
}

/// One push of `xml` as the account sends it in `mode`: the URL with WeChat's `signature`,
/// `timestamp` and `nonce` (and with `encrypt_type=aes` and `msg_signature` when encrypted),
/// and the body. Written from WeChat's published scheme on its own, apart from the hub's reader,
/// so the two check each other.
pub(crate) fn wechat_push(
    url: &str,
    account: &WechatAccount,
    mode: super::config::WechatMode,
    xml: &str,
) -> (String, String) {
    use super::config::WechatMode;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = rand::random::<u32>().to_string();
    let signature = wechat_signature(&[&account.token, &timestamp, &nonce]);
    let sep = if url.contains('?') { '&' } else { '?' };
    let signed = format!("{url}{sep}signature={signature}&timestamp={timestamp}&nonce={nonce}");
    if mode == WechatMode::Plain {
        return (signed, xml.to_string());
    }
    let encrypt = wechat_encrypt(&account.encoding_aes_key, &account.appid, xml);
    let msg_signature = wechat_signature(&[&account.token, &timestamp, &nonce, &encrypt]);
    let envelope = format!("<Encrypt><![CDATA[{encrypt}]]></Encrypt>");
    let body = match mode {
        // The plaintext fields stay, with the envelope added.
        WechatMode::Compatible => xml.replacen("</xml>", &format!("{envelope}</xml>"), 1),
        _ => format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName>{envelope}</xml>",
            account.original_id
        ),
    };
    (
        format!("{signed}&encrypt_type=aes&msg_signature={msg_signature}"),
        body,
    )
}

/// `sha1` (lowercase hex) of the parts sorted and joined.
pub(crate) fn wechat_signature(parts: &[&str]) -> String {
    use sha1::{Digest, Sha1};
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    hex::encode(Sha1::digest(sorted.concat().as_bytes()))
}

/// Base64 of AES-256-CBC (key `base64(EncodingAESKey + "=")`, IV its first 16 bytes) over 16
/// random bytes, the message's length (4 bytes, big-endian), the message and the appid,
/// PKCS#7-padded to a multiple of 32 bytes.
pub(crate) fn wechat_encrypt(encoding_aes_key: &str, appid: &str, xml: &str) -> String {
    use aes::cipher::block_padding::NoPadding;
    use aes::cipher::{BlockModeEncrypt, KeyIvInit};
    use base64::Engine;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = lenient
        .decode(format!("{encoding_aes_key}="))
        .unwrap_or_default();
    let mut plain: Vec<u8> = (0..16).map(|_| rand::random::<u8>()).collect();
    plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    plain.extend_from_slice(xml.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let Some(iv) = key.get(..16) else {
        return String::new();
    };
    match cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, iv) {
        Ok(cipher) => match cipher.encrypt_padded::<NoPadding>(&mut plain, len) {
            Ok(sealed) => base64::engine::general_purpose::STANDARD.encode(sealed),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// The batching task of one receiver URL: collects up to `batch_max` items or `batch_ms`, then
/// hands the batch to a POST task (at most [`MAX_IN_FLIGHT_POSTS`] at once).
async fn batch_and_post(outbox: Arc<Outbox>, url: Arc<str>, mut rx: mpsc::Receiver<Item>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT_POSTS));
    loop {
        let first = match tokio::time::timeout(IDLE_AFTER, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_idle) => {
                // Closed queues still hand out what they hold; then `recv` returns None.
                rx.close();
                continue;
            }
        };
        let (batch_max, batch_ms) = {
            let c = lock(&outbox.config);
            (c.batch_max.max(1), c.batch_ms)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(batch_ms);
        let mut batch = Vec::with_capacity(batch_max.min(1024));
        batch.push(first);
        while batch.len() < batch_max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        if outbox.is_closed() {
            break;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (outbox, url) = (outbox.clone(), url.clone());
        tokio::spawn(async move {
            outbox.deliver(&url, batch).await;
            drop(slot);
        });
    }
    outbox.forget_closed(&url);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn item(key: &str, address: &str, event: Event) -> Item {
        Item {
            key: key.into(),
            address: address.into(),
            event,
            json: "{}".into(),
        }
    }

    #[test]
    fn reports_list_acknowledged_addresses_per_msgid() {
        let outbox = Outbox::new(None, Arc::default());
        outbox.stats.pending.store(5, Ordering::Relaxed);
        outbox.acknowledged(vec![
            item("1", "b", Event::Delivered),
            item("1", "a", Event::Delivered),
            item("1", "a", Event::Clicked),
            item("2", "c", Event::Failed),
        ]);
        let all = outbox.report(None);
        assert_eq!(all.delivered, vec!["a", "b"]);
        assert_eq!(all.failed, vec!["c"]);
        assert_eq!(all.clicked, vec!["a"]);
        assert_eq!(
            (all.posted_batches, all.posted_items, all.pending),
            (1, 4, 1)
        );
        let one = outbox.report(Some("2"));
        assert!(one.delivered.is_empty() && one.clicked.is_empty());
        assert_eq!(one.failed, vec!["c"]);
        assert!(outbox.report(Some("3")).failed.is_empty());
    }

    #[test]
    fn without_a_runtime_or_with_a_foreign_host_receipts_are_dropped() {
        let outbox = Arc::new(Outbox::new(None, Arc::default()));
        outbox.schedule(
            "http://127.0.0.1:1/r",
            vec![(Duration::ZERO, vec![item("1", "a", Event::Delivered)])],
        );
        outbox.schedule(
            "http://192.0.2.1/r",
            vec![(Duration::ZERO, vec![item("1", "b", Event::Delivered)])],
        );
        let r = outbox.report(None);
        assert_eq!((r.dropped_items, r.pending), (2, 0));
    }
}
