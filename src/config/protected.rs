//! Which addresses are protected, and by which list or domain: the index
//! built at load and the lookup every message goes through.

use super::{BounceCheck, Config, List, ListDomain, ListExpand, Preset, Sender};
use crate::address::{Address, prvs};
use std::collections::HashMap;
use std::net::IpAddr;

/// What a protected address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Index into `Config::lists`.
    pub(super) list: usize,
    pub(super) role: Role,
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
    /// A shared address (Sympa's `bounce@`) whose VERP names no list we
    /// know: `owner` is only the list that claims the shared address, not
    /// the one the copy came from, so nothing may act on a member for it.
    pub unnamed: bool,
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
    pub(crate) fn is_sender_role(&self) -> bool {
        self.role_in(self.preset().sender_roles())
    }

    /// An address that receives only bounces (no human writes to it): every
    /// message to it gets the bounce checks, whatever its sender.
    pub(crate) fn is_bounce_role(&self) -> bool {
        self.role_in(self.preset().bounce_only_roles())
    }

    /// Lists delivered by listwarden's expander sign with VERP only, so a
    /// prvs tag on their addresses was never made by us.
    pub(crate) fn takes_prvs(&self) -> bool {
        self.is_sender_role() && !matches!(self.owner, Owner::List(l) if l.expand.is_some())
    }

    /// True when this client may send as the address's list: its
    /// `senders:` when set, else any SASL client or one on a trusted
    /// network (`trusted_network`).
    pub(crate) fn may_send(
        &self,
        ip: Option<IpAddr>,
        login: Option<&str>,
        trusted_network: bool,
    ) -> bool {
        let senders = match self.owner {
            Owner::List(l) => l.senders.as_deref(),
            Owner::Domain(_) => None,
        };
        match senders {
            None => login.is_some() || trusted_network,
            Some(allowed) => allowed.iter().any(|s| match s {
                Sender::Network(n) => ip.is_some_and(|ip| n.contains(&ip)),
                Sender::Sasl(allowed) => login == Some(allowed.as_str()),
            }),
        }
    }
}

/// The addresses a list (`a`) protects: its posting address, one per role
/// suffix, and its preset's shared bounce addresses, each with its role.
pub(crate) fn claims(a: &Address, preset: Preset, roles: &[String]) -> Vec<(String, Role)> {
    let mut out = vec![(a.key(), Role::Posting)];
    for role in roles {
        let key = format!(
            "{}-{}@{}",
            a.local.to_lowercase(),
            role.to_lowercase(),
            a.domain
        );
        out.push((key, Role::Suffix(role.clone())));
    }
    for shared in preset.shared_bounce_locals() {
        out.push((
            format!("{shared}@{}", a.domain),
            Role::Shared(shared.to_string()),
        ));
    }
    out
}

/// Canonical protected address (`Address::key`) → what it is, over one
/// slice of lists (the entries index into it).
#[derive(Debug, Clone, Default)]
pub struct Index(HashMap<String, Entry>);

impl Index {
    /// Indexes what each list claims; a key claimed twice keeps its first
    /// list (validation refuses such configs, except for shared addresses).
    pub fn new(lists: &[List]) -> Index {
        let mut index = Index::default();
        for (i, l) in lists.iter().enumerate() {
            for (key, role) in claims(&l.address, l.preset, &l.roles) {
                index.0.entry(key).or_insert(Entry { list: i, role });
            }
        }
        index
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.0.get(key)
    }

    /// Finds what protects `addr` among `lists` (the slice this index was
    /// built over) and `domains`, looking through a BATV tag and a
    /// `+detail` suffix of the local part (VERP, sub-addresses).
    pub fn find<'a>(
        &self,
        lists: &'a [List],
        domains: &'a [ListDomain],
        addr: &Address,
    ) -> Option<Protected<'a>> {
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
            .get(&key)
            .or_else(|| self.get(&format!("{base}@{domain}")));
        if let Some(e) = entry {
            let mut owner = Owner::List(lists.get(e.list)?);
            let mut unnamed = false;
            if let Role::Shared(_) = &e.role {
                match detail
                    .and_then(sympa_list_part)
                    .and_then(|list| self.get(&format!("{list}@{domain}")))
                    .filter(|found| found.role == Role::Posting)
                    .and_then(|found| lists.get(found.list))
                {
                    Some(l) => owner = Owner::List(l),
                    None => unnamed = true,
                }
            }
            return Some(Protected {
                owner,
                role: e.role.clone(),
                unnamed,
                base_local: base.to_string(),
            });
        }
        let d = domains.iter().find(|d| d.domain == domain)?;
        Some(Protected {
            owner: Owner::Domain(d),
            role: Role::DomainWide,
            unnamed: false,
            base_local: base.to_string(),
        })
    }
}

impl Config {
    /// Finds what protects `addr` (see [`Index::find`]).
    pub fn protected(&self, addr: &Address) -> Option<Protected<'_>> {
        self.protected.find(&self.lists, &self.domains, addr)
    }

    /// True when `text` (an address listwarden could not read) names a
    /// protected domain anywhere: such an address fails closed.
    pub(crate) fn mentions_protected_domain(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        self.lists
            .iter()
            .map(|l| l.address.domain.as_str())
            .chain(self.domains.iter().map(|d| d.domain.as_str()))
            .any(|d| text.contains(d))
    }

    /// An expander list's files and settings, by list name.
    pub(crate) fn expander_list(
        &self,
        name: &str,
    ) -> Option<(listwarden_expand::ListFiles, &ListExpand)> {
        let expander = self.expander.as_ref()?;
        let list = self
            .lists
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))?;
        let settings = list.expand.as_ref()?;
        // Validation refuses such names; never build a path from one.
        if !listwarden_expand::safe_list_name(&list.name) {
            return None;
        }
        let files = listwarden_expand::ListFiles {
            name: list.name.clone(),
            address: list.address.clone(),
            members_file: settings.members_file.clone(),
            state_dir: expander.state_dir.join(&list.name),
        };
        Some((files, settings))
    }

    /// Every expander list's files (for one-click unsubscribe).
    pub(crate) fn expander_lists(&self) -> Vec<listwarden_expand::ListFiles> {
        self.lists
            .iter()
            .filter_map(|l| self.expander_list(&l.name).map(|(f, _)| f))
            .collect()
    }
}

/// The LIST of Sympa's shared VERP detail `member==a==dom==LIST`, with an
/// optional probe or tracking suffix after it (`==w`, `==r`, `==ENVID`;
/// Sympa's List.pm get_bounce_address).
fn sympa_list_part(detail: &str) -> Option<&str> {
    let (_, rest) = detail.split_once("==a==")?;
    let mut parts = rest.split("==");
    let (_domain, list) = (parts.next()?, parts.next()?);
    (parts.count() <= 1).then_some(list)
}
