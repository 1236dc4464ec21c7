//! Configuration: the YAML file, checked once at load into the typed
//! [`Config`] that the rest of listwarden reads. Nothing downstream parses
//! strings or handles a bad value: if a `Config` exists, it is valid.

mod locate;
mod model;
mod preset;
pub mod reload;

pub use preset::{BounceCheck, Preset};

use crate::address::{Address, KeyRing, prvs};
use crate::ratelimit::Quota;
use ipnet::IpNet;
use locate::Seg;
use model::{RawConfig, RawDomain, RawList, RawQuota, RawSigning};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The validated configuration. Cheap to share: held in an `Arc` and
/// swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    pub milter: MilterSettings,
    /// Where `/metrics` and `/healthz` are served; `None` turns HTTP off.
    pub metrics_listen: Option<SocketAddr>,
    /// Global observe mode: no refusals, verdicts logged and counted;
    /// signing and tag hygiene stay on.
    pub observe: bool,
    pub on_error: OnError,
    pub trusted_networks: Vec<IpNet>,
    pub limits: Limits,
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
    /// Bounce classification rules: built-in provider rules plus the
    /// operator's files, which override rules of the same name.
    pub rules: crate::dsn::RuleSet,
    /// Canonical protected address (`Address::key`) → what it is.
    protected: HashMap<String, Entry>,
    /// Problems that do not stop the config from running, rendered as
    /// `FILE:LINE:COLUMN: key: message` (e.g. the public example key).
    pub warnings: Vec<String>,
}

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

/// Parses `30s`, `10m`, `1h`, `2d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Default validity of a BATV signature, in days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 7;

/// Marks of our own outbound mail, for `trace` bounce checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Host names of our MTAs, as they appear in `Received: ... by HOST`.
    pub received_by: Vec<String>,
    /// Domains of the Message-IDs our lists generate.
    pub message_id_domains: Vec<String>,
}

impl Trace {
    pub fn is_configured(&self) -> bool {
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

/// What a protected address is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Index into `Config::lists`.
    list: usize,
    role: Role,
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

/// Default `milter.negotiate_timeout`: Postfix negotiates at once.
pub const DEFAULT_NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `milter.timeout`: above Postfix's `smtpd_timeout` (300 s), so a
/// slow but legitimate SMTP client never loses its milter mid-message.
pub const DEFAULT_MILTER_TIMEOUT: Duration = Duration::from_secs(330);

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

/// Bounds on what one SMTP transaction may make listwarden hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Recipients beyond this are tempfailed (Postfix's own cap is 1000).
    pub max_recipients: usize,
    /// Bytes of header values kept per message for inspection.
    pub max_header_bytes: usize,
    /// Bytes of a bounce's body read for a trace check; the rest is skipped.
    pub max_body_bytes: usize,
    /// MIME levels below the top part walked when classifying a bounce.
    pub max_mime_depth: usize,
}

/// Deepest `limits.max_mime_depth` accepted: real reports nest 2-3 levels.
pub const MAX_MIME_DEPTH: usize = 32;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipients: 1000,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 256 * 1024,
            max_mime_depth: 3,
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
}

/// One entry of a list's `senders:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Network(IpNet),
    /// A SASL login (`{auth_authen}`), compared exactly.
    Sasl(String),
}

/// The expander's global settings.
#[derive(Debug, Clone)]
pub struct Expander {
    /// Bounce scores, progress logs and held posts: `STATE_DIR/LIST/`.
    pub state_dir: PathBuf,
    /// Where the per-member envelopes go.
    pub injector: crate::expand::inject::Injector,
    /// Larger posts bounce back to the poster.
    pub max_message_bytes: usize,
    /// The one-click unsubscribe listener (its own, never the metrics
    /// one); `None`: one-click is off.
    pub unsubscribe_listen: Option<SocketAddr>,
}

/// One expander list's settings.
#[derive(Debug, Clone)]
pub struct ListExpand {
    pub members_file: PathBuf,
    pub policy: crate::expand::PostingPolicy,
    pub refuse: crate::expand::RefuseAction,
    pub unsubscribe_url: Option<String>,
    pub scoring: crate::expand::state::Scoring,
    pub on_complaint: crate::expand::ComplaintAction,
}

/// Which of a list's addresses matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The posting address itself.
    Posting,
    /// A role address such as `-owner` or `-bounces`.
    Suffix(String),
    /// An address shared by a domain's lists, such as Sympa's `bounce@`.
    Shared(String),
    /// Any other address on a protected list domain.
    DomainWide,
}

/// Who a protected address belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    List(&'a List),
    Domain(&'a ListDomain),
}

impl Owner<'_> {
    /// The name used in logs and metric labels: a list's name, or a
    /// protected domain. Always from the config, never from mail.
    pub fn label(&self) -> &str {
        match self {
            Owner::List(l) => &l.name,
            Owner::Domain(d) => &d.domain,
        }
    }

    pub fn observe(&self) -> bool {
        match self {
            Owner::List(l) => l.observe,
            Owner::Domain(d) => d.observe,
        }
    }

    pub fn bounces(&self) -> BounceCheck {
        match self {
            Owner::List(l) => l.bounces,
            Owner::Domain(d) => d.bounces,
        }
    }
}

/// A protected address found in the config.
#[derive(Debug, Clone)]
pub struct Protected<'a> {
    pub owner: Owner<'a>,
    pub role: Role,
    /// The local part as matched (prvs tag and `+detail` removed), for
    /// telling the roles of a domain-wide address apart.
    base_local: String,
}

