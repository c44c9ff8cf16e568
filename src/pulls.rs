//! The receipt poller: asks providers that push nothing (DingTalk work notices) what became of
//! each accepted send, and applies the answers as receipts.
//!
//! Every accepted call of such a channel is a row of `receipt_pulls`, written with its
//! outcomes ([`crate::storage::pulls`]), so the poller survives restarts: it reads the rows
//! that are due, asks each channel's adapter (`Provider::pull_receipts`, at most
//! `receipt_pulls_per_second` calls a second per channel), and hands what it learns to the
//! receipts writer like any pushed receipt — read is `clicked`, reached is `delivered`, not
//! reached is `undelivered` with the provider's reason, and a recipient the provider does not
//! know is suppressed. Receipts only move a delivery forward, so asking twice is harmless.
//! A send is forgotten once every recipient is settled (read, or not reached) or its window
//! has passed; until then it is asked about again, each time after twice the wait before, up
//! to the maximum interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass, SendReport};
use msghub_actors::registry::ChannelUnavailable;

use crate::http::AppState;
use crate::settings::ProviderSettings;
use crate::storage::now_ms;
use crate::storage::pulls::{Pull, PullNext};
use crate::storage::receipts::{Receipt, ReceiptKind};
use crate::storage::suppressions::SuppressReason;

/// When and how often sends are asked about.
#[derive(Debug, Clone, Copy)]
pub struct PullPolicy {
    pub first_ms: i64,
    pub max_interval_ms: i64,
    pub window_ms: i64,
    pub per_second: usize,
}

impl PullPolicy {
    pub fn of(settings: &ProviderSettings) -> PullPolicy {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX).max(1);
        PullPolicy {
            first_ms: ms(settings.receipt_pull_first_ms),
            max_interval_ms: ms(settings.receipt_pull_max_interval_ms),
            window_ms: ms(settings.receipt_pull_window_ms),
            per_second: (settings.receipt_pulls_per_second as usize).max(1),
        }
    }

    /// How long the poller sleeps between rounds: a second, or less when the first ask comes
    /// sooner — but long enough for one ask per round within `per_second`.
    fn tick(&self) -> Duration {
        let soon = u64::try_from(self.first_ms / 2)
            .unwrap_or(1000)
            .clamp(20, 1000);
        let one_ask = 1000u64.div_ceil(self.per_second.max(1) as u64);
        Duration::from_millis(soon.max(one_ask).min(1000))
    }

    /// Asks to one channel per round: `per_second` over the tick, never more.
    fn per_round(&self) -> usize {
        let per = self.per_second as u128 * self.tick().as_millis() / 1000;
        usize::try_from(per).unwrap_or(usize::MAX).max(1)
    }

    /// When a send asked about `pulls` times before this ask is asked again — twice the wait
    /// before this ask (the first came `first_ms` after the send), at most `max_interval_ms` —
    /// or `Done` once its window is over.
    pub fn next(&self, pull: &Pull, now: i64) -> PullNext {
        if now.saturating_sub(pull.created_at) >= self.window_ms {
            return PullNext::Done;
        }
        let doublings = u32::try_from(pull.pulls.saturating_add(1).clamp(0, 40)).unwrap_or(40);
        let wait = self
            .first_ms
            .saturating_mul(1i64 << doublings.min(40))
            .min(self.max_interval_ms);
        // The last ask falls at the window's end, not after it.
        PullNext::At(
            now.saturating_add(wait)
                .min(pull.created_at.saturating_add(self.window_ms)),
        )
    }
}

