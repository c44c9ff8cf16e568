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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePlan {
    pub msgid: i64,
    pub source_id: i64,
    pub lane: Lane,
    pub audience: Audience,
    pub channels: Vec<PlannedChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u32>,
}

impl MessagePlan {
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl_seconds.map(|s| Duration::from_secs(u64::from(s)))
    }

    pub fn channel(&self, channel_id: i64) -> Option<&PlannedChannel> {
        self.channels.iter().find(|c| c.channel_id == channel_id)
    }

    /// Whether the audience is planned in one shard at acceptance (no paging needed).
    pub fn is_single_shard(&self) -> bool {
        matches!(self.audience, Audience::Userids(_) | Audience::Raw(_))
    }
}

/// Which users a shard covers. Ranges are keyset bounds over userids, so a shard is resolved
/// with an indexed range query and never needs the whole audience in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardSpec {
    /// The message's own userid or raw-address list.
    Listed,
    /// Users with `after < userid <= last` (after = None means from the start).
    Range { after: Option<String>, last: String },
}

/// A persisted unit of work of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub msgid: i64,
    pub seq: i32,
    pub spec: ShardSpec,
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

/// Deliveries of one shard on one channel that still have to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBatch {
    pub channel_id: i64,
    pub targets: Vec<crate::provider::Target>,
}

/// Delivery states as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Queued = 0,
    Submitted = 1,
    Failed = 2,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Submitted => "submitted",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn from_i16(v: i16) -> Option<DeliveryStatus> {
        match v {
            0 => Some(DeliveryStatus::Queued),
            1 => Some(DeliveryStatus::Submitted),
            2 => Some(DeliveryStatus::Failed),
            _ => None,
        }
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
}