impl Protected<'_> {
    fn preset(&self) -> Preset {
        match self.owner {
            Owner::List(l) => l.preset,
            Owner::Domain(d) => d.preset,
        }
    }

    /// True when `role` (a suffix) is what the list manager uses as its
    /// envelope sender, or this is a shared bounce address (Sympa's
    /// `bounce+...@`); on a protected domain, judged by the local part.
    fn role_in(&self, roles: &[&str]) -> bool {
        let preset = self.preset();
        match &self.role {
            Role::Posting => false,
            Role::Shared(_) => true,
            Role::Suffix(r) => roles.iter().any(|x| x.eq_ignore_ascii_case(r)),
            Role::DomainWide => {
                preset
                    .shared_bounce_locals()
                    .contains(&self.base_local.as_str())
                    || roles.iter().any(|r| {
                        self.base_local
                            .strip_suffix(r)
                            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('-'))
                    })
            }
        }
    }

    /// An address the list manager sends from, so one that listwarden signs
    /// and where real bounces come back.
    pub fn is_sender_role(&self) -> bool {
        self.role_in(self.preset().sender_roles())
    }

    /// An address that receives only bounces (no human writes to it): every
    /// message to it gets the bounce checks, whatever its sender.
    pub fn is_bounce_role(&self) -> bool {
        self.role_in(self.preset().bounce_only_roles())
    }

    /// Lists delivered by listwarden's expander sign with VERP only, so a
    /// prvs tag on their addresses was never made by us.
    pub fn takes_prvs(&self) -> bool {
        self.is_sender_role() && !matches!(self.owner, Owner::List(l) if l.expand.is_some())
    }

    /// True when this client may send as the address's list: its
    /// `senders:` when set, else any trusted network or SASL client.
    pub fn may_send(&self, client: &crate::policy::Client, config: &Config) -> bool {
        let senders = match self.owner {
            Owner::List(l) => l.senders.as_deref(),
            Owner::Domain(_) => None,
        };
        match senders {
            None => crate::policy::is_privileged(client, config),
            Some(allowed) => allowed.iter().any(|s| match s {
                Sender::Network(n) => client.ip.is_some_and(|ip| n.contains(&ip)),
                Sender::Sasl(login) => client.authenticated_as.as_deref() == Some(login.as_str()),
            }),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError::single(path, message);
        let source = read_text(path).map_err(fail)?;
        Config::parse(&source, path)
    }

    /// Validates YAML source; `origin` names the file in errors and anchors
    /// relative paths.
    pub fn parse(source: &str, origin: &Path) -> Result<Config, ConfigError> {
        if let Err(message) = check_nesting(source) {
            return Err(ConfigError::single(origin, message));
        }
        let raw: RawConfig = serde_yaml_ng::from_str(source).map_err(|e| ConfigError {
            file: origin.to_path_buf(),
            diagnostics: vec![Diagnostic::from_yaml(&e)],
        })?;
        let mut v = Validator {
            source,
            base_dir: origin.parent().unwrap_or(Path::new(".")),
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        };
        let mut config = v.config(raw);
        if v.diagnostics.is_empty() {
            config.warnings = v
                .warnings
                .into_iter()
                .map(|w| {
                    ConfigError {
                        file: origin.to_path_buf(),
                        diagnostics: vec![w],
                    }
                    .to_string()
                })
                .collect();
            Ok(config)
        } else {
            Err(ConfigError {
                file: origin.to_path_buf(),
                diagnostics: v.diagnostics,
            })
        }
    }

    /// Finds what protects `addr`, looking through a BATV tag and a
    /// `+detail` suffix of the local part (VERP, sub-addresses).
    pub fn protected(&self, addr: &Address) -> Option<Protected<'_>> {
        // Every tag goes, not only the outer one: Postfix applies virtual
        // aliases recursively, so the packaged prvs map turns
        // `prvs=T=prvs=T=members-bounces@` into `members-bounces@`. The
        // signature check then looks at the outer tag, which must be ours.
        // Each strip shortens the local part, so the loop is bounded by it.
        let mut stripped = None;
        while let Some(plain) = prvs::strip(stripped.as_ref().unwrap_or(addr)) {
            stripped = Some(plain);
        }
        let addr = stripped.as_ref().unwrap_or(addr);
        let key = addr.key();
        let (local, domain) = key.rsplit_once('@')?;
        let (base, detail) = match local.split_once('+') {
            Some((b, d)) => (b, Some(d)),
            None => (local, None),
        };
        let entry = self
            .protected
            .get(&key)
            .or_else(|| self.protected.get(&format!("{base}@{domain}")));
        if let Some(e) = entry {
            let mut owner = Owner::List(self.lists.get(e.list)?);
            // Sympa's shared `bounce+member==a==dom==LIST@` names its list
            // last, or last but one after a probe or tracking suffix
            // (`==w`, `==r`, `==ENVID`).
            if let (Role::Shared(_), Some(d)) = (&e.role, detail)
                && let Some(l) = d
                    .rsplit("==")
                    .take(2)
                    .filter_map(|list| self.protected.get(&format!("{list}@{domain}")))
                    .find(|found| found.role == Role::Posting)
                    .and_then(|found| self.lists.get(found.list))
            {
                owner = Owner::List(l);
            }
            return Some(Protected {
                owner,
                role: e.role.clone(),
                base_local: base.to_string(),
            });
        }
        let d = self.domains.iter().find(|d| d.domain == domain)?;
        Some(Protected {
            owner: Owner::Domain(d),
            role: Role::DomainWide,
            base_local: base.to_string(),
        })
    }

    /// True when `text` (an address listwarden could not read) names a
    /// protected domain anywhere: such an address fails closed.
    pub fn mentions_protected_domain(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        self.lists
            .iter()
            .map(|l| l.address.domain.as_str())
            .chain(self.domains.iter().map(|d| d.domain.as_str()))
            .any(|d| text.contains(d))
    }

    /// An expander list's files and settings, by list name.
    pub fn expander_list(&self, name: &str) -> Option<(crate::expand::ListFiles, &ListExpand)> {
        let expander = self.expander.as_ref()?;
        let list = self
            .lists
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))?;
        let settings = list.expand.as_ref()?;
        // Validation refuses such names; never build a path from one.
        if !crate::expand::safe_list_name(&list.name) {
            return None;
        }
        let files = crate::expand::ListFiles {
            name: list.name.clone(),
            address: list.address.clone(),
            members_file: settings.members_file.clone(),
            state_dir: expander.state_dir.join(&list.name),
        };
        Some((files, settings))
    }

    /// Every expander list's files (for one-click unsubscribe).
    pub fn expander_lists(&self) -> Vec<crate::expand::ListFiles> {
        self.lists
            .iter()
            .filter_map(|l| self.expander_list(&l.name).map(|(f, _)| f))
            .collect()
    }

    /// True when the client address is in a trusted network.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Key path such as `lists[0].address`, or `(top)`.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    fn from_yaml(e: &serde_yaml_ng::Error) -> Diagnostic {
        let (line, column) = match e.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        // serde_yaml_ng renders "path: message at line L column C".
        let mut text = e.to_string();
        if let Some(cut) = text.rfind(" at line ") {
            text.truncate(cut);
        }
        let (path, message) = match text.split_once(": ") {
            Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
            _ => ("(top)".to_string(), text),
        };
        Diagnostic {
            line,
            column,
            path,
            message,
        }
    }
}

