//! Bounded counting structures for the log watch: a sliding-window counter and a
//! queue-id map. Both are pure (time is a plain argument) so tests need no clock.

use std::collections::{HashMap, VecDeque};

/// Upper bound on buckets per counter, so a config typo cannot allocate gigabytes.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("a sliding counter needs 1 to {MAX_BUCKETS} buckets, not {0}")]
    Buckets(usize),
    #[error("a bucket must be at least one second wide")]
    BucketWidth,
    #[error("a queue map needs a capacity of at least 1")]
    Capacity,
}

/// Counts events over the last `buckets × bucket_secs` seconds, e.g. 24 buckets of one
/// hour. Each slot remembers which bucket (time / width) it holds, so stale slots are
/// recognised without a background sweep. The window moves in whole buckets.
#[derive(Debug, Clone)]
pub struct SlidingCounter {
    bucket_secs: u64,
    /// (bucket number, count) per slot; slot = bucket number % len.
    slots: Vec<(u64, u64)>,
}

impl SlidingCounter {
    pub fn new(buckets: usize, bucket_secs: u64) -> Result<Self, WindowError> {
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(WindowError::Buckets(buckets));
        }
        if bucket_secs == 0 {
            return Err(WindowError::BucketWidth);
        }
        Ok(Self {
            bucket_secs,
            slots: vec![(0, 0); buckets],
        })
    }

    /// Adds `n` at time `now` (seconds). Counts saturate instead of wrapping.
    pub fn add(&mut self, now: u64, n: u64) {
        let bucket = now / self.bucket_secs;
        let len = self.slots.len() as u64;
        if let Some(slot) = self.slots.get_mut((bucket % len) as usize) {
            if slot.0 != bucket {
                *slot = (bucket, 0);
            }
            slot.1 = slot.1.saturating_add(n);
        }
    }

    /// Sum over the window ending at `now`. Buckets from after `now` (the clock went
    /// back) are left out rather than counted twice.
    pub fn sum(&self, now: u64) -> u64 {
        let bucket = now / self.bucket_secs;
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|(b, _)| *b <= bucket && bucket - *b < len)
            .fold(0, |sum, (_, count)| sum.saturating_add(*count))
    }

    pub(crate) fn window_secs(&self) -> u64 {
        self.bucket_secs.saturating_mul(self.slots.len() as u64)
    }
}

/// Queue id → small value (such as the list a message belongs to), bounded: when
/// full, the oldest insertion goes. Postfix logs `removed` for finished messages, but
/// a lost line must not leak memory, hence the bound.
#[derive(Debug, Clone)]
pub struct QueueMap<V> {
    capacity: usize,
    /// Value and the insertion number that `order` refers to.
    entries: HashMap<String, (u64, V)>,
    /// Insertion order; entries whose number no longer matches are stale and skipped.
    order: VecDeque<(String, u64)>,
    next_seq: u64,
}

impl<V> QueueMap<V> {
    pub fn new(capacity: usize) -> Result<Self, WindowError> {
        if capacity == 0 {
            return Err(WindowError::Capacity);
        }
        Ok(Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        })
    }

    /// Inserts or replaces (a replaced key counts as newly inserted). Returns the
    /// previous value for `queue_id`.
    pub fn insert(&mut self, queue_id: String, value: V) -> Option<V> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let previous = self
            .entries
            .insert(queue_id.clone(), (seq, value))
            .map(|(_, v)| v);
        self.order.push_back((queue_id, seq));
        while self.entries.len() > self.capacity {
            let Some((oldest, oldest_seq)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&oldest)
                .is_some_and(|(s, _)| *s == oldest_seq)
            {
                self.entries.remove(&oldest);
            }
        }
        // Removals and replacements leave stale entries behind; keep them bounded.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|(s, _)| s == seq));
        }
        previous
    }

    pub fn get(&self, queue_id: &str) -> Option<&V> {
        self.entries.get(queue_id).map(|(_, v)| v)
    }

    pub fn remove(&mut self, queue_id: &str) -> Option<V> {
        self.entries.remove(queue_id).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    #[test]
    fn counter_sums_over_the_window() {
        let mut c = SlidingCounter::new(24, HOUR).expect("counter");
        let t0 = 1_800_000_000;
        // (time offset, added, sum expected right after)
        let steps = [
            (0, 5, 5),
            (10, 1, 6),
            (HOUR, 2, 8),
            (23 * HOUR, 1, 9),
            (24 * HOUR, 0, 3),
            (25 * HOUR, 3, 4),
        ];
        for (offset, n, want) in steps {
            c.add(t0 + offset, n);
            assert_eq!(c.sum(t0 + offset), want, "at +{offset}s");
        }
        assert_eq!(c.sum(t0 + 100 * HOUR), 0);
        assert_eq!(c.window_secs(), 24 * HOUR);
    }

    #[test]
    fn counter_survives_odd_times_and_sizes() {
        let mut c = SlidingCounter::new(3, 10).expect("counter");
        c.add(100, 1);
        assert_eq!(
            c.sum(50),
            0,
            "a clock that went back ignores the future bucket"
        );
        c.add(50, 2);
        assert_eq!(c.sum(50), 2);
        c.add(u64::MAX, u64::MAX);
        c.add(u64::MAX, 1);
        assert_eq!(c.sum(u64::MAX), u64::MAX);
        assert_eq!(
            SlidingCounter::new(0, 1).err(),
            Some(WindowError::Buckets(0))
        );
        assert_eq!(
            SlidingCounter::new(MAX_BUCKETS + 1, 1).err(),
            Some(WindowError::Buckets(MAX_BUCKETS + 1))
        );
        assert_eq!(
            SlidingCounter::new(1, 0).err(),
            Some(WindowError::BucketWidth)
        );
    }

    #[test]
    fn queue_map_evicts_the_oldest_insertion() {
        let mut m = QueueMap::new(2).expect("map");
        assert_eq!(m.insert("A1".into(), "list-a"), None);
        assert_eq!(m.insert("B2".into(), "list-b"), None);
        assert_eq!(
            m.insert("A1".into(), "list-a2"),
            Some("list-a"),
            "replacing refreshes A1"
        );
        m.insert("C3".into(), "list-c");
        assert_eq!(
            (m.get("A1"), m.get("B2"), m.get("C3")),
            (Some(&"list-a2"), None, Some(&"list-c"))
        );
        assert_eq!(m.remove("A1"), Some("list-a2"));
        assert_eq!(m.remove("A1"), None);
        assert_eq!(m.len(), 1);
        assert_eq!(QueueMap::<u8>::new(0).err(), Some(WindowError::Capacity));
    }

    #[test]
    fn queue_map_stays_bounded_under_churn() {
        let mut m = QueueMap::new(3).expect("map");
        for i in 0..10_000u32 {
            m.insert(format!("Q{i}"), i);
            if i % 2 == 0 {
                m.remove(&format!("Q{i}"));
            } else {
                m.insert(format!("Q{i}"), i + 1);
            }
            assert!(
                m.len() <= 3 && m.order.len() <= 7,
                "len {} order {}",
                m.len(),
                m.order.len()
            );
        }
        assert_eq!(m.get("Q9999"), Some(&10_000));
        assert!(!m.is_empty());
    }
}
