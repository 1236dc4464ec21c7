//! Complaints and deliveries per list, and per list and mailbox provider,
//! over one sliding day: the complaint-rate gauges. Fed by the recorder
//! (deliveries from Postfix's log, complaints from feedback reports);
//! shared through Redis by `shared_state` when configured.
//!
//! A complaint counts once per [`Mark`] (list, signed address, original
//! message) within the window: here through a bounded memory of marks, over
//! every host through one Redis key per mark, set only if absent.

use crate::logwatch::SlidingCounter;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

/// The window: 24 buckets of one hour.
const WINDOW_BUCKETS: usize = 24;
const BUCKET_SECS: u64 = 3600;
const WINDOW_SECS: u64 = WINDOW_BUCKETS as u64 * BUCKET_SECS;
/// Marks remembered at most (about 60 bytes each); beyond, the oldest is
/// forgotten. A list server sees far fewer complaints a day.
const MAX_MARKS: usize = 50_000;
/// Marked complaints kept for Redis at most while it is away; beyond,
/// a complaint is kept as a plain count (counted without its mark).
const MAX_PENDING_MARKS: usize = 50_000;

/// One complaint's identity: 16 bytes of SHA-256 over (list, signed
/// address).
pub type Mark = [u8; 16];

/// The mark of a complaint about the list mail that went out with the
/// signed envelope sender `signed` (the complained-of copy's Return-Path,
/// or the signed address a report was sent back to).
///
/// Keyed on what an outsider cannot vary: a report can be resent, or the
/// same copy wrapped in new reports naming any original (another report
/// Message-ID, another Original-Rcpt-To or original Message-ID, another
/// provider), but a signed address needs our key; its stamp ties it to
/// one day's mail to one member (VERP) or to the list. Case is folded
/// because the signature verifies in any case.
pub fn mark(list: &str, signed: &str) -> Mark {
    let digest = Sha256::digest(format!("{list}\0{}", signed.trim().to_lowercase()));
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// What one pair of counters counts: a list, or a list's mail to one
/// mailbox provider (Yahoo complaints over Yahoo deliveries).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    pub list: String,
    /// `None`: every provider (the list's total).
    pub provider: Option<String>,
}

impl RateKey {
    fn list(list: &str) -> RateKey {
        RateKey {
            list: list.to_string(),
            provider: None,
        }
    }

    fn provider(list: &str, provider: &str) -> RateKey {
        RateKey {
            list: list.to_string(),
            provider: Some(provider.to_string()),
        }
    }
}

/// Counts of one hour not yet sent to Redis.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HourCounts {
    /// Unix hour.
    pub hour: u64,
    pub sent: u64,
    /// Complaints, each by its mark: Redis counts a mark once over every
    /// host.
    pub marks: Vec<Mark>,
    /// Complaints kept without their mark (more than [`MAX_PENDING_MARKS`]
    /// waiting).
    pub complaints: u64,
}

/// Marks seen within the window, oldest first, at most [`MAX_MARKS`].
#[derive(Debug, Default)]
struct Marks {
    at: HashMap<Mark, u64>,
    order: VecDeque<(u64, Mark)>,
}

impl Marks {
    /// True the first time `mark` is seen within the window (it is then
    /// remembered).
    fn first(&mut self, mark: Mark, now: u64) -> bool {
        let oldest = now.saturating_sub(WINDOW_SECS);
        while let Some(&(t, m)) = self.order.front() {
            if t > oldest && self.order.len() < MAX_MARKS {
                break;
            }
            self.order.pop_front();
            if self.at.get(&m) == Some(&t) {
                self.at.remove(&m);
            }
        }
        if self.at.get(&mark).is_some_and(|&t| t > oldest) {
            return false;
        }
        self.at.insert(mark, now);
        self.order.push_back((now, mark));
        true
    }
}