/// Everything wrong with a config file, one diagnostic a line:
/// `FILE:LINE:COLUMN: key.path: message`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    fn single(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            diagnostics: vec![Diagnostic {
                line: None,
                column: None,
                path: "(file)".into(),
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file.display(),
                d.line.unwrap_or(1),
                d.column.unwrap_or(1),
                d.path,
                d.message
            )?;
        }
        Ok(())
    }
}

/// Turns the raw file into a `Config`, collecting every error.
struct Validator<'s> {
    source: &'s str,
    /// Relative file names in the config are relative to its directory.
    base_dir: &'s Path,
    diagnostics: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn diagnostic(&self, path: &[Seg], message: String) -> Diagnostic {
        let (line, column) = match locate::locate(self.source, path) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Diagnostic {
            line,
            column,
            path: locate::render(path),
            message,
        }
    }

    fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let d = self.diagnostic(path, message.into());
        self.diagnostics.push(d);
    }

    fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        let d = self.diagnostic(path, message.into());
        self.warnings.push(d);
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let milter = self.milter(&raw.milter);
        let metrics_listen = self.listen_address(
            raw.metrics.listen.as_deref(),
            &[Seg::Key("metrics"), Seg::Key("listen")],
            "127.0.0.1:9890",
        );
        let on_error = match raw.on_error.as_deref() {
            None | Some("tempfail") => OnError::Tempfail,
            Some("accept") => OnError::Accept,
            Some(other) => {
                self.error(
                    &[Seg::Key("on_error")],
                    format!("`{other}` is not one of: tempfail, accept"),
                );
                OnError::Tempfail
            }
        };
        let mut trusted_networks = Vec::new();
        for (i, net) in raw.trusted_networks.iter().enumerate() {
            match parse_network(net) {
                Ok(n) => trusted_networks.push(n),
                Err(m) => self.error(&[Seg::Key("trusted_networks"), Seg::Index(i)], m),
            }
        }
        let defaults = Limits::default();
        let limits = Limits {
            max_recipients: self.positive(
                raw.limits.max_recipients,
                defaults.max_recipients,
                "max_recipients",
            ),
            max_header_bytes: self.positive(
                raw.limits.max_header_bytes,
                defaults.max_header_bytes,
                "max_header_bytes",
            ),
            max_body_bytes: self.positive(
                raw.limits.max_body_bytes,
                defaults.max_body_bytes,
                "max_body_bytes",
            ),
            max_mime_depth: match raw.limits.max_mime_depth {
                Some(n) if n > MAX_MIME_DEPTH => {
                    self.error(
                        &[Seg::Key("limits"), Seg::Key("max_mime_depth")],
                        format!("must be at most {MAX_MIME_DEPTH}"),
                    );
                    defaults.max_mime_depth
                }
                n => self.positive(n, defaults.max_mime_depth, "max_mime_depth"),
            },
        };
        let signing = self.signing(raw.signing.as_ref());
        let trace = self.trace(&raw.trace);
        let has_keys = signing.is_some() || raw.signing.is_some();
        let (lists, protected) = self.lists(&raw.lists, has_keys, trace.is_configured());
        let domains = self.domains(&raw.domains, has_keys, trace.is_configured());
        let ratelimit = self.ratelimit(&raw.ratelimit);
        let shield = self.shield(&raw.shield);
        let rules = self.rules(&raw.classification);
        let logwatch_file = raw.logwatch.file.as_ref().map(|f| self.base_dir.join(f));
        let expander = raw.expander.as_ref().and_then(|e| self.expander(e));
        self.check_expand_lists(&raw.lists, &lists, expander.as_ref(), has_keys);
        Config {
            milter,
            metrics_listen,
            observe: raw.observe,
            on_error,
            trusted_networks,
            limits,
            signing,
            trace,
            lists,
            domains,
            ratelimit,
            shield,
            rules,
            logwatch_file,
            expander,
            protected,
            warnings: Vec::new(),
        }
    }

    fn ratelimit(&mut self, raw: &model::RawRatelimit) -> Ratelimit {
        let at = |k| [Seg::Key("ratelimit"), Seg::Key(k)];
        let max_keys = match raw.max_keys {
            None => 1_000_000,
            Some(n) if (1..=crate::ratelimit::MAX_KEYS).contains(&n) => n,
            Some(n) => {
                self.error(
                    &at("max_keys"),
                    format!("{n} is not from 1 to {}", crate::ratelimit::MAX_KEYS),
                );
                1_000_000
            }
        };
        let state = match raw.state.as_deref() {
            None | Some("memory") => StateBackend::Memory { max_keys },
            Some(url) if url.contains("://") => self.redis_state(raw, url, max_keys),
            Some(other) => {
                self.error(
                    &at("state"),
                    format!("`{other}` is not `memory` or a Redis URL (redis://HOST:PORT/, rediss://, redis+sentinel://, redis+cluster://)"),
                );
                StateBackend::Memory { max_keys }
            }
        };
        let prefix = |v: &mut Self, value: Option<u8>, default: u8, max: u8, key: &'static str| {
            match value {
                None => default,
                Some(p) if p <= max => p,
                Some(p) => {
                    v.error(&at(key), format!("/{p} is longer than /{max}"));
                    default
                }
            }
        };
        let ipv4_prefix = prefix(self, raw.ipv4_prefix, 24, 32, "ipv4_prefix");
        let ipv6_prefix = prefix(self, raw.ipv6_prefix, 48, 128, "ipv6_prefix");
        let b = &raw.budgets;
        Ratelimit {
            state,
            ipv4_prefix,
            ipv6_prefix,
            list_valid: self.quota(b.list_valid.as_ref(), "list_valid", (600, 60, 1200)),
            list_invalid: self.quota(b.list_invalid.as_ref(), "list_invalid", (60, 60, 120)),
            network: self.quota(b.network.as_ref(), "network", (60, 60, 120)),
            address: self.quota(b.address.as_ref(), "address", (6000, 3600, 6000)),
        }
    }

    /// `ratelimit.state` as a Redis URL, with its deadline, node count and TLS files; the URL
    /// is parsed and the files read here so that mistakes are found at load.
    fn redis_state(
        &mut self,
        raw: &model::RawRatelimit,
        url: &str,
        max_keys: usize,
    ) -> StateBackend {
        let at = |k| [Seg::Key("ratelimit"), Seg::Key(k)];
        let deadline = Duration::from_millis(raw.redis_deadline_ms.unwrap_or(50));
        if deadline.is_zero() || deadline > Duration::from_secs(5) {
            self.error(
                &at("redis_deadline_ms"),
                "must be from 1 to 5000 ms (Postfix waits at most 30 s for a reply)",
            );
        }
        let node_count = raw.node_count.unwrap_or(1);
        if node_count == 0 {
            self.error(&at("node_count"), "must be at least 1");
        }
        let file = |v: &Self, f: &Option<String>| f.as_ref().map(|f| v.base_dir.join(f));
        let tls = crate::ratelimit::TlsFiles {
            ca_file: file(self, &raw.redis_tls.ca_file),
            cert_file: file(self, &raw.redis_tls.cert_file),
            key_file: file(self, &raw.redis_tls.key_file),
        };
        use crate::ratelimit::TargetError as E;
        match crate::ratelimit::check_target(url, &tls) {
            Ok(()) => {}
            Err(E::TlsFile { path, source }) => {
                let key = if Some(&path) == tls.ca_file.as_ref() {
                    "ca_file"
                } else if Some(&path) == tls.cert_file.as_ref() {
                    "cert_file"
                } else {
                    "key_file"
                };
                let path_at = [Seg::Key("ratelimit"), Seg::Key("redis_tls"), Seg::Key(key)];
                self.error(
                    &path_at,
                    format!("cannot read {}: {source}", path.display()),
                );
            }
            Err(e @ (E::CertWithoutKey | E::TlsWithoutTls)) => {
                self.error(&at("redis_tls"), e.to_string());
            }
            // The URL may hold a password: say what is wrong, not what it is.
            Err(e) => self.error(&at("state"), format!("not a usable Redis URL: {e}")),
        }
        StateBackend::Redis {
            url: url.to_string(),
            tls,
            prefix: raw.redis_prefix.clone().unwrap_or_else(|| "lw:".into()),
            deadline,
            node_count: node_count.max(1),
            max_keys,
        }
    }

    /// A budget, or its default `(rate, per seconds, burst)`; `rate: 0` is off.
    fn quota(
        &mut self,
        raw: Option<&RawQuota>,
        key: &'static str,
        default: (u32, u64, u32),
    ) -> Option<Quota> {
        let path = [Seg::Key("ratelimit"), Seg::Key("budgets"), Seg::Key(key)];
        let (rate, per, burst) = match raw {
            None => (default.0, Duration::from_secs(default.1), default.2),
            Some(q) if q.rate == 0 => return None,
            Some(q) => {
                let Some(per) = parse_duration(&q.per) else {
                    self.error(
                        &[&path[..], &[Seg::Key("per")]].concat(),
                        format!("`{}` is not a duration such as 30s, 10m, 1h or 1d", q.per),
                    );
                    return None;
                };
                (q.rate, per, q.burst.unwrap_or(q.rate))
            }
        };
        match Quota::new(rate, per, burst) {
            Ok(q) => Some(q),
            Err(e) => {
                self.error(&path, e.to_string());
                None
            }
        }
    }

    fn shield(&mut self, raw: &model::RawShield) -> Option<Shield> {
        if raw.enabled == Some(false) {
            return None;
        }
        let at = |k| [Seg::Key("shield"), Seg::Key(k)];
        let duration =
            |v: &mut Self, text: Option<&str>, default: u64, key: &'static str| match text {
                None => Duration::from_secs(default),
                Some(t) => parse_duration(t).unwrap_or_else(|| {
                    v.error(
                        &at(key),
                        format!("`{t}` is not a duration such as 30s, 10m, 1h or 1d"),
                    );
                    Duration::from_secs(default)
                }),
            };
        let within = duration(self, raw.within.as_deref(), 600, "within");
        let hold = duration(self, raw.hold.as_deref(), 3600, "hold");
        let trigger = match raw.trigger {
            Some(0) => {
                self.error(&at("trigger"), "must be at least 1");
                500
            }
            Some(n) => n,
            None => 500,
        };
        let tempfail = match raw.refuse_with.as_deref() {
            None | Some("reject") => false,
            Some("tempfail") => true,
            Some(other) => {
                self.error(
                    &at("refuse_with"),
                    format!("`{other}` is not one of: reject, tempfail"),
                );
                false
            }
        };
        Some(Shield {
            trigger,
            within,
            hold,
            tempfail,
        })
    }

    fn rules(&mut self, raw: &model::RawClassification) -> crate::dsn::RuleSet {
        use crate::dsn::RuleSet;
        let mut set = if raw.builtin.unwrap_or(true) {
            match RuleSet::builtin() {
                Ok(r) => r,
                Err(e) => {
                    // The built-in rules are tested; this is a build defect.
                    self.error(&[Seg::Key("classification")], one_line(&e.to_string()));
                    RuleSet::empty("builtin")
                }
            }
        } else {
            RuleSet::empty("none")
        };
        for (i, file) in raw.rules.iter().enumerate() {
            let path = self.base_dir.join(file);
            let at = [Seg::Key("classification"), Seg::Key("rules"), Seg::Index(i)];
            let text = read_text(&path);
            match text {
                Ok(text) => match RuleSet::from_yaml_str(&text, &path.display().to_string()) {
                    Ok(extra) => set = RuleSet::merge(set, extra),
                    Err(e) => self.error(&at, one_line(&e.to_string())),
                },
                Err(e) => self.error(&at, format!("{}: {e}", path.display())),
            }
        }
        set
    }

    fn expander(&mut self, raw: &model::RawExpander) -> Option<Expander> {
        let at = |k| [Seg::Key("expander"), Seg::Key(k)];
        let mut injector = match crate::expand::inject::Injector::parse(
            raw.inject.as_deref().unwrap_or("sendmail"),
        ) {
            Ok(i) => i,
            Err(m) => {
                self.error(&at("inject"), m);
                return None;
            }
        };
        if let (crate::expand::inject::Injector::Smtp { options, .. }, Some(helo)) =
            (&mut injector, &raw.helo)
        {
            options.helo = helo.clone();
        }
        let max_message_bytes = match raw.max_message_bytes {
            None => 10_240_000,
            Some(0) => {
                self.error(&at("max_message_bytes"), "must be at least 1");
                10_240_000
            }
            Some(n) => n,
        };
        let unsubscribe_listen = self.listen_address(
            raw.unsubscribe_listen.as_deref(),
            &at("unsubscribe_listen"),
            "127.0.0.1:8081",
        );
        Some(Expander {
            state_dir: self.base_dir.join(&raw.state_dir),
            injector,
            max_message_bytes,
            unsubscribe_listen,
        })
    }

    fn list_expand(&mut self, raw: &model::RawListExpand, i: usize) -> Option<ListExpand> {
        use crate::expand::{ComplaintAction, PostingPolicy, RefuseAction};
        let at = |k| {
            [
                Seg::Key("lists"),
                Seg::Index(i),
                Seg::Key("expand"),
                Seg::Key(k),
            ]
        };
        let mut announcers = Vec::new();
        for (j, a) in raw.announcers.iter().enumerate() {
            match Address::parse(a) {
                Ok(a) => announcers.push(a),
                Err(e) => self.error(
                    &[
                        Seg::Key("lists"),
                        Seg::Index(i),
                        Seg::Key("expand"),
                        Seg::Key("announcers"),
                        Seg::Index(j),
                    ],
                    format!("`{a}` is not a mail address: {e}"),
                ),
            }
        }
        let policy = match raw.posting.as_deref() {
            None | Some("members") => PostingPolicy::Members,
            Some("open") => PostingPolicy::Open,
            Some("announce") => {
                if announcers.is_empty() {
                    self.error(&at("posting"), "posting: announce needs expand.announcers");
                }
                PostingPolicy::Announce(announcers)
            }
            Some(other) => {
                self.error(
                    &at("posting"),
                    format!("`{other}` is not one of: members, open, announce"),
                );
                PostingPolicy::Members
            }
        };
        let refuse = match raw.refused_post.as_deref() {
            None | Some("hold") => RefuseAction::Hold,
            Some("reply") => RefuseAction::Reply,
            Some(other) => {
                self.error(
                    &at("refused_post"),
                    format!("`{other}` is not one of: hold, reply"),
                );
                RefuseAction::Hold
            }
        };
        if let Some(url) = &raw.unsubscribe_url
            && let Err(m) = crate::expand::unsubscribe::check_base_url(url)
        {
            self.error(&at("unsubscribe_url"), m);
        }
        let mut scoring = crate::expand::state::Scoring::default();
        if let Some(t) = raw.bounce_threshold {
            if t.is_finite() && t > 0.0 {
                scoring.threshold = t;
            } else {
                self.error(&at("bounce_threshold"), "must be a number above 0");
            }
        }
        if let Some(d) = raw.bounce_stale_days {
            scoring.stale_after_days = d;
        }
        let on_complaint = match raw.on_complaint.as_deref() {
            None | Some("unsubscribe") => ComplaintAction::Unsubscribe,
            Some("flag") => ComplaintAction::Flag,
            Some(other) => {
                self.error(
                    &at("on_complaint"),
                    format!("`{other}` is not one of: unsubscribe, flag"),
                );
                ComplaintAction::Unsubscribe
            }
        };
        Some(ListExpand {
            members_file: self.base_dir.join(&raw.members_file),
            policy,
            refuse,
            unsubscribe_url: raw.unsubscribe_url.clone(),
            scoring,
            on_complaint,
        })
    }

    /// An `expand:` list needs the `expander:` block, signing keys,
    /// `bounces: signed`, and a name that is safe as a directory name.
    fn check_expand_lists(
        &mut self,
        raw: &[RawList],
        lists: &[List],
        expander: Option<&Expander>,
        keys: bool,
    ) {
        for (i, r) in raw.iter().enumerate() {
            if r.expand.is_none() {
                continue;
            }
            let at = [Seg::Key("lists"), Seg::Index(i), Seg::Key("expand")];
            if let (Some(e), Some(x)) = (expander, &r.expand)
                && x.unsubscribe_url.is_some()
                && e.unsubscribe_listen.is_none()
            {
                self.error(
                    &[
                        Seg::Key("lists"),
                        Seg::Index(i),
                        Seg::Key("expand"),
                        Seg::Key("unsubscribe_url"),
                    ],
                    "a one-click unsubscribe_url needs expander.unsubscribe_listen (one-click has a listener of its own)",
                );
            }
            if expander.is_none() {
                self.error(
                    &at,
                    "an expand: list needs the top-level expander: block (state_dir, inject)",
                );
            }
            if !keys {
                self.error(
                    &at,
                    "an expand: list needs signing keys (signing.keys) for its VERP senders",
                );
            }
            // Matched by the parsed address, so any spelling of it (a
            // trailing dot, quotes) is checked; the name is checked where
            // the address is parsed (see `lists`).
            let Ok(parsed) = Address::parse(&r.address) else {
                continue;
            };
            let Some(list) = lists.iter().find(|l| l.address.same_mailbox(&parsed)) else {
                continue;
            };
            // The bounce pipe scores and unsubscribes: a trace mark is in
            // every copy a member got, so only a signed bounce may reach it.
            if keys && list.bounces != BounceCheck::Signed {
                let place = if r.bounces.is_some() {
                    [Seg::Key("lists"), Seg::Index(i), Seg::Key("bounces")]
                } else {
                    at.clone()
                };
                self.error(
                    &place,
                    "an expand: list must use bounces: signed (trace, either and off would let forged bounces unsubscribe members)",
                );
            }
        }
    }

    fn positive(&mut self, value: Option<usize>, default: usize, key: &'static str) -> usize {
        match value {
            None => default,
            Some(0) => {
                self.error(&[Seg::Key("limits"), Seg::Key(key)], "must be at least 1");
                default
            }
            Some(n) => n,
        }
    }

    fn milter(&mut self, raw: &model::RawMilter) -> MilterSettings {
        let listen = match parse_socket(&raw.listen) {
            Ok(s) => s,
            Err(m) => {
                self.error(&[Seg::Key("milter"), Seg::Key("listen")], m);
                Socket::Inet {
                    host: "127.0.0.1".into(),
                    port: 8890,
                }
            }
        };
        let socket_mode = match raw.socket_mode.as_deref() {
            None => 0o660,
            Some(text) => match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => m,
                _ => {
                    self.error(
                        &[Seg::Key("milter"), Seg::Key("socket_mode")],
                        format!("`{text}` is not an octal file mode such as \"0660\""),
                    );
                    0o660
                }
            },
        };
        let max_connections = match raw.max_connections {
            Some(0) => {
                self.error(
                    &[Seg::Key("milter"), Seg::Key("max_connections")],
                    "must be at least 1",
                );
                1
            }
            Some(n) => n,
            None => 200,
        };
        let mut timeout = |key: &'static str, text: Option<&str>, default: Duration| match text {
            None => default,
            Some(t) => match parse_duration(t) {
                Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(7200) => d,
                _ => {
                    self.error(
                        &[Seg::Key("milter"), Seg::Key(key)],
                        format!("`{t}` is not a duration from 1s to 2h, such as 10s or 5m"),
                    );
                    default
                }
            },
        };
        let negotiate_timeout = timeout(
            "negotiate_timeout",
            raw.negotiate_timeout.as_deref(),
            DEFAULT_NEGOTIATE_TIMEOUT,
        );
        let timeout = timeout("timeout", raw.timeout.as_deref(), DEFAULT_MILTER_TIMEOUT);
        MilterSettings {
            listen,
            socket_mode,
            max_connections,
            negotiate_timeout,
            timeout,
        }
    }

    /// An optional `IP:PORT` listen address; absent or `off` is none.
    fn listen_address(
        &mut self,
        text: Option<&str>,
        path: &[Seg],
        example: &str,
    ) -> Option<SocketAddr> {
        let text = text.filter(|t| *t != "off")?;
        let parsed = text.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            self.error(
                path,
                format!("`{text}` is not an IP:PORT address such as {example} (or `off`)"),
            );
        }
        parsed
    }

    fn signing(&mut self, raw: Option<&RawSigning>) -> Option<KeyRing> {
        let raw = raw?;
        let mut keys = Vec::new();
        let mut ok = true;
        for (i, k) in raw.keys.iter().enumerate() {
            let at = |key| {
                [
                    Seg::Key("signing"),
                    Seg::Key("keys"),
                    Seg::Index(i),
                    Seg::Key(key),
                ]
            };
            let path = self.base_dir.join(&k.file);
            let key = crate::address::Key::from_file(k.id, &path);
            match key {
                Ok(key) => {
                    if secret_is_public_example(&path) {
                        let message = format!(
                            "{} is the public example key shipped with listwarden: anyone can forge \
                             signatures with it. Make your own: head -c 32 /dev/urandom | base64 > /etc/listwarden/keys/1.key",
                            path.display()
                        );
                        if raw.demo {
                            self.warn(&at("file"), message);
                        } else {
                            self.error(
                                &at("file"),
                                format!("{message} (for a demo only, set signing.demo: true)"),
                            );
                        }
                    } else if let Some(problem) = key_file_exposure(&path) {
                        self.warn(&at("file"), problem);
                    }
                    keys.push(key);
                }
                Err(e) => {
                    ok = false;
                    let key_path = match e {
                        crate::address::KeyError::IdOutOfRange { .. } => at("id"),
                        _ => at("file"),
                    };
                    self.error(&key_path, e.to_string());
                }
            }
        }
        if !ok {
            return None;
        }
        let validity = raw.validity_days.unwrap_or(DEFAULT_VALIDITY_DAYS);
        match KeyRing::new(keys, raw.sign_with, validity) {
            Ok(ring) => Some(ring),
            Err(e) => {
                let key = match e {
                    crate::address::KeyError::BadValidity { .. } => "validity_days",
                    crate::address::KeyError::DuplicateId { .. } => "keys",
                    _ => "sign_with",
                };
                self.error(&[Seg::Key("signing"), Seg::Key(key)], e.to_string());
                None
            }
        }
    }

    fn trace(&mut self, raw: &model::RawTrace) -> Trace {
        let hosts = |v: &mut Self, list: &[String], key: &'static str| -> Vec<String> {
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                let h = h.trim().trim_end_matches('.').to_lowercase();
                if h.is_empty() || h.contains(|c: char| c.is_whitespace() || "@<>[]()".contains(c))
                {
                    v.error(
                        &[Seg::Key("trace"), Seg::Key(key), Seg::Index(i)],
                        format!("`{h}` is not a host or domain name"),
                    );
                } else {
                    out.push(h);
                }
            }
            out
        };
        Trace {
            received_by: hosts(self, &raw.received_by, "received_by"),
            message_id_domains: hosts(self, &raw.message_id_domains, "message_id_domains"),
        }
    }

    fn preset(&mut self, raw: Option<&str>, path: &[Seg]) -> Preset {
        match raw {
            None => Preset::Listwarden,
            Some(name) => Preset::parse(name).unwrap_or_else(|| {
                self.error(
                    path,
                    format!("`{name}` is not one of: listwarden, sympa, mailman3"),
                );
                Preset::Listwarden
            }),
        }
    }

    /// The bounce check of a list or domain. It defaults to `signed` when
    /// keys are configured and `off` otherwise; a mode that needs keys or
    /// trace marks that are missing is an error.
    fn bounce_check(
        &mut self,
        raw: Option<&str>,
        path: &[Seg],
        signing: bool,
        trace: bool,
    ) -> BounceCheck {
        let mode = match raw {
            None if signing => BounceCheck::Signed,
            None => BounceCheck::Off,
            Some(name) => match BounceCheck::parse(name) {
                Some(m) => m,
                None => {
                    self.error(
                        path,
                        format!("`{name}` is not one of: signed, trace, either, off"),
                    );
                    return BounceCheck::Off;
                }
            },
        };
        let needs_keys = matches!(mode, BounceCheck::Signed | BounceCheck::Either);
        let needs_trace = matches!(mode, BounceCheck::Trace | BounceCheck::Either);
        if needs_keys && !signing {
            self.error(path, "this bounce check needs signing keys (signing.keys)");
        } else if needs_trace && !trace {
            self.error(
                path,
                "this bounce check needs trace.received_by or trace.message_id_domains",
            );
        }
        mode
    }

    fn lists(
        &mut self,
        raw: &[RawList],
        signing: bool,
        trace: bool,
    ) -> (Vec<List>, HashMap<String, Entry>) {
        let mut lists: Vec<List> = Vec::new();
        let mut protected: HashMap<String, Entry> = HashMap::new();
        for (i, r) in raw.iter().enumerate() {
            let at = |k| [Seg::Key("lists"), Seg::Index(i), Seg::Key(k)];
            let address = match Address::parse(&r.address) {
                Ok(a) if !a.local.contains('+') => a,
                Ok(_) => {
                    self.error(
                        &at("address"),
                        "a list address may not contain `+` (it separates VERP details)",
                    );
                    continue;
                }
                Err(e) => {
                    self.error(
                        &at("address"),
                        format!("`{}` is not a mail address: {e}", r.address),
                    );
                    continue;
                }
            };
            let preset = self.preset(r.preset.as_deref(), &at("preset"));
            let bounces = self.bounce_check(r.bounces.as_deref(), &at("bounces"), signing, trace);
            let roles: Vec<String> = match &r.roles {
                Some(roles) => roles.clone(),
                None => preset.roles().iter().map(|s| s.to_string()).collect(),
            };
            let owner = lists.len();
            let mut claim = |v: &mut Self, key: String, role: Role, path: &[Seg]| {
                if let Some(Entry {
                    list: other,
                    role: other_role,
                    ..
                }) = protected.get(&key)
                {
                    // Shared addresses (Sympa's bounce@) may repeat per domain.
                    if matches!(role, Role::Shared(_)) && matches!(other_role, Role::Shared(_)) {
                        return;
                    }
                    let other = lists
                        .get(*other)
                        .map(|l| l.address.to_string())
                        .unwrap_or_default();
                    v.error(
                        path,
                        format!("`{key}` is already protected by list `{other}`"),
                    );
                } else {
                    protected.insert(key, Entry { list: owner, role });
                }
            };
            claim(self, address.key(), Role::Posting, &at("address"));
            for (j, role) in roles.iter().enumerate() {
                let path = [
                    Seg::Key("lists"),
                    Seg::Index(i),
                    Seg::Key("roles"),
                    Seg::Index(j),
                ];
                if role.is_empty()
                    || role.contains(['@', '+'])
                    || role.chars().any(char::is_whitespace)
                {
                    self.error(
                        &path,
                        format!("`{role}` is not a role suffix such as `owner`"),
                    );
                    continue;
                }
                let key = format!(
                    "{}-{}@{}",
                    address.local.to_lowercase(),
                    role.to_lowercase(),
                    address.domain
                );
                claim(self, key, Role::Suffix(role.clone()), &path);
            }
            for shared in preset.shared_bounce_locals() {
                let key = format!("{shared}@{}", address.domain);
                claim(self, key, Role::Shared(shared.to_string()), &at("preset"));
            }
            if r.expand.is_some() && !crate::expand::safe_list_name(&address.local) {
                self.error(
                    &at("address"),
                    "an expand: list's local part names its state directory: letters, digits, '.', '_' and '-' only, no leading '.' and no '..'",
                );
            }
            let expand = r.expand.as_ref().and_then(|e| self.list_expand(e, i));
            let senders = r.senders.as_ref().map(|raw| {
                let mut out = Vec::new();
                for (j, text) in raw.iter().enumerate() {
                    let path = [
                        Seg::Key("lists"),
                        Seg::Index(i),
                        Seg::Key("senders"),
                        Seg::Index(j),
                    ];
                    match text.strip_prefix("sasl:") {
                        Some(login) if !login.is_empty() => out.push(Sender::Sasl(login.into())),
                        Some(_) => self.error(&path, "`sasl:` needs a login name"),
                        None => match parse_network(text) {
                            Ok(n) => out.push(Sender::Network(n)),
                            Err(m) => self.error(
                                &path,
                                format!("{m} (or `sasl:LOGIN` for an authenticated sender)"),
                            ),
                        },
                    }
                }
                out
            });
            lists.push(List {
                name: address.local.clone(),
                address,
                preset,
                roles,
                bounces,
                observe: r.observe,
                senders,
                expand,
            });
        }
        (lists, protected)
    }

    fn domains(&mut self, raw: &[RawDomain], signing: bool, trace: bool) -> Vec<ListDomain> {
        let mut out: Vec<ListDomain> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let at = |k| [Seg::Key("domains"), Seg::Index(i), Seg::Key(k)];
            let domain = r.domain.trim().trim_end_matches('.').to_lowercase();
            if domain.is_empty()
                || domain.contains(|c: char| c.is_whitespace() || "@<>[]()".contains(c))
            {
                self.error(
                    &at("domain"),
                    format!("`{}` is not a domain name", r.domain),
                );
                continue;
            }
            if out.iter().any(|d| d.domain == domain) {
                self.error(&at("domain"), format!("domain `{domain}` is listed twice"));
                continue;
            }
            let preset = self.preset(r.preset.as_deref(), &at("preset"));
            let bounces = self.bounce_check(r.bounces.as_deref(), &at("bounces"), signing, trace);
            out.push(ListDomain {
                domain,
                preset,
                bounces,
                observe: r.observe,
            });
        }
        out
    }
}

