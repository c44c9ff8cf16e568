//! Shared simulator state: per-channel recording, counters, event log, fault plans and rate windows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::SimConfig;
pub use crate::channel::{Channel, normalise_phone};
use crate::receipts::{ReceiptConfig, ReceiptReport};

/// Default number of events kept per channel (oldest are dropped first).
pub const DEFAULT_EVENT_CAPACITY: usize = 500_000;

/// `X-Rate-Limit-Limit` reported when no per-minute limit is configured.
pub const UNLIMITED_RATE: u32 = 100_000_000;

/// Failure-injection and latency plan for one channel.
///
/// Counters (`fail_next`, `fail_code_next`) are decremented as calls consume them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultPlan {
    /// Latency added to every call of this channel (overrides `SimConfig::latency`).
    pub latency_ms: Option<u64>,
    /// The next N calls fail with `fail_status`.
    pub fail_next: u32,
    /// HTTP status used by `fail_next` (500, 503, 429, ...). Default 500.
    pub fail_status: u16,
    /// Provider error code returned by the next `fail_code_next` calls.
    pub fail_code: Option<String>,
    /// How many calls return `fail_code`.
    pub fail_code_next: u32,
    /// Addresses that always fail permanently.
    pub perm_addresses: Vec<String>,
    /// Per-minute call limit (JPush → 429/2002, Aliyun → `Throttling.User`). `None` = unlimited.
    pub rate_limit_per_minute: Option<u32>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            latency_ms: None,
            fail_next: 0,
            fail_status: 500,
            fail_code: None,
            fail_code_next: 0,
            perm_addresses: Vec::new(),
            rate_limit_per_minute: None,
        }
    }
}

/// One successful provider call (all addresses accepted by that call).
#[derive(Clone, Debug)]
pub struct SimEvent {
    /// Global sequence number, increasing across all channels.
    pub seq: u64,
    /// Channel of the call.
    pub channel: Channel,
    /// Addresses delivered by this call (normalised).
    pub addresses: Arc<[String]>,
    /// When the call was recorded.
    pub received_at: Instant,
}

impl SimEvent {
    /// Number of addresses delivered by this call.
    pub fn addresses_count(&self) -> usize {
        self.addresses.len()
    }

    /// First address of the call, if any.
    pub fn first_address(&self) -> Option<&str> {
        self.addresses.first().map(String::as_str)
    }

    /// Whether this call delivered to `address`.
    pub fn contains(&self, address: &str) -> bool {
        self.addresses.iter().any(|a| a == address)
    }
}

/// A fault injected into one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Fail with this HTTP status (provider-specific body).
    Status(u16),
    /// Fail with this provider error code.
    Code(String),
}

/// Rate-limit information for response headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
    pub exceeded: bool,
}

#[derive(Default)]
struct FaultState {
    plan: FaultPlan,
    perm: HashSet<String>,
}

struct RateWindow {
    start: Instant,
    count: u32,
}

struct ChannelState {
    received: Mutex<HashMap<String, u32>>,
    events: Mutex<VecDeque<SimEvent>>,
    faults: Mutex<FaultState>,
    rate: Mutex<RateWindow>,
    total: AtomicU64,
    calls: AtomicU64,
    failed: AtomicU64,
}

