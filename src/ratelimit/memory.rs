//! The in-process store: GCRA state per key, bounded, least recently used keys evicted first.
//!
//! Keys are not stored: each is reduced to a 64-bit SipHash under a random per-store key
//! (`std::hash::RandomState`), which keeps 10^6 keys at about 32 MiB whatever their length.
//! Two keys with the same hash share one bucket, so a collision can only make a limit stricter
//! for the two keys involved. With n keys the chance of any collision is about n²/2^65
//! (3·10^-8 at 10^6 keys), and since the hash key is secret an attacker cannot aim for one.
//!
//! The keys are spread over up to [`MAX_SHARDS`] shards by hash, each behind its own mutex and
//! holding `max_keys / shards` keys; a decision locks one shard for a hash probe and a few
//! pointer updates. Recency is therefore exact within a shard and approximate across shards.
//!
//! Eviction resets a key to "idle", so a flood of distinct keys can flush a busy one; that is
//! the price of bounded memory (fault R5), limited by aggregating sources by prefix upstream
//! and by per-list backstops.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::backend::MAX_KEY_LEN;
use super::clock::{Clock, MonotonicClock};
use super::gcra::{Decision, Quota, decide};
use super::lru::{LruTable, MAX_CAPACITY};

/// Most shards a store uses. More only helps with more cores than listwarden expects.
pub(crate) const MAX_SHARDS: usize = 64;

/// Fewest keys per shard before the store uses fewer shards, so small stores stay exact LRU.
const MIN_KEYS_PER_SHARD: usize = 1024;

/// Most keys a store accepts (`max_keys` is clamped to this).
pub const MAX_KEYS: usize = MAX_CAPACITY;

/// Bounded in-memory GCRA store. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// One shard's lock and table, on its own cache lines so that threads working on different
/// shards do not contend on the line holding a neighbour's lock.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<LruTable>);

#[derive(Debug)]
struct Inner {
    shards: Box<[Shard]>,
    /// `64 − log2(shards)`: the shard is the top bits of the hash (the table uses the low ones).
    shard_shift: u32,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    len: AtomicUsize,
    max_keys: usize,
}

impl MemoryStore {
    /// A store of at most `max_keys` keys on the monotonic clock, sharded automatically.
    pub fn new(max_keys: usize) -> Self {
        Self::with_clock(max_keys, Arc::new(MonotonicClock::new()))
    }

