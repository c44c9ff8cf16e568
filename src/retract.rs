//! Retracting a message (`POST /v1/retract/{msgid}`): stop what has not been sent, recall what
//! the provider can withdraw, and report each delivery to the business system.
//!
//! The request itself only does what must not wait: one transaction marks the message and its
//! queued deliveries retracted ([`Db::retract_message`]), and the dispatch topology is told to
//! start no further provider call for it. The rest runs in the background
//! ([`follow_up`]): once the calls that were already under way have recorded their outcomes,
//! every stopped delivery is reported (callback type 7), and every delivery the provider had
//! accepted is recalled through its channel's adapter (`Provider::recall`): type 7 when it was
//! withdrawn, 8 when the recall failed or the provider cannot recall. A delivery whose call was
//! under way when the retract committed reads `retracted` until that call's outcome is recorded
//! (`submitted`, with the provider's id), and `retracted` again once the recall succeeded; its
//! callback comes after that. Like the callbacks, this follow-up is not persisted: a restart in
//! the middle loses the rest of it, never the retract.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use msghub_actors::Dispatch;
use msghub_actors::plan::DeliveryStatus;
use msghub_actors::provider::{ChannelType, Outcome, OutcomeClass};

use crate::callbacks::{CallbackEvent, CallbackKind, Callbacks};
use crate::storage::retract::{RetractedDelivery, recallable_statuses};
use crate::storage::{Db, now_ms};

/// How long the follow-up waits for provider calls that were under way.
const CALLS_DONE_WAIT: Duration = Duration::from_secs(120);
/// Deliveries read per page.
const PAGE: u32 = 1000;

/// Report the stopped deliveries and recall the sent ones of a message just retracted.
pub async fn follow_up(db: Db, dispatch: Dispatch, callbacks: Callbacks, msgid: i64) {
    if !dispatch.wait_calls_done(msgid, CALLS_DONE_WAIT).await {
        tracing::warn!(
            msgid,
            "provider calls of a retracted message still running; recalling what is recorded"
        );
    }
    let stopped = (DeliveryStatus::Retracted as i16).to_string();
    if let Err(e) = report_stopped(&db, &callbacks, msgid, &stopped).await {
        tracing::error!(msgid, error = %e, "reading the stopped deliveries of a retract failed");
    }
    if let Err(e) = recall_sent(&db, &dispatch, &callbacks, msgid).await {
        tracing::error!(msgid, error = %e, "recalling a retracted message failed");
    }
}

async fn report_stopped(
    db: &Db,
    callbacks: &Callbacks,
    msgid: i64,
    statuses: &str,
) -> Result<(), crate::storage::StorageError> {
    let mut after = 0;
    loop {
        let page = db.deliveries_in(msgid, statuses, after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id;
        let at_ms = now_ms();
        let events = page
            .iter()
            .filter_map(|d| event(d, CallbackKind::Retracted, None, at_ms))
            .collect();
        callbacks.emit_all(msgid, events);
    }
}

/// Recall every send of the message the provider accepted, page by page. Each provider id
/// (JPush `msg_id`: one per batch of up to 1000 devices) is recalled once.
async fn recall_sent(
    db: &Db,
    dispatch: &Dispatch,
    callbacks: &Callbacks,
    msgid: i64,
) -> Result<(), crate::storage::StorageError> {
    let statuses = recallable_statuses();
    let mut done: HashMap<(i64, String), Outcome> = HashMap::new();
    let mut after = 0;
    loop {
        let page = db.deliveries_in(msgid, &statuses, after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id;
        let mut wanted: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for d in &page {
            if let Some(pid) = &d.provider_id
                && !done.contains_key(&(d.channel_id, pid.clone()))
            {
                let ids = wanted.entry(d.channel_id).or_default();
                if !ids.contains(pid) {
                    ids.push(pid.clone());
                }
            }
        }
        for (channel_id, ids) in wanted {
            let outcomes = match dispatch.recall(channel_id, &ids).await {
                Ok(outcomes) => outcomes,
                Err(unavailable) => {
                    let o = Outcome::failed(
                        OutcomeClass::Perm,
                        unavailable.code(),
                        unavailable.to_string(),
                    );
                    vec![o; ids.len()]
                }
            };
            let mut withdrawn = Vec::new();
            for (i, id) in ids.into_iter().enumerate() {
                let outcome = outcomes.get(i).cloned().unwrap_or_else(|| {
                    Outcome::failed(OutcomeClass::Retry, "internal", "no recall outcome")
                });
                metrics::counter!("msghub_recalls_total", "class" => outcome.class.as_str())
                    .increment(1);
                if outcome.class == OutcomeClass::Ok {
                    withdrawn.push(id.clone());
                }
                done.insert((channel_id, id), outcome);
            }
            // A withdrawn send's receipts are no longer asked for (DingTalk tasks). Should that
            // fail, the poller still stops when the task's window ends: the retract goes on.
            if let Err(e) = db.forget_pulls(channel_id, &withdrawn).await {
                tracing::warn!(msgid, channel_id, error = %e, "forgetting the receipt asks of recalled sends failed");
            }
        }
        let at_ms = now_ms();
        let mut recalled = Vec::new();
        let mut events = Vec::with_capacity(page.len());
        for d in &page {
            let outcome = d
                .provider_id
                .as_ref()
                .and_then(|pid| done.get(&(d.channel_id, pid.clone())));
            let (kind, error) = match outcome {
                Some(o) if o.class == OutcomeClass::Ok => {
                    recalled.push(d.id);
                    (CallbackKind::Retracted, None)
                }
                Some(o) => (
                    CallbackKind::RetractFailed,
                    Some((o.code.clone(), o.message.clone())),
                ),
                None => (
                    CallbackKind::RetractFailed,
                    Some((
                        msghub_actors::provider::RECALL_UNSUPPORTED.to_string(),
                        "the provider gave no id to recall this send by".to_string(),
                    )),
                ),
            };
            events.extend(event(d, kind, error, at_ms));
        }
        db.mark_recalled(&recalled).await?;
        callbacks.emit_all(msgid, events);
    }
}

fn event(
    d: &RetractedDelivery,
    kind: CallbackKind,
    error: Option<(String, String)>,
    at_ms: i64,
) -> Option<CallbackEvent> {
    Some(CallbackEvent {
        kind,
        userid: d.userid.clone(),
        channel_type: ChannelType::from_code(&d.channel_type)?,
        address: d.address.clone(),
        error,
        at_ms,
    })
}
