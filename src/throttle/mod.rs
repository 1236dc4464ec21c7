//! Adaptive outbound throttling. listwarden serves Postfix's
//! `transport_maps` over socketmap: for a recipient domain whose provider
//! is pushing back (Yahoo's `[TS01]`, Gmail's 4.7.28, ...) it answers a
//! slower transport or a hold transport; otherwise NOTFOUND, so Postfix
//! falls through to its normal route.
//!
//! * `decide`: the pure state machine (normal, slow, hold; decay);
//! * `socketmap`: the netstring protocol and a connection loop;
//! * this module: which provider a domain or relay belongs to (from the
//!   config and learned from the log, never from DNS), and the glue to
//!   the log watch, the metrics and the listener.
//!
//! State lives in this process. [`LevelStore`] is the seam for sharing
//! it through Redis between MX hosts later.

pub mod decide;
pub mod socketmap;

pub use decide::{Change, Engine, Level, Outcome};

use crate::Shared;
use crate::config::{Throttle, ThrottlePolicy};
use crate::dsn::Classification;
use crate::logwatch::{Delivery, DeliveryStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Recipient domains learned from the log; beyond this nothing new is
/// learned (configured domains and relay suffixes still apply).
const MAX_LEARNED: usize = 100_000;

/// Where provider levels are kept. In memory today; a Redis implementation
/// would let every MX host of a cluster answer the same (next step).
pub trait LevelStore: Send {
    /// Counts one result and re-decides; returns a level change.
    fn record(&mut self, policy: &ThrottlePolicy, outcome: Outcome, now: u64) -> Option<Change>;
    /// Re-decides every provider (decay without traffic).
    fn tick(&mut self, policies: &[ThrottlePolicy], now: u64) -> Vec<Change>;
    fn level(&self, provider: &str) -> Level;
    /// (provider, level, seconds in it).
    fn levels(&self, now: u64) -> Vec<(String, Level, u64)>;
}

impl LevelStore for Engine {
    fn record(&mut self, policy: &ThrottlePolicy, outcome: Outcome, now: u64) -> Option<Change> {
        Engine::record(self, policy, outcome, now)
    }
    fn tick(&mut self, policies: &[ThrottlePolicy], now: u64) -> Vec<Change> {
        self.retain(|p| policies.iter().any(|q| q.name == p));
        Engine::tick(self, policies.iter(), now)
    }
    fn level(&self, provider: &str) -> Level {
        Engine::level(self, provider)
    }
    fn levels(&self, now: u64) -> Vec<(String, Level, u64)> {
        Engine::levels(self, now)
    }
}

/// The running throttle: provider levels and the domains learned.
pub struct Throttler {
    store: Mutex<Box<dyn LevelStore>>,
    learned: Mutex<HashMap<String, String>>,
    /// Unix time of the last tick, for time-in-state counters.
    last_tick: Mutex<u64>,
}

impl Default for Throttler {
    fn default() -> Self {
        Throttler {
            store: Mutex::new(Box::new(Engine::default())),
            learned: Mutex::default(),
            last_tick: Mutex::new(0),
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The domain of a logged recipient (`"a b"@Example.COM` → `example.com`).
fn domain_of(recipient: &str) -> Option<String> {
    let (_, domain) = recipient.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// The provider a relay host belongs to, by the longest configured suffix.
fn provider_of_relay<'t>(t: &'t Throttle, relay: &str) -> Option<&'t str> {
    let relay = relay.trim_end_matches('.').to_ascii_lowercase();
    t.relays
        .iter()
        .find(|(suffix, _)| {
            relay == *suffix
                || relay
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|r| r.ends_with('.'))
        })
        .map(|(_, p)| p.as_str())
}

impl Throttler {
    /// The provider of a recipient domain: configured, else learned.
    pub fn provider_of_domain(&self, t: &Throttle, domain: &str) -> Option<String> {
        if let Some((_, p)) = t.domains.iter().find(|(d, _)| d == domain) {
            return Some(p.clone());
        }
        lock(&self.learned).get(domain).cloned()
    }

    fn learn(&self, t: &Throttle, domain: &str, provider: &str) {
        if t.domains.iter().any(|(d, _)| d == domain) {
            return;
        }
        let mut learned = lock(&self.learned);
        if learned.get(domain).map(String::as_str) == Some(provider) {
            return;
        }
        if learned.len() < MAX_LEARNED || learned.contains_key(domain) {
            learned.insert(domain.to_string(), provider.to_string());
        }
    }

    /// Feeds one delivery result from the log. Results with no relay
    /// (our own hold transport, a destination Postfix already suspended)
    /// reached no provider and count for nothing.
    pub fn on_delivery(
        &self,
        t: &Throttle,
        d: &Delivery,
        c: &Classification,
        now: u64,
    ) -> Option<Change> {
        let relay = d.relay.as_deref()?;
        let domain = domain_of(&d.recipient)?;
        let known = |p: &str| t.providers.iter().any(|q| q.name == p);
        let provider = provider_of_relay(t, relay)
            .map(str::to_string)
            .or_else(|| known(&c.provider).then(|| c.provider.clone()))
            .or_else(|| self.provider_of_domain(t, &domain))?;
        self.learn(t, &domain, &provider);
        let policy = t.providers.iter().find(|p| p.name == provider)?;
        let counted = matches!(d.status, DeliveryStatus::Deferred | DeliveryStatus::Bounced)
            && policy.rules.contains(&c.rule);
        let outcome = if counted {
            Outcome::Pushback
        } else {
            Outcome::Attempt
        };
        lock(&self.store).record(policy, outcome, now)
    }

    /// The socketmap answer for one lookup, and the metric label for it.
    pub fn answer(&self, t: &Throttle, name: &str, key: &str) -> (String, &'static str) {
        // Postfix sends a socketmap the full recipient address only (no
        // partial keys, socketmap_table(5)); a bare domain is answered too
        // (postmap -q). The route depends on the domain alone.
        let domain = key.rsplit_once('@').map_or(key, |(_, d)| d);
        if name != t.map_name || domain.starts_with('.') || domain == "*" || domain.is_empty() {
            return ("NOTFOUND ".into(), "notfound");
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let Some(provider) = self.provider_of_domain(t, &domain) else {
            return ("NOTFOUND ".into(), "notfound");
        };
        let level = lock(&self.store).level(&provider);
        match (level, t.observe) {
            (Level::Normal, _) => ("NOTFOUND ".into(), "normal"),
            (Level::Slow, true) => ("NOTFOUND ".into(), "observe_slow"),
            (Level::Hold, true) => ("NOTFOUND ".into(), "observe_hold"),
            (Level::Slow, false) => (format!("OK {}", t.slow_transport), "slow"),
            (Level::Hold, false) => (format!("OK {}", t.hold_transport), "hold"),
        }
    }

    /// Lets levels decay and copies them into the metrics.
    pub fn tick(&self, shared: &Shared, t: &Throttle, now: u64) {
        let mut store = lock(&self.store);
        for change in store.tick(&t.providers, now) {
            report(shared, t, &change);
        }
        let elapsed = {
            let mut last = lock(&self.last_tick);
            let e = if *last == 0 {
                0
            } else {
                now.saturating_sub(*last)
            };
            *last = now;
            e
        };
        let m = &shared.metrics;
        for (provider, level, _) in store.levels(now) {
            for l in Level::ALL {
                m.throttle_state
                    .with_label_values(&[&provider, l.as_str()])
                    .set(i64::from(l == level));
            }
            m.throttle_seconds
                .with_label_values(&[&provider, level.as_str()])
                .inc_by(elapsed);
        }
    }
}

/// Logs and counts a level change.
pub fn report(shared: &Shared, t: &Throttle, c: &Change) {
    let mode = if t.observe {
        "would switch"
    } else {
        "switching"
    };
    tracing::warn!(
        provider = %c.provider,
        from = c.from.as_str(),
        to = c.to.as_str(),
        deferrals_per_minute = c.per_minute,
        share_permille = c.share_permille,
        observe = t.observe,
        "throttle: {mode} {} from {} to {}",
        c.provider,
        c.from.as_str(),
        c.to.as_str()
    );
    shared
        .metrics
        .throttle_changes
        .with_label_values(&[&c.provider, c.to.as_str()])
        .inc();
    for l in Level::ALL {
        shared
            .metrics
            .throttle_state
            .with_label_values(&[&c.provider, l.as_str()])
            .set(i64::from(l == c.to));
    }
}

/// Serves the socketmap until the process stops. Each connection is its
/// own task; a broken one is closed and logged at debug level.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("throttle socketmap: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let answer = |name: &str, key: &str| {
                let config = shared.config.load();
                let Some(t) = config.throttle.as_ref() else {
                    return "NOTFOUND ".to_string();
                };
                let (reply, label) = shared.throttle.answer(t, name, key);
                shared
                    .metrics
                    .throttle_lookups
                    .with_label_values(&[label])
                    .inc();
                reply
            };
            if let Err(e) = socketmap::serve(stream, answer).await {
                tracing::debug!(%peer, "throttle socketmap connection closed: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThrottleStep;
    use std::time::Duration;

    fn throttle() -> Throttle {
        Throttle {
            listen: "127.0.0.1:0".parse().unwrap(),
            map_name: "transport".into(),
            observe: false,
            slow_transport: "slow:".into(),
            hold_transport: "retry:4.7.0 held".into(),
            relays: vec![("yahoodns.net".into(), "yahoo".into())],
            domains: vec![("yahoo.example".into(), "yahoo".into())],
            providers: vec![ThrottlePolicy {
                name: "yahoo".into(),
                rules: vec!["yahoo-ts01".into()],
                window: Duration::from_secs(60),
                slow: ThrottleStep {
                    per_minute: 2,
                    share_permille: 100,
                    hold_for: Duration::from_secs(600),
                },
                hold: None,
            }],
        }
    }

    fn delivery(line: &[u8]) -> (Delivery, Classification) {
        let crate::logwatch::LogEvent::Delivery(d) = crate::logwatch::parse_line(line) else {
            panic!("not a delivery")
        };
        let c = crate::logwatch::outbound::classify_delivery(
            &d,
            &crate::dsn::RuleSet::builtin().unwrap(),
        );
        (d, c)
    }

    const TS01: &[u8] = b"Nov 27 10:00:01 lists postfix/smtp[1234]: 4ABCD123: to=<gina@ymail.example>, relay=mta5.am0.yahoodns.net[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.0, status=deferred (host mta5.am0.yahoodns.net[192.0.2.1] said: 421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred due to user complaints (in reply to MAIL FROM command))";

    #[test]
    fn deferrals_learn_the_domain_and_slow_its_provider() {
        let (t, th) = (throttle(), Throttler::default());
        assert_eq!(th.answer(&t, "transport", "ymail.example").1, "notfound");
        let (d, c) = delivery(TS01);
        assert_eq!(c.rule, "yahoo-ts01");
        assert!(th.on_delivery(&t, &d, &c, 1000).is_none());
        let change = th.on_delivery(&t, &d, &c, 1000).unwrap();
        assert_eq!(change.to, Level::Slow);
        assert_eq!(
            th.answer(&t, "transport", "YMAIL.example"),
            ("OK slow:".to_string(), "slow")
        );
        // The configured domain shares the provider's level.
        assert_eq!(th.answer(&t, "transport", "yahoo.example").1, "slow");
        // Postfix asks with the full address.
        assert_eq!(th.answer(&t, "transport", "a+x@Yahoo.Example").1, "slow");
        assert_eq!(th.answer(&t, "transport", ".yahoo.example").1, "notfound");
        assert_eq!(th.answer(&t, "transport", "*").1, "notfound");
        assert_eq!(th.answer(&t, "other", "yahoo.example").1, "notfound");
    }

    #[test]
    fn observe_mode_answers_notfound() {
        let (mut t, th) = (throttle(), Throttler::default());
        t.observe = true;
        let (d, c) = delivery(TS01);
        th.on_delivery(&t, &d, &c, 1000);
        th.on_delivery(&t, &d, &c, 1000);
        assert_eq!(
            th.answer(&t, "transport", "yahoo.example"),
            ("NOTFOUND ".to_string(), "observe_slow")
        );
    }

    #[test]
    fn results_without_a_relay_count_for_nothing() {
        let (t, th) = (throttle(), Throttler::default());
        let line = b"4ABCD123: to=<a@yahoo.example>, relay=none, delay=1, delays=0/0/0/1, dsn=4.7.0, status=deferred (held by listwarden)";
        let (d, c) = delivery(line);
        for _ in 0..10 {
            assert!(th.on_delivery(&t, &d, &c, 1000).is_none());
        }
        assert_eq!(th.answer(&t, "transport", "yahoo.example").1, "normal");
    }

    #[test]
    fn relay_suffixes_match_whole_labels() {
        let t = throttle();
        assert_eq!(
            provider_of_relay(&t, "mta5.am0.yahoodns.net"),
            Some("yahoo")
        );
        assert_eq!(provider_of_relay(&t, "yahoodns.net."), Some("yahoo"));
        assert_eq!(provider_of_relay(&t, "notyahoodns.net"), None);
    }
}