/// Messages sent and complaints received per list, and per list and
/// provider, over one sliding day (the same window for both).
///
/// With a shared Redis store the counts seen here are also sent to Redis
/// (the `shared_state` task), which answers the totals over every host:
/// deliveries seen in one host's log and complaints received by another
/// make one rate, the same on every host.
#[derive(Debug, Default)]
pub struct ComplaintRates {
    counts: HashMap<RateKey, (SlidingCounter, SlidingCounter)>,
    /// Complaints counted here lately, by mark.
    marks: Marks,
    /// Counts not yet sent to Redis: key → hour → counts; `None` without
    /// Redis.
    pending: Option<HashMap<RateKey, HashMap<u64, HourCounts>>>,
    /// Marks in `pending`.
    pending_marks: usize,
    /// Totals over every host, as Redis last answered: key → (sent,
    /// complaints, unix time of the answer).
    shared: HashMap<RateKey, (u64, u64, u64)>,
}

/// How long a shared total stands in for the local one.
const SHARED_FRESH_SECS: u64 = 60;

impl ComplaintRates {
    /// Rates that are also counted in Redis.
    pub fn shared() -> ComplaintRates {
        ComplaintRates {
            pending: Some(HashMap::new()),
            ..ComplaintRates::default()
        }
    }

    /// Counts `sent` deliveries, or one complaint with its mark.
    fn add(&mut self, key: RateKey, now: u64, sent: u64, complaint: Option<Mark>) {
        if !self.counts.contains_key(&key) {
            let (Ok(a), Ok(b)) = (
                SlidingCounter::new(WINDOW_BUCKETS, BUCKET_SECS),
                SlidingCounter::new(WINDOW_BUCKETS, BUCKET_SECS),
            ) else {
                return;
            };
            self.counts.insert(key.clone(), (a, b));
        }
        if let Some((s, c)) = self.counts.get_mut(&key) {
            s.add(now, sent);
            c.add(now, u64::from(complaint.is_some()));
        }
        let mut hour = HourCounts {
            hour: now / BUCKET_SECS,
            sent,
            ..HourCounts::default()
        };
        match complaint {
            Some(m) if self.pending_marks < MAX_PENDING_MARKS => hour.marks.push(m),
            Some(_) => hour.complaints = 1,
            None => {}
        }
        self.note(key, now / BUCKET_SECS, hour);
    }