/// Why a key file is readable by more than this service, if it is: by
/// everyone, or by a group that is not the one this process runs with
/// (packages give the key to root and the service's group, mode 0640).
fn key_file_exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    // SAFETY: getegid has no preconditions and cannot fail.
    let our_group = unsafe { libc::getegid() };
    let fix = "chmod 600 (or 640 with the service's group)";
    if mode & 0o007 != 0 {
        Some(format!(
            "{} is readable by others (mode {mode:04o}): anyone who can read it can forge signatures; {fix}",
            path.display()
        ))
    } else if mode & 0o070 != 0 && meta.gid() != our_group {
        Some(format!(
            "{} is readable by its group (gid {}, mode {mode:04o}), which is not this service's; {fix}",
            path.display(),
            meta.gid()
        ))
    } else {
        None
    }
}

/// The example key in `config/` is public; running with it is an error
/// unless the config says it is a demo (`signing.demo: true`, as the
/// example config does).
fn secret_is_public_example(path: &Path) -> bool {
    const EXAMPLE: &[u8] = include_bytes!("../../config/keys/EXAMPLE-PUBLIC-KEY.key");
    let trim = |b: &[u8]| b.trim_ascii().to_vec();
    read_bounded(path, 4096)
        .map(|b| trim(&b) == trim(EXAMPLE))
        .unwrap_or(false)
}

