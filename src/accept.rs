//! The accept writer: where an answered send becomes a stored message and starts moving.
//!
//! On Postgres (and in-memory SQLite) the accept batch stores messages in the main database
//! and dispatches them ([`store_and_dispatch`]). On SQLite with the intake journal, the batch
//! only appends to the journal (`storage::intake`), and [`run_mover`] stores and dispatches
//! what was journaled, in batches, in the same way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use msghub_actors::Dispatch;

use crate::storage::dispatch::Store;
use crate::storage::intake::Intake;
use crate::storage::messages::{Accepted, NewMessage};

/// Store a batch in the main database and dispatch it: messages opened at acceptance are
/// handed to their channels right here, after the commit, where nothing can cancel the
/// hand-over (the request that sent a message may be gone by then); such messages are claimed
/// before the transaction, so the planner's sweep never sees one unclaimed while it is being
/// sent. The others are offered to the planner, unless scheduled.
pub async fn store_and_dispatch(
    store: &Store,
    dispatch: &Dispatch,
    items: Vec<NewMessage>,
    check_keys: bool,
) -> Result<Vec<Accepted>, String> {
    let claimed: Vec<i64> = items
        .iter()
        .filter(|m| m.opens_at_acceptance())
        .map(|m| m.plan.msgid)
        .collect();
    let open = !claimed.is_empty() && dispatch.room_for_opened(claimed.len());
    let claimed = if open { claimed } else { Vec::new() };
    dispatch.claim(&claimed);
    let scheduled: HashSet<i64> = items
        .iter()
        .filter(|m| m.not_before.is_some())
        .map(|m| m.plan.msgid)
        .collect();
    let batch = match store.accept_messages(items, open, check_keys).await {
        Ok(batch) => batch,
        Err(e) => {
            dispatch.release(&claimed);
            return Err(e.to_string());
        }
    };
    let sent: HashSet<i64> = batch.opened.iter().map(|(p, _)| p.msgid).collect();
    // Their callback routes were remembered when they were stored.
    for (plan, batches) in batch.opened {
        dispatch.run_opened(plan, batches);
    }
    // Replayed idempotency keys: nothing was stored under their fresh ids.
    let unused: Vec<i64> = claimed.into_iter().filter(|m| !sent.contains(m)).collect();
    dispatch.release(&unused);
    for answer in &batch.answers {
        if let Accepted::Stored { plan, shards } = answer {
            store.callbacks.remember(plan);
            // A scheduled message is released by the scheduler when it falls due.
            if !scheduled.contains(&plan.msgid) {
                dispatch.dispatch((**plan).clone(), Some(shards.clone()));
            }
        }
    }
    Ok(batch.answers)
}

