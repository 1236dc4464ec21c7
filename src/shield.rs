//! The shield: when a list receives too many invalid bounces (a
//! backscatter storm), it goes strict for a while: only validly signed
//! bounces get in. What staff once did by hand by switching the list off,
//! without switching it off. It ends by itself after the hold time.
//!
//! Each process counts and raises on its own traffic. With a shared Redis
//! store, the `shared_state` task also sends each (list, source) pair and
//! each local raise to Redis and brings back the shields raised anywhere,
//! a few times a second: the trigger counts sources seen by every MX host,
//! and a shield raised through one is enforced by all. List labels come
//! from the config, so the state is bounded.

use crate::config::Shield;
use crate::ratelimit::{Clock, MemoryStore, Quota};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most lists tracked; labels come from the config, this is a backstop.
const MAX_LISTS: usize = 100_000;
/// Most (list, source) pairs remembered; the oldest are forgotten first,
/// which at worst lets a forgotten source count twice.
const MAX_SOURCES: usize = 200_000;
/// Most (list, source) pairs waiting to be sent to Redis; more within one
/// sync interval are only counted locally.
const MAX_PENDING: usize = 10_000;

pub struct ShieldBook {
    clock: Arc<dyn Clock>,
    /// Invalid bounces per list, counted with the GCRA: a denial means more
    /// than `trigger` within `within`.
    counter: MemoryStore,
    /// (list, source network) pairs seen within `within`: only a source's
    /// first invalid bounce in that time counts, so the trigger needs
    /// `trigger` distinct networks, never one busy client.
    sources: MemoryStore,
    /// List label → monotonic time (ns) the shield drops.
    raised: Mutex<HashMap<String, u64>>,
    /// Shields raised anywhere, as Redis last said: label → monotonic time
    /// (ns) they drop.
    remote: Mutex<HashMap<String, u64>>,
    /// Labels reported as up (so each change is reported once, whichever
    /// host raised it).
    shown: Mutex<HashSet<String>>,
    /// What to send to Redis at the next sync; `None` without Redis.
    pending: Option<Mutex<Pending>>,
}

/// First invalid bounces per (list, source) and local raises since the
/// last sync.
#[derive(Debug, Default)]
pub struct Pending {
    pub sources: HashSet<(String, String)>,
    pub raised: HashSet<String>,
}

/// A change of a list's shield, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Raised(String),
    Lowered(String),
}

impl ShieldBook {
    /// A book deciding on this host's traffic alone.
    pub fn new(clock: Arc<dyn Clock>) -> ShieldBook {
        Self::build(clock, false)
    }

    /// A book that also keeps what the `shared_state` task sends to Redis.
    pub fn shared(clock: Arc<dyn Clock>) -> ShieldBook {
        Self::build(clock, true)
    }

    fn build(clock: Arc<dyn Clock>, shared: bool) -> ShieldBook {
        let counter = MemoryStore::with_clock(MAX_LISTS, clock.clone());
        let sources = MemoryStore::with_clock(MAX_SOURCES, clock.clone());
        ShieldBook {
            clock,
            counter,
            sources,
            raised: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            shown: Mutex::new(HashSet::new()),
            pending: shared.then(|| Mutex::new(Pending::default())),
        }
    }

    /// Takes what is to be sent to Redis (empty without Redis).
    pub(crate) fn take_pending(&self) -> Pending {
        match &self.pending {
            Some(p) => std::mem::take(&mut *p.lock().unwrap_or_else(|p| p.into_inner())),
            None => Pending::default(),
        }
    }

    /// Puts back what could not be sent (Redis unavailable), within bounds.
    pub(crate) fn restore_pending(&self, back: Pending) {
        let Some(p) = &self.pending else { return };
        let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
        for pair in back.sources {
            if p.sources.len() >= MAX_PENDING {
                break;
            }
            p.sources.insert(pair);
        }
        p.raised.extend(back.raised);
    }

    /// Replaces the shields raised anywhere with what Redis said: labels
    /// and how long each stays up.
    pub(crate) fn set_remote(&self, up: Vec<(String, Duration)>) {
        let now = self.clock.now();
        let map = up
            .into_iter()
            .take(MAX_LISTS)
            .map(|(list, left)| {
                let left = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                (list, now.saturating_add(left))
            })
            .collect();
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = map;
    }

    /// Counts one invalid bounce to `list` from `source` (a network key);
    /// raises its shield when `trigger` distinct sources sent one within
    /// `within`.
    pub(crate) fn record_invalid(
        &self,
        list: &str,
        source: &str,
        shield: &Shield,
    ) -> Option<Change> {
        let once = Quota::new(1, shield.within, 1).ok()?;
        if !self
            .sources
            .check(&format!("{list}\0{source}"), &once)
            .allowed
        {
            return None;
        }
        if let Some(p) = &self.pending {
            let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
            if p.sources.len() < MAX_PENDING {
                p.sources.insert((list.to_string(), source.to_string()));
            }
        }
        let quota = Quota::new(shield.trigger, shield.within, shield.trigger).ok()?;
        if self.counter.check(list, &quota).allowed {
            return None;
        }
        if let Some(p) = &self.pending {
            let mut p = p.lock().unwrap_or_else(|p| p.into_inner());
            p.raised.insert(list.to_string());
        }
        let until = self
            .clock
            .now()
            .saturating_add(shield.hold.as_nanos().try_into().unwrap_or(u64::MAX));
        let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        raised.insert(list.to_string(), until);
        drop(raised);
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        shown
            .insert(list.to_string())
            .then(|| Change::Raised(list.to_string()))
    }

