//! Verdicts: what to answer and why. A reply code always travels with the
//! status it belongs to, because indymilter silently drops a custom reply
//! whose class does not match the status.

use std::fmt;

/// The answer to give Postfix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing decided yet; keep listening.
    Continue,
    /// Done with this message: Postfix stops sending it to us.
    Accept,
    /// 5xx: only for a positive finding.
    Reject(Reply),
    /// 4xx: the client retries; nothing is lost.
    Tempfail(Reply),
}

/// Why a verdict was reached; a bounded set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Pending,
    Clean,
    TrustedClient,
    ForgedEnvelopeSender,
    ForgedFromHeader,
    TooManyRecipients,
    BounceValid,
    BounceNotOurs,
    Shielded,
    RateLimited,
    ForgedTags,
    UnreadableAddress,
    InternalError,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Pending => "pending",
            Cause::Clean => "clean",
            Cause::TrustedClient => "trusted_client",
            Cause::ForgedEnvelopeSender => "forged_envelope_sender",
            Cause::ForgedFromHeader => "forged_from_header",
            Cause::TooManyRecipients => "too_many_recipients",
            Cause::BounceValid => "bounce_valid",
            Cause::BounceNotOurs => "bounce_not_ours",
            Cause::Shielded => "shielded",
            Cause::RateLimited => "rate_limited",
            Cause::ForgedTags => "forged_tags",
            Cause::UnreadableAddress => "unreadable_address",
            Cause::InternalError => "internal_error",
        }
    }
}

/// A complete verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub reason: Cause,
    /// Name of the list concerned, if any (from the config, never from mail).
    pub list: Option<String>,
    /// Observe mode: log and count `action`, but continue instead.
    pub observe: bool,
    /// For a bounce to a list: what its check found.
    pub bounce: Option<BounceVerdict>,
    /// Work to do at end of message (or to prepare for it).
    pub effect: Effect,
    /// Budgets this recipient is charged against, in order; the first
    /// exhausted one turns an acceptance into a 451.
    pub charges: Vec<Charge>,
}

/// A bounce budget (see `config::Ratelimit`); a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Network,
    ListValid,
    ListInvalid,
    Address,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Network => "network",
            Budget::ListValid => "list_valid",
            Budget::ListInvalid => "list_invalid",
            Budget::Address => "address",
        }
    }
}

/// One charge against a budget: the budget and the key it counts under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub budget: Budget,
    pub key: String,
}

impl Charge {
    /// A charge under `key`; a key longer than the stores take (a long
    /// signed address) counts under its SHA-256 instead of escaping the
    /// budget.
    pub fn new(budget: Budget, key: String) -> Charge {
        use sha2::{Digest, Sha256};
        let key = if key.len() > crate::ratelimit::MAX_KEY_LEN {
            let digest = Sha256::digest(key.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        } else {
            key
        };
        Charge { budget, key }
    }
}

/// What the check of a bounce to a list found; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceVerdict {
    Valid,
    Invalid,
    Expired,
    Unsigned,
    TraceOk,
    TraceFail,
}

impl BounceVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceVerdict::Valid => "valid",
            BounceVerdict::Invalid => "invalid",
            BounceVerdict::Expired => "expired",
            BounceVerdict::Unsigned => "unsigned",
            BounceVerdict::TraceOk => "trace_ok",
            BounceVerdict::TraceFail => "trace_fail",
        }
    }
}

/// A change the milter makes to the message, beside the reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Effect {
    #[default]
    None,
    /// Outbound list mail: replace the envelope sender with this signed one.
    SignSender(crate::address::Address),
    /// A valid bounce: deliver to the plain address instead of the tagged one.
    RewriteRecipient {
        from: crate::address::Address,
        to: crate::address::Address,
    },
    /// A bounce whose returned original must show our mail.
    NeedsTrace,
}

impl Verdict {
    pub(crate) fn cont() -> Verdict {
        Verdict {
            action: Action::Continue,
            reason: Cause::Pending,
            list: None,
            observe: false,
            bounce: None,
            effect: Effect::None,
            charges: Vec::new(),
        }
    }

    pub fn accept(reason: Cause) -> Verdict {
        Verdict {
            action: Action::Accept,
            reason,
            ..Verdict::cont()
        }
    }

    /// The metric label for the verdict: what happened, or what would have.
    pub fn label(&self) -> &'static str {
        match (&self.action, self.observe) {
            (Action::Continue, _) => "continue",
            (Action::Accept, _) => "accept",
            (Action::Reject(_), false) => "reject",
            (Action::Reject(_), true) => "observe_reject",
            (Action::Tempfail(_), false) => "tempfail",
            (Action::Tempfail(_), true) => "observe_tempfail",
        }
    }
}

/// An SMTP reply: code, enhanced status code and one line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: &'static str,
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    pub(crate) fn permanent(code: &'static str, status: &'static str, text: String) -> Reply {
        debug_assert!(code.starts_with('5') && status.starts_with('5'));
        Reply {
            code,
            status,
            text: sanitize(&text),
        }
    }

    pub(crate) fn transient(code: &'static str, status: &'static str, text: String) -> Reply {
        debug_assert!(code.starts_with('4') && status.starts_with('4'));
        Reply {
            code,
            status,
            text: sanitize(&text),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// Longest reply text line (indymilter allows 980 bytes).
const MAX_REPLY_TEXT: usize = 400;

/// Makes text safe for an SMTP reply: printable ASCII only, `%` doubled
/// (Postfix treats a single `%` as a format character), bounded length.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REPLY_TEXT));
    for c in text.chars() {
        if out.len() >= MAX_REPLY_TEXT {
            break;
        }
        match c {
            '%' => out.push_str("%%"),
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_sanitized() {
        let r = Reply::permanent("550", "5.7.1", "100% <caf\u{e9}>\r\nX-Injected: 1".into());
        assert_eq!(r.text, "100%% <caf?>??X-Injected: 1");
        let long = Reply::transient("451", "4.7.1", "x".repeat(5000));
        assert!(long.text.len() <= MAX_REPLY_TEXT + 1);
    }
}