/// Move journaled messages into the main database for as long as the process runs: each pass
/// takes the oldest `batch` of them, stores and dispatches them like a direct accept (their
/// keys were checked when they were journaled), then deletes them from the journal. A failed
/// pass leaves them there and is retried with a growing pause. A panic (a defect) restarts the
/// loop after a pause, counted in `msghub_actor_restarts_total{actor="intake_mover"}`.
pub async fn run_mover(intake: Arc<Intake>, store: Arc<Store>, dispatch: Dispatch, batch: usize) {
    loop {
        let pass = actix_web::rt::spawn(move_forever(
            intake.clone(),
            store.clone(),
            dispatch.clone(),
            batch,
        ));
        match pass.await {
            Err(e) if e.is_panic() => {
                tracing::error!("the intake journal's mover panicked; restarting it");
                metrics::counter!("msghub_actor_restarts_total", "actor" => "intake_mover")
                    .increment(1);
                // It may have stored a batch it did not delete.
                intake.suspect();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Cancelled: the runtime is shutting down.
            _ => return,
        }
    }
}

/// How long a journaled message the main database refuses while others of its batch go in is
/// tried again before it is set aside in `intake_failed`: a passing failure of its own (a
/// reader's pool timing out under load, for a send opened at acceptance) must not set an
/// answered message aside for good.
const SET_ASIDE_AFTER: Duration = Duration::from_secs(5);

/// Journaled messages refused on their own, and since when.
#[derive(Default)]
struct Refusals {
    since: HashMap<i64, Instant>,
}

impl Refusals {
    /// Split the messages refused at `now` into those refused for [`SET_ASIDE_AFTER`] (to set
    /// aside) and those to try again (counted).
    fn judge(&mut self, refused: Vec<(i64, String)>, now: Instant) -> (Vec<(i64, String)>, usize) {
        let mut aside = Vec::new();
        let mut again = 0;
        for (id, error) in refused {
            let since = *self.since.entry(id).or_insert(now);
            if now.duration_since(since) >= SET_ASIDE_AFTER {
                self.since.remove(&id);
                aside.push((id, error));
            } else {
                again += 1;
            }
        }
        (aside, again)
    }

    /// A message refused alone at `now`. Alone, a refusal does not tell the row from a
    /// database that refuses everything: only a row first refused while others of its batch
    /// went in is judged (set aside once refused for [`SET_ASIDE_AFTER`]). `None`: try it
    /// again.
    fn judge_alone(&mut self, id: i64, error: String, now: Instant) -> Option<(i64, String)> {
        if !self.since.contains_key(&id) {
            return None;
        }
        self.judge(vec![(id, error)], now).0.pop()
    }

    /// Messages stored (or found stored): no longer refused.
    fn forget(&mut self, ids: &[i64]) {
        if !self.since.is_empty() {
            for id in ids {
                self.since.remove(id);
            }
        }
    }
}

async fn move_forever(intake: Arc<Intake>, store: Arc<Store>, dispatch: Dispatch, batch: usize) {
    let mut backoff = Duration::from_millis(10);
    let mut refusals = Refusals::default();
    loop {
        match move_once(&intake, &store, &dispatch, batch.max(1), &mut refusals).await {
            Ok(true) => backoff = Duration::from_millis(10),
            Ok(false) => intake.woken(Duration::from_secs(1)).await,
            Err(e) => {
                intake.suspect();
                tracing::warn!(error = %e, "moving journaled messages failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One pass; true when it moved something.
async fn move_once(
    intake: &Intake,
    store: &Store,
    dispatch: &Dispatch,
    batch: usize,
    refusals: &mut Refusals,
) -> Result<bool, String> {
    let pending = intake.pending(batch).await.map_err(|e| e.to_string())?;
    let drained = pending.rows < batch;
    if pending.rows == 0 {
        intake.moved(pending.written, drained);
        return Ok(false);
    }
    let mut items = pending.messages;
    // A plan this build cannot read never will be: set aside at once.
    let mut failed = pending.unreadable;
    let ids: Vec<i64> = items.iter().map(|m| m.plan.msgid).collect();
    // Rows the main database already holds (a crash between a commit and its delete).
    let mut stored: Vec<i64> = intake
        .already_moved(&store.db, &ids)
        .await
        .map_err(|e| e.to_string())?;
    items.retain(|m| !stored.contains(&m.plan.msgid));
    let batch_ids: Vec<i64> = items.iter().map(|m| m.plan.msgid).collect();
    let mut retry_later = 0;
    match store_and_dispatch(store, dispatch, items, false).await {
        Ok(_) => stored.extend(batch_ids),
        Err(e) if batch_ids.len() <= 1 => {
            let Some(aside) = batch_ids
                .first()
                .and_then(|id| refusals.judge_alone(*id, e.clone(), Instant::now()))
            else {
                return Err(e);
            };
            failed.push(aside);
        }
        Err(e) => {
            // One at a time, to tell a row the main database refuses from a database that
            // refuses everything: a row that keeps failing while others go in is set aside
            // (`SET_ASIDE_AFTER`). The rows are read again (nothing of the batch was stored).
            tracing::warn!(error = %e, messages = batch_ids.len(), "storing a journaled batch failed; one at a time");
            let again = intake.pending(batch).await.map_err(|e| e.to_string())?;
            let mut refused = Vec::new();
            let mut went_in = 0;
            for item in again.messages {
                let id = item.plan.msgid;
                if !batch_ids.contains(&id) {
                    continue;
                }
                match store_and_dispatch(store, dispatch, vec![item], false).await {
                    Ok(_) => {
                        went_in += 1;
                        stored.push(id);
                    }
                    Err(e) => refused.push((id, e)),
                }
            }
            if went_in == 0 {
                return Err(e);
            }
            let (aside, later) = refusals.judge(refused, Instant::now());
            failed.extend(aside);
            retry_later = later;
        }
    }
    if !failed.is_empty() {
        for (id, error) in &failed {
            tracing::error!(msgid = id, error = %error, "a journaled message cannot be stored; kept in intake_failed");
        }
        metrics::counter!("msghub_intake_failed_total").increment(failed.len() as u64);
        intake
            .quarantine(&failed)
            .await
            .map_err(|e| e.to_string())?;
    }
    refusals.forget(&stored);
    intake.remove(&stored).await.map_err(|e| e.to_string())?;
    metrics::counter!("msghub_intake_moved_total").increment(stored.len() as u64);
    // A row left to try again is still in the journal: reads of it must wait for it.
    intake.moved(pending.written, drained && retry_later == 0);
    if retry_later > 0 {
        // Tried again shortly, not at once; the messages behind them keep moving.
        tracing::warn!(
            messages = retry_later,
            "journaled messages refused on their own; trying them again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_message_is_set_aside_only_once_refused_for_a_while() {
        let mut refusals = Refusals::default();
        let t0 = Instant::now();
        let refused = |ids: &[i64]| ids.iter().map(|i| (*i, "refused".to_string())).collect();
        assert_eq!(refusals.judge(refused(&[1, 2]), t0), (vec![], 2));
        let later = t0 + SET_ASIDE_AFTER - Duration::from_millis(1);
        assert_eq!(refusals.judge(refused(&[1, 2]), later), (vec![], 2));
        // 2 went in meanwhile: refused again, it starts over.
        refusals.forget(&[2]);
        let (aside, again) = refusals.judge(refused(&[1, 2]), t0 + SET_ASIDE_AFTER);
        assert_eq!(aside, vec![(1, "refused".to_string())]);
        assert_eq!(again, 1);
        assert!(!refusals.since.contains_key(&1), "forgotten once set aside");
    }

    #[test]
    fn a_message_refused_alone_is_judged_only_once_refused_beside_others() {
        let mut refusals = Refusals::default();
        let t0 = Instant::now();
        let late = t0 + SET_ASIDE_AFTER;
        // Never refused while others went in: alone, it says nothing.
        assert_eq!(refusals.judge_alone(1, "x".into(), late), None);
        assert!(refusals.since.is_empty());
        // Refused while others went in, then alone: set aside once refused long enough.
        refusals.judge(vec![(1, "x".into())], t0);
        assert_eq!(
            refusals.judge_alone(1, "x".into(), t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            refusals.judge_alone(1, "x".into(), late),
            Some((1, "x".into()))
        );
    }
}
