//! The checked settings a [`Config`](super::Config) is made of.

use super::defaults;
use super::{BounceCheck, ListExpand, Preset};
use crate::address::Address;
use crate::ratelimit::Quota;
use ipnet::IpNet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where rate-limit state lives. Changing it needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// In this process, bounded by `max_keys` (least recently used go first).
    Memory { max_keys: usize },
    /// Shared by several MX hosts through Redis or Valkey: one node, a Sentinel service or a
    /// Cluster (`crate::ratelimit::target` reads the URL).
    Redis {
        url: String,
        tls: crate::ratelimit::TlsFiles,
        prefix: String,
        deadline: Duration,
        node_count: u32,
        max_keys: usize,
    },
}

/// Bounce budgets: how many bounces may come, per what, before 451.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratelimit {
    pub state: StateBackend,
    /// Source networks are aggregated to these prefix lengths.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Valid bounces per list.
    pub list_valid: Option<Quota>,
    /// Bounces per list that fail, or still await, their check.
    pub list_invalid: Option<Quota>,
    /// Bounces to list addresses per source network.
    pub network: Option<Quota>,
    /// Valid bounces per signed address: a harvested address cannot carry a flood.
    pub address: Option<Quota>,
}

/// Shield: when a list receives `trigger` invalid bounces within `within`,
/// it accepts only validly signed bounces for `hold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shield {
    pub trigger: u32,
    pub within: Duration,
    pub hold: Duration,
    /// Refuse with 451 instead of 550 while shielded.
    pub tempfail: bool,
}

/// Bounce storms: `trigger` distinct failed recipients at one provider with
/// one rule within `within` raise an incident, held `hold` past the last
/// such failure (see the `incident` module).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub trigger: u32,
    pub within: Duration,
    pub hold: Duration,
    /// Most (provider, rule) pairs tracked.
    pub max_keys: usize,
}

/// Marks of our own outbound mail, for `trace` bounce checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Host names of our MTAs, as they appear in `Received: ... by HOST`.
    pub received_by: Vec<String>,
    /// Domains of the Message-IDs our lists generate.
    pub message_id_domains: Vec<String>,
}

impl Trace {
    pub(crate) fn is_configured(&self) -> bool {
        !self.received_by.is_empty() || !self.message_id_domains.is_empty()
    }
}

/// A list domain protected as a whole (`domains:`), for hosts with many
/// lists: any address on it is protected; role suffixes of the preset mark
/// bounce addresses.
#[derive(Debug, Clone)]
pub struct ListDomain {
    pub domain: String,
    pub preset: Preset,
    pub bounces: BounceCheck,
    pub observe: bool,
}

/// Settings that need a restart to change; a reload warns and keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSettings {
    pub listen: Socket,
    /// File mode of a unix socket (default 0660).
    pub socket_mode: u32,
    pub max_connections: usize,
    /// A connection that has not negotiated by then is closed, so idle
    /// connections cannot hold every slot.
    pub negotiate_timeout: Duration,
    /// Idle time allowed between two commands of a connection.
    pub timeout: Duration,
}

/// Where the milter listens, in Postfix's notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    /// `inet:HOST:PORT`; HOST may be a name such as `localhost`.
    Inet { host: String, port: u16 },
    /// `unix:/path`.
    Unix(PathBuf),
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socket::Inet { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Socket::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Socket::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What an internal error (a panic, a failed dependency) answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// 451: the client retries later; nothing is lost. The default.
    Tempfail,
    /// Let the message through unfiltered.
    Accept,
}

listwarden_core::config_words!(OnError {
    "tempfail" => OnError::Tempfail,
    "accept" => OnError::Accept,
});

/// Bounds on what one SMTP transaction may make listwarden hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLimits {
    /// Recipients beyond this are tempfailed (Postfix's own cap is 1000).
    pub max_recipients: usize,
    /// Bytes of header values kept per message for inspection.
    pub max_header_bytes: usize,
    /// Bytes of a bounce's body read for a trace check; the rest is skipped.
    pub max_body_bytes: usize,
    /// MIME levels below the top part walked when classifying a bounce.
    pub max_mime_depth: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_recipients: defaults::MAX_RECIPIENTS,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_mime_depth: defaults::MIME_DEPTH,
        }
    }
}

