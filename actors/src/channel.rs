//! `ChannelActor`: one supervised actor per configured channel.
//!
//! It owns the channel's adapter, its governor rate limiter and two bounded lanes. Each lane has
//! its own pump and its own in-flight budget, so a saturated bulk lane (or bulk retries sleeping
//! on a failing provider) never occupies capacity the real-time lane needs; both lanes draw
//! from the one rate limiter, which hands out a permit per provider call.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use crate::mask::mask_address;
use crate::plan::{DeliveryResult, DeliveryStatus, Lane, MessagePlan};
use crate::provider::{ChannelType, Outcome, OutcomeClass, Provider, SendRequest, Target};
use crate::retract::Retractions;
use crate::retry::RetryPolicy;

/// Work for a channel: one shard's targets on this channel.
pub struct ChannelJob {
    pub plan: Arc<MessagePlan>,
    pub targets: Vec<Target>,
    /// Answered once every target has a recorded final outcome (or the write failed).
    pub done: oneshot::Sender<JobReport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobReport {
    pub submitted: u64,
    pub failed: u64,
    /// Outcomes could not be stored; the shard must stay pending so it is resumed.
    pub unrecorded: u64,
    /// Not sent because the message was retracted (storage already marked them).
    pub stopped: u64,
}

/// The senders of a channel's lanes, handed to shard workers.
#[derive(Clone)]
pub struct ChannelLanes {
    pub channel_id: i64,
    pub channel_type: ChannelType,
    realtime: mpsc::Sender<ChannelJob>,
    bulk: mpsc::Sender<ChannelJob>,
}

impl ChannelLanes {
    /// Queue a job on its lane, waiting for space: a full lane slows the shard workers feeding
    /// it instead of growing memory.
    pub async fn enqueue(&self, lane: Lane, job: ChannelJob) -> Result<(), ChannelJob> {
        let tx = match lane {
            Lane::Realtime => &self.realtime,
            Lane::Bulk => &self.bulk,
        };
        tx.send(job).await.map_err(|e| e.0)
    }

