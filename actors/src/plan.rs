//! The data the dispatch topology moves around: message plans, shards, jobs and results.
//!
//! A [`MessagePlan`] is fixed when the message is accepted (audience, the channel chosen for
//! each `msg_<type>`, options) and stored with the message, so a restart resumes exactly the
//! plan that was acknowledged.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::provider::{ChannelType, OutcomeClass};

/// Which worker capacity a message uses. Real-time work never queues behind bulk work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Realtime,
    Bulk,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Realtime => "realtime",
            Lane::Bulk => "bulk",
        }
    }
}

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Up to 1000 customer userids (`aud_userid`).
    Userids(Vec<String>),
    /// Every user carrying any of these tags (`aud_tag`).
    Tags(Vec<String>),
    /// Every known user (`/v1/broadcast`).
    All,
    /// Raw channel addresses (`aud_<type>`), no user lookup.
    Raw(Vec<RawAddresses>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawAddresses {
    pub channel_type: ChannelType,
    pub addresses: Vec<String>,
}

/// The channel a message uses for one of its `msg_<type>` contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedChannel {
    pub channel_id: i64,
    pub channel_type: ChannelType,
    pub content: serde_json::Value,
}

/// Message ids are the acceptance time in milliseconds shifted left by this many bits, plus a
/// sequence (ids stay unique and increasing when several are taken in one millisecond).
pub const MSGID_TIME_SHIFT: u32 = 20;

/// When a message was accepted (Unix milliseconds), read from its id.
pub fn accepted_at_ms(msgid: i64) -> i64 {
    msgid >> MSGID_TIME_SHIFT
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePlan {
    pub msgid: i64,
    pub source_id: i64,
    pub lane: Lane,
    pub audience: Audience,
    pub channels: Vec<PlannedChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u32>,
    /// When a scheduled message may be sent (`option.send_at`, unix ms): its offline
    /// validity counts from then, not from its acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at_ms: Option<i64>,
    /// Pace the deliveries evenly over this many seconds (`option.spread_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_seconds: Option<u32>,
    /// How the message uses its channels; concurrent unless a rule says otherwise.
    #[serde(default, skip_serializing_if = "Strategy::is_concurrent")]
    pub strategy: Strategy,
    /// Where delivery status is reported to the business system (JUMS `callback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSpec>,
    /// `option.priority` as given (1 high, 2 medium, 3 low: quiet hours hold it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Black/whitelists, dedup and frequency caps; `None` when nothing filters the audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Box<crate::filters::AudienceFilters>>,
}

/// How a message uses its channels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Strategy {
    /// Every channel at once (rule 0).
    #[default]
    Concurrent,
    /// One step at a time; a user moves to the next step when the previous one did not meet
    /// its condition within its wait, failed permanently, or had no address.
    Fallback {
        rule_id: i64,
        steps: Vec<FallbackStep>,
    },
}

impl Strategy {
    pub fn is_concurrent(&self) -> bool {
        matches!(self, Strategy::Concurrent)
    }

    /// The fallback steps, empty for concurrent sends.
    pub fn steps(&self) -> &[FallbackStep] {
        match self {
            Strategy::Concurrent => &[],
            Strategy::Fallback { steps, .. } => steps,
        }
    }
}

/// One step of a fallback chain. `wait_ms` and `condition` say when the user moves on; the
/// last step's are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackStep {
    pub channel_type: ChannelType,
    pub wait_ms: u64,
    pub condition: StepCondition,
}

/// What a step must achieve within its wait for the chain to end for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepCondition {
    NotDelivered,
    NotClicked,
}

impl StepCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            StepCondition::NotDelivered => "not_delivered",
            StepCondition::NotClicked => "not_clicked",
        }
    }
}

/// A JUMS status callback target: a URL the source verified, and parameters echoed in every item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
}

impl MessagePlan {
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl_seconds.map(|s| Duration::from_secs(u64::from(s)))
    }

    /// When the message was accepted: message ids are `unix_ms << 20 | sequence`.
    pub fn accepted_at_ms(&self) -> i64 {
        self.msgid >> 20
    }

    /// Whether the message's offline validity (`ttl_seconds`) has passed at `now_ms`: it
    /// counts from the acceptance, or from `option.send_at` for a scheduled message.
    pub fn expired(&self, now_ms: i64) -> bool {
        let from = self.accepted_at_ms().max(self.send_at_ms.unwrap_or(0));
        match self.ttl_seconds {
            // 0 means "online only" to providers; msghub still makes the first attempt.
            Some(ttl) if ttl > 0 => now_ms > from + i64::from(ttl) * 1000,
            _ => false,
        }
    }

    pub fn channel(&self, channel_id: i64) -> Option<&PlannedChannel> {
        self.channels.iter().find(|c| c.channel_id == channel_id)
    }

    /// A priority-3 message: marketing. Quiet hours hold it; numbers that opted out of
    /// marketing (an SMS unsubscribe reply) skip it.
    pub fn is_marketing(&self) -> bool {
        self.priority == Some(3)
    }

    /// Whether the audience is planned in one shard at acceptance (no paging needed).
    pub fn is_single_shard(&self) -> bool {
        matches!(self.audience, Audience::Userids(_) | Audience::Raw(_))
            && self.spread_seconds.is_none()
    }

    /// One shard, all channels at once, nothing filtered: the shape of a transactional send.
    /// Such a message keeps no `shards` row; while it is unfinished its one shard (seq 0, the
    /// listed audience) is pending, and [`Shard::implied`] stands for it.
    pub fn is_simple(&self) -> bool {
        self.is_single_shard() && self.strategy.steps().is_empty() && self.filters.is_none()
    }

    /// A simple real-time message is opened (its deliveries created) in the transaction that
    /// accepts it and handed straight to its channels, unless it is scheduled.
    pub fn opens_at_acceptance(&self) -> bool {
        self.is_simple() && self.lane == Lane::Realtime
    }
}

