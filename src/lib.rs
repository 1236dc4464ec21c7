//! listwarden: a Postfix milter that protects mailing-list servers.
//!
//! The crate is a library plus a thin binary (`src/main.rs`). The pieces:
//! [`config`] reads and checks the YAML file, [`policy`] decides (pure),
//! [`milter`] speaks the protocol, [`metrics`] counts and serves `/metrics`,
//! [`daemon`] wires them together with signals and reload.

pub mod address;
pub mod config;
pub mod daemon;
pub mod metrics;
pub mod milter;
pub mod policy;

use arc_swap::ArcSwap;
use config::Config;
use metrics::Metrics;
use std::sync::Arc;

/// State shared by every milter connection: the current config snapshot
/// (swapped whole on reload) and the metrics.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let metrics = Metrics::new();
        metrics.config_loaded();
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            metrics: Arc::new(metrics),
        })
    }
}
