//! The `milter:` section.

use super::parse_duration;
use super::{Validator, ValueError};
use crate::config::defaults;
use crate::config::model;
use crate::config::{MilterSettings, Socket};
use listwarden_core::diag::Seg;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn milter(&mut self, raw: &model::RawMilter) -> MilterSettings {
        let listen = match parse_socket(&raw.listen) {
            Ok(s) => s,
            Err(e) => {
                self.error(&[Seg::Key("milter"), Seg::Key("listen")], e.to_string());
                Socket::Inet {
                    host: "127.0.0.1".into(),
                    port: 8890,
                }
            }
        };
        let trusted_listen = raw.trusted_listen.as_deref().and_then(|text| {
            let key = [Seg::Key("milter"), Seg::Key("trusted_listen")];
            match parse_socket(text) {
                Ok(s) if same_socket(&s, &listen) => {
                    self.error(&key, "must differ from milter.listen");
                    None
                }
                Ok(s) => Some(s),
                Err(e) => {
                    self.error(&key, e.to_string());
                    None
                }
            }
        });
        let socket_mode = match raw.socket_mode.as_deref() {
            None => defaults::SOCKET_MODE,
            Some(text) => match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                Ok(m) if m <= 0o777 => m,
                _ => {
                    self.error(
                        &[Seg::Key("milter"), Seg::Key("socket_mode")],
                        format!("`{text}` is not an octal file mode such as \"0660\""),
                    );
                    defaults::SOCKET_MODE
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
            None => defaults::MAX_CONNECTIONS,
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
            defaults::DEFAULT_NEGOTIATE_TIMEOUT,
        );
        let timeout = timeout(
            "timeout",
            raw.timeout.as_deref(),
            defaults::DEFAULT_MILTER_TIMEOUT,
        );
        MilterSettings {
            listen,
            trusted_listen,
            socket_mode,
            max_connections,
            negotiate_timeout,
            timeout,
        }
    }
}

/// Whether two sockets are one: unix paths are compared by their parent
/// directory's canonical path (symlinks, `..`) and file name, since binding
/// one removes a stale socket file at its path and must never hit the other.
fn same_socket(a: &Socket, b: &Socket) -> bool {
    match (a, b) {
        (Socket::Unix(a), Socket::Unix(b)) => socket_file(a) == socket_file(b),
        _ => a == b,
    }
}

/// A unix socket's path with its directory resolved: canonical where the
/// directory exists (as the kernel resolves it), else `.` and `..` removed
/// by hand.
fn socket_file(path: &Path) -> PathBuf {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name())
        && let Ok(dir) = std::fs::canonicalize(dir)
    {
        return dir.join(name);
    }
    path.components().fold(PathBuf::new(), |mut p, c| {
        match c {
            Component::ParentDir => {
                p.pop();
            }
            Component::CurDir => {}
            c => p.push(c),
        }
        p
    })
}

pub(in crate::config) fn parse_socket(text: &str) -> Result<Socket, ValueError> {
    let bad = || ValueError::NotASocket(text.to_string());
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(ValueError::RelativeSocket(text.to_string()));
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