    pub fn depth(&self, lane: Lane) -> usize {
        let tx = match lane {
            Lane::Realtime => &self.realtime,
            Lane::Bulk => &self.bulk,
        };
        tx.max_capacity() - tx.capacity()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ChannelTuning {
    pub lane_capacity: usize,
    pub realtime_in_flight: usize,
    pub bulk_in_flight: usize,
    pub retry: RetryPolicy,
}

pub type ResultWriter = crate::batcher::LaneWriters<Vec<DeliveryResult>, ()>;

struct LaneState {
    lane: Lane,
    rx: Arc<Mutex<mpsc::Receiver<ChannelJob>>>,
    budget: Budget,
}

/// A lane's limits: provider calls under way, and chunks sent or being sent whose outcomes
/// are not recorded yet (a call's slot is free once the provider answered; the recording, a
/// group commit, overlaps the next calls).
#[derive(Clone)]
struct Budget {
    in_flight: Arc<Semaphore>,
    unrecorded: Arc<Semaphore>,
}

impl Budget {
    /// Chunks waiting for their outcomes to be recorded, per call slot.
    const UNRECORDED_PER_CALL: usize = 4;

    fn new(in_flight: usize) -> Budget {
        let in_flight = in_flight.max(1);
        Budget {
            in_flight: Arc::new(Semaphore::new(in_flight)),
            unrecorded: Arc::new(Semaphore::new(in_flight * Self::UNRECORDED_PER_CALL)),
        }
    }
}

/// Shared, immutable parts every provider call needs.
struct CallContext {
    channel_id: i64,
    channel_type: ChannelType,
    provider: Arc<dyn Provider>,
    limiter: Option<DefaultDirectRateLimiter>,
    retry: RetryPolicy,
    writer: ResultWriter,
    retractions: Arc<Retractions>,
}

pub struct ChannelActor {
    ctx: Arc<CallContext>,
    lanes: Vec<LaneState>,
}

impl ChannelActor {
    /// Build the actor and the lanes that feed it. Start it with `Supervisor::start`.
    pub fn new(
        channel_id: i64,
        channel_type: ChannelType,
        provider: Arc<dyn Provider>,
        rate_per_second: u32,
        tuning: ChannelTuning,
        writer: ResultWriter,
        retractions: Arc<Retractions>,
    ) -> (ChannelActor, ChannelLanes) {
        let (rt_tx, rt_rx) = mpsc::channel(tuning.lane_capacity.max(1));
        let (bulk_tx, bulk_rx) = mpsc::channel(tuning.lane_capacity.max(1));
        let limiter =
            NonZeroU32::new(rate_per_second).map(|r| RateLimiter::direct(Quota::per_second(r)));
        let actor = ChannelActor {
            ctx: Arc::new(CallContext {
                channel_id,
                channel_type,
                provider,
                limiter,
                retry: tuning.retry,
                writer,
                retractions,
            }),
            lanes: vec![
                LaneState {
                    lane: Lane::Realtime,
                    rx: Arc::new(Mutex::new(rt_rx)),
                    budget: Budget::new(tuning.realtime_in_flight),
                },
                LaneState {
                    lane: Lane::Bulk,
                    rx: Arc::new(Mutex::new(bulk_rx)),
                    budget: Budget::new(tuning.bulk_in_flight),
                },
            ],
        };
        let lanes = ChannelLanes {
            channel_id,
            channel_type,
            realtime: rt_tx,
            bulk: bulk_tx,
        };
        (actor, lanes)
    }

    fn start_pumps(&mut self, ctx: &mut Context<Self>) {
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(self.lanes.len()));
        for lane in &self.lanes {
            let running = running.clone();
            let pump = pump(
                self.ctx.clone(),
                lane.lane,
                lane.rx.clone(),
                lane.budget.clone(),
            );
            ctx.spawn(pump.into_actor(self).map(move |_, _act, ctx| {
                // A lane closed and drained: the channel was removed or reconfigured. Once both
                // lanes have drained, stopping with no address left ends the actor for good
                // (stopping earlier would drop the other lane's queued jobs).
                if running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                    ctx.stop();
                }
            }));
        }
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_pumps(ctx);
    }
}

impl Supervised for ChannelActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        metrics::counter!("msghub_actor_restarts_total", "actor" => "channel").increment(1);
    }
}

/// Receive jobs from one lane and run their provider calls, as many at once as the lane's
/// in-flight budget allows.
async fn pump(
    ctx: Arc<CallContext>,
    lane: Lane,
    rx: Arc<Mutex<mpsc::Receiver<ChannelJob>>>,
    budget: Budget,
) {
    let max_batch = ctx.provider.max_batch().max(1);
    loop {
        let job = { rx.lock().await.recv().await };
        let Some(job) = job else { return };
        let ChannelJob {
            plan,
            targets,
            done,
        } = job;
        let tracker = Arc::new(JobTracker::new(targets.len(), done));
        let mut rest = targets;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(max_batch));
            let chunk = std::mem::replace(&mut rest, tail);
            if ctx.retractions.is_retracted(plan.msgid) {
                // Dropped without spending rate budget; storage marked them retracted.
                tracker.add(JobReport {
                    stopped: chunk.len() as u64,
                    ..JobReport::default()
                });
                continue;
            }
            let Ok(unrecorded) = budget.unrecorded.clone().acquire_owned().await else {
                return;
            };
            let Ok(permit) = budget.in_flight.clone().acquire_owned().await else {
                return;
            };
            if let Some(limiter) = &ctx.limiter {
                let waited = Instant::now();
                limiter.until_ready().await;
                metrics::histogram!("msghub_rate_limit_wait_seconds", "channel_type" => ctx.channel_type.code())
                    .record(waited.elapsed().as_secs_f64());
            }
            let ctx = ctx.clone();
            let plan = plan.clone();
            let tracker = tracker.clone();
            tokio::spawn(async move {
                let report = deliver_chunk(&ctx, lane, &plan, chunk, permit).await;
                drop(unrecorded);
                tracker.add(report);
            });
        }
    }
}

