//! Turns the file as read ([`super::model`]) into a [`Config`], one
//! section per module, collecting every problem with its place.

mod canary;
mod classification;
mod feedback;
mod lists;
pub(super) mod milter;
mod ratelimit;
mod throttle;
mod unsubscribe;
pub(crate) use throttle::plain_domain;

use super::model::RawConfig;
use super::protected::Index;
use super::{Config, MessageLimits, MilterSettings, OnError, defaults};
use ipnet::IpNet;
use listwarden_core::diag::{Checker, Seg};
use listwarden_core::signing;
use std::net::IpAddr;
use std::time::Duration;

/// Collects the problems of one file while building its `Config`.
pub(super) struct Validator<'s> {
    pub(super) check: Checker<'s>,
}

impl Validator<'_> {
    /// The list server's socket serves only `trusted_networks` (anyone else
    /// there is misrouted and gets 451), so it needs them; and Postfix shows
    /// its own sendmail(1) submissions to `non_smtpd_milters` as client
    /// 127.0.0.1 (cleanup's emulated connect), which must then be among them.
    fn check_trusted_socket(&mut self, milter: &MilterSettings, networks: &[IpNet]) {
        if milter.trusted_listen.is_none() {
            return;
        }
        let key = [Seg::Key("milter"), Seg::Key("trusted_listen")];
        if networks.is_empty() {
            self.error(
                &key,
                "needs trusted_networks: only their clients are served on this socket \
                 (add 127.0.0.1 for Postfix's sendmail path, non_smtpd_milters)",
            );
        } else if !networks
            .iter()
            .any(|n| n.contains(&IpAddr::from([127, 0, 0, 1])))
        {
            self.check.warn(
                &key,
                "trusted_networks does not contain 127.0.0.1, the client Postfix reports for \
                 sendmail(1) submissions: pointing non_smtpd_milters at this socket would \
                 answer every one of them 451",
            );
        }
    }

    fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        self.check.error(path, message);
    }

    /// A duration key (`30s`, `10m`, `1h`, `1d`); absent: `default`
    /// seconds; unreadable: an error at `path`, and the default.
    fn duration_or(&mut self, text: Option<&str>, default: u64, path: &[Seg]) -> Duration {
        match text {
            None => Duration::from_secs(default),
            Some(t) => parse_duration(t).unwrap_or_else(|| {
                self.error(
                    path,
                    format!("`{t}` is not a duration such as 30s, 10m, 1h or 1d"),
                );
                Duration::from_secs(default)
            }),
        }
    }

    pub(super) fn config(&mut self, raw: RawConfig) -> Config {
        let milter = self.milter(&raw.milter);
        let metrics_listen = self.check.listen_address(
            raw.metrics.listen.as_deref(),
            &[Seg::Key("metrics"), Seg::Key("listen")],
            "127.0.0.1:9890",
        );
        let on_error = self.check.choice(
            raw.on_error.as_deref(),
            OnError::Tempfail,
            &[Seg::Key("on_error")],
        );
        let mut trusted_networks = Vec::new();
        for (i, net) in raw.trusted_networks.iter().enumerate() {
            match parse_network(net) {
                Ok(n) => trusted_networks.push(n),
                Err(e) => self.error(
                    &[Seg::Key("trusted_networks"), Seg::Index(i)],
                    e.to_string(),
                ),
            }
        }
        self.check_trusted_socket(&milter, &trusted_networks);
        let defaults = MessageLimits::default();
        let limits = MessageLimits {
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
                Some(n) if n > defaults::MAX_MIME_DEPTH => {
                    self.error(
                        &[Seg::Key("limits"), Seg::Key("max_mime_depth")],
                        format!("must be at most {}", defaults::MAX_MIME_DEPTH),
                    );
                    defaults.max_mime_depth
                }
                n => self.positive(n, defaults.max_mime_depth, "max_mime_depth"),
            },
        };
        let signing = signing::key_ring(&mut self.check, raw.signing.as_ref());
        let trace = self.trace(&raw.trace);
        let has_keys = signing.is_some() || raw.signing.is_some();
        let lists = self.lists(&raw.lists, has_keys, trace.is_configured());
        let domains = self.domains(&raw.domains, has_keys, trace.is_configured());
        let ratelimit = self.ratelimit(&raw.ratelimit);
        let shield = self.shield(&raw.shield);
        let rules = self.rules(&raw.classification);
        let incident = self.incident(&raw.classification.incident);
        let logwatch_file = raw.logwatch.file.as_ref().map(|f| self.check.file(f));
        let expander = raw
            .expander
            .as_ref()
            .and_then(|e| listwarden_expand::settings::expander(&mut self.check, e));
        let unsubscribe_listen = self.unsubscribe_listen(&raw, expander.as_ref());
        self.check_expand_lists(
            &raw.lists,
            &lists,
            unsubscribe_listen,
            expander.is_some(),
            has_keys,
        );
        let feedback = raw.feedback.as_ref().and_then(|f| self.feedback(f, &lists));
        self.check_one_click(
            &raw.lists,
            &lists,
            unsubscribe_listen,
            feedback.as_ref(),
            has_keys,
        );
        self.check_unique_names(&raw.lists, raw.feedback.is_some());
        let throttle = raw.throttle.as_ref().and_then(|t| self.throttle(t, &rules));
        let canary = raw.canary.as_ref().and_then(|c| self.canary(c, has_keys));
        Config {
            protected: Index::new(&lists),
            milter,
            metrics_listen,
            unsubscribe_listen,
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
            incident,
            logwatch_file,
            expander,
            feedback,
            throttle,
            canary,
            warnings: Vec::new(),
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
}

/// Parses `30s`, `10m`, `1h`, `2d`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
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

/// A value the config cannot use, as one diagnostic's message says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    #[error(
        "`{0}` is not a socket such as inet:127.0.0.1:8890 or unix:/run/listwarden/milter.sock"
    )]
    NotASocket(String),
    #[error("`{0}`: a unix socket path must be absolute")]
    RelativeSocket(String),
    #[error("`{text}` has host bits set; did you mean {net}?")]
    HostBits { text: String, net: IpNet },
    #[error("`{0}` is not a network such as 192.0.2.0/24 or 2001:db8::/48")]
    NotANetwork(String),
}

pub(super) fn parse_network(text: &str) -> Result<IpNet, ValueError> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(ValueError::HostBits {
                text: text.to_string(),
                net: net.trunc(),
            });
        }
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(ValueError::NotANetwork(text.to_string()))
}
