//! Safe reload: a new file replaces the running config only when it is
//! valid as a whole. Settings bound at start (sockets, connection limit)
//! cannot change while running; a reload keeps them and says so.

use super::{Config, ConfigError};
use std::path::Path;

/// The outcome of a successful reload.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// Restart-only settings that changed in the file and were kept.
    pub kept: Vec<String>,
}

/// Loads `path` as the successor of `current`.
pub fn reload(path: &Path, current: &Config) -> Result<Reloaded, ConfigError> {
    let mut config = Config::load(path)?;
    let mut kept = Vec::new();
    if config.milter != current.milter {
        kept.push(format!(
            "milter settings changed ({} → {}); they apply after a restart",
            current.milter.listen, config.milter.listen
        ));
        config.milter = current.milter.clone();
    }
    if config.unsubscribe_listen != current.unsubscribe_listen {
        kept.push("unsubscribe_listen changed; it applies after a restart".to_string());
        config.unsubscribe_listen = current.unsubscribe_listen;
    }
    // No listener runs (it starts only at launch): copies must not
    // advertise one-click URLs nobody answers. Until a restart, lists
    // keep the list manager's own headers.
    if config.unsubscribe_listen.is_none() {
        let mut off = Vec::new();
        for l in &mut config.lists {
            if l.unsubscribe_url.take().is_some() {
                off.push(l.address.to_string());
            }
        }
        if !off.is_empty() {
            kept.push(format!(
                "unsubscribe_url of {} not used until a restart starts the unsubscribe_listen listener",
                off.join(", ")
            ));
        }
    }
    if config.metrics_listen != current.metrics_listen {
        kept.push("metrics.listen changed; it applies after a restart".to_string());
        config.metrics_listen = current.metrics_listen;
    }
    if config.ratelimit.state != current.ratelimit.state {
        kept.push("ratelimit.state and max_keys changed; they apply after a restart".to_string());
        config.ratelimit.state = current.ratelimit.state.clone();
    }
    if config.logwatch_file != current.logwatch_file {
        kept.push("logwatch.file changed; it applies after a restart".to_string());
        config.logwatch_file = current.logwatch_file.clone();
    }
    Ok(Reloaded { config, kept })
}
