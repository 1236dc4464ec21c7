//! Which list and which member a report is about, from what carries our
//! signature, never from what the reporter says alone.
//!
//! - The list: the complained-of message's `Return-Path` when it carries
//!   our signature (prvs, or the expander's signed VERP) and verifies;
//!   else its `List-Id`; else the domain of its `Message-ID` when that is
//!   one of `trace.message_id_domains` with a single list on it. A
//!   signature that does not verify leaves the report unattributed,
//!   whatever else it says.
//! - The member: the per-member VERP address inside that verified
//!   signature (the expander's signed VERP; Mailman's `LIST-bounces+m=d@`
//!   or Sympa's `bounce+m==a==d==LIST@` under our prvs tag); else the
//!   report's `Original-Rcpt-To`, which is only the reporter's word.

use super::intake::Intake;
use crate::address::prvs::{self, PrvsResult};
use crate::address::verp::{self, VerpResult};
use crate::address::{Address, parse_path};
use crate::config::Config;

/// What the complained-of message's `Return-Path` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// Ours, and it verifies.
    Valid,
    /// Ours, correct, but older than the validity window.
    Expired,
    /// Looks like ours but does not verify: a forgery or a damaged copy.
    Invalid,
    /// No signature of ours (no `Return-Path`, or not one of our addresses).
    Absent,
}

impl Signature {
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::Valid => "valid",
            Signature::Expired => "expired",
            Signature::Invalid => "invalid",
            Signature::Absent => "absent",
        }
    }
}

/// Where the member came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberSource {
    /// A per-member VERP address under a signature that verified.
    Signed,
    /// `Original-Rcpt-To`: the reporter's word.
    Reported,
    None,
}

impl MemberSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberSource::Signed => "signed",
            MemberSource::Reported => "reported",
            MemberSource::None => "none",
        }
    }
}

/// The outcome: the list (its label) and member a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub list: Option<String>,
    /// `signature`, `list_id`, `message_id` or `none`.
    pub list_from: &'static str,
    pub member: Option<Address>,
    pub member_from: MemberSource,
    pub signature: Signature,
    /// The mailbox provider (`yahoo`, `microsoft`, `gmail`, ... `other`).
    pub provider: String,
}

impl Attribution {
    /// The list came out of our own signature (valid, or valid but old):
    /// the report is about mail we really sent.
    pub fn list_signed(&self) -> bool {
        self.list_from == "signature"
            && matches!(self.signature, Signature::Valid | Signature::Expired)
    }

    /// The member may be acted on: named inside a signature that verified.
    pub fn trusted(&self) -> bool {
        self.signature == Signature::Valid
            && self.member_from == MemberSource::Signed
            && self.list.is_some()
    }
}

/// Attributes one report. `today` is days since the epoch.
pub fn attribute(intake: &Intake, config: &Config, today: u64) -> Attribution {
    let (signature, signed_list, signed_member) = intake
        .original
        .return_path
        .as_deref()
        .map(|rp| from_return_path(rp, config, today))
        .unwrap_or((Signature::Absent, None, None));
    let mut out = Attribution {
        list: None,
        list_from: "none",
        member: None,
        member_from: MemberSource::None,
        signature,
        provider: String::new(),
    };
    if signature != Signature::Invalid {
        if let Some(list) = signed_list {
            out.list = Some(list);
            out.list_from = "signature";
        } else if let Some(list) = intake
            .original
            .list_id
            .as_deref()
            .and_then(|l| by_list_id(l, config))
        {
            out.list = Some(list);
            out.list_from = "list_id";
        } else if let Some(list) = intake
            .original
            .message_id
            .as_deref()
            .and_then(|m| by_message_id(m, config))
        {
            out.list = Some(list);
            out.list_from = "message_id";
        }
        if let Some(m) = signed_member {
            out.member = Some(m);
            out.member_from = MemberSource::Signed;
        } else if out.list.is_some()
            && let Some(m) = intake
                .original_rcpt_to
                .iter()
                .filter_map(|r| parse_path(r).ok().flatten())
                // Providers that hide the complainer write a placeholder.
                .find(|m| !m.local.to_ascii_lowercase().contains("redacted"))
        {
            out.member = Some(m);
            out.member_from = MemberSource::Reported;
        }
    }
    let member_domain = out.member.as_ref().map(|m| m.domain.clone()).or_else(|| {
        intake.original_rcpt_to.iter().find_map(|r| {
            r.rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>').to_string())
        })
    });
    out.provider = member_domain
        .as_deref()
        .and_then(provider_of)
        .or_else(|| intake.user_agent.as_deref().and_then(provider_of))
        .or_else(|| intake.reporter.as_deref().and_then(provider_of))
        .unwrap_or("other")
        .to_string();
    out
}