/// Send one chunk, retrying the retryable part with backoff, then record every outcome. The
/// call slot (`permit`) is given back once the provider has answered for good, before the
/// recording.
async fn deliver_chunk(
    ctx: &CallContext,
    lane: Lane,
    plan: &MessagePlan,
    chunk: Vec<Target>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> JobReport {
    let channel_type = ctx.channel_type.code();
    let content = plan
        .channel(ctx.channel_id)
        .map_or(&serde_json::Value::Null, |c| &c.content);
    let Some(_call) = ctx.retractions.begin_call(plan.msgid) else {
        return JobReport {
            stopped: chunk.len() as u64,
            ..JobReport::default()
        };
    };
    let mut results = Vec::with_capacity(chunk.len());
    let mut pending = chunk;
    let mut attempt = 1u32;
    let mut stopped = 0;
    loop {
        if attempt > 1 && ctx.retractions.is_retracted(plan.msgid) {
            // Retracted between retries: what is still pending is not sent again.
            stopped = pending.len() as u64;
            break;
        }
        if plan.expired(crate::plan::now_ms()) {
            // Past the message's offline validity: msghub stops trying.
            let expired = Outcome::failed(
                OutcomeClass::Perm,
                "expired",
                "ttl_seconds passed before the provider accepted it",
            );
            results.extend(
                pending
                    .iter()
                    .map(|t| result_of(ctx.channel_type, t, &expired, attempt.saturating_sub(1)))
                    .map(|r| r.of(plan.msgid, ctx.channel_id)),
            );
            break;
        }
        let started = Instant::now();
        let outcomes = ctx
            .provider
            .send(SendRequest {
                msgid: plan.msgid,
                content,
                targets: &pending,
                ttl: plan.ttl(),
            })
            .await;
        metrics::histogram!("msghub_provider_call_duration_seconds", "channel_type" => channel_type, "lane" => lane.as_str())
            .record(started.elapsed().as_secs_f64());
        let mut retry = Vec::new();
        let mut hint = None;
        for (i, target) in pending.into_iter().enumerate() {
            let outcome = outcomes.get(i).cloned().unwrap_or_else(|| {
                Outcome::failed(
                    OutcomeClass::Retry,
                    "adapter",
                    "adapter returned too few outcomes",
                )
            });
            metrics::counter!("msghub_provider_outcomes_total", "channel_type" => channel_type, "class" => outcome.class.as_str())
                .increment(1);
            if outcome.class.is_retryable() && attempt < ctx.retry.max_attempts {
                hint = hint.max(outcome.retry_after);
                retry.push(target);
            } else {
                if outcome.class == OutcomeClass::Gone {
                    tracing::info!(channel_type, msgid = plan.msgid, address = %mask_address(&target.address),
                        code = %outcome.code, "recipient is gone");
                }
                results.push(
                    result_of(ctx.channel_type, &target, &outcome, attempt)
                        .of(plan.msgid, ctx.channel_id),
                );
            }
        }
        if retry.is_empty() {
            break;
        }
        metrics::counter!("msghub_provider_retries_total", "channel_type" => channel_type)
            .increment(retry.len() as u64);
        tokio::time::sleep(ctx.retry.backoff(attempt, hint)).await;
        if let Some(limiter) = &ctx.limiter {
            limiter.until_ready().await;
        }
        attempt += 1;
        pending = retry;
    }
    let mut report = JobReport {
        stopped,
        ..JobReport::default()
    };
    for r in &results {
        match r.status {
            DeliveryStatus::Submitted | DeliveryStatus::Delivered => report.submitted += 1,
            _ => report.failed += 1,
        }
    }
    drop(permit);
    let n = results.len() as u64;
    if let Err(e) = write_with_retry(&ctx.writer, lane, results).await {
        tracing::error!(channel_id = ctx.channel_id, error = %e, "delivery outcomes not recorded; shard stays pending");
        report = JobReport {
            unrecorded: n,
            stopped,
            ..JobReport::default()
        };
    }
    report
}

/// Record outcomes, waiting for the database as long as it takes: these deliveries were sent,
/// and giving up would leave them queued to be sent again after a restart.
async fn write_with_retry(
    writer: &ResultWriter,
    lane: Lane,
    results: Vec<DeliveryResult>,
) -> Result<(), crate::batcher::BatchError> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match writer.lane(lane).submit(results.clone()).await {
            Ok(()) => return Ok(()),
            Err(crate::batcher::BatchError::Closed) => {
                return Err(crate::batcher::BatchError::Closed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording outcomes failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

fn result_of(
    channel_type: ChannelType,
    target: &Target,
    outcome: &Outcome,
    attempts: u32,
) -> DeliveryResult {
    let status = match outcome.class {
        // A webhook's 2xx is the receiver's own answer: there is no later receipt.
        OutcomeClass::Ok if channel_type == ChannelType::Webhook => DeliveryStatus::Delivered,
        OutcomeClass::Ok => DeliveryStatus::Submitted,
        _ => DeliveryStatus::Failed,
    };
    DeliveryResult {
        delivery_id: target.delivery_id,
        status,
        class: outcome.class,
        code: storable(&outcome.code, 64),
        provider_id: outcome.provider_id.as_deref().map(|p| storable(p, 128)),
        error: (!outcome.message.is_empty()).then(|| storable(&outcome.message, 500)),
        attempts,
        msgid: 0,
        channel_id: 0,
        userid: target.userid.clone(),
        address: target.address.clone(),
        pull_receipt: status == DeliveryStatus::Submitted
            && channel_type.pulls_receipts()
            && outcome.provider_id.is_some(),
    }
}

/// Provider-supplied text cut to its column's size and stripped of control characters (a NUL
/// would make Postgres refuse the whole outcome batch).
fn storable(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// Counts a job's finished targets and answers the job once all are accounted for.
struct JobTracker {
    remaining: std::sync::Mutex<(usize, JobReport, Option<oneshot::Sender<JobReport>>)>,
}

impl JobTracker {
    fn new(targets: usize, done: oneshot::Sender<JobReport>) -> JobTracker {
        let tracker = JobTracker {
            remaining: std::sync::Mutex::new((targets, JobReport::default(), Some(done))),
        };
        if targets == 0 {
            tracker.add(JobReport::default());
        }
        tracker
    }

    fn add(&self, part: JobReport) {
        let Ok(mut guard) = self.remaining.lock() else {
            return;
        };
        let (remaining, report, done) = &mut *guard;
        let n = (part.submitted + part.failed + part.unrecorded + part.stopped) as usize;
        *remaining = remaining.saturating_sub(n);
        report.submitted += part.submitted;
        report.failed += part.failed;
        report.unrecorded += part.unrecorded;
        report.stopped += part.stopped;
        if *remaining == 0
            && let Some(done) = done.take()
        {
            let _ = done.send(*report);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::batcher::Batcher;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::plan::{Audience, PlannedChannel, Strategy};

    /// Answers every call after a millisecond, counting the calls under way.
    #[derive(Default)]
    struct Counting {
        now: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Provider for Counting {
        fn max_batch(&self) -> usize {
            1
        }

        async fn send(&self, req: SendRequest<'_>) -> Vec<Outcome> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            req.targets
                .iter()
                .map(|_| Outcome::ok("ok", None))
                .collect()
        }
    }

    fn plan() -> Arc<MessagePlan> {
        Arc::new(MessagePlan {
            msgid: 1,
            source_id: 1,
            lane: Lane::Bulk,
            audience: Audience::Userids(vec![]),
            channels: vec![PlannedChannel {
                channel_id: 7,
                channel_type: ChannelType::Webhook,
                content: serde_json::json!({"event": "x"}),
            }],
            ttl_seconds: None,
            send_at_ms: None,
            spread_seconds: None,
            strategy: Strategy::Concurrent,
            callback: None,
            priority: None,
            filters: None,
        })
    }

    /// An outcome writer that takes nothing until its gate gets permits.
    fn gated_writer() -> (
        Batcher<Vec<DeliveryResult>, ()>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let writer = Batcher::spawn(
            "outcomes",
            1024,
            64,
            move |items: Vec<Vec<DeliveryResult>>| {
                let g = g.clone();
                async move {
                    g.acquire().await.expect("gate").forget();
                    Ok(vec![(); items.len()])
                }
            },
        );
        (writer, gate)
    }

    fn tuning(in_flight: usize) -> ChannelTuning {
        ChannelTuning {
            lane_capacity: 8,
            realtime_in_flight: in_flight,
            bulk_in_flight: in_flight,
            retry: RetryPolicy::default(),
        }
    }

    fn targets(n: i64) -> Vec<Target> {
        (0..n)
            .map(|i| Target {
                delivery_id: i,
                address: format!("hook-{i}"),
                userid: None,
            })
            .collect()
    }

    /// Queue a job of `n` targets on `lane`; its report when it is done.
    async fn enqueue(lanes: &ChannelLanes, lane: Lane, n: i64) -> oneshot::Receiver<JobReport> {
        let (done, report) = oneshot::channel();
        let job = ChannelJob {
            plan: plan(),
            targets: targets(n),
            done,
        };
        lanes
            .enqueue(lane, job)
            .await
            .map_err(|_| "lane closed")
            .unwrap();
        report
    }

    /// The report of a job, which must come within ten seconds.
    async fn finished(report: oneshot::Receiver<JobReport>, what: &str) -> JobReport {
        tokio::time::timeout(Duration::from_secs(10), report)
            .await
            .expect(what)
            .expect("report")
    }

    #[actix::test]
    async fn a_real_time_outcome_is_recorded_while_bulk_outcomes_wait() {
        // The bulk lane's outcome writer takes nothing until the gate opens (a blast's
        // batches queued ahead); the real-time lane's takes everything at once.
        let (bulk, gate) = gated_writer();
        let realtime = Batcher::spawn(
            "real-time outcomes",
            1024,
            64,
            |items: Vec<Vec<DeliveryResult>>| async move { Ok(vec![(); items.len()]) },
        );
        let (actor, lanes) = ChannelActor::new(
            7,
            ChannelType::Webhook,
            Arc::new(Counting::default()),
            0,
            tuning(2),
            ResultWriter { realtime, bulk },
            Arc::new(Retractions::default()),
        );
        let _addr = Supervisor::start(move |_| actor);
        let mut bulk_report = enqueue(&lanes, Lane::Bulk, 3).await;
        let realtime_report = enqueue(&lanes, Lane::Realtime, 3).await;
        let report = finished(
            realtime_report,
            "the real-time job was recorded behind the bulk one",
        )
        .await;
        assert_eq!(report.submitted, 3);
        assert!(
            bulk_report.try_recv().is_err(),
            "the bulk job was recorded through a closed gate"
        );
        gate.add_permits(1000);
        let report = finished(bulk_report, "bulk job finished").await;
        assert_eq!(report.submitted, 3);
    }

    #[actix::test]
    async fn call_slots_are_free_while_outcomes_wait_to_be_recorded_within_a_bound() {
        let provider = Arc::new(Counting::default());
        // A database that takes no outcome until the gate opens.
        let (writer, gate) = gated_writer();
        let in_flight = 2;
        let (actor, lanes) = ChannelActor::new(
            7,
            ChannelType::Webhook,
            provider.clone(),
            0,
            tuning(in_flight),
            ResultWriter::shared(writer),
            Arc::new(Retractions::default()),
        );
        let _addr = Supervisor::start(move |_| actor);
        let report = enqueue(&lanes, Lane::Bulk, 40).await;
        // Nothing is recorded, yet calls go on past the two slots, up to four unrecorded
        // chunks per slot, and no further.
        let bound = in_flight * Budget::UNRECORDED_PER_CALL;
        for _ in 0..200 {
            if provider.calls.load(Ordering::SeqCst) >= bound {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(provider.calls.load(Ordering::SeqCst), bound);
        // The database takes everything: every target is sent and reported.
        gate.add_permits(1000);
        let report = finished(report, "job finished").await;
        assert_eq!(report.submitted, 40);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 40);
        assert!(provider.most.load(Ordering::SeqCst) <= in_flight);
    }
}
