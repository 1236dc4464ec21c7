//! listwarden: a Postfix milter that protects mailing-list servers.
//!
//! The crate is a library plus a thin binary (`src/main.rs`). The pieces:
//! [`config`] reads and checks the YAML file, [`policy`] decides (pure),
//! [`milter`] speaks the protocol, [`address`] parses and signs addresses,
//! [`ratelimit`] and [`shield`] hold flood-control state, [`metrics`]
//! counts and serves `/metrics`, [`daemon`] wires them together with
//! signals and reload.

pub mod config;
pub mod daemon;
pub mod dsn;
pub mod incident;
pub mod logwatch;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod ratelimit;
pub mod shield;

/// Addresses and signatures, shared with the expander.
pub use listwarden_core::address;

use arc_swap::ArcSwap;
use config::{Config, StateBackend};
use incident::IncidentBook;
use metrics::Metrics;
use ratelimit::{Clock, MemoryStore, MonotonicClock, RedisConfig, RedisStore, Store};
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
    pub rates: std::sync::Mutex<logwatch::outbound::ComplaintRates>,
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
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            metrics: Arc::new(metrics),
            store,
            shields: ShieldBook::new(clock.clone()),
            incidents: IncidentBook::new(clock),
            rates: Default::default(),
        })
    }

    /// Copies the store's state and the complaint rates into the metrics;
    /// called periodically.
    pub fn refresh_metrics(&self, last_errors: &mut u64) {
        let m = &self.metrics;
        let rates = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rates(unix_now());
        for (list, rate) in rates {
            m.complaint_rate.with_label_values(&[&list]).set(rate);
        }
        m.ratelimit_keys
            .set(i64::try_from(self.store.len()).unwrap_or(i64::MAX));
        m.ratelimit_fallback_active
            .set(i64::from(self.store.fallback_active()));
        let errors = self.store.stats().errors_total();
        if errors > *last_errors {
            m.ratelimit_backend_errors
                .with_label_values(&[self.store.backend()])
                .inc_by(errors - *last_errors);
            *last_errors = errors;
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn build_store(state: &StateBackend, clock: Arc<dyn Clock>) -> Store {
    match state {
        StateBackend::Memory { max_keys } => {
            Store::Memory(MemoryStore::with_clock(*max_keys, clock))
        }
        StateBackend::Redis {
            url,
            prefix,
            deadline,
            node_count,
            max_keys,
        } => {
            let config = RedisConfig {
                url: url.clone(),
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
    }
}
