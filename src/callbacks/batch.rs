//! Per-destination batches: an item joins the batch of its (source, URL); a batch leaves when it
//! is full or `flush` after its first item. Pure bookkeeping with the clock passed in, so the
//! rules are tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

struct Open<T> {
    items: Vec<T>,
    first_at: Instant,
}

pub struct Batches<K, T> {
    max: usize,
    flush: Duration,
    open: HashMap<K, Open<T>>,
}

impl<K: Hash + Eq + Clone, T> Batches<K, T> {
    pub fn new(max: usize, flush: Duration) -> Batches<K, T> {
        Batches {
            max: max.max(1),
            flush,
            open: HashMap::new(),
        }
    }

    /// Add an item; the batch is returned when this item filled it.
    pub fn push(&mut self, key: &K, item: T, now: Instant) -> Option<Vec<T>> {
        let open = self.open.entry(key.clone()).or_insert_with(|| Open {
            items: Vec::new(),
            first_at: now,
        });
        open.items.push(item);
        if open.items.len() >= self.max {
            return self.open.remove(key).map(|o| o.items);
        }
        None
    }

    /// When the oldest open batch is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.first_at + self.flush).min()
    }

    /// Remove and return every batch due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(K, Vec<T>)> {
        let due: Vec<K> = self
            .open
            .iter()
            .filter(|(_, o)| o.first_at + self.flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.open.remove(&k).map(|o| (k, o.items)))
            .collect()
    }

    /// Remove and return every open batch (shutdown).
    pub fn take_all(&mut self) -> Vec<(K, Vec<T>)> {
        self.open.drain().map(|(k, o)| (k, o.items)).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_leaves_as_soon_as_it_is_full() {
        let t0 = Instant::now();
        let mut b: Batches<&str, u32> = Batches::new(3, Duration::from_secs(10));
        assert_eq!(b.push(&"a", 1, t0), None);
        assert_eq!(b.push(&"b", 10, t0), None);
        assert_eq!(b.push(&"a", 2, t0), None);
        assert_eq!(b.push(&"a", 3, t0), Some(vec![1, 2, 3]));
        // The next item of "a" opens a new batch; "b" is untouched.
        assert_eq!(b.push(&"a", 4, t0), None);
        let mut all = b.take_all();
        all.sort();
        assert_eq!(all, vec![("a", vec![4]), ("b", vec![10])]);
    }

    #[test]
    fn a_partial_batch_is_due_flush_after_its_first_item() {
        let t0 = Instant::now();
        let flush = Duration::from_secs(10);
        let mut b: Batches<&str, u32> = Batches::new(100, flush);
        assert_eq!(b.next_deadline(), None);
        b.push(&"a", 1, t0);
        b.push(&"b", 2, t0 + Duration::from_secs(4));
        b.push(&"a", 3, t0 + Duration::from_secs(9));
        assert_eq!(b.next_deadline(), Some(t0 + flush));
        assert!(b.take_due(t0 + Duration::from_millis(9_999)).is_empty());
        assert_eq!(b.take_due(t0 + flush), vec![("a", vec![1, 3])]);
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(14)));
        assert_eq!(
            b.take_due(t0 + Duration::from_secs(20)),
            vec![("b", vec![2])]
        );
        assert_eq!(b.next_deadline(), None);
    }
}
