//! The YAML file as serde sees it. Every struct refuses unknown keys, so a
//! typo is an error rather than a silently ignored setting. Values stay
//! strings here; `validate` turns them into checked types.

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
    pub lists: Vec<RawList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMilter {
    pub listen: String,
    #[serde(default)]
    pub socket_mode: Option<String>,
    #[serde(default)]
    pub max_connections: Option<usize>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    pub address: String,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub observe: bool,
}
