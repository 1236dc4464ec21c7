//! listwarden: a Postfix milter that protects mailing-list servers.
//!
//! # Layout
//!
//! A Cargo workspace of three crates, each depending only on those before it:
//!
//! * `listwarden-core` (`crates/core`): what the milter and the expander
//!   share: [`address`] (envelope and header readings, BATV `prvs`, signed
//!   VERP, the key ring), `signing` (the `signing:` section), `tag` (the
//!   `X-Listwarden-Bounce:` header: the only contract between the milter and
//!   whoever acts on bounces), `diag` (config errors as
//!   `FILE:LINE:COLUMN: key.path: message`).
//! * `listwarden-expand` (`crates/expand`): the thin list expander, its own
//!   program (`listwarden-expand pipe|members|bounces|held`), reading only its
//!   blocks of the config.
//! * `listwarden` (this crate): the milter.
//!
//! A function or constant is `pub(crate)` unless `main.rs`, the tests in
//! `tests/`, `benches/` or `fuzz/` call it, so the dead-code lint sees what
//! nothing uses. What tests share (a real milter on a socket, configs,
//! keys, a raw milter client) is the `tests/support` crate, not hooks here.
//!
//! In this crate, a message flows through:
//!
//! * [`milter`]: the protocol. `milter::session` holds one connection's
//!   state, reads what each callback brings into [`policy::Facts`], and
//!   turns the verdict into the answer; it logs and counts nothing itself
//!   but returns what it observed as `record::Event`s. The callbacks in
//!   `milter/mod.rs` stay thin and hand those to the one recorder
//!   (`src/record.rs`), which writes every verdict log line and metric.
//! * [`policy`]: the decision, a pure function: [`policy::decide`] takes the
//!   facts and what it reads of the config (a [`policy::View`]) and returns
//!   a [`policy::Verdict`] that carries its SMTP reply. No I/O, no clock:
//!   table-driven tests in `policy/tests.rs` on a view built in code.
//! * [`dsn`]: reading bounces and feedback reports (`parse`, `plain`,
//!   `fields`), classifying them with rules (`rules`, `classify`), and the
//!   tag values (`tag`).
//! * [`ratelimit`] and `shield`: flood budgets (GCRA, memory or Redis)
//!   and the per-list shield; [`logwatch`]: Postfix's log, for outbound
//!   results and the complaint rate.
//! * [`config`]: the YAML file, checked once into typed settings
//!   (`model` → `validate/*` → [`config::Config`]; defaults in
//!   [`config::defaults`]); [`metrics`]: Prometheus; [`daemon`]: listeners,
//!   signals and reload around all of it.
//!
//! # Recipes
//!
//! **A policy check.** Add what the check needs to [`policy::Facts`] (and
//! fill it in `milter::session` at the stage where Postfix has told it),
//! write the rule in the `decide_*` function of that stage in
//! `policy/mod.rs`, and, if it refuses, add a [`policy::Cause`] (its
//! `as_str` is the metric label and log word). Add rows to the tables in
//! `policy/tests.rs`, and a scenario in `integration/scenarios/` that sends
//! the mail through Postfix.
//!
//! **A provider rule.** Append it to `config/rules/providers.yaml` (the
//! file's head documents the match keys, classes and reasons; specific
//! before generic, first match wins), with a DSN in `tests/fixtures/` or a
//! unit test in `dsn/classify.rs` that shows the rule matching a reply
//! written from the provider's documentation. Operators add or override
//! rules in their own file (`classification.rules`) without a rebuild.
//!
//! **A metric.** Declare it in [`metrics::Metrics`] (`src/metrics.rs`: one
//! field, and one line in `Metrics::new` that builds and registers it;
//! bounded labels, `_total` only on counters), count it in `record.rs`
//! from the `Event` that observes it (add a variant if none does), and add it to the METRICS section of
//! `packaging/man/listwarden.yaml.5`: `tests/docs.rs` fails until the man
//! page lists it. A dashboard panel (`packaging/grafana/`) or an alert with
//! its `promtool` test (`packaging/prometheus/`) is the usual companion.

