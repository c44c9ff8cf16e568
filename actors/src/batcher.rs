//! Group commit: many callers' items written in one storage call.
//!
//! Callers submit an item and await its own result; a single writer task drains whatever is
//! queued (up to `max_batch`), hands the whole batch to the handler, and answers every caller.
//! Under load, batches grow by themselves; when idle, a lone item is written at once, so there
//! is no fixed linger delay on the latency path.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// Why an item was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("the writer is shutting down")]
    Closed,
    #[error("{0}")]
    Failed(Arc<str>),
}

type Envelope<T, R> = (T, oneshot::Sender<Result<R, BatchError>>);

/// The submitting side of a group-commit writer; cheap to clone.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<Envelope<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

/// One writer per lane: real-time work (a transactional send's outcomes and finish) has a
/// queue of its own and never waits behind a blast's queued batches.
pub struct LaneWriters<T, R> {
    pub realtime: Batcher<T, R>,
    pub bulk: Batcher<T, R>,
}

impl<T, R> Clone for LaneWriters<T, R> {
    fn clone(&self) -> Self {
        LaneWriters {
            realtime: self.realtime.clone(),
            bulk: self.bulk.clone(),
        }
    }
}

impl<T, R> LaneWriters<T, R> {
    /// A writer for each lane, made by `writer`.
    pub fn per_lane(writer: impl Fn(crate::plan::Lane) -> Batcher<T, R>) -> Self {
        LaneWriters {
            realtime: writer(crate::plan::Lane::Realtime),
            bulk: writer(crate::plan::Lane::Bulk),
        }
    }

    /// Both lanes on one writer.
    #[cfg(test)]
    pub fn shared(writer: Batcher<T, R>) -> Self {
        LaneWriters {
            realtime: writer.clone(),
            bulk: writer,
        }
    }

    pub fn lane(&self, lane: crate::plan::Lane) -> &Batcher<T, R> {
        match lane {
            crate::plan::Lane::Realtime => &self.realtime,
            crate::plan::Lane::Bulk => &self.bulk,
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Start the writer task. `handler` receives a batch and returns one result per item, in
    /// order; an `Err` fails every item of the batch.
    pub fn spawn<F, Fut>(name: &'static str, capacity: usize, max_batch: usize, handler: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, String>> + Send,
    {
        Batcher::spawn_weighted(name, capacity, max_batch, max_batch, |_| 1, handler)
    }

    /// Like [`Batcher::spawn`], but a batch also stops growing at `max_weight` (an item alone
    /// may exceed it): items that stand for many rows (a job's outcomes, a shard's users) keep
    /// each transaction short, so a writer waiting behind one does not wait long.
    pub fn spawn_weighted<F, Fut, W>(
        name: &'static str,
        capacity: usize,
        max_batch: usize,
        max_weight: usize,
        weight: W,
        handler: F,
    ) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, String>> + Send,
        W: Fn(&T) -> usize + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Envelope<T, R>>(capacity.max(1));
        let max_batch = max_batch.max(1);
        let max_weight = max_weight.max(1);
        tokio::spawn(async move {
            let mut carry: Option<Envelope<T, R>> = None;
            loop {
                let first = match carry.take() {
                    Some(e) => e,
                    None => match rx.recv().await {
                        Some(e) => e,
                        None => break,
                    },
                };
                let mut total = weight(&first.0);
                let mut buf: Vec<Envelope<T, R>> = vec![first];
                while buf.len() < max_batch && total < max_weight {
                    let Ok(next) = rx.try_recv() else {
                        break;
                    };
                    let w = weight(&next.0);
                    if total + w > max_weight {
                        carry = Some(next);
                        break;
                    }
                    total += w;
                    buf.push(next);
                }
                let (items, replies): (Vec<T>, Vec<_>) = buf.into_iter().unzip();
                let n = items.len();
                metrics::histogram!("msghub_batch_size_items", "writer" => name).record(n as f64);
                match handler(items).await {
                    Ok(results) if results.len() == n => {
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Ok(results) => {
                        let err = BatchError::Failed(
                            format!(
                                "{name}: handler returned {} results for {n} items",
                                results.len()
                            )
                            .into(),
                        );
                        for reply in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                    Err(e) => {
                        tracing::error!(writer = name, error = %e, "batch write failed");
                        let err = BatchError::Failed(e.into());
                        for reply in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                }
            }
        });
        Batcher { tx }
    }

    /// Submit one item and wait until its batch is written. Waits for queue space when the
    /// writer is saturated (backpressure to the caller).
    pub async fn submit(&self, item: T) -> Result<R, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| BatchError::Closed)?;
        rx.await.map_err(|_| BatchError::Closed)?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_submissions_share_batches_and_each_gets_its_own_result() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b: Batcher<u32, u32> = Batcher::spawn("test", 1024, 64, move |items: Vec<u32>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let handles: Vec<_> = (0..500u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.submit(i).await.unwrap()) })
            })
            .collect();
        for h in handles {
            let (i, r) = h.await.unwrap();
            assert_eq!(r, i * 2);
        }
        assert!(calls.load(Ordering::SeqCst) < 500, "items were not grouped");
    }

    #[tokio::test]
    async fn weighted_batches_stop_at_their_weight_and_carry_the_rest_over() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b: Batcher<usize, ()> = Batcher::spawn_weighted(
            "test",
            1024,
            64,
            1000,
            |w: &usize| *w,
            move |items: Vec<usize>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(items.iter().sum::<usize>());
                    tokio::task::yield_now().await;
                    Ok(vec![(); items.len()])
                }
            },
        );
        // 40 items of 400: at most two fit in a batch; a lone 1500 still goes through.
        let mut handles: Vec<_> = (0..40)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(400).await.unwrap() })
            })
            .collect();
        let big = b.clone();
        handles.push(tokio::spawn(async move { big.submit(1500).await.unwrap() }));
        for h in handles {
            h.await.unwrap();
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40 * 400 + 1500);
        assert!(sizes.iter().all(|w| *w <= 1000 || *w == 1500), "{sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_item_in_it() {
        let b: Batcher<u32, u32> = Batcher::spawn("test", 8, 8, |_items: Vec<u32>| async {
            Err("disk full".to_string())
        });
        let err = b.submit(1).await.unwrap_err();
        assert!(matches!(err, BatchError::Failed(m) if m.contains("disk full")));
    }
}