    /// Adds one hour's counts to what is kept for Redis.
    fn note(&mut self, key: RateKey, current_hour: u64, counts: HourCounts) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        let hours = pending.entry(key).or_default();
        let kept = hours.entry(counts.hour).or_insert_with(|| HourCounts {
            hour: counts.hour,
            ..HourCounts::default()
        });
        kept.sent += counts.sent;
        kept.complaints += counts.complaints;
        self.pending_marks += counts.marks.len();
        kept.marks.extend(counts.marks);
        // Hours older than the window no longer matter (Redis unreachable for a day).
        let oldest = current_hour.saturating_sub(WINDOW_BUCKETS as u64);
        hours.retain(|hour, h| {
            let keep = *hour > oldest;
            if !keep {
                self.pending_marks = self.pending_marks.saturating_sub(h.marks.len());
            }
            keep
        });
    }

    /// One recipient of list mail delivered (provider unknown).
    pub fn sent(&mut self, list: &str, now: u64) {
        self.add(RateKey::list(list), now, 1, None);
    }

    /// One recipient at `provider` delivered: counts for the list and for
    /// the list at that provider.
    pub(crate) fn sent_to(&mut self, list: &str, provider: &str, now: u64) {
        self.sent(list, now);
        self.add(RateKey::provider(list, provider), now, 1, None);
    }

    /// One complaint (a feedback report) about list mail, from a member at
    /// `provider` when known: counted for the list (and the list at that
    /// provider) the first time its mark is seen within the window; false
    /// for a copy already counted.
    pub fn complaint(&mut self, list: &str, provider: Option<&str>, mark: Mark, now: u64) -> bool {
        if !self.marks.first(mark, now) {
            return false;
        }
        self.add(RateKey::list(list), now, 0, Some(mark));
        if let Some(p) = provider {
            self.add(RateKey::provider(list, p), now, 0, Some(mark));
        }
        true
    }

    /// Every key seen here, with its counts not yet sent, oldest hour
    /// first; the pending counts are cleared.
    pub(crate) fn take_pending(&mut self) -> Vec<(RateKey, Vec<HourCounts>)> {
        let mut pending = self
            .pending
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        self.pending_marks = 0;
        let mut out: Vec<(RateKey, Vec<HourCounts>)> = self
            .counts
            .keys()
            .map(|key| {
                let mut hours: Vec<HourCounts> = pending
                    .remove(key)
                    .unwrap_or_default()
                    .into_values()
                    .collect();
                hours.sort_unstable_by_key(|h| h.hour);
                (key.clone(), hours)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Puts back counts that could not be sent.
    pub(crate) fn restore_pending(&mut self, key: &RateKey, hours: Vec<HourCounts>, now: u64) {
        for h in hours {
            self.note(key.clone(), now / BUCKET_SECS, h);
        }
    }

    /// Records a key's totals over every host, as Redis answered at `now`.
    pub(crate) fn set_shared(&mut self, key: &RateKey, sent: u64, complaints: u64, now: u64) {
        if self.counts.contains_key(key) {
            self.shared.insert(key.clone(), (sent, complaints, now));
        }
    }

    /// Complaints over deliveries in the window, for every key with
    /// deliveries (none: no rate, not 0): over every host when Redis
    /// answered lately, else over this host's log.
    fn all_rates(&self, now: u64) -> Vec<(RateKey, f64)> {
        let mut out: Vec<(RateKey, f64)> = self
            .counts
            .iter()
            .filter_map(|(key, (sent, complaints))| {
                let (s, c) = match self.shared.get(key) {
                    Some(&(s, c, at)) if now.saturating_sub(at) <= SHARED_FRESH_SECS => (s, c),
                    _ => (sent.sum(now), complaints.sum(now)),
                };
                (s > 0).then(|| (key.clone(), c as f64 / s as f64))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Per list, lists with deliveries only. Compare with the providers'
    /// 0.1% and 0.3% lines.
    pub fn rates(&self, now: u64) -> Vec<(String, f64)> {
        self.all_rates(now)
            .into_iter()
            .filter(|(k, _)| k.provider.is_none())
            .map(|(k, r)| (k.list, r))
            .collect()
    }

    /// Per list and provider, where that provider received list mail.
    pub(crate) fn provider_rates(&self, now: u64) -> Vec<(String, String, f64)> {
        self.all_rates(now)
            .into_iter()
            .filter_map(|(k, r)| Some((k.list, k.provider?, r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark of a complaint about the `n`th member's copy.
    fn nth(n: u32) -> Mark {
        mark(
            "members",
            &format!("prvs=1234abcdef=members-bounces+m{n}=example.com@lists.example.org"),
        )
    }

    #[test]
    fn complaint_rate_over_a_day() {
        let mut r = ComplaintRates::default();
        for _ in 0..1000 {
            r.sent("members", 100_000);
        }
        assert!(r.complaint("members", None, nth(1), 100_100));
        assert!(r.complaint("members", None, nth(2), 100_200));
        assert_eq!(r.rates(100_300), [("members".to_string(), 0.002)]);
        assert_eq!(r.rates(100_000 + 2 * 86_400), [], "no deliveries: no rate");
    }

    #[test]
    fn one_copy_reported_many_times_counts_once() {
        let now = 100 * BUCKET_SECS;
        let mut r = ComplaintRates::default();
        for _ in 0..1000 {
            r.sent_to("members", "yahoo", now);
        }
        // The same report ten times, the address's case and spacing varied
        // as a resender might.
        let signed = "prvs=1234abcdef=members-bounces@lists.example.org";
        let copies = [
            mark("members", signed),
            mark("members", &signed.to_uppercase()),
            mark("members", &format!(" {signed} ")),
        ];
        assert_eq!(copies[0], copies[1]);
        assert_eq!(copies[0], copies[2]);
        let counted = (0..10)
            .filter(|&i| r.complaint("members", Some("yahoo"), copies[i % 3], now + i as u64))
            .count();
        assert_eq!(counted, 1);
        assert_eq!(r.rates(now + 60), [("members".to_string(), 0.001)]);
        assert_eq!(
            r.provider_rates(now + 60),
            [("members".to_string(), "yahoo".to_string(), 0.001)]
        );
        // Another signed address (another member, another day) is another
        // complaint, and so is the same address on another list.
        assert!(r.complaint("members", Some("yahoo"), nth(2), now + 20));
        assert_eq!(r.rates(now + 60), [("members".to_string(), 0.002)]);
        assert_ne!(mark("other", signed), copies[0]);
        assert_ne!(
            mark(
                "members",
                "prvs=1235abcdef=members-bounces@lists.example.org"
            ),
            copies[0]
        );
        // After the window the copy counts again (the old count has left it).
        assert!(r.complaint("members", None, copies[0], now + 25 * 3600));
    }

    #[test]
    fn marks_stay_bounded() {
        let mut m = Marks::default();
        for n in 0..(MAX_MARKS as u32 + 10) {
            assert!(m.first(nth(n), 1000));
        }
        assert!(m.at.len() <= MAX_MARKS && m.order.len() <= MAX_MARKS);
        // The oldest were forgotten, the newest are kept.
        assert!(m.first(nth(0), 1000));
        assert!(!m.first(nth(MAX_MARKS as u32 + 9), 1000));
    }

    #[test]
    fn shared_totals_stand_in_for_local_ones_while_fresh() {
        let now = 100 * BUCKET_SECS;
        let mut rates = ComplaintRates::shared();
        rates.complaint("members", None, nth(1), now);
        rates.complaint("members", None, nth(1), now + 1);
        rates.complaint("members", None, nth(2), now + 1);
        let pending = rates.take_pending();
        let members = RateKey::list("members");
        let hour = |sent, marks: Vec<Mark>| HourCounts {
            hour: 100,
            sent,
            marks,
            complaints: 0,
        };
        assert_eq!(
            pending,
            vec![(members.clone(), vec![hour(0, vec![nth(1), nth(2)])])]
        );
        assert_eq!(rates.take_pending()[0].1, vec![], "cleared");
        // Nothing delivered here: no local rate; the shared one is.
        assert_eq!(rates.rates(now), vec![]);
        rates.set_shared(&members, 1000, 2, now);
        rates.set_shared(&RateKey::list("unseen"), 1, 1, now);
        assert_eq!(rates.rates(now + 5), vec![("members".to_string(), 0.002)]);
        assert_eq!(rates.rates(now + 61), vec![]);
        rates.restore_pending(&members, vec![hour(3, vec![nth(3)])], now);
        assert_eq!(rates.take_pending()[0].1, vec![hour(3, vec![nth(3)])]);
        // Without Redis nothing is kept to send.
        let mut alone = ComplaintRates::default();
        alone.sent("members", now);
        assert_eq!(alone.take_pending()[0].1, vec![]);
    }

    #[test]
    fn rates_per_provider_over_the_same_window() {
        let mut r = ComplaintRates::default();
        let now = 100 * BUCKET_SECS;
        for _ in 0..1000 {
            r.sent_to("members", "yahoo", now);
        }
        for _ in 0..3000 {
            r.sent_to("members", "gmail", now);
        }
        for n in 0..4 {
            r.complaint("members", Some("yahoo"), nth(n), now + 10);
        }
        // Complaints from a provider the list never delivered to: counted in
        // the list's total, no provider rate (no deliveries, no gauge).
        r.complaint("members", Some("microsoft"), nth(4), now + 20);
        assert_eq!(r.rates(now + 30), [("members".to_string(), 0.00125)]);
        assert_eq!(
            r.provider_rates(now + 30),
            [
                ("members".to_string(), "gmail".to_string(), 0.0),
                ("members".to_string(), "yahoo".to_string(), 0.004),
            ]
        );
    }
}
