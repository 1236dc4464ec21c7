//! Configuration: the YAML file, checked once at load into the typed
//! [`Config`] that the rest of listwarden reads. Nothing downstream parses
//! strings or handles a bad value: if a `Config` exists, it is valid.

mod locate;
mod model;
pub mod reload;

use crate::address::Address;
use ipnet::IpNet;
use locate::Seg;
use model::{RawConfig, RawList};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Default role suffixes: `members-owner@`, `members-request@`, `members-bounces@`.
pub const DEFAULT_ROLES: [&str; 3] = ["owner", "request", "bounces"];

/// The validated configuration. Cheap to share: held in an `Arc` and
/// swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    pub milter: MilterSettings,
    /// Where `/metrics` and `/healthz` are served; `None` turns HTTP off.
    pub metrics_listen: Option<SocketAddr>,
    /// Global observe mode: log and count verdicts, change nothing.
    pub observe: bool,
    pub on_error: OnError,
    pub trusted_networks: Vec<IpNet>,
    pub limits: Limits,
    pub lists: Vec<List>,
    /// Canonical protected address (`Address::key`) → (list index, role).
    protected: HashMap<String, (usize, Role)>,
}

/// Settings that need a restart to change; a reload warns and keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSettings {
    pub listen: Socket,
    /// File mode of a unix socket (default 0660).
    pub socket_mode: u32,
    pub max_connections: usize,
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

/// Bounds on what one SMTP transaction may make listwarden hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Recipients beyond this are tempfailed (Postfix's own cap is 1000).
    pub max_recipients: usize,
    /// Bytes of header values kept per message for inspection.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipients: 1000,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// A protected mailing list.
#[derive(Debug, Clone)]
pub struct List {
    /// The list's local part, e.g. `members`; used in logs and metric labels.
    pub name: String,
    pub address: Address,
    /// Role suffixes: `owner` protects `members-owner@`.
    pub roles: Vec<String>,
    pub observe: bool,
}

/// Which of a list's addresses matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The posting address itself.
    Posting,
    /// A role address such as `-owner` or `-bounces`.
    Suffix(String),
}

/// A protected address found in the config.
#[derive(Debug, Clone, Copy)]
pub struct Protected<'a> {
    pub list: &'a List,
    pub role: &'a Role,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError::single(path, message);
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(fail(format!("file is larger than {MAX_FILE_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
        let source =
            String::from_utf8(bytes).map_err(|e| fail(format!("file is not UTF-8: {e}")))?;
        Config::parse(&source, path)
    }

    /// Validates YAML source; `origin` names the file in errors and anchors
    /// relative paths.
    pub fn parse(source: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(source).map_err(|e| ConfigError {
            file: origin.to_path_buf(),
            diagnostics: vec![Diagnostic::from_yaml(&e)],
        })?;
        let mut v = Validator {
            source,
            diagnostics: Vec::new(),
        };
        let config = v.config(raw);
        if v.diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: origin.to_path_buf(),
                diagnostics: v.diagnostics,
            })
        }
    }

    /// Finds the list that protects `addr`, ignoring a `+detail` suffix of
    /// the local part (VERP and sub-addresses).
    pub fn protected(&self, addr: &Address) -> Option<Protected<'_>> {
        let key = addr.key();
        let hit = self.protected.get(&key).or_else(|| {
            let (local, domain) = key.rsplit_once('@')?;
            let (base, _detail) = local.split_once('+')?;
            self.protected.get(&format!("{base}@{domain}"))
        })?;
        let (idx, role) = hit;
        Some(Protected {
            list: self.lists.get(*idx)?,
            role,
        })
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
    fn from_yaml(e: &serde_yaml::Error) -> Diagnostic {
        let (line, column) = match e.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        // serde_yaml renders "path: message at line L column C".
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
    diagnostics: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let (line, column) = match locate::locate(self.source, path) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        self.diagnostics.push(Diagnostic {
            line,
            column,
            path: locate::render(path),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let milter = self.milter(&raw.milter);
        let metrics_listen = self.metrics(raw.metrics.listen.as_deref());
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
        };
        let (lists, protected) = self.lists(&raw.lists);
        Config {
            milter,
            metrics_listen,
            observe: raw.observe,
            on_error,
            trusted_networks,
            limits,
            lists,
            protected,
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
        MilterSettings {
            listen,
            socket_mode,
            max_connections,
        }
    }

    fn metrics(&mut self, listen: Option<&str>) -> Option<SocketAddr> {
        match listen {
            None | Some("off") => None,
            Some(text) => {
                match text.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.error(
                        &[Seg::Key("metrics"), Seg::Key("listen")],
                        format!("`{text}` is not an IP:PORT address such as 127.0.0.1:9890 (or `off`)"),
                    );
                        None
                    }
                }
            }
        }
    }

    fn lists(&mut self, raw: &[RawList]) -> (Vec<List>, HashMap<String, (usize, Role)>) {
        let mut lists = Vec::new();
        let mut protected: HashMap<String, (usize, Role)> = HashMap::new();
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
            let roles: Vec<String> = match &r.roles {
                Some(roles) => roles.clone(),
                None => DEFAULT_ROLES.iter().map(|s| s.to_string()).collect(),
            };
            let index = lists.len();
            let mut claim = |v: &mut Self, key: String, role: Role, path: &[Seg]| {
                if let Some((other, _)) = protected.get(&key) {
                    let other: &List = &lists[*other];
                    v.error(
                        path,
                        format!("`{key}` is already protected by list `{}`", other.address),
                    );
                } else {
                    protected.insert(key, (index, role));
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
            lists.push(List {
                name: address.local.clone(),
                address,
                roles,
                observe: r.observe,
            });
        }
        (lists, protected)
    }
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
