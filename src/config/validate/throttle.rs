//! The `throttle:` section: the transport table listwarden writes, what
//! it routes, and per provider which replies count and when to slow or hold.

use super::{Validator, parse_duration};
use crate::config::defaults;
use crate::config::model::{RawThrottle, RawThrottleStep};
use crate::config::{MapSpec, Throttle, ThrottlePolicy, ThrottleStep};
use listwarden_core::diag::Seg;
use std::time::Duration;

/// A provider name becomes a metric label: keep it short and plain.
fn plain_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A Postfix `transport:nexthop` result: one line, a transport name.
fn transport_result(text: &str) -> bool {
    let transport = text.split(':').next().unwrap_or("");
    text.contains(':')
        && !transport.is_empty()
        && !text.contains(['\n', '\r', '\0'])
        && transport
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A recipient domain as a table key: plain ASCII labels, no spaces.
pub(crate) fn plain_domain(domain: &str) -> bool {
    (1..=253).contains(&domain.len())
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
}

/// `TYPE:/absolute/path`, one word (Postfix splits transport_maps on
/// spaces and commas).
fn map_spec(text: &str) -> Result<MapSpec, String> {
    let (kind, path) = text.split_once(':').ok_or_else(|| {
        format!(
            "`{text}` is not TYPE:/path such as {}",
            defaults::THROTTLE_MAP
        )
    })?;
    let kind = defaults::THROTTLE_MAP_TYPES
        .into_iter()
        .find(|k| *k == kind)
        .ok_or_else(|| {
            format!(
                "`{kind}` is not a table type listwarden can write ({})",
                defaults::THROTTLE_MAP_TYPES.join(", ")
            )
        })?;
    let path = std::path::PathBuf::from(path);
    if !path.is_absolute()
        || path.file_name().is_none()
        || text.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control())
    {
        return Err(format!(
            "`{}` is not an absolute file path without spaces or commas",
            path.display()
        ));
    }
    Ok(MapSpec { kind, path })
}

impl Validator<'_> {
    pub(super) fn throttle(
        &mut self,
        raw: &RawThrottle,
        rules: &crate::dsn::RuleSet,
    ) -> Option<Throttle> {
        let at = |k| [Seg::Key("throttle"), Seg::Key(k)];
        let map = match map_spec(raw.map.as_deref().unwrap_or(defaults::THROTTLE_MAP)) {
            Ok(m) => Some(m),
            Err(e) => {
                self.error(&at("map"), e);
                None
            }
        };
        let result = |v: &mut Self, text: &Option<String>, default: &str, key| {
            let text = text.clone().unwrap_or_else(|| default.into());
            if !transport_result(&text) {
                v.error(
                    &at(key),
                    format!("`{text}` is not a Postfix transport:nexthop result"),
                );
            }
            text
        };
        let slow_transport = result(self, &raw.slow, defaults::THROTTLE_SLOW, "slow");
        let hold_transport = result(self, &raw.hold, defaults::THROTTLE_HOLD, "hold");

        let mut providers: Vec<ThrottlePolicy> = Vec::new();
        for (i, p) in raw.providers.iter().enumerate() {
            let here = |k| {
                [
                    Seg::Key("throttle"),
                    Seg::Key("providers"),
                    Seg::Index(i),
                    Seg::Key(k),
                ]
            };
            if !plain_name(&p.name) {
                self.error(
                    &here("name"),
                    "must be 1-32 of a-z 0-9 - _ (it becomes a metric label)",
                );
            } else if providers.iter().any(|q| q.name == p.name) {
                self.error(&here("name"), format!("`{}` is named twice", p.name));
            }
            if p.rules.is_empty() {
                self.error(&here("rules"), "name at least one classification rule");
            }
            for (j, rule) in p.rules.iter().enumerate() {
                if !rules.rules().iter().any(|r| r.name() == rule) {
                    self.error(
                        &[&here("rules")[..], &[Seg::Index(j)]].concat(),
                        format!("no classification rule is named `{rule}`"),
                    );
                }
            }
            let window = match &p.window {
                None => Duration::from_secs(defaults::THROTTLE_WINDOW_SECS),
                Some(t) => self.throttle_duration(t, &here("window")),
            };
            let (pm, share, secs) = defaults::THROTTLE_SLOW_STEP;
            let slow = match &p.slow {
                Some(s) => self.throttle_step(s, &here("slow")),
                None => ThrottleStep {
                    per_minute: pm,
                    share_permille: share,
                    hold_for: Duration::from_secs(secs),
                },
            };
            let hold = p
                .hold
                .as_ref()
                .map(|h| self.throttle_step(h, &here("hold")));
            if let Some(h) = &hold
                && (h.per_minute < slow.per_minute || h.share_permille < slow.share_permille)
            {
                self.error(
                    &here("hold"),
                    "its thresholds must be at least those of `slow`",
                );
            }
            providers.push(ThrottlePolicy {
                name: p.name.clone(),
                rules: p.rules.clone(),
                window,
                slow,
                hold,
            });
        }
        let known = |v: &mut Self, provider: &str, key| {
            if !providers.iter().any(|p| p.name == provider) {
                v.check.warn(
                    &at(key),
                    format!("provider `{provider}` has no entry under throttle.providers"),
                );
            }
        };
        let mut relays: Vec<(String, String)> = defaults::THROTTLE_RELAYS
            .iter()
            .map(|(s, p)| (s.to_string(), p.to_string()))
            .collect();
        for (suffix, provider) in &raw.relays {
            known(self, provider, "relays");
            let suffix = suffix.trim_start_matches('.').to_ascii_lowercase();
            relays.retain(|(s, _)| *s != suffix);
            relays.push((suffix, provider.clone()));
        }
        // Longest suffix first, so `mail.example.com` beats `example.com`.
        relays.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let mut domains = Vec::new();
        for (domain, provider) in &raw.domains {
            known(self, provider, "domains");
            let lower = domain.to_ascii_lowercase();
            if !plain_domain(&lower) {
                self.error(
                    &[
                        Seg::Key("throttle"),
                        Seg::Key("domains"),
                        Seg::Name(domain.clone()),
                    ],
                    "is not a plain domain name (a-z 0-9 - . _)",
                );
            }
            domains.push((lower, provider.clone()));
        }
        Some(Throttle {
            map: map?,
            observe: raw.observe,
            slow_transport,
            hold_transport,
            relays,
            domains,
            providers,
        })
    }

    fn throttle_duration(&mut self, text: &str, path: &[Seg]) -> Duration {
        parse_duration(text).unwrap_or_else(|| {
            self.error(
                path,
                format!("`{text}` is not a duration such as 30s, 10m, 1h or 1d"),
            );
            Duration::from_secs(60)
        })
    }

    fn throttle_step(&mut self, raw: &RawThrottleStep, path: &[Seg]) -> ThrottleStep {
        let share = raw.share.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&share) {
            self.error(
                &[path, &[Seg::Key("share")]].concat(),
                "must be a share of attempts from 0 to 1 (0.05 = 5%)",
            );
        }
        if raw.per_minute == 0 {
            self.error(
                &[path, &[Seg::Key("per_minute")]].concat(),
                "must be at least 1",
            );
        }
        ThrottleStep {
            per_minute: raw.per_minute.max(1),
            share_permille: (share.clamp(0.0, 1.0) * 1000.0).round() as u32,
            hold_for: self.throttle_duration(&raw.lasts, &[path, &[Seg::Key("lasts")]].concat()),
        }
    }
}
