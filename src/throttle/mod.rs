//! Adaptive outbound throttling. listwarden writes a table for Postfix's
//! `transport_maps`: each recipient domain whose provider is pushing back
//! (Yahoo's `[TS01]`, Gmail's 4.7.28, ...) routes to a slower transport or
//! a hold transport; every other domain is absent, so Postfix takes its
//! normal route. Postfix reads the file itself, so listwarden being down
//! never fails a lookup; an empty table (written at a clean stop and by
//! `listwarden throttle-reset`) routes everything normally.
//!
//! * `decide`: the pure state machine (normal, slow, hold; decay);
//! * `map`: writing and indexing the table;
//! * this module: which provider a domain or relay belongs to (from the
//!   config and learned from the log, never from DNS), and the glue to
//!   the log watch, the metrics and the table.
//!
//! Levels are decided in this process from its own log. With a Redis
//! `ratelimit.state`, each host publishes its steps (provider, level, time
//! left) and reads every host's back (src/shared_state.rs): a provider
//! slowed on one host is slowed in every host's table. Without Redis, or
//! while it is away, each host goes on with its own levels.

pub mod decide;
pub mod map;

pub use decide::{Change, Engine, Level, Outcome};

use crate::Shared;
use crate::config::{MapSpec, Throttle, ThrottlePolicy};
use crate::dsn::Classification;
use crate::logwatch::{Delivery, DeliveryStatus};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// At most one table rewrite this often: each makes Postfix restart its
/// resolver, and a switch need not apply faster.
const MAP_MIN_GAP: Duration = Duration::from_secs(5);
/// The table is compared with the levels this often without a change
/// signal (decay is noticed by the housekeeping tick, which signals).
const MAP_RECHECK: Duration = Duration::from_secs(30);

/// Recipient domains learned from the log; beyond this nothing new is
/// learned (configured domains and relay suffixes still apply).
const MAX_LEARNED: usize = 100_000;

/// Where this host's provider levels are kept (in memory; other hosts'
/// steps arrive through [`Throttler::set_remote`]).
pub trait LevelStore: Send {
    /// Counts one result and re-decides; returns a level change.
    fn record(&mut self, policy: &ThrottlePolicy, outcome: Outcome, now: u64) -> Option<Change>;
    /// Re-decides every provider (decay without traffic).
    fn tick(&mut self, policies: &[ThrottlePolicy], now: u64) -> Vec<Change>;
    fn level(&self, provider: &str) -> Level;
    /// (provider, level, seconds it still lasts) above normal.
    fn steps(&self, now: u64) -> Vec<(String, Level, u64)>;
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
    fn steps(&self, now: u64) -> Vec<(String, Level, u64)> {
        Engine::steps(self, now)
    }
}

/// The running throttle: provider levels and the domains learned.
pub struct Throttler {
    store: Mutex<Box<dyn LevelStore>>,
    learned: Mutex<HashMap<String, String>>,
    /// Unix time of the last tick, for time-in-state counters.
    last_tick: Mutex<u64>,
    /// Signalled when the table's content may have changed.
    changed: tokio::sync::Notify,
    /// Steps of every host, read from Redis: provider → (level, until).
    remote: Mutex<HashMap<String, (Level, u64)>>,
}