    /// Drops shields whose hold has passed; returns the labels up here or
    /// anywhere (as Redis last said), and what changed since last asked.
    pub fn current(&self) -> (Vec<String>, Vec<Change>) {
        let now = self.clock.now();
        let mut up: HashSet<String> = HashSet::new();
        for map in [&self.raised, &self.remote] {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, until| *until > now);
            up.extend(map.keys().cloned());
        }
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes: Vec<Change> = shown
            .difference(&up)
            .map(|l| Change::Lowered(l.clone()))
            .collect();
        changes.extend(up.difference(&shown).map(|l| Change::Raised(l.clone())));
        changes.sort();
        shown.clone_from(&up);
        let mut labels: Vec<String> = up.into_iter().collect();
        labels.sort();
        (labels, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::ManualClock;
    use std::time::Duration;

    #[test]
    fn raised_at_the_trigger_and_lowered_after_the_hold() {
        let clock = ManualClock::new(1_000_000_000);
        let book = ShieldBook::new(Arc::new(clock.clone()));
        let shield = Shield {
            trigger: 5,
            within: Duration::from_secs(600),
            hold: Duration::from_secs(3600),
            tempfail: false,
        };
        for i in 0..5 {
            assert_eq!(
                book.record_invalid("members", &format!("n{i}"), &shield),
                None
            );
        }
        assert_eq!(
            book.record_invalid("members", "n5", &shield),
            Some(Change::Raised("members".into()))
        );
        assert_eq!(
            book.record_invalid("members", "n6", &shield),
            None,
            "raised once"
        );
        assert_eq!(book.current().0, ["members"]);
        assert!(book.current().0.iter().all(|l| l != "other"));
        clock.advance(Duration::from_secs(3599));
        assert_eq!(book.current().0, ["members"]);
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            book.current(),
            (vec![], vec![Change::Lowered("members".into())])
        );
        assert_eq!(book.current(), (vec![], vec![]));
    }

    #[test]
    fn a_slow_trickle_never_raises_it() {
        let clock = ManualClock::new(0);
        let book = ShieldBook::new(Arc::new(clock.clone()));
        let shield = Shield {
            trigger: 5,
            within: Duration::from_secs(600),
            hold: Duration::from_secs(60),
            tempfail: false,
        };
        for i in 0..100 {
            assert_eq!(
                book.record_invalid("members", &format!("n{i}"), &shield),
                None
            );
            clock.advance(Duration::from_secs(121));
        }
    }

    /// One client sending any number of invalid bounces is one source.
    #[test]
    fn one_source_alone_never_raises_it() {
        let clock = ManualClock::new(0);
        let book = ShieldBook::new(Arc::new(clock.clone()));
        let shield = Shield {
            trigger: 5,
            within: Duration::from_secs(600),
            hold: Duration::from_secs(60),
            tempfail: false,
        };
        for _ in 0..10_000 {
            assert_eq!(
                book.record_invalid("members", "net:198.51.100.0/24", &shield),
                None
            );
        }
        assert!(book.current().0.is_empty());
    }

    /// A shield raised elsewhere is up here until Redis stops listing it or
    /// its hold passes; local counting goes on meanwhile.
    #[test]
    fn a_remote_shield_is_enforced_and_reported_once() {
        let clock = ManualClock::new(0);
        let book = ShieldBook::shared(Arc::new(clock.clone()));
        book.set_remote(vec![("members".into(), Duration::from_secs(10))]);
        assert_eq!(
            book.current(),
            (
                vec!["members".to_string()],
                vec![Change::Raised("members".into())]
            )
        );
        assert_eq!(book.current().1, vec![]);
        let shield = Shield {
            trigger: 1,
            within: Duration::from_secs(60),
            hold: Duration::from_secs(60),
            tempfail: false,
        };
        assert_eq!(book.record_invalid("members", "n1", &shield), None);
        assert_eq!(
            book.record_invalid("members", "n2", &shield),
            None,
            "already shown"
        );
        let pending = book.take_pending();
        assert_eq!(pending.sources.len(), 2);
        assert!(pending.raised.contains("members"));
        assert!(book.take_pending().sources.is_empty());
        book.restore_pending(pending);
        assert_eq!(book.take_pending().sources.len(), 2);
        // Lowered once both the local hold and the remote one are over.
        book.set_remote(vec![]);
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            book.current(),
            (vec![], vec![Change::Lowered("members".into())])
        );
        // A memory-only book keeps nothing to send.
        let alone = ShieldBook::new(Arc::new(ManualClock::new(0)));
        alone.record_invalid("members", "n1", &shield);
        assert!(alone.take_pending().sources.is_empty());
    }
}
