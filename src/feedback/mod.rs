//! Feedback-loop reports (spam complaints) and what they do.
//!
//! A provider's feedback loop (Yahoo CFL, Microsoft JMRP, an ARF sender)
//! delivers to one of `feedback.addresses`. The milter reads the report
//! ([`intake`]), finds the list and member it is about from what carries
//! our signature ([`attribute`]), tags it (`X-Listwarden-Feedback:`),
//! counts it in the complaint rate, and, when the member may be acted on,
//! writes a job to a durable [`queue`]. A separate worker
//! (`listwarden feedback-worker`, [`worker`]) carries the jobs out through
//! each list manager's own interface and retries while it is down, so the
//! milter never waits on a list manager.
//!
//! `intake`, `attribute` and [`assess`] are pure: no I/O, no clock.

pub mod attribute;
pub mod intake;
pub mod queue;
pub mod record;
pub mod worker;

pub use crate::config::feedback::{Action, Mailman3, Settings};
pub use attribute::{Attribution, MemberSource, Signature, provider_of};
pub use intake::{Format, Intake};
pub use listwarden_core::tag::FEEDBACK_HEADER as HEADER;

use crate::config::Config;
use crate::dsn;

/// True when `rcpt` is one of `feedback.addresses`.
pub fn is_report_address(rcpt: &crate::address::Address, config: &Config) -> bool {
    config
        .feedback
        .as_ref()
        .is_some_and(|f| f.is_feedback_address(rcpt))
}

/// One report, read, attributed and decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub intake: Intake,
    pub attribution: Attribution,
    /// What will be done to the member.
    pub action: Action,
    /// Why that action (a word for logs, tags and metrics).
    pub why: &'static str,
}

impl Assessment {
    /// The label of the `feedback_reports_total` metric's `result`.
    pub fn result(&self) -> &'static str {
        match (&self.attribution.list, self.attribution.signature) {
            (_, Signature::Invalid) => "signature_invalid",
            (None, _) => "unattributed",
            (Some(_), _) if self.attribution.trusted() => "attributed",
            (Some(_), _) if self.attribution.member.is_some() => "member_reported",
            (Some(_), _) => "list_only",
        }
    }

    /// The `X-Listwarden-Feedback:` value.
    pub fn tag(&self) -> String {
        let a = &self.attribution;
        let member = a.member.as_ref().map(|m| m.to_string()).unwrap_or_default();
        listwarden_core::tag::write(&[
            ("class", "complaint"),
            ("feedback_type", &self.intake.feedback_type),
            ("format", self.intake.format.as_str()),
            ("list", a.list.as_deref().unwrap_or("unattributed")),
            ("member", &member),
            ("member_from", a.member_from.as_str()),
            ("signature", a.signature.as_str()),
            ("provider", &a.provider),
            ("action", self.action.as_str()),
            ("why", self.why),
        ])
    }
}

/// Reads, attributes and decides one report, with the config's limits.
/// `None` when no `feedback:` section is configured.
pub fn assess(raw: &[u8], config: &Config, today: u64) -> Option<Assessment> {
    let settings = config.feedback.as_ref()?;
    let limits = dsn::Limits {
        max_bytes: raw.len().max(1),
        max_depth: config.limits.max_mime_depth,
        ..dsn::Limits::default()
    };
    let intake = intake::read(raw, &limits);
    let attribution = attribute::attribute(&intake, config, today);
    let (action, why) = decide(&intake, &attribution, settings);
    Some(Assessment {
        intake,
        attribution,
        action,
        why,
    })
}

/// The action for an attributed report: the list's own only when the
/// member was named inside a signature that verified; an owner notice
/// when the list came out of a valid signature but only the reporter
/// names the member; counting otherwise. A report whose list was only
/// named in text (`List-Id:`, Message-ID) never makes a job: anyone can
/// write such a report, as many as they like.
fn decide(intake: &Intake, a: &Attribution, settings: &Settings) -> (Action, &'static str) {
    let Some(list) = a.list.as_deref() else {
        let why = if a.signature == Signature::Invalid {
            "signature_invalid"
        } else {
            "unattributed"
        };
        return (Action::CountOnly, why);
    };
    if !settings.acts_on(&intake.feedback_type) {
        return (Action::CountOnly, "feedback_type");
    }
    let wanted = settings.action_for(list);
    if a.trusted() {
        return (wanted, "signed_member");
    }
    match (a.member_from, wanted) {
        (_, Action::CountOnly) => (Action::CountOnly, "configured"),
        _ if !a.list_signed() => (Action::CountOnly, "not_signed"),
        (MemberSource::Reported, _) if a.signature == Signature::Valid => {
            (Action::NotifyOwner, "member_not_signed")
        }
        (MemberSource::Reported, _) => (Action::CountOnly, "signature_expired"),
        (MemberSource::Signed, _) => (Action::CountOnly, "signature_expired"),
        (MemberSource::None, _) => (Action::CountOnly, "no_member"),
    }
}

#[cfg(test)]
mod tests;
