//! A fixed-capacity map from 64-bit key hashes to one `u64`, evicting the least recently used.
//!
//! Written here rather than taken from `lru` or `hashlink` because of memory: those keep one
//! heap node per key plus a hash map of pointers (roughly 80 bytes per key before the key
//! itself), while the budget is 64 MiB for 10^6 keys. This table needs 24 bytes per key plus
//! 8–16 bytes of open-addressing slots:
//!
//! - `entries`: a dense array of `{id, value, prev, next}`; `prev`/`next` thread an intrusive
//!   doubly-linked recency list through it (head = most recent). Entries are never freed, only
//!   reused for the newest key when the least recent one is evicted, so no free list is needed.
//! - `slots`: linear probing over `entry index + 1` (0 = empty, so the zeroed allocation stays
//!   untouched until used), sized to a power of two at least twice the capacity (load ≤ 1/2).
//!   Removal uses backward-shift deletion, so there are no tombstones and probes stay short.
//!
//! Every operation is O(1) expected. Ids are already uniform hashes, so the low bits index the
//! slots directly.
//!
//! Invariants (they make the indexing below panic-free): every slot position is masked with
//! `mask = slots.len() − 1`; every non-zero slot holds `i + 1` with `i < entries.len()`; every
//! list link is `NIL` or `< entries.len()`.

/// End of the recency list.
const NIL: u32 = u32::MAX;

/// Largest capacity a table accepts: entry indices are `u32`, and `NIL` is reserved.
pub(super) const MAX_CAPACITY: usize = 1 << 30;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    value: u64,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
pub(super) struct LruTable {
    slots: Vec<u32>,
    mask: usize,
    entries: Vec<Entry>,
    head: u32,
    tail: u32,
    capacity: usize,
}

/// Where a probe for an id ended.
enum Probe {
    Found(u32),
    Vacant(usize),
}