pub mod canary;
pub mod config;
pub mod daemon;
pub mod dsn;
pub mod feedback;
pub mod incident;
pub mod logwatch;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod ratelimit;
pub mod rates;
mod record;
#[cfg(feature = "redis")]
pub mod shared_state;
mod shield;
pub mod throttle;
mod unsubscribe;
pub mod watch;

/// Addresses and signatures, shared with the expander.
pub use listwarden_core::address;

use arc_swap::ArcSwap;
use config::{Config, StateBackend};
use incident::IncidentBook;
use metrics::Metrics;
use ratelimit::{Clock, MemoryStore, MonotonicClock, Store};
#[cfg(feature = "redis")]
use ratelimit::{RedisConfig, RedisStore};
use shield::ShieldBook;
use std::sync::Arc;

/// State shared by every milter connection: the current config snapshot
/// (swapped whole on reload), the metrics, the rate-limit store and the
/// shields.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub shields: ShieldBook,
    /// Bounce storms per (provider, rule).
    pub incidents: IncidentBook,
    /// Complaints and deliveries per list, for the complaint-rate gauge.
    pub rates: std::sync::Mutex<rates::ComplaintRates>,
    /// Provider levels for adaptive outbound throttling.
    pub throttle: throttle::Throttler,
}

impl Shared {
    /// Builds the shared state; a Redis store needs a Tokio runtime.
    pub fn new(config: Config) -> Arc<Shared> {
        Shared::with_clock(config, Arc::new(MonotonicClock::new()))
    }

    /// As [`Shared::new`], with a clock tests can move.
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Arc<Shared> {
        let metrics = Metrics::new();
        metrics.config_loaded();
        let store = build_store(&config.ratelimit.state, clock.clone());
        // Bounce storms are counted per host, like the traffic each MX sees.
        let incidents = IncidentBook::new(clock.clone());
        // With Redis, shields and complaint windows are also kept there (shared_state).
        let (shields, rates) = match store {
            #[cfg(feature = "redis")]
            Store::Redis(_) => (ShieldBook::shared(clock), rates::ComplaintRates::shared()),
            Store::Memory(_) => (ShieldBook::new(clock), Default::default()),
        };
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            metrics: Arc::new(metrics),
            store,
            shields,
            incidents,
            rates: std::sync::Mutex::new(rates),
            throttle: Default::default(),
        })
    }
}

/// The one wall clock, shared with the expander.
pub use listwarden_core::clock::{today, unix_now};

fn build_store(state: &StateBackend, clock: Arc<dyn Clock>) -> Store {
    match state {
        StateBackend::Memory { max_keys } => {
            Store::Memory(MemoryStore::with_clock(*max_keys, clock))
        }
        #[cfg(feature = "redis")]
        StateBackend::Redis {
            url,
            tls,
            prefix,
            deadline,
            node_count,
            max_keys,
        } => {
            let config = RedisConfig {
                url: url.clone(),
                tls: tls.clone(),
                prefix: prefix.clone(),
                deadline: *deadline,
                node_count: *node_count,
                fallback_max_keys: *max_keys,
                ..RedisConfig::default()
            };
            match RedisStore::with_clock(config, clock.clone()) {
                Ok(store) => Store::Redis(store),
                Err(e) => {
                    tracing::error!(
                        "cannot use Redis for rate limits ({e}); using the memory store"
                    );
                    Store::Memory(MemoryStore::with_clock(*max_keys, clock))
                }
            }
        }
        // The config refuses Redis URLs in a build without Redis.
        #[cfg(not(feature = "redis"))]
        StateBackend::Redis { max_keys, .. } => {
            Store::Memory(MemoryStore::with_clock(*max_keys, clock))
        }
    }
}
