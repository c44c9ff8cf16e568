//! Logs and metrics: the tracing subscriber, the Prometheus recorder, and the masking every log
//! line that mentions an address goes through.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::LogSettings;

/// Install the global subscriber once; later calls (tests) are no-ops.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if settings.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                // Finer around the latency targets (20 ms for a transactional send, 100 ms
                // for a fallback timer), so a p99 read from them says which side it is on.
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
                    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?
                .install_recorder()
                .ok()?;
            describe_metrics();
            Some(handle)
        })
        .clone()
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "msghub_messages_accepted_total",
        "Messages durably stored and acknowledged, by kind and lane."
    );
    describe_counter!(
        "msghub_messages_rejected_total",
        "Send requests refused, by JUMS code."
    );
    describe_counter!(
        "msghub_messages_finished_total",
        "Messages whose every delivery has a final outcome."
    );
    describe_counter!(
        "msghub_sqlite_checkpointed_pages_total",
        "SQLite WAL pages copied back into the database file by the checkpoint threads (approximate), by thread."
    );
    describe_histogram!(
        "msghub_sqlite_checkpoint_seconds",
        "Duration of the checkpoint threads' passes that copied pages, by thread."
    );
    describe_histogram!(
        "msghub_accept_duration_seconds",
        "Time from request to durable acknowledgement."
    );
    describe_histogram!(
        "msghub_realtime_sent_seconds",
        "Transactional sends (one-user real-time messages, sent as soon as they are stored): \
         time from acceptance until every provider call was answered and its outcome recorded."
    );
    describe_histogram!(
        "msghub_batch_size_items",
        "Items per group-commit transaction, by writer."
    );
    describe_gauge!(
        "msghub_lane_depth_jobs",
        "Jobs queued in a channel lane, by channel type and lane."
    );
    describe_histogram!(
        "msghub_provider_call_duration_seconds",
        "Provider call latency, by channel type and lane."
    );
    describe_counter!(
        "msghub_provider_outcomes_total",
        "Per-target provider outcomes, by channel type and class."
    );
    describe_counter!(
        "msghub_provider_retries_total",
        "Targets scheduled for another attempt, by channel type."
    );
    describe_histogram!(
        "msghub_fallback_timer_lateness_seconds",
        "Fallback timer firings: commit minus the deadline of the first user they decided \
         (that user's step outcome plus the wait, or its last failure)."
    );
    describe_counter!(
        "msghub_fallback_reads_total",
        "Fallback timer firings by when what they needed (the later steps' bindings of the \
         users due) was read: ahead of the deadline, or when the timer fired."
    );
    describe_counter!(
        "msghub_receipt_id_waits_total",
        "Receipts naming their delivery by provider id (Tencent SMS serials, WeChat MsgIDs) \
         that were not stored yet and waited for the outcome of their send to be committed \
         (each wait counted)."
    );
    describe_counter!(
        "msghub_sms_replies_total",
        "SMS replies pushed by providers (Aliyun SmsUp, Tencent reply callbacks), by result: \
         unsubscribe (the number is suppressed), other, invalid."
    );
    describe_counter!(
        "msghub_suppressions_added_total",
        "Addresses suppressed (skipped by audience resolution from then on), by reason: gone \
         (a provider's answer), unsubscribed (WeChat events), opted_out (SMS unsubscribe replies: \
         marketing only), blocked, manual."
    );
    describe_counter!(
        "msghub_intake_moved_total",
        "Messages the intake journal's mover stored in the main database."
    );
    describe_counter!(
        "msghub_intake_failed_total",
        "Journaled messages the mover could not store, kept in intake_failed."
    );
    describe_gauge!(
        "msghub_intake_backlog",
        "Accepted messages in the intake journal, not yet stored in the main database."
    );
    describe_counter!(
        "msghub_intake_full_total",
        "Accept batches that waited for room in a full intake journal (accept.max_backlog)."
    );
    describe_histogram!(
        "msghub_rate_limit_wait_seconds",
        "Time spent waiting for a channel's rate limiter."
    );
    describe_counter!(
        "msghub_actor_restarts_total",
        "Supervised actor restarts, by actor."
    );
    describe_counter!(
        "msghub_bounces_total",
        "Email bounce listener events beside its receipts (those count in msghub_receipts_total): unknown_address (refused at RCPT), not_a_report (refused after DATA), cut (kept only max_message_bytes), no_change (delayed, relayed, expanded), busy (max_sessions reached, 421), complaint (an abuse feedback report applied), unknown_complaint (a report naming no message of this hub), soft_limit (a soft bounce that reached bounces.soft_limit and suppressed its address)."
    );
    describe_gauge!(
        "msghub_receipt_pulls_pending",
        "Accepted sends whose receipts are still asked for (DingTalk tasks), counted every 15 s."
    );
    describe_counter!(
        "msghub_receipt_pulls_total",
        "Asks for the receipts of accepted sends of providers that push none (DingTalk getsendresult): answered, retry (failed: asked again later), refused (the provider does not know the send: no longer asked), error (the channel's round failed, e.g. its receipts could not be stored: asked again later), window_over (answered after receipt_pull_window_ms: no longer asked), channel_gone (the channel was deleted: no longer asked), channel_unavailable (the channel is disabled or its credentials do not build an adapter: asked again later)."
    );
    describe_counter!(
        "msghub_direct_deferred_total",
        "One-user messages opened at acceptance but left to the sweep: too many waited for the real-time lane."
    );
    describe_counter!(
        "msghub_shards_stalled_total",
        "Shards left pending because outcomes could not be stored."
    );
    describe_counter!(
        "msghub_callback_posts_total",
        "Status callback POSTs to business systems, by result (ok, refused, unreachable)."
    );
    describe_counter!(
        "msghub_scheduled_released_total",
        "Scheduled messages released for sending when their send time came."
    );
    describe_counter!(
        "msghub_messages_retracted_total",
        "Messages retracted through POST /v1/retract."
    );
    describe_counter!(
        "msghub_recalls_total",
        "Provider withdrawals of retracted sends, by outcome class (ok, perm, ...)."
    );
    describe_counter!(
        "msghub_callback_items_dropped_total",
        "Status callback items not reported, by reason (queue_full, receiver_backlog: a destination whose last POST failed already holds a quarter of the queue, undeliverable, unsigned, lookup_failed, unknown_channel)."
    );
}

pub use msghub_actors::mask::{mask_address, mask_email, mask_phone};