/// The receipts a report gives, at `at_ms`. An address that is no plain text of at most 128
/// bytes names no delivery (and Postgres would refuse a NUL in the batch): left out.
pub fn receipts_of(pull: &Pull, report: &SendReport, at_ms: i64) -> Vec<Receipt> {
    let receipt = |address: &str, kind, code: Option<String>, suppress| Receipt {
        msgid: pull.msgid,
        channel_id: pull.channel_id,
        address: address.to_string(),
        kind,
        at_ms,
        code,
        suppress,
    };
    let mut out = Vec::with_capacity(
        2 * report.read.len() + report.delivered.len() + report.undelivered.len(),
    );
    let usable = |a: &String| crate::domain::plain_text(a, 128);
    out.extend(
        report
            .delivered
            .iter()
            .filter(|a| usable(a))
            .map(|a| receipt(a, ReceiptKind::Delivered, None, None)),
    );
    // Read implies reached: both, so a user first seen read is reported delivered, then read.
    for a in report.read.iter().filter(|a| usable(a)) {
        out.push(receipt(a, ReceiptKind::Delivered, None, None));
        out.push(receipt(a, ReceiptKind::Clicked, None, None));
    }
    out.extend(
        report
            .undelivered
            .iter()
            .filter(|u| usable(&u.address))
            .map(|u| {
                receipt(
                    &u.address,
                    ReceiptKind::Undelivered,
                    Some(u.code.clone()),
                    u.gone.then_some(SuppressReason::Gone),
                )
            }),
    );
    out
}

/// What to do with a send after its provider answered `answer`.
fn after(
    policy: &PullPolicy,
    pull: &Pull,
    answer: &Result<SendReport, Outcome>,
    now: i64,
) -> PullNext {
    match answer {
        Ok(report) if i64::try_from(report.settled()).unwrap_or(i64::MAX) >= pull.targets => {
            PullNext::Done
        }
        Ok(_) => policy.next(pull, now),
        // The provider does not know the send: it will never say.
        Err(o) if o.class == OutcomeClass::Gone => PullNext::Done,
        // Anything else (busy, a refused token, no permission yet) may pass: asked again,
        // until the window ends.
        Err(_) => policy.next(pull, now),
    }
}

/// How often `msghub_receipt_pulls_pending` is counted.
const GAUGE_EVERY: Duration = Duration::from_secs(15);

/// Run the poller on the current runtime until the process ends.
pub async fn run(state: Arc<AppState>, policy: PullPolicy) {
    let mut counted: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(policy.tick()).await;
        if let Err(e) = round(&state, &policy).await {
            tracing::warn!(error = %e, "asking providers for receipts failed; trying again");
        }
        if counted.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
            counted = Some(std::time::Instant::now());
            if let Ok(n) = state.db.pending_pulls().await {
                metrics::gauge!("msghub_receipt_pulls_pending").set(n as f64);
            }
        }
    }
}

/// One round: every channel's due sends, up to its asks per round. A channel whose round
/// fails does not hold up the others.
pub async fn round(state: &AppState, policy: &PullPolicy) -> anyhow::Result<usize> {
    let now = now_ms();
    let per_round = u32::try_from(policy.per_round()).unwrap_or(u32::MAX);
    let due = state.db.due_pulls(now, per_round).await?;
    let mut by_channel: BTreeMap<i64, Vec<Pull>> = BTreeMap::new();
    for p in due {
        by_channel.entry(p.channel_id).or_default().push(p);
    }
    let mut asked = 0;
    for (channel_id, pulls) in by_channel {
        asked += pulls.len();
        if let Err(e) = channel_round(state, policy, channel_id, &pulls).await {
            count("error", pulls.len());
            tracing::warn!(channel_id, error = %e, "asking a channel's provider for receipts failed; asking later");
        }
    }
    Ok(asked)
}