impl LruTable {
    /// A table holding at most `capacity` ids (clamped to `1..=MAX_CAPACITY`).
    ///
    /// The slot array is allocated zeroed up front (the OS maps it lazily); entries grow as
    /// keys arrive.
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let slot_count = (capacity * 2).next_power_of_two();
        Self {
            slots: vec![0; slot_count],
            mask: slot_count - 1,
            entries: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value for `id`, inserted as `default` if absent, and marked most recently used.
    ///
    /// Inserting into a full table first evicts the least recently used id.
    pub(super) fn get_or_insert(&mut self, id: u64, default: u64) -> &mut u64 {
        let index = match self.probe(id) {
            Probe::Found(index) => {
                self.unlink(index);
                index
            }
            Probe::Vacant(position) if self.entries.len() < self.capacity => {
                let index = self.entries.len() as u32;
                self.grow_entries();
                self.entries.push(Entry {
                    id,
                    value: default,
                    prev: NIL,
                    next: NIL,
                });
                self.slots[position] = index + 1;
                index
            }
            Probe::Vacant(_) => {
                let index = self.tail;
                self.unlink(index);
                let evicted = self.entries[index as usize].id;
                self.remove_slot(evicted);
                // The shift in remove_slot may have moved the vacancy: probe again.
                if let Probe::Vacant(position) = self.probe(id) {
                    self.slots[position] = index + 1;
                }
                self.entries[index as usize] = Entry {
                    id,
                    value: default,
                    prev: NIL,
                    next: NIL,
                };
                index
            }
        };
        self.push_front(index);
        &mut self.entries[index as usize].value
    }

    /// Ids from most to least recently used (tests and diagnostics).
    #[cfg(test)]
    pub(super) fn ids_by_recency(&self) -> Vec<u64> {
        let mut ids = Vec::with_capacity(self.entries.len());
        let mut cursor = self.head;
        while cursor != NIL {
            let entry = self.entries[cursor as usize];
            ids.push(entry.id);
            cursor = entry.next;
        }
        ids
    }

    /// Grows `entries` in steps that never overshoot the capacity (plain doubling could
    /// allocate almost twice what the table may ever hold).
    fn grow_entries(&mut self) {
        let len = self.entries.len();
        if len == self.entries.capacity() {
            let step = len.max(16).min(self.capacity - len);
            self.entries.reserve_exact(step);
        }
    }

    fn home(&self, id: u64) -> usize {
        (id as usize) & self.mask
    }

    fn probe(&self, id: u64) -> Probe {
        let mut position = self.home(id);
        // Load ≤ 1/2 guarantees an empty slot, so this ends within slots.len() steps.
        loop {
            match self.slots[position] {
                0 => return Probe::Vacant(position),
                slot => {
                    let index = slot - 1;
                    if self.entries[index as usize].id == id {
                        return Probe::Found(index);
                    }
                }
            }
            position = (position + 1) & self.mask;
        }
    }

    /// Removes `id`'s slot, shifting later members of its probe run back (Knuth's algorithm R).
    fn remove_slot(&mut self, id: u64) {
        let mut hole = self.home(id);
        while self.slots[hole] != 0 && self.entries[(self.slots[hole] - 1) as usize].id != id {
            hole = (hole + 1) & self.mask;
        }
        if self.slots[hole] == 0 {
            return;
        }
        let mut scan = hole;
        loop {
            scan = (scan + 1) & self.mask;
            let slot = self.slots[scan];
            if slot == 0 {
                break;
            }
            let home = self.home(self.entries[(slot - 1) as usize].id);
            // The member at `scan` may fill the hole only if its home is not cyclically in
            // (hole, scan]; otherwise moving it would put it before its home.
            let stays = if hole <= scan {
                hole < home && home <= scan
            } else {
                hole < home || home <= scan
            };
            if !stays {
                self.slots[hole] = slot;
                hole = scan;
            }
        }
        self.slots[hole] = 0;
    }

    fn unlink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.entries[index as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, index: u32) {
        let old_head = self.head;
        {
            let entry = &mut self.entries[index as usize];
            entry.prev = NIL;
            entry.next = old_head;
        }
        if old_head == NIL {
            self.tail = index;
        } else {
            self.entries[old_head as usize].prev = index;
        }
        self.head = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// Reference model: a deque ordered most recent first.
    struct Model {
        capacity: usize,
        order: VecDeque<(u64, u64)>,
    }

    impl Model {
        fn get_or_insert(&mut self, id: u64, default: u64) -> u64 {
            let value = match self.order.iter().position(|(k, _)| *k == id) {
                Some(at) => self.order.remove(at).map_or(default, |(_, v)| v),
                None => {
                    if self.order.len() == self.capacity {
                        self.order.pop_back();
                    }
                    default
                }
            };
            self.order.push_front((id, value));
            value
        }

        fn set_front(&mut self, value: u64) {
            if let Some(front) = self.order.front_mut() {
                front.1 = value;
            }
        }
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut table = LruTable::new(3);
        for id in [1, 2, 3] {
            *table.get_or_insert(id, 0) = id * 10;
        }
        // Touch 1: now 2 is the least recent.
        assert_eq!(*table.get_or_insert(1, 0), 10);
        *table.get_or_insert(4, 0) = 40;
        assert_eq!(table.ids_by_recency(), vec![4, 1, 3]);
        assert_eq!(table.len(), 3);
        // 2 was evicted: it comes back with the default value, evicting 3.
        assert_eq!(*table.get_or_insert(2, 7), 7);
        assert_eq!(table.ids_by_recency(), vec![2, 4, 1]);
    }

    #[test]
    fn colliding_homes_survive_removal() {
        // Same low bits: all share one home and form a single probe run that wraps around.
        let mask = LruTable::new(4).mask as u64;
        let ids: Vec<u64> = (1..=6).map(|k| (k << 40) | mask).collect();
        let mut table = LruTable::new(4);
        for (n, id) in ids.iter().enumerate() {
            *table.get_or_insert(*id, 0) = n as u64;
        }
        // Only the last four remain, each still findable with its own value.
        for (n, id) in ids.iter().enumerate().skip(2) {
            assert_eq!(*table.get_or_insert(*id, 99), n as u64);
        }
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn capacity_is_clamped() {
        let mut table = LruTable::new(0);
        *table.get_or_insert(1, 0) = 1;
        *table.get_or_insert(2, 0) = 2;
        assert_eq!(table.ids_by_recency(), vec![2]);
    }

    proptest! {
        #[test]
        fn matches_model(
            capacity in 1usize..12,
            // Few distinct ids and some forced home collisions (low bits from a tiny range).
            ops in proptest::collection::vec((0u64..24, 0u64..4, any::<u64>()), 1..400),
        ) {
            let mut table = LruTable::new(capacity);
            let mut model = Model { capacity, order: VecDeque::new() };
            for (high, low, value) in ops {
                let id = (high << 32) | low;
                let got = *table.get_or_insert(id, 0);
                let want = model.get_or_insert(id, 0);
                prop_assert_eq!(got, want);
                *table.get_or_insert(id, 0) = value;
                model.set_front(value);
                let want_order: Vec<u64> = model.order.iter().map(|(k, _)| *k).collect();
                prop_assert_eq!(table.ids_by_recency(), want_order);
                prop_assert!(table.len() <= capacity);
            }
        }
    }
}
