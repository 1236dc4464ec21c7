//! The shield: when a list receives too many invalid bounces (a
//! backscatter storm), it goes strict for a while: only validly signed
//! bounces get in. What staff once did by hand by switching the list off,
//! without switching it off. It ends by itself after the hold time.
//!
//! State is per process (each MX host shields on its own traffic); list
//! labels come from the config, so the state is bounded.

use crate::config::Shield;
use crate::ratelimit::{Clock, MemoryStore, Quota};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most lists tracked; labels come from the config, this is a backstop.
const MAX_LISTS: usize = 100_000;
/// Most (list, source) pairs remembered; the oldest are forgotten first,
/// which at worst lets a forgotten source count twice.
const MAX_SOURCES: usize = 200_000;

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
}

/// A change of a list's shield, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Raised(String),
    Lowered(String),
}

impl ShieldBook {
    pub fn new(clock: Arc<dyn Clock>) -> ShieldBook {
        let counter = MemoryStore::with_clock(MAX_LISTS, clock.clone());
        let sources = MemoryStore::with_clock(MAX_SOURCES, clock.clone());
        ShieldBook {
            clock,
            counter,
            sources,
            raised: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one invalid bounce to `list` from `source` (a network key);
    /// raises its shield when `trigger` distinct sources sent one within
    /// `within`.
    pub fn record_invalid(&self, list: &str, source: &str, shield: &Shield) -> Option<Change> {
        let once = Quota::new(1, shield.within, 1).ok()?;
        if !self
            .sources
            .check(&format!("{list}\0{source}"), &once)
            .allowed
        {
            return None;
        }
        let quota = Quota::new(shield.trigger, shield.within, shield.trigger).ok()?;
        if self.counter.check(list, &quota).allowed {
            return None;
        }
        let until = self
            .clock
            .now()
            .saturating_add(shield.hold.as_nanos().try_into().unwrap_or(u64::MAX));
        let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        let was_up = raised.insert(list.to_string(), until).is_some();
        (!was_up).then(|| Change::Raised(list.to_string()))
    }

    /// Drops shields whose hold has passed; returns the labels still up
    /// and what changed.
    pub fn current(&self) -> (Vec<String>, Vec<Change>) {
        let now = self.clock.now();
        let mut raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes = Vec::new();
        raised.retain(|list, until| {
            let keep = *until > now;
            if !keep {
                changes.push(Change::Lowered(list.clone()));
            }
            keep
        });
        (raised.keys().cloned().collect(), changes)
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
}