/// Reads a `Return-Path` value: the signature, the list it names and the
/// member inside it.
fn from_return_path(
    value: &str,
    config: &Config,
    today: u64,
) -> (Signature, Option<String>, Option<Address>) {
    let absent = (Signature::Absent, None, None);
    let Ok(Some(addr)) = parse_path(value.trim()) else {
        return absent;
    };
    let Some(p) = config.protected(&addr) else {
        return absent;
    };
    let read = signed_parts(&addr, &p, config, today);
    // A Sympa VERP naming a list we do not know is not about the list that
    // claims the shared `bounce@`: the signature vouches for no list and
    // no member of one.
    if p.unnamed {
        (read.0, None, None)
    } else {
        read
    }
}

/// The signature of a protected `addr`, its list and the member inside.
fn signed_parts(
    addr: &Address,
    p: &crate::config::Protected<'_>,
    config: &Config,
    today: u64,
) -> (Signature, Option<String>, Option<Address>) {
    let absent = (Signature::Absent, None, None);
    let list = Some(p.owner.label().to_string());
    let Some(keys) = config.signing.as_ref() else {
        return absent;
    };
    let inner = match prvs::verify(addr, keys, today) {
        PrvsResult::Valid { original, .. } => original,
        PrvsResult::Expired => return (Signature::Expired, list, None),
        PrvsResult::Invalid | PrvsResult::UnknownKey => return (Signature::Invalid, None, None),
        PrvsResult::Unsigned => {
            return match verp::verify_verp(addr, keys, today, keys.validity_days()) {
                VerpResult::Valid { member, .. } => (Signature::Valid, list, Some(member)),
                VerpResult::Expired => (Signature::Expired, list, None),
                VerpResult::Invalid | VerpResult::UnknownKey => (Signature::Invalid, None, None),
                VerpResult::Unsigned => absent,
            };
        }
    };
    // Under a valid prvs tag: the list manager's own VERP, if any.
    let member = match verp::verify_verp(&inner, keys, today, keys.validity_days()) {
        VerpResult::Valid { member, .. } => Some(member),
        _ => list_manager_member(&inner),
    };
    (Signature::Valid, list, member)
}

/// The member a list manager's own per-member VERP sender names: Sympa's
/// `bounce+m==a==d==LIST@`, or Mailman's `LIST-bounces+m=d@`.
pub(crate) fn list_manager_member(addr: &Address) -> Option<Address> {
    sympa_verp(addr).or_else(|| verp::decode(addr).map(|v| v.member))
}

/// Sympa's VERP: `bounce+LOCAL==a==DOMAIN==LIST@` (with an optional
/// `==SUFFIX` after the list).
fn sympa_verp(addr: &Address) -> Option<Address> {
    let (_, ext) = addr.local.split_once('+')?;
    let (local, rest) = ext.split_once("==a==")?;
    let domain = rest.split("==").next()?;
    Address::new(local, domain).ok()
}

/// `List-Id: Name <members.lists.example.org>` → the list whose address
/// is `members@lists.example.org`.
fn by_list_id(value: &str, config: &Config) -> Option<String> {
    let id = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value,
    };
    let id = id.trim().to_ascii_lowercase();
    config
        .lists
        .iter()
        .find(|l| format!("{}.{}", l.address.local, l.address.domain).eq_ignore_ascii_case(&id))
        .map(|l| l.name.clone())
        .or_else(|| {
            config
                .domains
                .iter()
                .find(|d| id.ends_with(&format!(".{}", d.domain.to_ascii_lowercase())))
                .map(|d| d.domain.clone())
        })
}

/// `Message-ID: <x@lists.example.org>` → the one list on that domain, when
/// the domain is one of ours (`trace.message_id_domains`).
fn by_message_id(value: &str, config: &Config) -> Option<String> {
    let domain = value
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .rsplit_once('@')?
        .1
        .to_ascii_lowercase();
    if !config
        .trace
        .message_id_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&domain))
    {
        return None;
    }
    let mut on_domain = config
        .lists
        .iter()
        .filter(|l| l.address.domain.eq_ignore_ascii_case(&domain));
    match (on_domain.next(), on_domain.next()) {
        (Some(l), None) => Some(l.name.clone()),
        _ => config
            .domains
            .iter()
            .find(|d| d.domain.eq_ignore_ascii_case(&domain))
            .map(|d| d.domain.clone()),
    }
}

/// Domains (and reporter names) of the big mailbox providers, named as
/// the classification rules name them.
const PROVIDERS: &[(&str, &str)] = &[
    ("yahoo", "yahoo"),
    ("ymail.com", "yahoo"),
    ("rocketmail.com", "yahoo"),
    ("aol.com", "yahoo"),
    ("aim.com", "yahoo"),
    ("verizon.net", "yahoo"),
    ("hotmail", "microsoft"),
    ("outlook.", "microsoft"),
    ("live.", "microsoft"),
    ("msn.com", "microsoft"),
    ("gmail.com", "gmail"),
    ("googlemail.com", "gmail"),
    ("comcast.net", "comcast"),
    ("gmx.", "gmx"),
    ("web.de", "gmx"),
];

/// The provider a domain (or a reporter's name) belongs to.
pub fn provider_of(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    PROVIDERS
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map(|&(_, p)| p)
}
