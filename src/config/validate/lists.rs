//! The `lists:`, `domains:` and `trace:` sections, and the protected
//! address index they build.

use super::{Validator, parse_network};
use crate::address::Address;
use crate::config::model::{self, RawDomain, RawList};
use crate::config::protected::{Role, claims};
use crate::config::{BounceCheck, List, ListDomain, Preset, Sender, Trace};
use listwarden_core::diag::Seg;
use std::collections::HashMap;

impl Validator<'_> {
    pub(super) fn trace(&mut self, raw: &model::RawTrace) -> Trace {
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
        self.check.choice(raw, Preset::Listwarden, path)
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
            Some(name) => match name.parse::<BounceCheck>() {
                Ok(m) => m,
                Err(e) => {
                    self.error(path, e.to_string());
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

    pub(super) fn lists(&mut self, raw: &[RawList], signing: bool, trace: bool) -> Vec<List> {
        let mut lists: Vec<List> = Vec::new();
        // Every key claimed so far, and by which list, for refusing a
        // second claim.
        let mut claimed: HashMap<String, (usize, Role)> = HashMap::new();
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
            // The suffix claims come in the order of `roles`.
            let mut suffix = 0;
            for (key, role) in claims(&address, preset, &roles) {
                let path = match &role {
                    Role::Posting => at("address").to_vec(),
                    Role::Suffix(_) => {
                        suffix += 1;
                        vec![
                            Seg::Key("lists"),
                            Seg::Index(i),
                            Seg::Key("roles"),
                            Seg::Index(suffix - 1),
                        ]
                    }
                    Role::Shared(_) | Role::DomainWide => at("preset").to_vec(),
                };
                match claimed.get(&key) {
                    // Shared addresses (Sympa's bounce@) may repeat per domain.
                    Some((_, Role::Shared(_))) if matches!(role, Role::Shared(_)) => {}
                    Some((other, _)) => {
                        let other = lists
                            .get(*other)
                            .map(|l| l.address.to_string())
                            .unwrap_or_default();
                        self.error(
                            &path,
                            format!("`{key}` is already protected by list `{other}`"),
                        );
                    }
                    None => {
                        claimed.insert(key, (lists.len(), role));
                    }
                }
            }
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
                }
            }
            if r.expand.is_some() && !listwarden_expand::safe_list_name(&address.local) {
                self.error(
                    &at("address"),
                    "an expand: list's local part names its state directory: letters, digits, '.', '_' and '-' only, no leading '.' and no '..'",
                );
            }
            let expand = r
                .expand
                .as_ref()
                .and_then(|e| listwarden_expand::settings::list_expand(&mut self.check, e, i));
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
                            Err(e) => self.error(
                                &path,
                                format!("{e} (or `sasl:LOGIN` for an authenticated sender)"),
                            ),
                        },
                    }
                }
                out
            });
            let list = List {
                name: address.local.clone(),
                address,
                preset,
                roles,
                bounces,
                observe: r.observe,
                senders,
                expand,
                unsubscribe_url: self.unsubscribe_url(r, i),
            };
            lists.push(list);
        }
        lists
    }

    pub(super) fn domains(
        &mut self,
        raw: &[RawDomain],
        signing: bool,
        trace: bool,
    ) -> Vec<ListDomain> {
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

    /// An `expand:` list needs the `expander:` block, signing keys,
    /// `bounces: signed`, and a name that is safe as a directory name.
    pub(super) fn check_expand_lists(
        &mut self,
        raw: &[RawList],
        lists: &[List],
        unsubscribe_listen: Option<std::net::SocketAddr>,
        has_expander: bool,
        keys: bool,
    ) {
        for (i, r) in raw.iter().enumerate() {
            if r.expand.is_none() {
                continue;
            }
            let at = [Seg::Key("lists"), Seg::Index(i), Seg::Key("expand")];
            if has_expander
                && let Some(x) = &r.expand
                && x.unsubscribe_url.is_some()
                && unsubscribe_listen.is_none()
            {
                self.error(
                    &[
                        Seg::Key("lists"),
                        Seg::Index(i),
                        Seg::Key("expand"),
                        Seg::Key("unsubscribe_url"),
                    ],
                    "a one-click unsubscribe_url needs unsubscribe_listen (one-click has a listener of its own)",
                );
            }
            if !has_expander {
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
}
