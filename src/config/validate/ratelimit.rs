//! The `ratelimit:` and `shield:` sections.

use super::{Validator, parse_duration};
use crate::config::defaults;
use crate::config::model::{self, RawQuota};
use crate::config::{Ratelimit, Shield, StateBackend};
use crate::ratelimit::Quota;
use listwarden_core::diag::Seg;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn ratelimit(&mut self, raw: &model::RawRatelimit) -> Ratelimit {
        let at = |k| [Seg::Key("ratelimit"), Seg::Key(k)];
        let max_keys = match raw.max_keys {
            None => defaults::MAX_KEYS,
            Some(n) if (1..=crate::ratelimit::MAX_KEYS).contains(&n) => n,
            Some(n) => {
                self.error(
                    &at("max_keys"),
                    format!("{n} is not from 1 to {}", crate::ratelimit::MAX_KEYS),
                );
                defaults::MAX_KEYS
            }
        };
        let state = match raw.state.as_deref() {
            None | Some("memory") => StateBackend::Memory { max_keys },
            Some(url) if url.contains("://") => self.redis_state(raw, url, max_keys),
            Some(other) => {
                self.error(
                    &at("state"),
                    format!(
                        "`{other}` is not `memory` or a Redis URL (redis://HOST:PORT/, rediss://, redis+sentinel://, redis+cluster://)"
                    ),
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
        let ipv4_prefix = prefix(
            self,
            raw.ipv4_prefix,
            defaults::IPV4_PREFIX,
            32,
            "ipv4_prefix",
        );
        let ipv6_prefix = prefix(
            self,
            raw.ipv6_prefix,
            defaults::IPV6_PREFIX,
            128,
            "ipv6_prefix",
        );
        let b = &raw.budgets;
        Ratelimit {
            state,
            ipv4_prefix,
            ipv6_prefix,
            list_valid: self.quota(
                b.list_valid.as_ref(),
                "list_valid",
                defaults::BUDGET_LIST_VALID,
            ),
            list_invalid: self.quota(
                b.list_invalid.as_ref(),
                "list_invalid",
                defaults::BUDGET_LIST_INVALID,
            ),
            network: self.quota(b.network.as_ref(), "network", defaults::BUDGET_NETWORK),
            address: self.quota(b.address.as_ref(), "address", defaults::BUDGET_ADDRESS),
        }
    }

    /// `ratelimit.state` as a Redis URL in a build without Redis: refused.
    #[cfg(not(feature = "redis"))]
    fn redis_state(
        &mut self,
        _raw: &model::RawRatelimit,
        _url: &str,
        max_keys: usize,
    ) -> StateBackend {
        self.error(
            &[Seg::Key("ratelimit"), Seg::Key("state")],
            "this listwarden was built without Redis support (cargo feature `redis`); use `memory`",
        );
        StateBackend::Memory { max_keys }
    }

    /// `ratelimit.state` as a Redis URL, with its deadline, node count and TLS files; the URL
    /// is parsed and the files read here so that mistakes are found at load.
    #[cfg(feature = "redis")]
    fn redis_state(
        &mut self,
        raw: &model::RawRatelimit,
        url: &str,
        max_keys: usize,
    ) -> StateBackend {
        let at = |k| [Seg::Key("ratelimit"), Seg::Key(k)];
        let deadline =
            Duration::from_millis(raw.redis_deadline_ms.unwrap_or(defaults::REDIS_DEADLINE_MS));
        if deadline.is_zero() || deadline > Duration::from_secs(5) {
            self.error(
                &at("redis_deadline_ms"),
                "must be from 1 to 5000 ms (Postfix waits at most 30 s for a reply)",
            );
        }
        let node_count = raw.node_count.unwrap_or(defaults::NODE_COUNT);
        if node_count == 0 {
            self.error(&at("node_count"), "must be at least 1");
        }
        let file = |v: &Self, f: &Option<String>| f.as_ref().map(|f| v.check.file(f));
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
            prefix: raw
                .redis_prefix
                .clone()
                .unwrap_or_else(|| defaults::REDIS_PREFIX.into()),
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

    pub(super) fn shield(&mut self, raw: &model::RawShield) -> Option<Shield> {
        if raw.enabled == Some(false) {
            return None;
        }
        let at = |k| [Seg::Key("shield"), Seg::Key(k)];
        let within = self.duration_or(
            raw.within.as_deref(),
            defaults::SHIELD_WITHIN_SECS,
            &at("within"),
        );
        let hold = self.duration_or(raw.hold.as_deref(), defaults::SHIELD_HOLD_SECS, &at("hold"));
        let trigger = match raw.trigger {
            Some(0) => {
                self.error(&at("trigger"), "must be at least 1");
                defaults::SHIELD_TRIGGER
            }
            Some(n) => n,
            None => defaults::SHIELD_TRIGGER,
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
}