async fn channel_round(
    state: &AppState,
    policy: &PullPolicy,
    channel_id: i64,
    pulls: &[Pull],
) -> anyhow::Result<()> {
    let ids: Vec<String> = pulls.iter().map(|p| p.provider_id.clone()).collect();
    let answers = match state.dispatch.pull_receipts(channel_id, &ids).await {
        Ok(answers) => answers,
        // A storage hiccup: the rows stay due.
        Err(ChannelUnavailable::Store(e)) => anyhow::bail!("loading channel {channel_id}: {e}"),
        // The channel was deleted: nobody can be asked any more.
        Err(ChannelUnavailable::Missing) => {
            tracing::warn!(
                channel_id,
                "receipts of a deleted channel are no longer asked for"
            );
            count("channel_gone", pulls.len());
            let done: Vec<(&Pull, PullNext)> = pulls.iter().map(|p| (p, PullNext::Done)).collect();
            state.db.after_pulls(&done).await?;
            return Ok(());
        }
        // Disabled or misconfigured: asked again later, until the window ends.
        Err(unavailable) => {
            tracing::warn!(channel_id, reason = %unavailable, "cannot ask for a channel's receipts now; asking later");
            count("channel_unavailable", pulls.len());
            let now = now_ms();
            let later: Vec<(&Pull, PullNext)> =
                pulls.iter().map(|p| (p, policy.next(p, now))).collect();
            state.db.after_pulls(&later).await?;
            return Ok(());
        }
    };
    let now = now_ms();
    let mut receipts = Vec::new();
    let mut next = Vec::with_capacity(pulls.len());
    for (i, pull) in pulls.iter().enumerate() {
        let answer = answers.get(i).cloned().unwrap_or_else(|| {
            Err(Outcome::failed(
                OutcomeClass::Retry,
                "internal",
                "no answer for the send",
            ))
        });
        match &answer {
            Ok(report) => {
                receipts.extend(receipts_of(pull, report, now));
                count("answered", 1);
            }
            Err(o) => {
                let refused = o.class == OutcomeClass::Gone;
                if refused {
                    tracing::warn!(channel_id, provider_id = %pull.provider_id, code = %o.code, error = %o.message,
                        "the provider does not know a send; no longer asking");
                } else {
                    tracing::debug!(channel_id, provider_id = %pull.provider_id, code = %o.code, error = %o.message,
                        "asking for a send's receipts failed; asking later");
                }
                count(if refused { "refused" } else { "retry" }, 1);
            }
        }
        let then = after(policy, pull, &answer, now);
        if then == PullNext::Done && answer.is_ok() && now - pull.created_at >= policy.window_ms {
            count("window_over", 1);
        }
        next.push((pull, then));
    }
    // Receipts first: a crash before the rows are updated asks again, and the repeat changes
    // nothing. When they cannot be applied, the sends are asked about again later, not at
    // once.
    if let Err(e) =
        crate::http::receipts::apply(state, ChannelType::DingtalkCc, receipts, 0, 0).await
    {
        let later: Vec<(&Pull, PullNext)> =
            pulls.iter().map(|p| (p, policy.next(p, now))).collect();
        state.db.after_pulls(&later).await?;
        anyhow::bail!("applying pulled receipts: {}", e.message);
    }
    state.db.after_pulls(&next).await?;
    Ok(())
}

