//! Bounce storms: when many members at one provider fail with the same rule
//! within a short window, the failure is the provider's or ours (an outage
//! answering "user unknown" to everyone, a block list, a new requirement),
//! not theirs. While such an incident lasts, the milter tags those bounces
//! `fault=us; incident=1`, so the expander and list-manager recipes hold
//! scoring for that provider and rule; a gauge and an alert tell the
//! operator.
//!
//! State is per process and small: at most `max_keys` (provider, rule)
//! pairs, each with at most `trigger` recipient hashes, behind one mutex
//! taken once per classified recipient group.

use crate::config::Incident;
use crate::ratelimit::Clock;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// A (provider, rule) pair.
pub type Key = (String, String);

/// A change of an incident, for the log and the gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Raised(Key),
    Lowered(Key),
}

#[derive(Debug, Default)]
struct Track {
    /// (recipient hash, time seen in ns), oldest first; at most `trigger`.
    seen: VecDeque<(u64, u64)>,
    /// Monotonic time (ns) the incident ends unless more failures come.
    until: Option<u64>,
    /// Last failure seen (ns), for eviction.
    last: u64,
}

pub struct IncidentBook {
    clock: Arc<dyn Clock>,
    tracks: Mutex<HashMap<Key, Track>>,
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn recipient_hash(recipient: &str) -> u64 {
    let mut h = DefaultHasher::new();
    recipient.to_ascii_lowercase().hash(&mut h);
    h.finish()
}

impl IncidentBook {
    pub fn new(clock: Arc<dyn Clock>) -> IncidentBook {
        IncidentBook {
            clock,
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one failed recipient at `provider` classified by `rule`.
    /// Returns whether an incident is up for the pair (this failure
    /// included) and, when this failure raised it, the change.
    pub(crate) fn record(
        &self,
        provider: &str,
        rule: &str,
        recipient: &str,
        settings: &Incident,
    ) -> (bool, Option<Change>) {
        let now = self.clock.now();
        let within = nanos(settings.within);
        let trigger = usize::try_from(settings.trigger)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let key = (provider.to_owned(), rule.to_owned());
        if !tracks.contains_key(&key) && !make_room(&mut tracks, settings.max_keys, now, within) {
            // Every tracked pair is in an incident: this one is not tracked.
            return (false, None);
        }
        let track = tracks.entry(key.clone()).or_default();
        track.last = now;
        let cutoff = now.saturating_sub(within);
        while track.seen.front().is_some_and(|&(_, t)| t < cutoff) {
            track.seen.pop_front();
        }
        let hash = recipient_hash(recipient);
        if let Some(pos) = track.seen.iter().position(|&(h, _)| h == hash) {
            track.seen.remove(pos);
        }
        track.seen.push_back((hash, now));
        while track.seen.len() > trigger {
            track.seen.pop_front();
        }
        let was_up = track.until.is_some_and(|u| u > now);
        if was_up || track.seen.len() >= trigger {
            // The incident lasts `hold` past the storm's last failure.
            track.until = Some(now.saturating_add(nanos(settings.hold)));
            (true, (!was_up).then_some(Change::Raised(key)))
        } else {
            (false, None)
        }
    }

    /// Lowers incidents whose hold has passed; returns the pairs still up
    /// and what changed.
    pub fn current(&self) -> (Vec<Key>, Vec<Change>) {
        let now = self.clock.now();
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let mut up = Vec::new();
        let mut changes = Vec::new();
        for (key, track) in tracks.iter_mut() {
            match track.until {
                Some(u) if u > now => up.push(key.clone()),
                Some(_) => {
                    track.until = None;
                    track.seen.clear();
                    changes.push(Change::Lowered(key.clone()));
                }
                None => {}
            }
        }
        (up, changes)
    }

    /// Pairs tracked (for tests and the bound).
    pub fn len(&self) -> usize {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees slots when the map is full: first pairs quiet for a whole window,
/// else the least recently failed tenth of the pairs not in an incident (a
/// batch, so a stream of new pairs costs one scan per tenth of the map, not
/// one per failure). False when every pair is in an incident.
fn make_room(tracks: &mut HashMap<Key, Track>, max_keys: usize, now: u64, within: u64) -> bool {
    if tracks.len() < max_keys {
        return true;
    }
    let up = |t: &Track| t.until.is_some_and(|u| u > now);
    tracks.retain(|_, t| up(t) || t.last.saturating_add(within) >= now);
    if tracks.len() < max_keys {
        return true;
    }
    let mut idle: Vec<(u64, Key)> = tracks
        .iter()
        .filter(|(_, t)| !up(t))
        .map(|(k, t)| (t.last, k.clone()))
        .collect();
    if idle.is_empty() {
        return false;
    }
    let batch = (max_keys / 10).clamp(1, idle.len());
    idle.select_nth_unstable_by_key(batch - 1, |(last, _)| *last);
    for (_, key) in idle.into_iter().take(batch) {
        tracks.remove(&key);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::ManualClock;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn settings() -> Incident {
        Incident {
            trigger: 20,
            within: Duration::from_secs(600),
            hold: Duration::from_secs(3600),
            max_keys: 4,
        }
    }

    fn book() -> (ManualClock, IncidentBook) {
        let clock = ManualClock::new(1_000 * SEC);
        (clock.clone(), IncidentBook::new(Arc::new(clock)))
    }

    fn key(p: &str, r: &str) -> Key {
        (p.to_owned(), r.to_owned())
    }

    #[test]
    fn raised_at_twenty_distinct_recipients_and_held_after_the_last_failure() {
        let (clock, book) = book();
        let s = settings();
        // The same member twenty times is not a storm.
        for _ in 0..20 {
            assert_eq!(book.record("gmail", "r", "a@gmail.com", &s), (false, None));
        }
        for i in 1..19 {
            clock.advance(Duration::from_secs(10));
            let (up, change) = book.record("gmail", "r", &format!("m{i}@gmail.com"), &s);
            assert!(!up && change.is_none(), "{i}");
        }
        // Another provider or rule does not add up.
        assert!(!book.record("yahoo", "r", "x@yahoo.com", &s).0);
        assert!(!book.record("gmail", "other", "x@gmail.com", &s).0);
        // The twentieth distinct member (case does not make a new one).
        assert!(!book.record("gmail", "r", "M1@GMAIL.COM", &s).0);
        assert_eq!(
            book.record("gmail", "r", "m19@gmail.com", &s),
            (true, Some(Change::Raised(key("gmail", "r"))))
        );
        // Up for every later failure, raised only once.
        assert_eq!(book.record("gmail", "r", "m20@gmail.com", &s), (true, None));
        assert_eq!(book.current().0, vec![key("gmail", "r")]);
        // Held an hour after the last failure, then lowered once.
        clock.advance(Duration::from_secs(3599));
        assert!(book.current().1.is_empty());
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            book.current(),
            (vec![], vec![Change::Lowered(key("gmail", "r"))])
        );
        assert!(book.current().1.is_empty());
        // After it, one failure is one failure again.
        assert_eq!(
            book.record("gmail", "r", "m21@gmail.com", &s),
            (false, None)
        );
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let (clock, book) = book();
        let s = settings();
        // 40 members, one a minute: never 20 within 10 minutes.
        for i in 0..40 {
            assert!(!book.record("p", "r", &format!("m{i}@p.example"), &s).0);
            clock.advance(Duration::from_secs(60));
        }
    }

    #[test]
    fn memory_is_bounded() {
        let (clock, book) = book();
        let s = settings();
        for i in 0..1000 {
            book.record(&format!("p{i}"), "r", "a@b", &s);
            clock.advance(Duration::from_millis(1));
        }
        assert!(
            book.len() <= s.max_keys && !book.is_empty(),
            "{}",
            book.len()
        );
        // Pairs in an incident are never evicted; when all are, new pairs
        // are not tracked.
        let (_, book) = self::book();
        for p in 0..4 {
            for i in 0..20 {
                book.record(&format!("p{p}"), "r", &format!("m{i}@x"), &s);
            }
        }
        assert_eq!(book.current().0.len(), 4);
        assert_eq!(book.record("new", "r", "a@b", &s), (false, None));
        assert_eq!(book.current().0.len(), 4);
        let tracks = book.tracks.lock().unwrap();
        assert!(tracks.values().all(|t| t.seen.len() <= 20));
    }
}
