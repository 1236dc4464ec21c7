//! The YAML file as serde sees it. Every struct refuses unknown keys, so a
//! typo is an error rather than a silently ignored setting. Values stay
//! strings here; `validate` turns them into checked types.

use listwarden_core::signing::RawSigning;
use listwarden_expand::settings::{RawExpander, RawListExpand};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub milter: RawMilter,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub observe: bool,
    #[serde(default)]
    pub on_error: Option<String>,
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub signing: Option<RawSigning>,
    #[serde(default)]
    pub trace: RawTrace,
    #[serde(default)]
    pub lists: Vec<RawList>,
    #[serde(default)]
    pub domains: Vec<RawDomain>,
    #[serde(default)]
    pub ratelimit: RawRatelimit,
    #[serde(default)]
    pub shield: RawShield,
    #[serde(default)]
    pub classification: RawClassification,
    #[serde(default)]
    pub logwatch: RawLogwatch,
    #[serde(default)]
    pub expander: Option<RawExpander>,
    #[serde(default)]
    pub feedback: Option<RawFeedback>,
    #[serde(default)]
    pub throttle: Option<RawThrottle>,
    #[serde(default)]
    pub canary: Option<RawCanary>,
    /// `IP:PORT` of the one-click unsubscribe listener.
    #[serde(default)]
    pub unsubscribe_listen: Option<String>,
}

/// `canary:`: the end-to-end probe of `listwarden canary`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub address: String,
    pub sender: String,
    pub smtp: String,
    #[serde(default)]
    pub helo: Option<String>,
    #[serde(default)]
    pub wait: Option<String>,
    #[serde(default)]
    pub max_age: Option<String>,
    #[serde(default)]
    pub dir: Option<String>,
}

/// `feedback:`: feedback-loop reports and what a complaint does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedback {
    /// Addresses the providers' feedback loops deliver to.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub act_on: Option<Vec<String>>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub lists: Vec<RawFeedbackList>,
    #[serde(default)]
    pub mailman3: Option<RawMailman3>,
    #[serde(default)]
    pub sympa_command: Option<Vec<String>>,
    #[serde(default)]
    pub sendmail: Option<String>,
    #[serde(default)]
    pub retry: Option<String>,
}

/// `feedback.lists[]`: one list's own complaint action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedbackList {
    pub list: String,
    pub action: String,
}

/// `feedback.mailman3`: Mailman 3's REST API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailman3 {
    pub url: String,
    pub user: String,
    pub password_file: String,
}

/// `throttle:`: adaptive outbound throttling through a transport table
/// listwarden writes for Postfix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThrottle {
    /// `TYPE:/path`, as named in Postfix's transport_maps.
    #[serde(default)]
    pub map: Option<String>,
    #[serde(default)]
    pub observe: bool,
    #[serde(default)]
    pub slow: Option<String>,
    #[serde(default)]
    pub hold: Option<String>,
    /// Relay host suffix → provider, added to the built-in ones.
    #[serde(default)]
    pub relays: std::collections::BTreeMap<String, String>,
    /// Recipient domain → provider, to start from.
    #[serde(default)]
    pub domains: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub providers: Vec<RawThrottleProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThrottleProvider {
    pub name: String,
    pub rules: Vec<String>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub slow: Option<RawThrottleStep>,
    #[serde(default)]
    pub hold: Option<RawThrottleStep>,
}

/// `{per_minute: 5, share: 0.05, lasts: 15m}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThrottleStep {
    pub per_minute: u32,
    #[serde(default)]
    pub share: Option<f64>,
    pub lasts: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogwatch {
    /// Postfix's log file, followed across rotation.
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassification {
    /// Rule files added to (and overriding) the built-in provider rules.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Use the built-in rules (config/rules/providers.yaml) at all.
    #[serde(default)]
    pub builtin: Option<bool>,
    /// The bounce storm detector.
    #[serde(default)]
    pub incident: RawIncident,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncident {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub trigger: Option<u32>,
    #[serde(default)]
    pub within: Option<String>,
    #[serde(default)]
    pub hold: Option<String>,
    #[serde(default)]
    pub max_keys: Option<usize>,
}

/// `ratelimit.redis_tls`: PEM files for `rediss` URLs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRatelimit {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub max_keys: Option<usize>,
    #[serde(default)]
    pub redis_prefix: Option<String>,
    #[serde(default)]
    pub redis_deadline_ms: Option<u64>,
    #[serde(default)]
    pub redis_tls: RawRedisTls,
    #[serde(default)]
    pub node_count: Option<u32>,
    #[serde(default)]
    pub ipv4_prefix: Option<u8>,
    #[serde(default)]
    pub ipv6_prefix: Option<u8>,
    #[serde(default)]
    pub budgets: RawBudgets,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    #[serde(default)]
    pub list_valid: Option<RawQuota>,
    #[serde(default)]
    pub list_invalid: Option<RawQuota>,
    #[serde(default)]
    pub network: Option<RawQuota>,
    #[serde(default)]
    pub address: Option<RawQuota>,
}

/// `{rate: 60, per: 1m, burst: 120}`; `rate: 0` turns the budget off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub rate: u32,
    pub per: String,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShield {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub trigger: Option<u32>,
    #[serde(default)]
    pub within: Option<String>,
    #[serde(default)]
    pub hold: Option<String>,
    #[serde(default)]
    pub refuse_with: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrace {
    #[serde(default)]
    pub received_by: Vec<String>,
    #[serde(default)]
    pub message_id_domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    pub domain: String,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub bounces: Option<String>,
    #[serde(default)]
    pub observe: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMilter {
    pub listen: String,
    #[serde(default)]
    pub socket_mode: Option<String>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Seconds a new connection may take to negotiate (`10s`).
    #[serde(default)]
    pub negotiate_timeout: Option<String>,
    /// How long a connection may sit idle between commands (`330s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `host:port`, or absent / `off` for no HTTP endpoint.
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub max_recipients: Option<usize>,
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub max_mime_depth: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    pub address: String,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub bounces: Option<String>,
    #[serde(default)]
    pub observe: bool,
    /// Clients that may send as this list: networks, or `sasl:LOGIN`.
    #[serde(default)]
    pub senders: Option<Vec<String>>,
    #[serde(default)]
    pub expand: Option<RawListExpand>,
    /// One-click unsubscribe base URL of a list-manager list.
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
}
