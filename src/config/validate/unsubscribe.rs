//! One-click unsubscribe: the listener (`unsubscribe_listen`) and each
//! list-manager list's `unsubscribe_url`.

use super::Validator;
use crate::config::feedback::Settings;
use crate::config::model::{RawConfig, RawList};
use crate::config::{List, Preset};
use listwarden_core::diag::Seg;
use listwarden_expand::settings::Expander;
use std::net::SocketAddr;

impl Validator<'_> {
    /// The listener: `unsubscribe_listen`, or the older
    /// `expander.unsubscribe_listen` (still read; both set is an error).
    pub(super) fn unsubscribe_listen(
        &mut self,
        raw: &RawConfig,
        expander: Option<&Expander>,
    ) -> Option<SocketAddr> {
        let top = self.check.listen_address(
            raw.unsubscribe_listen.as_deref(),
            &[Seg::Key("unsubscribe_listen")],
            "127.0.0.1:8081",
        );
        let old = expander.and_then(|e| e.unsubscribe_listen);
        if old.is_some() && raw.unsubscribe_listen.is_some() {
            self.error(
                &[Seg::Key("expander"), Seg::Key("unsubscribe_listen")],
                "set only the top-level unsubscribe_listen (expander.unsubscribe_listen is its older name)",
            );
        }
        top.or(old)
    }

    /// A list's `unsubscribe_url`: an https base URL, on a list without
    /// `expand:` (an expander list has `expand.unsubscribe_url`).
    pub(super) fn unsubscribe_url(&mut self, raw: &RawList, i: usize) -> Option<String> {
        let url = raw.unsubscribe_url.as_ref()?;
        let path = [
            Seg::Key("lists"),
            Seg::Index(i),
            Seg::Key("unsubscribe_url"),
        ];
        if raw.expand.is_some() {
            self.error(
                &path,
                "an expand: list sets its one-click URL as expand.unsubscribe_url",
            );
            return None;
        }
        match listwarden_expand::unsubscribe::check_base_url(url) {
            Ok(()) => Some(url.clone()),
            Err(e) => {
                self.error(&path, e);
                None
            }
        }
    }

    /// What a list-manager list's one-click needs: the listener, signing
    /// keys (the token), and a `feedback:` section that can reach its list
    /// manager (the worker carries the unsubscribe out).
    pub(super) fn check_one_click(
        &mut self,
        raw: &[RawList],
        lists: &[List],
        listen: Option<SocketAddr>,
        feedback: Option<&Settings>,
        keys: bool,
    ) {
        for (i, r) in raw.iter().enumerate() {
            if r.unsubscribe_url.is_none() || r.expand.is_some() {
                continue;
            }
            let path = [
                Seg::Key("lists"),
                Seg::Index(i),
                Seg::Key("unsubscribe_url"),
            ];
            let Some(list) = lists.iter().find(|l| {
                crate::address::Address::parse(&r.address).is_ok_and(|a| a.same_mailbox(&l.address))
            }) else {
                continue;
            };
            let problem = if listen.is_none() {
                Some("needs unsubscribe_listen (one-click has a listener of its own)")
            } else if !keys {
                Some("needs signing keys (signing.keys): the unsubscribe token is signed")
            } else {
                match (feedback, list.preset) {
                    (_, Preset::Listwarden) => Some(
                        "is for Sympa or Mailman 3 lists (preset: sympa or mailman3); an expander list uses expand.unsubscribe_url",
                    ),
                    (None, _) => Some(
                        "needs the feedback: section: its worker carries the unsubscribe out through the list manager",
                    ),
                    (Some(f), Preset::Mailman3) if f.mailman3.is_none() => Some(
                        "needs feedback.mailman3 (Mailman's REST API) to carry the unsubscribe out",
                    ),
                    _ => None,
                }
            };
            if let Some(problem) = problem {
                self.error(&path, problem);
            }
        }
    }
}

impl Validator<'_> {
    /// A list's name is its local part, and one-click URLs, feedback jobs
    /// and the expander find lists by name: two lists with the same name
    /// on different domains would let one act on the other. Refused where
    /// a name is used that way.
    pub(super) fn check_unique_names(&mut self, raw: &[RawList], feedback: bool) {
        let by_name = |r: &RawList| r.unsubscribe_url.is_some() || r.expand.is_some();
        let parsed: Vec<Option<crate::address::Address>> = raw
            .iter()
            .map(|r| crate::address::Address::parse(&r.address).ok())
            .collect();
        for (i, r) in raw.iter().enumerate() {
            let Some(Some(a)) = parsed.get(i) else {
                continue;
            };
            let earlier = parsed.iter().take(i).enumerate().find(|(j, b)| {
                b.as_ref()
                    .is_some_and(|b| b.local.eq_ignore_ascii_case(&a.local))
                    && (feedback || by_name(r) || raw.get(*j).is_some_and(by_name))
            });
            if let Some((j, Some(b))) = earlier {
                self.error(
                    &[Seg::Key("lists"), Seg::Index(i), Seg::Key("address")],
                    format!(
                        "list name `{}` is also that of `{b}` (lists[{j}]): names (local parts) must differ when feedback:, unsubscribe_url or expand: is used, which find lists by name",
                        a.local
                    ),
                );
            }
        }
    }
}