/// The wall clock in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Which users a shard covers. Ranges are keyset bounds over userids, so a shard is resolved
/// with an indexed range query and never needs the whole audience in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardSpec {
    /// The message's own userid or raw-address list.
    Listed,
    /// Users with `after < userid <= last` (after = None means from the start).
    Range {
        after: Option<String>,
        last: String,
        /// Paced sends: not sent before this time (unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<i64>,
    },
    /// Paced sends of a listed audience: entries `from..to` of the message's userid list (or
    /// of its raw addresses, in order), not sent before `not_before` (unix ms).
    Slice { from: u32, to: u32, not_before: i64 },
}

impl ShardSpec {
    /// When a paced shard may be sent.
    pub fn not_before(&self) -> Option<i64> {
        match self {
            ShardSpec::Range { not_before, .. } => *not_before,
            ShardSpec::Slice { not_before, .. } => Some(*not_before),
            ShardSpec::Listed => None,
        }
    }
}

/// A persisted unit of work of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub msgid: i64,
    pub seq: i32,
    pub spec: ShardSpec,
    /// The shard's generation when it was read; finishing it only succeeds if no fallback
    /// timer queued more work on it since.
    pub generation: i32,
}

impl Shard {
    /// The one shard of a simple message (see [`MessagePlan::is_simple`]), which has no row.
    pub fn implied(msgid: i64) -> Shard {
        Shard {
            msgid,
            seq: 0,
            spec: ShardSpec::Listed,
            generation: 0,
        }
    }
}

/// A shard to open, with the plan it belongs to.
#[derive(Debug, Clone)]
pub struct OpenShard {
    pub plan: std::sync::Arc<MessagePlan>,
    pub shard: Shard,
    /// Never opened before: it has no delivery records yet, so the ones it inserts are all of
    /// its work and need not be read back.
    pub fresh: bool,
}

impl OpenShard {
    /// About how many delivery rows opening this shard writes, for batching.
    pub fn weight(&self) -> usize {
        let listed = |n: usize| n.max(1);
        match (&self.shard.spec, &self.plan.audience) {
            (ShardSpec::Slice { from, to, .. }, _) => listed(to.saturating_sub(*from) as usize),
            (ShardSpec::Listed, Audience::Userids(ids)) => listed(ids.len()),
            (ShardSpec::Listed, Audience::Raw(raw)) => {
                listed(raw.iter().map(|r| r.addresses.len()).sum())
            }
            // A page of the audience: a full shard.
            _ => 1000,
        }
    }
}

/// Deliveries of one shard on one channel that still have to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBatch {
    pub channel_id: i64,
    pub targets: Vec<crate::provider::Target>,
}

/// Delivery states as stored. Receipts only move a delivery forward: `Clicked` implies
/// delivered, and a late `Submitted` or `Undelivered` never overwrites a receipt's
/// `Delivered` or `Clicked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Queued = 0,
    /// The provider accepted it.
    Submitted = 1,
    /// The provider refused it, or msghub gave up.
    Failed = 2,
    /// A receipt (or a synchronous provider such as a webhook's 2xx) said it arrived.
    Delivered = 3,
    /// The user clicked or read it.
    Clicked = 4,
    /// A receipt said it did not arrive.
    Undelivered = 5,
    /// The message was retracted: never sent, or recalled from the provider.
    Retracted = 6,
    /// Never sent: an audience filter (black/whitelist, dedup, frequency cap) left the target
    /// out; the reason is the delivery's `code`.
    Skipped = 7,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Submitted,
        DeliveryStatus::Failed,
        DeliveryStatus::Delivered,
        DeliveryStatus::Clicked,
        DeliveryStatus::Undelivered,
        DeliveryStatus::Retracted,
        DeliveryStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Submitted => "submitted",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Clicked => "clicked",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Retracted => "retracted",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    pub fn from_i16(v: i16) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| *s as i16 == v)
    }
}

/// The final outcome of one delivery, written by the result writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    pub delivery_id: i64,
    pub status: DeliveryStatus,
    pub class: OutcomeClass,
    pub code: String,
    pub provider_id: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    /// The message, channel and recipient, for status callbacks to the business system.
    pub msgid: i64,
    pub channel_id: i64,
    pub userid: Option<String>,
    pub address: String,
    /// The provider accepted it and its receipt is to be asked for by `provider_id`
    /// ([`crate::provider::ChannelType::pulls_receipts`]).
    pub pull_receipt: bool,
}

impl DeliveryResult {
    /// The same result, attributed to a message and channel.
    pub fn of(self, msgid: i64, channel_id: i64) -> DeliveryResult {
        DeliveryResult {
            msgid,
            channel_id,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus;

    #[test]
    fn every_delivery_status_round_trips_through_its_stored_number() {
        for (i, s) in DeliveryStatus::ALL.into_iter().enumerate() {
            assert_eq!(s as i16, i as i16, "ALL is in stored order");
            assert_eq!(DeliveryStatus::from_i16(s as i16), Some(s));
        }
        assert_eq!(
            DeliveryStatus::from_i16(6).map(|s| s.as_str()),
            Some("retracted")
        );
        assert_eq!(
            DeliveryStatus::from_i16(DeliveryStatus::ALL.len() as i16),
            None
        );
    }
}
