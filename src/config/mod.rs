//! Configuration: the YAML file, checked once at load into the typed
//! [`Config`] that the rest of listwarden reads. Nothing downstream parses
//! strings or handles a bad value: if a `Config` exists, it is valid.
//!
//! * `model`: the file as serde reads it (every struct refuses unknown keys);
//! * `validate`: turns it into a `Config`, one module per section, every
//!   problem reported as `FILE:LINE:COLUMN: key.path: message`
//!   (`listwarden_core::diag`);
//! * [`types`]: the checked settings; [`defaults`]: every default value;
//! * [`protected`]: which addresses are protected, and by what;
//! * [`reload`]: what a reload may change.

pub mod defaults;
pub mod feedback;
mod model;
mod preset;
pub mod protected;
pub mod reload;
pub mod types;
mod validate;

pub use listwarden_core::diag::{ConfigError, Diagnostic, MAX_FILE_BYTES};
pub use listwarden_core::signing::DEFAULT_VALIDITY_DAYS;
pub use listwarden_expand::settings::{Expander, ListExpand};
pub use preset::{BounceCheck, Preset};
pub use protected::{Owner, Protected, Role};
pub use types::*;
pub(crate) use validate::plain_domain;

use crate::address::KeyRing;
use ipnet::IpNet;
use listwarden_core::diag::{self, Checker};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The validated configuration. Cheap to share: held in an `Arc` and
/// swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    pub milter: MilterSettings,
    /// Where `/metrics` and `/healthz` are served; `None` turns HTTP off.
    pub metrics_listen: Option<SocketAddr>,
    /// Where one-click unsubscribe is served (`unsubscribe_listen`, or
    /// the older `expander.unsubscribe_listen`); `None`: no one-click.
    pub unsubscribe_listen: Option<SocketAddr>,
    /// Global observe mode: no refusals, verdicts logged and counted;
    /// signing and tag hygiene stay on.
    pub observe: bool,
    pub on_error: OnError,
    pub trusted_networks: Vec<IpNet>,
    pub limits: MessageLimits,
    /// BATV keys; `None` when no signing is configured.
    pub signing: Option<KeyRing>,
    /// How to recognise our own mail in a returned original.
    pub trace: Trace,
    pub lists: Vec<List>,
    /// Whole list domains: every address on them is protected.
    pub domains: Vec<ListDomain>,
    /// Bounce budgets and where their state lives.
    pub ratelimit: Ratelimit,
    /// Automatic strict mode for a list under a backscatter attack.
    pub shield: Option<Shield>,
    /// Postfix's log file to follow for outbound results (restart to change).
    pub logwatch_file: Option<PathBuf>,
    /// The thin list expander, for lists with an `expand:` block.
    pub expander: Option<Expander>,
    /// Adaptive outbound throttling (`None`: no transport table is written).
    pub throttle: Option<Throttle>,
    /// The end-to-end probe (`canary:`); `None` when not configured.
    pub canary: Option<Canary>,
    /// Bounce classification rules: built-in provider rules plus the
    /// operator's files, which override rules of the same name.
    pub rules: crate::dsn::RuleSet,
    /// Feedback-loop reports (`feedback:`); `None` when none is configured.
    pub feedback: Option<feedback::Settings>,
    /// The bounce storm detector; `None` when turned off.
    pub incident: Option<Incident>,
    /// The addresses `lists` protect.
    protected: protected::Index,
    /// Problems that do not stop the config from running, rendered as
    /// `FILE:LINE:COLUMN: key: message` (e.g. the public example key).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = diag::read_config(path)?;
        Config::parse(&source, path)
    }

    /// Validates YAML source; `origin` names the file in errors and anchors
    /// relative paths.
    pub fn parse(source: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw: model::RawConfig = diag::parse_yaml(source, origin)?;
        let mut v = validate::Validator {
            check: Checker::new(source, origin),
        };
        let mut config = v.config(raw);
        config.warnings = v.check.finish()?;
        Ok(config)
    }

    /// True when the client address is in a trusted network.
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests;
