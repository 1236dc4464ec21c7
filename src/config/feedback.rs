//! The checked `feedback:` section: where reports arrive, what a complaint
//! does to a member, and how to reach each list manager.

use crate::address::Address;
use std::path::PathBuf;
use std::time::Duration;

/// What a complaint about a list does to the member who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remove the member (Mailman 3 REST, `sympa del`, the expander's file).
    Unsubscribe,
    /// Stop delivery but keep the subscription (Mailman 3 only).
    Suspend,
    /// Tell the list's owner; the member stays.
    NotifyOwner,
    /// Count it in the complaint rate; nothing else.
    CountOnly,
}

listwarden_core::config_words!(Action {
    "unsubscribe" => Action::Unsubscribe,
    "suspend" => Action::Suspend,
    "notify_owner" => Action::NotifyOwner,
    "count_only" => Action::CountOnly,
});

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Unsubscribe => "unsubscribe",
            Action::Suspend => "suspend",
            Action::NotifyOwner => "notify_owner",
            Action::CountOnly => "count_only",
        }
    }
}

/// Mailman 3's core REST API (`[webservice]` in mailman.cfg).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailman3 {
    /// `http://HOST:PORT/3.1`.
    pub url: String,
    pub user: String,
    pub password: String,
}

/// The checked `feedback:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Addresses feedback loops deliver to; a message to one is a report.
    pub addresses: Vec<Address>,
    /// Durable queue of actions the worker has yet to carry out.
    pub queue: PathBuf,
    /// Feedback types that act on the member (others are only counted).
    pub act_on: Vec<String>,
    /// The action for every list without its own.
    pub action: Action,
    /// Per list label (its name): its own action.
    pub per_list: Vec<(String, Action)>,
    pub mailman3: Option<Mailman3>,
    /// `sympa.pl` and any words before it (`setpriv --reuid=sympa ...`);
    /// Sympa 6.2.67 and later take `del LIST@DOMAIN`, addresses on stdin.
    pub sympa_command: Vec<String>,
    /// Used to notify a list's owner.
    pub sendmail: PathBuf,
    /// Wait between attempts while a list manager is down.
    pub retry: Duration,
}

impl Settings {
    /// True when `addr` is one of the feedback addresses.
    pub fn is_feedback_address(&self, addr: &Address) -> bool {
        self.addresses.iter().any(|a| a.same_mailbox(addr))
    }

    /// The action configured for a list.
    pub fn action_for(&self, list: &str) -> Action {
        self.per_list
            .iter()
            .find(|(l, _)| l == list)
            .map_or(self.action, |(_, a)| *a)
    }

    /// True when reports of this feedback type act on the member.
    pub fn acts_on(&self, feedback_type: &str) -> bool {
        self.act_on
            .iter()
            .any(|t| t.eq_ignore_ascii_case(feedback_type))
    }
}