    /// As [`MemoryStore::new`] with the given clock.
    pub fn with_clock(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let max_keys = max_keys.clamp(1, MAX_KEYS);
        let shards = (max_keys / MIN_KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        Self::with_shards(max_keys, shards, clock)
    }

    /// As [`MemoryStore::with_clock`] with an explicit shard count, rounded down to a power of
    /// two and clamped to `1..=min(MAX_SHARDS, max_keys)`. One shard gives exact LRU order.
    pub(crate) fn with_shards(max_keys: usize, shards: usize, clock: Arc<dyn Clock>) -> Self {
        let max_keys = max_keys.clamp(1, MAX_KEYS);
        let shards = shards.clamp(1, MAX_SHARDS.min(max_keys));
        // Round down to a power of two so the shard is a bit field of the hash.
        let shards = 1usize << shards.ilog2();
        let per_shard = max_keys / shards;
        let tables: Vec<Shard> = (0..shards)
            .map(|_| Shard(Mutex::new(LruTable::new(per_shard))))
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards: tables.into_boxed_slice(),
                shard_shift: 64 - shards.ilog2(),
                hasher: RandomState::new(),
                clock,
                len: AtomicUsize::new(0),
                max_keys: per_shard * shards,
            }),
        }
    }

    /// Decides one request for `key` under `quota`, and records it if allowed.
    pub fn check(&self, key: &str, quota: &Quota) -> Decision {
        let inner = &*self.inner;
        let id = inner.hasher.hash_one(key);
        let shard = if inner.shard_shift >= 64 {
            0
        } else {
            (id >> inner.shard_shift) as usize
        };
        let Some(Shard(mutex)) = inner.shards.get(shard) else {
            // Unreachable: the shift leaves exactly log2(shards) bits.
            return Decision::ALLOW;
        };
        // A panic elsewhere while holding the lock cannot leave a table half-updated in a way
        // that matters more than losing rate state, so poisoning is ignored.
        let mut table = mutex.lock().unwrap_or_else(PoisonError::into_inner);
        let now = inner.clock.now();
        let before = table.len();
        let tat = table.get_or_insert(id, 0);
        // 0 is "absent": a fresh entry, or a key that was never allowed.
        let stored = (*tat != 0).then_some(*tat);
        let (decision, next) = decide(stored, now, quota);
        *tat = next;
        if table.len() > before {
            inner.len.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    /// Decides a request's budgets in order, stopping at the first denial (see
    /// [`Store::check_all`](super::Store::check_all)); an over-long key is allowed uncharged.
    pub(crate) fn check_all(&self, budgets: &[(&str, Quota)]) -> Vec<Decision> {
        let mut decisions = Vec::with_capacity(budgets.len());
        for (key, quota) in budgets {
            let decision = if key.len() > MAX_KEY_LEN {
                Decision::ALLOW
            } else {
                self.check(key, quota)
            };
            decisions.push(decision);
            if !decision.allowed {
                break;
            }
        }
        decisions
    }

    /// Keys currently tracked (for the `listwarden_ratelimit_keys` gauge).
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound actually applied: `max_keys` rounded down to a multiple of the shard count.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys
    }

    #[cfg(test)]
    fn shards(&self) -> usize {
        self.inner.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::ManualClock;
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn quota(count: u32, period: Duration, burst: u32) -> Quota {
        Quota::new(count, period, burst).unwrap_or_else(|e| panic!("{e}"))
    }

    fn store(max_keys: usize, shards: usize) -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_000 * MS);
        let store = MemoryStore::with_shards(max_keys, shards, Arc::new(clock.clone()));
        (store, clock)
    }

    #[test]
    fn burst_deny_then_refill() {
        let (store, clock) = store(100, 1);
        let q = quota(10, Duration::from_secs(1), 3);
        let key = "net:203.0.113.0/24";
        for k in 1..=3 {
            assert!(store.check(key, &q).allowed, "request {k}");
        }
        let denied = store.check(key, &q);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_millis(100));
        clock.advance(Duration::from_millis(99));
        assert!(!store.check(key, &q).allowed);
        clock.advance(Duration::from_millis(1));
        assert!(store.check(key, &q).allowed);
        assert!(!store.check(key, &q).allowed);
        // Other keys are independent.
        assert!(
            store
                .check("list:members@lists.example.org:invalid", &q)
                .allowed
        );
        // Long idle: a full burst again.
        clock.advance(Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(store.check(key, &q).allowed);
        }
        assert!(!store.check(key, &q).allowed);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_clock_at_zero_still_counts() {
        // A fresh key allowed at now = 0 stores TAT = T, never 0, so it is not mistaken for absent.
        let clock = ManualClock::new(0);
        let store = MemoryStore::with_shards(10, 1, Arc::new(clock));
        let q = quota(1, Duration::from_secs(1), 1);
        assert!(store.check("k", &q).allowed);
        assert!(!store.check("k", &q).allowed);
    }

    #[test]
    fn evicts_least_recently_used_key() {
        let (store, _clock) = store(3, 1);
        let q = quota(1, Duration::from_secs(3600), 1);
        for key in ["a", "b", "c"] {
            assert!(store.check(key, &q).allowed);
        }
        // "a" is touched (denied still counts as use), so "b" is the least recent.
        assert!(!store.check("a", &q).allowed);
        assert!(store.check("d", &q).allowed);
        assert_eq!(store.len(), 3);
        // "b" was forgotten and starts afresh (which evicts "c"); "a" and "d" are remembered.
        assert!(store.check("b", &q).allowed);
        assert!(!store.check("a", &q).allowed);
        assert!(!store.check("d", &q).allowed);
        assert!(store.check("c", &q).allowed, "c was evicted by b");
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn bound_holds_across_shards() {
        let (store, _clock) = store(64 * 100, 64);
        assert_eq!(store.shards(), 64);
        let q = quota(1, Duration::from_secs(60), 1);
        for n in 0..50_000 {
            store.check(&format!("net:{n}"), &q);
        }
        assert!(store.len() <= store.max_keys());
        assert_eq!(store.max_keys(), 6_400);
        // Every shard fills: with 50k uniform keys over 64 shards none stays below capacity.
        assert_eq!(store.len(), 6_400);
    }

    #[test]
    fn shard_count_is_sanitised() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        let cases = [
            // (max_keys, shards) -> shards
            ((10, 0), 1),
            ((10, 3), 2),
            ((10, 1000), 8),
            ((1_000_000, 1000), MAX_SHARDS),
        ];
        for ((max_keys, shards), want) in cases {
            let store = MemoryStore::with_shards(max_keys, shards, clock.clone());
            assert_eq!(store.shards(), want, "max_keys={max_keys} shards={shards}");
        }
        assert_eq!(MemoryStore::with_clock(100, clock.clone()).shards(), 1);
        assert_eq!(MemoryStore::with_clock(1 << 20, clock).shards(), MAX_SHARDS);
    }

    #[test]
    fn concurrent_threads_never_exceed_burst() {
        let (store, _clock) = store(10_000, 16);
        let q = quota(1, Duration::from_secs(3600), 37);
        let allowed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        if store.check("list:x", &q).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 37);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_tasks_never_exceed_burst() {
        let (store, clock) = store(10_000, 16);
        let q = quota(10, Duration::from_secs(1), 25);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0usize;
                for _ in 0..20 {
                    if store.check("net:198.51.100.0/24", &q).allowed {
                        allowed += 1;
                    }
                    tokio::task::yield_now().await;
                }
                allowed
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(total, 25);
        clock.advance(Duration::from_millis(100));
        assert!(store.check("net:198.51.100.0/24", &q).allowed);
    }

    /// `check_all` decides exactly as `check` once per budget until one denies (the caller's
    /// loop before there was `check_all`), on two stores fed the same requests.
    #[test]
    fn check_all_matches_sequential_checks() {
        let (all, clock_all) = store(1_000, 1);
        let (one, clock_one) = store(1_000, 1);
        let quotas = [
            quota(5, Duration::from_secs(1), 4),
            quota(2, Duration::from_secs(1), 3),
            quota(1, Duration::from_secs(1), 6),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut denied_at = [0usize; 4];
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let keys = [
                format!("net:{}", seed % 3),
                format!("list:{}", (seed >> 8) % 2),
                format!("addr:{}", (seed >> 16) % 5),
            ];
            let budgets: Vec<(&str, Quota)> = keys.iter().map(String::as_str).zip(quotas).collect();
            let got = all.check_all(&budgets);
            let mut want = Vec::new();
            for (key, q) in &budgets {
                let d = one.check(key, q);
                want.push(d);
                if !d.allowed {
                    break;
                }
            }
            assert_eq!(got, want);
            denied_at[got.iter().position(|d| !d.allowed).unwrap_or(3)] += 1;
            let step = Duration::from_millis((seed >> 24) % 120);
            clock_all.advance(step);
            clock_one.advance(step);
        }
        // Every budget denied first some of the time, and all passed some of the time.
        assert!(denied_at.iter().all(|&n| n > 0), "{denied_at:?}");
        // An over-long key is allowed and charges nothing.
        let long = "x".repeat(MAX_KEY_LEN + 1);
        let one_shot = quota(1, Duration::from_secs(3600), 1);
        for _ in 0..3 {
            assert_eq!(
                all.check_all(&[(long.as_str(), one_shot)]),
                vec![Decision::ALLOW]
            );
        }
    }

    /// RSS at 10^6 distinct keys; run with
    /// `cargo test --release -- --ignored --nocapture rss_at_one_million_keys`.
    #[test]
    #[ignore = "measurement; run alone in release mode"]
    fn rss_at_one_million_keys() {
        const KEYS: usize = 1_000_000;
        let before = vm_rss_kib();
        let store = MemoryStore::new(KEYS);
        let q = quota(10, Duration::from_secs(1), 5);
        let mut key = String::with_capacity(64);
        for n in 0..KEYS {
            key.clear();
            use std::fmt::Write as _;
            let _ = write!(key, "list:members{n}@lists.example.org:invalid");
            store.check(&key, &q);
        }
        let after = vm_rss_kib();
        eprintln!(
            "keys={} shards={} VmRSS before={before} KiB after={after} KiB delta={} KiB",
            store.len(),
            store.shards(),
            after.saturating_sub(before)
        );
        // Collisions in 10^6 keys are ~3e-8 likely; the shards may fill unevenly.
        assert!(store.len() > KEYS * 99 / 100);
        assert!(after < 64 * 1024, "VmRSS {after} KiB is not under 64 MiB");
    }

    fn vm_rss_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}
