//! The storage port of the dispatch topology.
//!
//! Every method is one short transaction; the topology never holds a transaction open across
//! provider calls. Implemented by `msghub::storage` on SQLite and Postgres.

use async_trait::async_trait;

use crate::direct::Claims;
use crate::plan::{ChannelBatch, DeliveryResult, Lane, MessagePlan, OpenShard, Shard};
use crate::provider::ChannelType;

#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;

/// What the planner learnt from creating the next page of shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPage {
    pub shards: Vec<Shard>,
    /// True when the audience is fully covered by shards.
    pub complete: bool,
}

/// A page of unfinished messages, for the planner's sweep.
#[derive(Debug, Default)]
pub struct SweptPage {
    /// The page's messages not claimed by a direct run (see [`crate::direct`]), with their
    /// pending shards when they have a single shard.
    pub plans: Vec<(MessagePlan, Option<Vec<Shard>>)>,
    /// The largest id read, claimed or not: where the next page starts.
    pub last: Option<i64>,
    /// Whether the page was full (more may follow).
    pub full: bool,
}

/// A channel as the topology needs it: identity, decrypted credentials and limits.
#[derive(Clone)]
pub struct ChannelSpec {
    pub id: i64,
    pub channel_type: ChannelType,
    pub credentials: serde_json::Value,
    pub rate_per_second: u32,
    pub enabled: bool,
    /// Changes whenever the channel is edited, so actors rebuild their adapter.
    pub version: i64,
}

impl std::fmt::Debug for ChannelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSpec")
            .field("id", &self.id)
            .field("channel_type", &self.channel_type)
            .field("credentials", &"<redacted>")
            .field("rate_per_second", &self.rate_per_second)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// A fallback timer: one per shard and step, with its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    pub msgid: i64,
    pub seq: i32,
    pub step: i16,
    pub due_at_ms: i64,
}

/// What firing a timer did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fired {
    /// Users whose step did not meet its condition and who got a later step.
    pub advanced: u64,
    /// Users the step reached (the chain ends for them).
    pub reached: u64,
    /// Users with no later step they have an address for.
    pub exhausted: u64,
    /// Set when new deliveries were queued: the message must be dispatched again.
    pub reopened: Option<MessagePlan>,
    /// Users looked at, decided or not (the work the firing cost).
    pub examined: u64,
    /// The earliest deadline (unix ms) among the users it decided: when the first of them
    /// became due (its step's outcome plus the wait, or its last failure). The timer row's own
    /// due time, armed when the shard was opened, is only a lower bound of it: a step's wait
    /// starts when the step was sent. `None` when it decided no one.
    pub deadline_ms: Option<i64>,
    /// When the timer is due again (unix ms), if it was kept for users not due yet (often
    /// a few ms after its first firing: the row is armed before the step is sent).
    pub due_again_ms: Option<i64>,
    /// It was not fired: none of its users was due yet and one will be soon (at
    /// `due_again_ms`); its row stays due until it is.
    pub not_yet: bool,
}

#[async_trait]
pub trait DispatchStore: Send + Sync + 'static {
    /// Plans of accepted, unfinished messages with an id above `after`, oldest first (at most
    /// `limit` read); not those deferred until later (quiet hours), and not those `claims`
    /// holds, whose plans are not even parsed. Single-shard messages come with their pending
    /// shards, read for the whole page at once; the others with `None`.
    async fn unfinished_messages(
        &self,
        after: i64,
        limit: u32,
        claims: &Claims,
    ) -> StoreResult<SweptPage>;

    /// Whether the message's audience is fully sharded.
    async fn planning_state(&self, msgid: i64) -> StoreResult<bool>;

    /// Shards of the unfinished message not yet done, in sequence order (a simple message's
    /// implied shard, which has no row, included).
    async fn pending_shards(&self, plan: &MessagePlan) -> StoreResult<Vec<Shard>>;

    /// Create up to `max_shards` further shards of `shard_size` users each, continuing from the
    /// persisted cursor, and advance the cursor in the same transaction.
    async fn plan_shards(
        &self,
        plan: &MessagePlan,
        shard_size: u32,
        max_shards: u32,
    ) -> StoreResult<PlannedPage>;

    /// For each shard, in one transaction: resolve its users to addresses, create their
    /// delivery records (once per message, channel and address) and return those still
    /// queued, per channel.
    async fn open_shards(&self, shards: &[OpenShard]) -> StoreResult<Vec<Vec<ChannelBatch>>>;

    /// Record final outcomes, many deliveries per transaction, all of one lane (a real-time
    /// lane's write goes before bulk writes where writes take turns).
    async fn write_results(&self, results: &[DeliveryResult], lane: Lane) -> StoreResult<()>;

    /// Mark shards `(msgid, seq, generation)` and messages done, in one transaction. A shard whose
    /// generation moved on (a fallback timer queued a next step while it was being sent)
    /// stays pending, and so does its message, which the planner then runs again.
    async fn finish(
        &self,
        shards: &[(i64, i32, i32)],
        messages: &[i64],
        lane: Lane,
    ) -> StoreResult<()>;

    async fn channel(&self, channel_id: i64) -> StoreResult<Option<ChannelSpec>>;

    /// Fallback timers due at `now_ms`, earliest first.
    async fn due_timers(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<TimerKey>>;

    /// Fire due timers in order, in one transaction, until about `max_users` users were
    /// looked at (at least one timer). For each: decide every user of the shard whose step is
    /// due (its wait passed, or all its deliveries failed), queue the next step for those it
    /// did not reach, and move or delete the timer. Returns what each fired timer did, for
    /// the prefix of `keys` it fired; the rest stay due.
    async fn fire_timers(&self, keys: &[TimerKey], max_users: u64) -> StoreResult<Vec<Fired>>;

    /// Read ahead, on readers, what firing these timers (in order) will need: the later
    /// steps' bindings of the users due by `at_ms`. Their firing then does not wait for those
    /// reads; what it finds not read ahead (or read too long ago) it reads itself. Bounded:
    /// it stops when enough is held; failures only leave the reads to the firing.
    async fn prefetch_timers(&self, keys: &[TimerKey], at_ms: i64);

    /// Keep an accepted message out of [`Self::unfinished_messages`] until `until_ms` (quiet
    /// hours); its pending shards stay as they are.
    async fn defer_message(&self, msgid: i64, until_ms: i64) -> StoreResult<()>;

    /// Scheduled messages due at `now_ms` (at most `limit`, earliest first), moved from
    /// `scheduled` to `accepted` in one transaction; their plans, to be dispatched. A message
    /// cancelled, rescheduled or retracted concurrently is not among them.
    async fn release_scheduled(&self, now_ms: i64, limit: u32) -> StoreResult<Vec<MessagePlan>>;
}