impl ChannelState {
    fn new() -> Self {
        ChannelState {
            received: Mutex::new(HashMap::new()),
            events: Mutex::new(VecDeque::new()),
            faults: Mutex::new(FaultState::default()),
            rate: Mutex::new(RateWindow {
                start: Instant::now(),
                count: 0,
            }),
            total: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

/// Locks a mutex, recovering from poisoning (a panicking test must not wedge the simulator).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// State shared by every simulated endpoint; tests inspect it directly.
pub struct SimState {
    config: SimConfig,
    channels: [ChannelState; Channel::ALL.len()],
    seq: AtomicU64,
    id_counter: AtomicU64,
    event_capacity: std::sync::atomic::AtomicUsize,
    pub(crate) started: Instant,
    pub(crate) nonces: crate::aliyun_sign::NonceStore,
    pub(crate) jpush_cids: Mutex<HashMap<String, String>>,
    /// `X-Msghub-Delivery` ids the webhook sink already accepted: a repeat is answered 200 and
    /// not recorded again, as an idempotent receiver does.
    pub(crate) webhook_deliveries: Mutex<std::collections::HashSet<String>>,
    /// JPush pushes: `msg_id`s issued by accepted pushes, and those withdrawn since, in order.
    pub(crate) jpush_recalls: Mutex<crate::jpush::Recalls>,
    /// WeChat access tokens issued and template sends deduped by `client_msg_id`.
    pub(crate) wechat: Mutex<crate::wechat::WechatState>,
    /// The WeCom access token issued and the sends accepted, for recalls.
    pub(crate) wecom: Mutex<crate::wecom::WecomState>,
    /// The Feishu tenant token issued, uuids seen, messages sent and recalled.
    pub(crate) feishu: Mutex<crate::feishu::FeishuState>,
    /// The DingTalk access token issued, the work notices accepted and recalled, and the
    /// notices each userid received (the daily limit).
    pub(crate) dingtalk: Mutex<crate::dingtalk::DingtalkState>,
    pub(crate) broadcasts: AtomicU64,
    pub(crate) receipts: crate::receipts::Receipts,
    /// The header block of the last message the SMTP sink accepted for each recipient.
    pub(crate) mail_headers: Mutex<HashMap<String, String>>,
    /// Where and which bounces the SMTP sink sends (`POST /sim/bounces`).
    pub(crate) bouncer: Mutex<Option<Arc<crate::bounces::Bouncer>>>,
    pub(crate) bounce_counts: crate::bounces::BounceCounts,
}

impl SimState {
    /// Creates an empty state for `config`.
    pub fn new(config: SimConfig) -> Self {
        SimState {
            receipts: crate::receipts::Receipts::new(&config),
            config,
            channels: std::array::from_fn(|_| ChannelState::new()),
            seq: AtomicU64::new(0),
            id_counter: AtomicU64::new(0),
            event_capacity: std::sync::atomic::AtomicUsize::new(DEFAULT_EVENT_CAPACITY),
            started: Instant::now(),
            nonces: crate::aliyun_sign::NonceStore::default(),
            jpush_cids: Mutex::new(HashMap::new()),
            webhook_deliveries: Mutex::new(std::collections::HashSet::new()),
            jpush_recalls: Mutex::new(crate::jpush::Recalls::default()),
            wechat: Mutex::new(crate::wechat::WechatState::default()),
            wecom: Mutex::new(crate::wecom::WecomState::default()),
            feishu: Mutex::new(crate::feishu::FeishuState::default()),
            dingtalk: Mutex::new(crate::dingtalk::DingtalkState::default()),
            broadcasts: AtomicU64::new(0),
            mail_headers: Mutex::new(HashMap::new()),
            bouncer: Mutex::new(None),
            bounce_counts: Default::default(),
        }
    }

    /// Where and which bounces the SMTP sink sends (`None`: none); see `crate::bounces`.
    pub fn set_bounces(&self, config: Option<crate::BounceConfig>) -> Result<(), String> {
        crate::bounces::configure(self, config)
    }

    /// The header block (unfolded lines, as received) of the last message accepted for
    /// `address` by the SMTP sink.
    pub fn mail_headers(&self, address: &str) -> Option<String> {
        lock(&self.mail_headers)
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    /// The configuration the simulator was started with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn ch(&self, channel: Channel) -> &ChannelState {
        &self.channels[channel.index()]
    }

    /// How many times `address` was delivered on `channel` (0 for unknown channels).
    pub fn count(&self, channel: &str, address: &str) -> u32 {
        let Some(c) = Channel::parse(channel) else {
            return 0;
        };
        lock(&self.ch(c).received)
            .get(&c.normalise(address))
            .copied()
            .unwrap_or(0)
    }

    /// Snapshot of address → delivery count for `channel`.
    pub fn received(&self, channel: &str) -> HashMap<String, u32> {
        Channel::parse(channel)
            .map(|c| lock(&self.ch(c).received).clone())
            .unwrap_or_default()
    }

    /// Total deliveries (addresses) recorded on `channel`.
    pub fn total(&self, channel: &str) -> u64 {
        Channel::parse(channel).map_or(0, |c| self.ch(c).total.load(Ordering::Relaxed))
    }

    /// Provider calls received on `channel` (successful or not; SMTP: messages at DATA).
    pub fn calls(&self, channel: &str) -> u64 {
        Channel::parse(channel).map_or(0, |c| self.ch(c).calls.load(Ordering::Relaxed))
    }

    /// Provider calls on `channel` that did not succeed.
    pub fn failed_calls(&self, channel: &str) -> u64 {
        Channel::parse(channel).map_or(0, |c| self.ch(c).failed.load(Ordering::Relaxed))
    }

    /// Replaces the fault plan of `channel` (and restarts its rate window); false if unknown.
    pub fn set_faults(&self, channel: &str, plan: FaultPlan) -> bool {
        let Some(c) = Channel::parse(channel) else {
            return false;
        };
        let perm = plan.perm_addresses.iter().map(|a| c.normalise(a)).collect();
        *lock(&self.ch(c).faults) = FaultState { plan, perm };
        *lock(&self.ch(c).rate) = RateWindow {
            start: Instant::now(),
            count: 0,
        };
        true
    }

    /// Current fault plan of `channel` (with counters as consumed so far).
    pub fn faults(&self, channel: &str) -> Option<FaultPlan> {
        Channel::parse(channel).map(|c| lock(&self.ch(c).faults).plan.clone())
    }

    /// Successful calls of `channel`, oldest first.
    pub fn events(&self, channel: &str) -> Vec<SimEvent> {
        Channel::parse(channel)
            .map(|c| lock(&self.ch(c).events).iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Successful calls of every channel, ordered by `seq`.
    pub fn all_events(&self) -> Vec<SimEvent> {
        let mut all: Vec<SimEvent> = Channel::ALL
            .iter()
            .flat_map(|c| {
                lock(&self.ch(*c).events)
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|e| e.seq);
        all
    }

    /// Sets how many events are kept per channel (oldest dropped first).
    pub fn set_event_capacity(&self, capacity: usize) {
        self.event_capacity
            .store(capacity.max(1), Ordering::Relaxed);
    }

    /// Replaces the receipt configuration of `channel` (`app`, `sms`, `tencent_sms`, `wechatoa`,
    /// `wechatmp` or `dingtalk_cc`); the error says why not.
    pub fn set_receipts(&self, channel: &str, config: ReceiptConfig) -> Result<(), String> {
        let c = crate::receipts::receipt_channel(channel)?;
        self.receipts.configure(c, config)
    }

    /// Receipt counters and acknowledged addresses of `channel` (`app`, `sms`, `tencent_sms`,
    /// `wechatoa`, `wechatmp` or `dingtalk_cc`), for every msgid or only for msghub msgid
    /// `msgid` (`wechatmp`: the WeChat msgid in decimal, a subscribe send carrying no msghub
    /// msgid; `dingtalk_cc`: always every task, as its lists stand now). `None` for channels
    /// without receipts.
    pub fn receipts(&self, channel: &str, msgid: Option<&str>) -> Option<ReceiptReport> {
        let c = crate::receipts::receipt_channel(channel).ok()?;
        self.receipt_report(c, msgid)
    }

    /// The receipt report of receipt channel `c` (see [`SimState::receipts`]).
    pub(crate) fn receipt_report(&self, c: Channel, msgid: Option<&str>) -> Option<ReceiptReport> {
        if c == Channel::DingtalkCc {
            return Some(crate::dingtalk::report(self));
        }
        self.receipts.report(c, msgid)
    }

    /// JPush `msg_id`s withdrawn with `DELETE /v3/push/{msg_id}`, in the order of their first
    /// withdrawal.
    pub fn recalled(&self) -> Vec<String> {
        lock(&self.jpush_recalls).recalled.clone()
    }

    /// Clears recorded deliveries, counters, events, fault plans, rate windows, JPush cids,
    /// JPush, WeCom, Feishu and DingTalk recalls, WeChat, WeCom, Feishu and DingTalk tokens,
    /// DingTalk tasks and daily counts, and receipt records, counters and configuration (back
    /// to the defaults).
    pub fn reset(&self) {
        for c in &self.channels {
            lock(&c.received).clear();
            lock(&c.events).clear();
            *lock(&c.faults) = FaultState::default();
            *lock(&c.rate) = RateWindow {
                start: Instant::now(),
                count: 0,
            };
            c.total.store(0, Ordering::Relaxed);
            c.calls.store(0, Ordering::Relaxed);
            c.failed.store(0, Ordering::Relaxed);
        }
        lock(&self.jpush_cids).clear();
        lock(&self.webhook_deliveries).clear();
        *lock(&self.jpush_recalls) = crate::jpush::Recalls::default();
        *lock(&self.wechat) = crate::wechat::WechatState::default();
        *lock(&self.wecom) = crate::wecom::WecomState::default();
        *lock(&self.feishu) = crate::feishu::FeishuState::default();
        *lock(&self.dingtalk) = crate::dingtalk::DingtalkState::default();
        self.broadcasts.store(0, Ordering::Relaxed);
        lock(&self.mail_headers).clear();
        self.receipts.reset();
    }

    /// Give `openid` `remaining` one-time subscriptions to the mini-program template
    /// `template_id`: each subscribe send of it uses one, and with none left it is refused
    /// (43101). Without a grant a user's subscription is long-term.
    pub fn grant_subscriptions(&self, openid: &str, template_id: &str, remaining: u32) {
        lock(&self.wechat).grant(openid, template_id, remaining);
    }

    /// WeCom msgids withdrawn with `POST /cgi-bin/message/recall`, in the order of their first
    /// withdrawal.
    pub fn wecom_recalled(&self) -> Vec<String> {
        lock(&self.wecom).recalled()
    }

    /// Feishu message ids withdrawn with `DELETE /open-apis/im/v1/messages/{id}`, in the order
    /// of their first withdrawal.
    pub fn feishu_recalled(&self) -> Vec<String> {
        lock(&self.feishu).recalled()
    }

    /// DingTalk task ids withdrawn with `POST /topapi/message/corpconversation/recall`, in the
    /// order of their first withdrawal.
    pub fn dingtalk_recalled(&self) -> Vec<u64> {
        lock(&self.dingtalk).recalled()
    }

    /// How often the DingTalk send report (`getsendresult`) of task `task_id` was answered.
    pub fn dingtalk_reports(&self, task_id: u64) -> u32 {
        lock(&self.dingtalk).reports(task_id)
    }

    /// Ends the DingTalk access token issued, as its expiry would: calls presenting it are
    /// refused with 42001 until a new one is fetched.
    pub fn expire_dingtalk_token(&self) {
        lock(&self.dingtalk).expire_token();
    }

    /// Ends the Feishu tenant token issued: calls presenting it are refused (99991668) until
    /// a new one is fetched.
    pub fn expire_feishu_token(&self) {
        lock(&self.feishu).expire_token();
    }

    /// Ends the WeCom access token issued, as its expiry would: sends presenting it are
    /// refused with 42001 until a new one is fetched.
    pub fn expire_wecom_token(&self) {
        lock(&self.wecom).expire_token();
    }

    /// Ends every WeChat access token issued so far, as their expiry would: sends presenting
    /// one are refused with 42001 until a new token is fetched.
    pub fn expire_wechat_tokens(&self) {
        lock(&self.wechat).expire_all();
    }

    // ----- crate-internal hooks used by the endpoints -----

    /// Counts a call and returns the latency to apply.
    pub(crate) fn begin_call(&self, c: Channel) -> Duration {
        self.ch(c).calls.fetch_add(1, Ordering::Relaxed);
        self.latency(c)
    }

    /// Latency for `c` (plan override or config default).
    pub(crate) fn latency(&self, c: Channel) -> Duration {
        lock(&self.ch(c).faults)
            .plan
            .latency_ms
            .map_or(self.config.latency, Duration::from_millis)
    }

    /// Sleeps for the channel latency, if any.
    pub(crate) async fn delay(d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Counts a failed call.
    pub(crate) fn fail(&self, c: Channel) {
        self.ch(c).failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Consumes one injected fault, if the plan has any left.
    pub(crate) fn take_fault(&self, c: Channel) -> Option<Injected> {
        let mut f = lock(&self.ch(c).faults);
        if f.plan.fail_next > 0 {
            f.plan.fail_next -= 1;
            let status = if f.plan.fail_status == 0 {
                500
            } else {
                f.plan.fail_status
            };
            return Some(Injected::Status(status));
        }
        if f.plan.fail_code_next > 0
            && let Some(code) = f.plan.fail_code.clone()
        {
            f.plan.fail_code_next -= 1;
            return Some(Injected::Code(code));
        }
        None
    }

    /// Returns (any, all) of `addresses` being in the permanent-failure list.
    pub(crate) fn perm_check(&self, c: Channel, addresses: &[String]) -> (bool, bool) {
        let f = lock(&self.ch(c).faults);
        if f.perm.is_empty() || addresses.is_empty() {
            return (false, false);
        }
        let hits = addresses
            .iter()
            .filter(|a| f.perm.contains(a.as_str()))
            .count();
        (hits > 0, hits == addresses.len())
    }

    /// Whether a single address is in the permanent-failure list.
    pub(crate) fn is_perm(&self, c: Channel, address: &str) -> bool {
        let f = lock(&self.ch(c).faults);
        !f.perm.is_empty() && f.perm.contains(&c.normalise(address))
    }

    /// Counts a call against the per-minute window (`consume`) or only peeks at it.
    pub(crate) fn rate(&self, c: Channel, consume: bool) -> RateInfo {
        let limit = lock(&self.ch(c).faults).plan.rate_limit_per_minute;
        let mut w = lock(&self.ch(c).rate);
        let now = Instant::now();
        if now.duration_since(w.start) >= Duration::from_secs(60) {
            w.start = now;
            w.count = 0;
        }
        let reset_secs = 60u64
            .saturating_sub(now.duration_since(w.start).as_secs())
            .max(1);
        let cap = limit.unwrap_or(UNLIMITED_RATE);
        let exceeded = limit.is_some_and(|l| w.count >= l);
        if consume && !exceeded {
            w.count = w.count.saturating_add(1);
        }
        RateInfo {
            limit: cap,
            remaining: cap.saturating_sub(w.count),
            reset_secs,
            exceeded,
        }
    }

    /// Records one successful call delivering to `addresses` (already normalised).
    pub(crate) fn record(&self, c: Channel, addresses: Vec<String>) {
        let ch = self.ch(c);
        {
            let mut map = lock(&ch.received);
            for a in &addresses {
                match map.get_mut(a) {
                    Some(n) => *n = n.saturating_add(1),
                    None => {
                        map.insert(a.clone(), 1);
                    }
                }
            }
        }
        ch.total
            .fetch_add(addresses.len() as u64, Ordering::Relaxed);
        let cap = self.event_capacity.load(Ordering::Relaxed);
        let mut events = lock(&ch.events);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        while events.len() >= cap {
            events.pop_front();
        }
        events.push_back(SimEvent {
            seq,
            channel: c,
            addresses: addresses.into(),
            received_at: Instant::now(),
        });
    }

    /// A unique, increasing number for provider ids (msg_id, BizId, queue ids).
    pub(crate) fn next_id(&self) -> u64 {
        self.id_counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn record_count_events_and_faults() {
        let s = SimState::new(SimConfig::default());
        s.record(Channel::App, vec!["a".into(), "b".into()]);
        s.record(Channel::Sms, vec!["13800138000".into()]);
        s.record(Channel::App, vec!["a".into()]);
        assert_eq!(s.count("app", "a"), 2);
        assert_eq!(s.count("sms", "+8613800138000"), 1);
        assert_eq!(s.total("app"), 3);
        let ev = s.all_events();
        assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(ev[1].channel == "sms");
        assert!(s.set_faults(
            "jpush",
            FaultPlan {
                fail_next: 1,
                fail_status: 503,
                ..FaultPlan::default()
            }
        ));
        assert!(!s.set_faults("nope", FaultPlan::default()));
        assert_eq!(s.take_fault(Channel::App), Some(Injected::Status(503)));
        assert_eq!(s.take_fault(Channel::App), None);
        s.set_event_capacity(1);
        s.record(Channel::App, vec!["c".into()]);
        assert_eq!(s.events("app").len(), 1);
        s.reset();
        assert_eq!(s.total("app"), 0);
        assert!(s.all_events().is_empty());
    }

    #[test]
    fn rate_window() {
        let s = SimState::new(SimConfig::default());
        s.set_faults(
            "app",
            FaultPlan {
                rate_limit_per_minute: Some(2),
                ..FaultPlan::default()
            },
        );
        assert!(!s.rate(Channel::App, true).exceeded);
        let r = s.rate(Channel::App, true);
        assert!(!r.exceeded);
        assert_eq!(r.remaining, 0);
        assert!(s.rate(Channel::App, true).exceeded);
    }
}
