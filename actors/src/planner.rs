//! `Planner`: turns accepted messages into shards and feeds the shard queues.
//!
//! Tag and broadcast audiences are paged with keyset queries into persisted shards a page at a
//! time, and the planner waits for queue space before creating more, so a 10-million-user
//! broadcast never has more than a few pages of shards in memory.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::plan::{Lane, MessagePlan, Shard};
use crate::shard::{MessageRun, ShardTask};
use crate::store::DispatchStore;

/// Start (or resume) dispatching a message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DispatchMessage {
    pub plan: MessagePlan,
    /// Shards created together with the message; `None` means "load the pending ones".
    pub shards: Option<Vec<Shard>>,
}

#[derive(Clone)]
pub struct ShardQueues {
    pub realtime: mpsc::Sender<ShardTask>,
    pub bulk: mpsc::Sender<ShardTask>,
}

impl ShardQueues {
    fn for_lane(&self, lane: Lane) -> &mpsc::Sender<ShardTask> {
        match lane {
            Lane::Realtime => &self.realtime,
            Lane::Bulk => &self.bulk,
        }
    }
}

pub struct Planner {
    pub store: Arc<dyn DispatchStore>,
    pub queues: ShardQueues,
    pub shard_size: u32,
    /// Shards created per planning transaction.
    pub page_shards: u32,
}

impl Actor for Planner {
    type Context = Context<Self>;
}

impl Supervised for Planner {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        metrics::counter!("msghub_actor_restarts_total", "actor" => "planner").increment(1);
    }
}

impl Handler<DispatchMessage> for Planner {
    type Result = ();

    fn handle(&mut self, msg: DispatchMessage, _ctx: &mut Self::Context) {
        let store = self.store.clone();
        let queues = self.queues.clone();
        let (shard_size, page_shards) = (self.shard_size, self.page_shards);
        tokio::spawn(async move {
            let plan = Arc::new(msg.plan);
            let run = MessageRun::new(plan.msgid, store.clone());
            let mut known = msg.shards;
            let mut delay = Duration::from_millis(100);
            loop {
                match drive(
                    &*store,
                    &queues,
                    &plan,
                    &run,
                    known.take(),
                    shard_size,
                    page_shards,
                )
                .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(msgid = plan.msgid, error = %e, "planning failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}

/// Queue the known or pending shards, then keep planning until the audience is covered.
/// Safe to call again after an error: queued shards are counted once, and planning continues
/// from the persisted cursor.
async fn drive(
    store: &dyn DispatchStore,
    queues: &ShardQueues,
    plan: &Arc<MessagePlan>,
    run: &Arc<MessageRun>,
    known: Option<Vec<Shard>>,
    shard_size: u32,
    page_shards: u32,
) -> Result<(), String> {
    let tx = queues.for_lane(plan.lane);
    let first_attempt = known.is_some() || !run.started();
    if first_attempt {
        let shards = match known {
            Some(shards) => shards,
            None => store
                .pending_shards(plan.msgid)
                .await
                .map_err(|e| e.to_string())?,
        };
        for shard in shards {
            enqueue(tx, plan, run, shard).await?;
        }
        run.mark_started();
    }
    let mut planned = plan.is_single_shard()
        || store
            .planning_state(plan.msgid)
            .await
            .map_err(|e| e.to_string())?;
    while !planned {
        let page = store
            .plan_shards(plan, shard_size, page_shards)
            .await
            .map_err(|e| e.to_string())?;
        for shard in page.shards {
            enqueue(tx, plan, run, shard).await?;
        }
        planned = page.complete;
    }
    run.planning_complete().await;
    Ok(())
}

async fn enqueue(
    tx: &mpsc::Sender<ShardTask>,
    plan: &Arc<MessagePlan>,
    run: &Arc<MessageRun>,
    shard: Shard,
) -> Result<(), String> {
    run.shard_added();
    tx.send(ShardTask {
        plan: plan.clone(),
        shard,
        run: run.clone(),
    })
    .await
    .map_err(|_| "shard queue closed".to_string())
}