fn count(result: &'static str, n: usize) {
    metrics::counter!("msghub_receipt_pulls_total", "result" => result).increment(n as u64);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use msghub_actors::provider::{OutcomeClass, Undelivered};

    use super::*;

    fn policy() -> PullPolicy {
        PullPolicy {
            first_ms: 5_000,
            max_interval_ms: 60_000,
            window_ms: 3_600_000,
            per_second: 10,
        }
    }

    fn pull(pulls: i32) -> Pull {
        Pull {
            channel_id: 3,
            provider_id: "900".into(),
            msgid: 42,
            targets: 3,
            created_at: 1_000_000,
            pulls,
        }
    }

    #[test]
    fn asks_come_twice_as_far_apart_up_to_the_interval_and_end_with_the_window() {
        let p = policy();
        let now = 1_010_000;
        // The first ask came 5 s after the send: the next 10 s after it, then 20 s, ...
        assert_eq!(p.next(&pull(0), now), PullNext::At(now + 10_000));
        assert_eq!(p.next(&pull(1), now), PullNext::At(now + 20_000));
        assert_eq!(p.next(&pull(2), now), PullNext::At(now + 40_000));
        assert_eq!(p.next(&pull(3), now), PullNext::At(now + 60_000));
        assert_eq!(p.next(&pull(500), now), PullNext::At(now + 60_000));
        // Near the window's end the last ask is at its end; after it, none.
        let end = 1_000_000 + 3_600_000;
        assert_eq!(p.next(&pull(9), end - 1_000), PullNext::At(end));
        assert_eq!(p.next(&pull(9), end), PullNext::Done);
        // A window as long as settings allow: no overflow, asked again at the interval.
        let forever = PullPolicy {
            window_ms: i64::MAX,
            ..p
        };
        assert_eq!(forever.next(&pull(500), now), PullNext::At(now + 60_000));
        assert_eq!(p.tick(), Duration::from_millis(1000));
        assert_eq!(p.per_round(), 10);
        // A short first wait shortens the tick, but never below one ask within the rate.
        let fast = PullPolicy {
            first_ms: 100,
            per_second: 100,
            ..p
        };
        assert_eq!(
            (fast.tick(), fast.per_round()),
            (Duration::from_millis(50), 5)
        );
        let slow = PullPolicy {
            per_second: 10,
            ..fast
        };
        assert_eq!(
            (slow.tick(), slow.per_round()),
            (Duration::from_millis(100), 1)
        );
        for per_second in [1, 3, 7, 10, 33, 1000] {
            let q = PullPolicy {
                first_ms: 40,
                per_second,
                ..p
            };
            let rate = q.per_round() as f64 * 1000.0 / q.tick().as_millis() as f64;
            assert!(rate <= per_second as f64 + 1e-9, "{per_second}: {rate}");
        }
    }

    #[test]
    fn a_send_is_forgotten_once_settled_or_refused() {
        let p = policy();
        let now = 1_010_000;
        let undelivered = |a: &str| Undelivered {
            address: a.into(),
            code: "failed".into(),
            gone: false,
        };
        let settled = SendReport {
            read: vec!["a".into(), "b".into()],
            delivered: vec![],
            undelivered: vec![undelivered("c")],
        };
        assert_eq!(after(&p, &pull(0), &Ok(settled), now), PullNext::Done);
        // Delivered but unread may still be read: asked again.
        let unread = SendReport {
            read: vec!["a".into(), "b".into()],
            delivered: vec!["c".into()],
            undelivered: vec![],
        };
        assert_eq!(
            after(&p, &pull(0), &Ok(unread), now),
            PullNext::At(now + 10_000)
        );
        let unknown = Outcome::failed(OutcomeClass::Gone, "40035", "invalid task_id");
        assert_eq!(after(&p, &pull(0), &Err(unknown), now), PullNext::Done);
        // Refused for now (a secret being changed, a permission not granted yet), or busy:
        // asked again.
        let denied = Outcome::failed(OutcomeClass::Perm, "88:60011", "no permission");
        assert_eq!(
            after(&p, &pull(0), &Err(denied), now),
            PullNext::At(now + 10_000)
        );
        let busy = Outcome::failed(OutcomeClass::Retry, "-1", "busy");
        assert_eq!(
            after(&p, &pull(1), &Err(busy), now),
            PullNext::At(now + 20_000)
        );
    }

    #[test]
    fn reports_become_receipts() {
        let report = SendReport {
            read: vec!["r".into(), "bad\u{0}".into()],
            delivered: vec!["d".into(), String::new()],
            undelivered: vec![
                Undelivered {
                    address: "x".into(),
                    code: "invalid_user".into(),
                    gone: true,
                },
                Undelivered {
                    address: "f".into(),
                    code: "forbidden:143105".into(),
                    gone: false,
                },
            ],
        };
        type Seen = (
            String,
            ReceiptKind,
            Option<String>,
            Option<SuppressReason>,
            i64,
            i64,
        );
        let got: Vec<Seen> = receipts_of(&pull(0), &report, 5)
            .into_iter()
            .map(|r| {
                assert_eq!(r.at_ms, 5);
                (r.address, r.kind, r.code, r.suppress, r.msgid, r.channel_id)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("d".into(), ReceiptKind::Delivered, None, None, 42, 3),
                ("r".into(), ReceiptKind::Delivered, None, None, 42, 3),
                ("r".into(), ReceiptKind::Clicked, None, None, 42, 3),
                (
                    "x".into(),
                    ReceiptKind::Undelivered,
                    Some("invalid_user".into()),
                    Some(SuppressReason::Gone),
                    42,
                    3
                ),
                (
                    "f".into(),
                    ReceiptKind::Undelivered,
                    Some("forbidden:143105".into()),
                    None,
                    42,
                    3
                ),
            ]
        );
    }
}