impl Default for Throttler {
    fn default() -> Self {
        Throttler {
            store: Mutex::new(Box::new(Engine::default())),
            learned: Mutex::default(),
            last_tick: Mutex::new(0),
            changed: tokio::sync::Notify::new(),
            remote: Mutex::default(),
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The domain of a logged recipient (`"a b"@Example.COM` → `example.com`);
/// only a plain domain can become a table key.
fn domain_of(recipient: &str) -> Option<String> {
    let (_, domain) = recipient.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    crate::config::plain_domain(&domain).then_some(domain)
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
            self.changed.notify_one();
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
        // An address literal or an odd domain still counts for its
        // provider, but never becomes a table key.
        let domain = domain_of(&d.recipient);
        let known = |p: &str| t.providers.iter().any(|q| q.name == p);
        let provider = provider_of_relay(t, relay)
            .map(str::to_string)
            .or_else(|| known(&c.provider).then(|| c.provider.clone()))
            .or_else(|| {
                domain
                    .as_deref()
                    .and_then(|d| self.provider_of_domain(t, d))
            })?;
        if let Some(domain) = &domain {
            self.learn(t, domain, &provider);
        }
        let policy = t.providers.iter().find(|p| p.name == provider)?;
        let counted = matches!(d.status, DeliveryStatus::Deferred | DeliveryStatus::Bounced)
            && policy.rules.contains(&c.rule);
        let outcome = if counted {
            Outcome::Pushback
        } else {
            Outcome::Attempt
        };
        let change = lock(&self.store).record(policy, outcome, now);
        if change.is_some() {
            self.changed.notify_one();
        }
        change
    }

    /// A provider's level: this host's, or a higher one another host
    /// shared that has not run out.
    fn level(&self, store: &dyn LevelStore, provider: &str, now: u64) -> Level {
        let local = store.level(provider);
        match lock(&self.remote).get(provider) {
            Some(&(remote, until)) if until > now => local.max(remote),
            _ => local,
        }
    }

    /// This host's steps to share (none in observe mode: another host
    /// must not act on what this one only logs).
    pub fn local_steps(&self, t: &Throttle, now: u64) -> Vec<(String, Level, u64)> {
        if t.observe {
            return Vec::new();
        }
        lock(&self.store).steps(now)
    }

    /// Takes every host's steps as read from Redis: (provider, level,
    /// seconds left).
    pub fn set_remote(&self, steps: Vec<(String, Level, u64)>, now: u64) {
        let mut next: HashMap<String, (Level, u64)> = HashMap::new();
        for (provider, level, left) in steps {
            let e = next.entry(provider).or_insert((level, 0));
            if level >= e.0 {
                *e = (level, now.saturating_add(left));
            }
        }
        let mut remote = lock(&self.remote);
        let levels = |m: &HashMap<String, (Level, u64)>| {
            let mut v: Vec<(String, Level)> = m.iter().map(|(p, (l, _))| (p.clone(), *l)).collect();
            v.sort();
            v
        };
        if levels(&remote) != levels(&next) {
            tracing::info!(shared = ?levels(&next), "throttle: levels shared through Redis changed");
            self.changed.notify_one();
        }
        *remote = next;
    }

    /// The table's entries: every configured or learned domain of a
    /// slowed or held provider. Empty in observe mode.
    pub fn entries(&self, t: &Throttle) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if t.observe {
            return out;
        }
        let now = crate::unix_now();
        let store = lock(&self.store);
        let learned = lock(&self.learned);
        let configured = t.domains.iter().map(|(d, p)| (d, p));
        for (domain, provider) in learned.iter().chain(configured) {
            let transport = match self.level(store.as_ref(), provider, now) {
                Level::Normal => continue,
                Level::Slow => &t.slow_transport,
                Level::Hold => &t.hold_transport,
            };
            out.insert(domain.clone(), transport.clone());
        }
        out
    }

    /// Lets levels decay and copies them into the metrics.
    pub fn tick(&self, shared: &Shared, t: &Throttle, now: u64) {
        let mut store = lock(&self.store);
        for change in store.tick(&t.providers, now) {
            report(shared, t, &change);
            self.changed.notify_one();
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
        for policy in &t.providers {
            let provider = &policy.name;
            let level = self.level(store.as_ref(), provider, now);
            for l in Level::ALL {
                m.throttle_state
                    .with_label_values(&[provider, l.as_str()])
                    .set(i64::from(l == level));
            }
            m.throttle_seconds
                .with_label_values(&[provider, level.as_str()])
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

/// Keeps Postfix's table in step with the levels until the process stops:
/// writes it at start (so it exists: Postfix defers every lookup in a
/// missing table), rewrites it when its content changes, at most once per
/// `MAP_MIN_GAP`, and empties a table the config no longer names.
pub async fn maintain_map(shared: Arc<Shared>) {
    let mut written: Option<(MapSpec, String)> = None;
    loop {
        let want = shared
            .config
            .load()
            .throttle
            .as_ref()
            .map(|t| (t.map.clone(), shared.throttle.entries(t)));
        let same = match (&want, &written) {
            (Some((spec, entries)), Some((old, text))) => {
                spec == old && map::render(entries) == *text
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            if let Some((old, _)) = &written
                && want.as_ref().is_none_or(|(spec, _)| spec != old)
                && write_map(&shared, old.clone(), String::new(), 0).await
            {
                written = None;
            }
            if let Some((spec, entries)) = want {
                let text = map::render(&entries);
                if write_map(&shared, spec.clone(), text.clone(), entries.len()).await {
                    written = Some((spec, text));
                }
            }
            tokio::time::sleep(MAP_MIN_GAP).await;
        }
        tokio::select! {
            _ = shared.throttle.changed.notified() => {}
            _ = tokio::time::sleep(MAP_RECHECK) => {}
        }
    }
}

/// One table write off the async threads; logs and counts the result.
async fn write_map(shared: &Shared, spec: MapSpec, text: String, entries: usize) -> bool {
    let postmap = std::path::Path::new(crate::config::defaults::POSTMAP);
    let started = std::time::Instant::now();
    let shown = spec.to_string();
    let result = tokio::task::spawn_blocking(move || map::install(&spec, &text, postmap)).await;
    let m = &shared.metrics;
    match result {
        Ok(Ok(wrote)) => {
            if wrote {
                m.throttle_map_writes.with_label_values(&["ok"]).inc();
                tracing::info!(
                    map = %shown,
                    entries,
                    ms = started.elapsed().as_millis() as u64,
                    "throttle: transport table written"
                );
            }
            m.throttle_map_entries
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
            true
        }
        Ok(Err(e)) => {
            m.throttle_map_writes.with_label_values(&["error"]).inc();
            tracing::error!("throttle: cannot write the transport table {shown}: {e}");
            false
        }
        Err(e) => {
            m.throttle_map_writes.with_label_values(&["error"]).inc();
            tracing::error!("throttle: transport table writer failed: {e}");
            false
        }
    }
}

/// Empties the table (a clean stop, `listwarden throttle-reset`): every
/// domain takes Postfix's normal route again.
pub fn reset(spec: &MapSpec) -> Result<bool, map::MapError> {
    map::install(
        spec,
        "",
        std::path::Path::new(crate::config::defaults::POSTMAP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThrottleStep;
    use std::time::Duration;

    fn throttle() -> Throttle {
        Throttle {
            map: MapSpec {
                kind: "hash",
                path: "/nonexistent/transport".into(),
            },
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

    fn table(th: &Throttler, t: &Throttle) -> Vec<(String, String)> {
        th.entries(t).into_iter().collect()
    }

    #[test]
    fn deferrals_learn_the_domain_and_slow_its_provider() {
        let (t, th) = (throttle(), Throttler::default());
        assert!(table(&th, &t).is_empty(), "normal: nothing in the table");
        let (d, c) = delivery(TS01);
        assert_eq!(c.rule, "yahoo-ts01");
        assert!(th.on_delivery(&t, &d, &c, 1000).is_none());
        let change = th.on_delivery(&t, &d, &c, 1000).unwrap();
        assert_eq!(change.to, Level::Slow);
        // The learned domain and the configured one share the level.
        assert_eq!(
            table(&th, &t),
            [
                ("yahoo.example".to_string(), "slow:".to_string()),
                ("ymail.example".to_string(), "slow:".to_string()),
            ]
        );
        // Decay empties the table again.
        let changes = lock(&th.store).tick(&t.providers, 1000 + 601);
        assert_eq!(changes.len(), 1);
        assert!(table(&th, &t).is_empty());
    }

    #[test]
    fn observe_mode_writes_an_empty_table() {
        let (mut t, th) = (throttle(), Throttler::default());
        t.observe = true;
        let (d, c) = delivery(TS01);
        th.on_delivery(&t, &d, &c, 1000);
        assert!(th.on_delivery(&t, &d, &c, 1000).is_some());
        assert!(table(&th, &t).is_empty());
    }

    #[test]
    fn odd_recipient_domains_are_not_learned() {
        let (t, th) = (throttle(), Throttler::default());
        let line = b"Nov 27 10:00:01 lists postfix/smtp[1234]: 4ABCD123: to=<a@[192.0.2.7]>, relay=mta5.am0.yahoodns.net[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.0, status=deferred (host mta5.am0.yahoodns.net[192.0.2.1] said: 421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred due to user complaints (in reply to MAIL FROM command))";
        let (d, c) = delivery(line);
        th.on_delivery(&t, &d, &c, 1000);
        th.on_delivery(&t, &d, &c, 1000);
        // The provider is slowed, but only the configured domain is listed.
        assert_eq!(
            table(&th, &t),
            [("yahoo.example".to_string(), "slow:".to_string())]
        );
    }

    #[test]
    fn a_level_shared_by_another_host_counts_until_it_runs_out() {
        let (t, th) = (throttle(), Throttler::default());
        let now = crate::unix_now();
        th.set_remote(vec![("yahoo".into(), Level::Hold, 600)], now);
        assert_eq!(
            table(&th, &t),
            [("yahoo.example".to_string(), "retry:4.7.0 held".to_string())]
        );
        assert!(
            th.local_steps(&t, now).is_empty(),
            "nothing of its own to share"
        );
        th.set_remote(
            vec![("yahoo".into(), Level::Slow, 0)],
            now.saturating_sub(1),
        );
        assert!(table(&th, &t).is_empty(), "ran out");
    }

    #[test]
    fn results_without_a_relay_count_for_nothing() {
        let (t, th) = (throttle(), Throttler::default());
        let line = b"4ABCD123: to=<a@yahoo.example>, relay=none, delay=1, delays=0/0/0/1, dsn=4.7.0, status=deferred (held by listwarden)";
        let (d, c) = delivery(line);
        for _ in 0..10 {
            assert!(th.on_delivery(&t, &d, &c, 1000).is_none());
        }
        assert!(table(&th, &t).is_empty());
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