/// A protected mailing list.
#[derive(Debug, Clone)]
pub struct List {
    /// The list's local part, e.g. `members`; used in logs and metric labels.
    pub name: String,
    pub address: Address,
    pub preset: Preset,
    /// Role suffixes: `owner` protects `members-owner@`.
    pub roles: Vec<String>,
    pub bounces: BounceCheck,
    pub observe: bool,
    /// Clients that may send as this list (and get its mail signed);
    /// `None`: every trusted network and SASL client.
    pub senders: Option<Vec<Sender>>,
    /// Delivered by listwarden's own expander (`None`: Sympa, Mailman, ...).
    pub expand: Option<ListExpand>,
    /// A list-manager list's one-click base URL (`https://...`): its
    /// per-member copies get listwarden's one-click `List-Unsubscribe`.
    pub unsubscribe_url: Option<String>,
}

/// One entry of a list's `senders:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Network(IpNet),
    /// A SASL login (`{auth_authen}`), compared exactly.
    Sasl(String),
}

/// Adaptive outbound throttling (`throttle:`): a transport table for
/// Postfix's `transport_maps` that sends a pushing-back provider's mail
/// through a slower transport, or holds it, and lets it decay back by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    /// The indexed table listwarden writes.
    pub map: MapSpec,
    /// Log and count what would be done; the table stays empty.
    pub observe: bool,
    /// `transport:nexthop` answered while slow, e.g. `listwarden-slow:`.
    pub slow_transport: String,
    /// `transport:nexthop` answered while held, e.g. `retry:4.7.0 ...`.
    pub hold_transport: String,
    /// Relay host suffix → provider, longest suffix first.
    pub relays: Vec<(String, String)>,
    /// Recipient domain → provider, to start from (more are learned).
    pub domains: Vec<(String, String)>,
    pub providers: Vec<ThrottlePolicy>,
}

/// A Postfix indexed table: `hash:/var/spool/postfix/listwarden/transport`
/// is the source file `path`, indexed by postmap(1) into `path.db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// hash, btree, lmdb or cdb.
    pub kind: &'static str,
    pub path: std::path::PathBuf,
}

impl MapSpec {
    /// The file postmap(1) writes and Postfix reads.
    pub fn index(&self) -> std::path::PathBuf {
        let suffix = match self.kind {
            "lmdb" => "lmdb",
            "cdb" => "cdb",
            _ => "db",
        };
        let mut name = self.path.clone().into_os_string();
        name.push(".");
        name.push(suffix);
        name.into()
    }
}

impl std::fmt::Display for MapSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.path.display())
    }
}

/// When one provider's mail is slowed or held.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottlePolicy {
    pub name: String,
    /// Classification rule names whose replies count as pushback.
    pub rules: Vec<String>,
    /// The window over which deferrals and attempts are counted.
    pub window: Duration,
    pub slow: ThrottleStep,
    pub hold: Option<ThrottleStep>,
}

/// A step is taken when both thresholds are reached over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleStep {
    /// Counted deferrals per minute.
    pub per_minute: u32,
    /// Counted deferrals per 1000 delivery attempts.
    pub share_permille: u32,
    /// The step lasts at least this long, and again after each new trip.
    pub hold_for: Duration,
}

/// The canary (`canary:`): `listwarden canary` sends a signed probe to `address`
/// through `smtp`; the milter records where it saw it and discards it at the list
/// manager's side.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub address: crate::address::Address,
    pub sender: crate::address::Address,
    /// `HOST:PORT` the probe is sent to (the public MX); resolved when sending.
    pub smtp: String,
    /// Our name in EHLO.
    pub helo: String,
    /// How long `listwarden canary` waits for the list manager's side.
    pub wait: Duration,
    /// The oldest token the milter accepts.
    pub max_age: Duration,
    /// Where sightings are recorded when `ratelimit.state` is not Redis.
    pub dir: std::path::PathBuf,
}
