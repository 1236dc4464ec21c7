//! The `feedback:` section: report addresses, complaint actions per list,
//! and the list managers' interfaces.

use super::{Validator, parse_duration};
use crate::address::Address;
use crate::config::feedback::{Action, Mailman3, Settings};
use crate::config::{List, Preset, defaults, model};
use listwarden_core::diag::{Seg, read_text};
use std::path::PathBuf;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn feedback(
        &mut self,
        raw: &model::RawFeedback,
        lists: &[List],
    ) -> Option<Settings> {
        let at = |k: &'static str| [Seg::Key("feedback"), Seg::Key(k)];
        let mut addresses = Vec::new();
        for (i, text) in raw.addresses.iter().enumerate() {
            match Address::parse(text.trim()) {
                Ok(a) => addresses.push(a),
                Err(e) => self.error(
                    &[Seg::Key("feedback"), Seg::Key("addresses"), Seg::Index(i)],
                    format!("`{text}` is not an address: {e}"),
                ),
            }
        }
        if addresses.is_empty() {
            self.error(
                &at("addresses"),
                "name at least one address reports arrive at",
            );
        }
        let action = self
            .check
            .choice(raw.action.as_deref(), Action::Unsubscribe, &at("action"));
        let mut per_list = Vec::new();
        for (i, entry) in raw.lists.iter().enumerate() {
            let path = |k: &'static str| {
                [
                    Seg::Key("feedback"),
                    Seg::Key("lists"),
                    Seg::Index(i),
                    Seg::Key(k),
                ]
            };
            let list = lists.iter().find(|l| {
                l.name == entry.list
                    || Address::parse(&entry.list).is_ok_and(|a| a.same_mailbox(&l.address))
            });
            let a = self
                .check
                .choice(Some(entry.action.as_str()), action, &path("action"));
            match list {
                Some(l) => per_list.push((l.name.clone(), a)),
                None => self.error(
                    &path("list"),
                    format!("`{}` is not a list of `lists:`", entry.list),
                ),
            }
        }
        let mailman3 = raw.mailman3.as_ref().and_then(|m| {
            let file = self.check.file(&m.password_file);
            match read_text(&file) {
                Ok(password) => Some(Mailman3 {
                    url: m.url.trim_end_matches('/').to_string(),
                    user: m.user.clone(),
                    password: password.trim().to_string(),
                }),
                Err(e) => {
                    self.error(
                        &[
                            Seg::Key("feedback"),
                            Seg::Key("mailman3"),
                            Seg::Key("password_file"),
                        ],
                        format!("{}: {e}", file.display()),
                    );
                    None
                }
            }
        });
        // Without the API version every call is a 404, which the worker
        // would otherwise read as "not a member".
        if let Some(m) = &mailman3
            && !(m.url.starts_with("http://")
                && ["/3.0", "/3.1"]
                    .iter()
                    .any(|v| m.url.trim_end_matches('/').ends_with(v)))
        {
            self.error(
                &[Seg::Key("feedback"), Seg::Key("mailman3"), Seg::Key("url")],
                "must be an http:// URL ending in the API version, such as http://127.0.0.1:8001/3.1 (Mailman's REST API listens on loopback)",
            );
        }
        // What each list's manager can do, checked now rather than at the
        // first complaint.
        for l in lists {
            let a = per_list
                .iter()
                .find(|(n, _)| *n == l.name)
                .map_or(action, |(_, a)| *a);
            let problem = match (l.preset, a) {
                (_, Action::CountOnly | Action::NotifyOwner) => None,
                (Preset::Mailman3, _) if mailman3.is_none() => {
                    Some("needs `feedback.mailman3` (the REST API) to remove or suspend members")
                }
                (Preset::Sympa | Preset::Listwarden, Action::Suspend) => Some(
                    "`suspend` needs Mailman 3; Sympa's command line and the expander can only unsubscribe",
                ),
                _ => None,
            };
            if let Some(problem) = problem {
                self.error(&at("action"), format!("list `{}`: {problem}", l.name));
            }
        }
        let retry = match raw.retry.as_deref() {
            None => Duration::from_secs(defaults::FEEDBACK_RETRY_SECS),
            Some(text) => parse_duration(text).unwrap_or_else(|| {
                self.error(
                    &at("retry"),
                    format!("`{text}` is not a duration such as 30s or 5m"),
                );
                Duration::from_secs(defaults::FEEDBACK_RETRY_SECS)
            }),
        };
        let path_or = |text: &Option<String>, default: &str| match text {
            Some(t) => self.check.file(t),
            None => PathBuf::from(default),
        };
        Some(Settings {
            addresses,
            queue: path_or(&raw.queue, defaults::FEEDBACK_QUEUE),
            act_on: raw.act_on.clone().unwrap_or_else(|| {
                defaults::FEEDBACK_ACT_ON
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            action,
            per_list,
            mailman3,
            sympa_command: match &raw.sympa_command {
                Some(words) if !words.is_empty() => words.clone(),
                _ => vec![defaults::SYMPA_COMMAND.to_string()],
            },
            sendmail: path_or(&raw.sendmail, defaults::SENDMAIL),
            retry,
        })
    }
}