/// Reads a regular file of at most `max` bytes. FIFOs, devices and /proc
/// files report a size of 0, so the bound is applied while reading.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("file is larger than {max} bytes"));
    }
    Ok(bytes)
}

/// A config or rules file: regular, at most [`MAX_FILE_BYTES`], UTF-8, and
/// not nested deeper than YAML needs (see [`check_nesting`]).
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = read_bounded(path, MAX_FILE_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| format!("file is not UTF-8: {e}"))?;
    check_nesting(&text)?;
    Ok(text)
}

/// Deepest YAML nesting accepted. The parser refuses depth beyond 128 only
/// after a scan that is quadratic in the depth; this linear pre-check keeps
/// a hostile file from costing minutes.
const MAX_NESTING: usize = 64;

/// Refuses flow nesting (`[`/`{` outside quotes and comments) deeper than
/// `MAX_NESTING`. Block nesting is bounded by the line length anyway.
pub fn check_nesting(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for line in text.lines() {
        let mut quote: Option<char> = None;
        // A quote opens a scalar only where a scalar can start.
        let mut prev = ' ';
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if prev.is_whitespace() || "[{,:-".contains(prev) => {
                    quote = Some(c)
                }
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(format!("nested deeper than {MAX_NESTING} levels"));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    Ok(())
}

/// Folds a multi-line message onto one line (one diagnostic, one line).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "`{text}` has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "`{text}` is not a network such as 192.0.2.0/24 or 2001:db8::/48"
    ))
}

fn parse_socket(text: &str) -> Result<Socket, String> {
    let bad = || {
        format!(
            "`{text}` is not a socket such as inet:127.0.0.1:8890 or unix:/run/listwarden/milter.sock"
        )
    };
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("`{text}`: a unix socket path must be absolute"));
        }
        return Ok(Socket::Unix(PathBuf::from(path)));
    }
    let rest = text.strip_prefix("inet:").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Socket::Inet {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests;
