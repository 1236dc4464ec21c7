//! Complaints and deliveries per list, and per list and mailbox provider,
//! over one sliding day: the complaint-rate gauges. Fed by the recorder
//! (deliveries from Postfix's log, complaints from feedback reports);
//! shared through Redis by `shared_state` when configured.

use crate::logwatch::SlidingCounter;
use std::collections::HashMap;

/// The window: 24 buckets of one hour.
const WINDOW_BUCKETS: usize = 24;
const BUCKET_SECS: u64 = 3600;

/// Hour → (sent, complaints) not yet sent to Redis.
type PendingHours = HashMap<u64, (u64, u64)>;

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
    /// Counts not yet sent to Redis: key → hour → (sent, complaints);
    /// `None` without Redis.
    pending: Option<HashMap<RateKey, PendingHours>>,
    /// Totals over every host, as Redis last answered: key → (sent,
    /// complaints, unix time of the answer).
    shared: HashMap<RateKey, (u64, u64, u64)>,
}

/// Counts of one hour: (Unix hour, sent, complaints).
pub type HourCounts = (u64, u64, u64);

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

    fn add(&mut self, key: RateKey, now: u64, sent: u64, complaints: u64) {
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
            c.add(now, complaints);
        }
        self.note(key, now, sent, complaints);
    }

    fn note(&mut self, key: RateKey, now: u64, sent: u64, complaints: u64) {
        if let Some(pending) = &mut self.pending {
            let hours = pending.entry(key).or_default();
            let counts = hours.entry(now / BUCKET_SECS).or_default();
            counts.0 += sent;
            counts.1 += complaints;
            // Hours older than the window no longer matter (Redis unreachable for a day).
            let oldest = (now / BUCKET_SECS).saturating_sub(WINDOW_BUCKETS as u64);
            hours.retain(|hour, _| *hour > oldest);
        }
    }

    /// One recipient of list mail delivered (provider unknown).
    pub fn sent(&mut self, list: &str, now: u64) {
        self.add(RateKey::list(list), now, 1, 0);
    }

    /// One feedback report (spam complaint) about list mail (provider unknown).
    pub fn complaint(&mut self, list: &str, now: u64) {
        self.add(RateKey::list(list), now, 0, 1);
    }

    /// One recipient at `provider` delivered: counts for the list and for
    /// the list at that provider.
    pub(crate) fn sent_to(&mut self, list: &str, provider: &str, now: u64) {
        self.sent(list, now);
        self.add(RateKey::provider(list, provider), now, 1, 0);
    }

    /// One complaint from a member at `provider`.
    pub(crate) fn complaint_from(&mut self, list: &str, provider: &str, now: u64) {
        self.complaint(list, now);
        self.add(RateKey::provider(list, provider), now, 0, 1);
    }

    /// Every key seen here, with its counts not yet sent (hour, sent,
    /// complaints); the pending counts are cleared.
    pub(crate) fn take_pending(&mut self) -> Vec<(RateKey, Vec<HourCounts>)> {
        let mut pending = self
            .pending
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut out: Vec<(RateKey, Vec<HourCounts>)> = self
            .counts
            .keys()
            .map(|key| {
                let mut hours: Vec<HourCounts> = pending
                    .remove(key)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(hour, (s, c))| (hour, s, c))
                    .collect();
                hours.sort_unstable();
                (key.clone(), hours)
            })
            .collect();
        out.sort();
        out
    }

    /// Puts back counts that could not be sent.
    pub(crate) fn restore_pending(&mut self, key: &RateKey, hours: Vec<HourCounts>) {
        for (hour, s, c) in hours {
            self.note(key.clone(), hour * BUCKET_SECS, s, c);
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

    #[test]
    fn complaint_rate_over_a_day() {
        let mut r = ComplaintRates::default();
        for _ in 0..1000 {
            r.sent("members", 100_000);
        }
        r.complaint("members", 100_100);
        r.complaint("members", 100_200);
        assert_eq!(r.rates(100_300), [("members".to_string(), 0.002)]);
        assert_eq!(r.rates(100_000 + 2 * 86_400), [], "no deliveries: no rate");
    }

    #[test]
    fn shared_totals_stand_in_for_local_ones_while_fresh() {
        let now = 100 * BUCKET_SECS;
        let mut rates = ComplaintRates::shared();
        rates.complaint("members", now);
        rates.complaint("members", now + 1);
        let pending = rates.take_pending();
        let members = RateKey::list("members");
        assert_eq!(pending, vec![(members.clone(), vec![(100, 0, 2)])]);
        assert_eq!(rates.take_pending()[0].1, vec![], "cleared");
        // Nothing delivered here: no local rate; the shared one is.
        assert_eq!(rates.rates(now), vec![]);
        rates.set_shared(&members, 1000, 2, now);
        rates.set_shared(&RateKey::list("unseen"), 1, 1, now);
        assert_eq!(rates.rates(now + 5), vec![("members".to_string(), 0.002)]);
        assert_eq!(rates.rates(now + 61), vec![]);
        rates.restore_pending(&members, vec![(100, 3, 0)]);
        assert_eq!(rates.take_pending()[0].1, vec![(100, 3, 0)]);
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
        for _ in 0..4 {
            r.complaint_from("members", "yahoo", now + 10);
        }
        // Complaints from a provider the list never delivered to: counted in
        // the list's total, no provider rate (no deliveries, no gauge).
        r.complaint_from("members", "microsoft", now + 20);
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
