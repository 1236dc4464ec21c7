//! What a bounce or feedback message says, as the readers (`parse`
//! for MIME reports, `plain` for text notices) fill it in: the [`Report`]
//! and its parts, and the [`Limits`] on what reading one may cost.

use serde::{Deserialize, Serialize};

use super::fields::cap_str;

/// Caps on what one message may cost. Everything the parser keeps is bounded by
/// these or by the named constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Only the first `max_bytes` of the message are looked at (fault D6).
    pub max_bytes: usize,
    /// MIME nesting levels below the top part that are walked (fault D1).
    pub max_depth: usize,
    /// Recipient groups, `Original-Rcpt-To` and `Reported-Domain` values kept.
    pub max_recipients: usize,
    /// Longest field value kept, in bytes; longer values are cut.
    pub max_field_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            max_depth: 3,
            max_recipients: 100,
            max_field_len: 4096,
        }
    }
}

/// What kind of message this was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// RFC 3464 delivery status notification with at least one recipient group.
    Dsn,
    /// RFC 5965 feedback report with a registered `Feedback-Type`.
    Feedback,
    /// A non-standard (plain text) bounce from which recipients were read.
    PlainBounce,
    /// Looks like a report or bounce but could not be read; see `unparsed_reason`.
    Unparsed,
    /// Not a bounce or feedback report (e.g. an auto-reply or ordinary mail).
    NotABounce,
}

/// Why a report is `Unparsed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnparsedReason {
    /// No bytes (after the size cap), or only whitespace.
    Empty,
    /// mail-parser found no header.
    NoHeaders,
    /// mail-parser panicked; the panic was caught.
    ParserPanic,
    /// `multipart/report` for delivery-status or feedback-report, but the report
    /// part is missing (no boundary, wrong boundary, nesting beyond `max_depth`).
    ReportPartMissing,
    /// A report or bounce notice with no usable recipient.
    NoRecipients,
    /// No report part within `max_depth` levels of MIME nesting, and parts
    /// below that level were skipped (fault D1).
    TooDeep,
    /// Feedback report without `Feedback-Type`: never a complaint (fault D4).
    MissingFeedbackType,
    /// Feedback report whose `Feedback-Type` is not in the IANA registry.
    UnknownFeedbackType,
}

/// RFC 3464 `Action` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsnAction {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl DsnAction {
    /// Reads an `Action` value; an unknown value (e.g. `bogus`) gives None.
    pub fn parse(value: &str) -> Option<Self> {
        let token = value.split_whitespace().next()?.to_ascii_lowercase();
        match token.as_str() {
            "failed" => Some(Self::Failed),
            "delayed" => Some(Self::Delayed),
            "delivered" => Some(Self::Delivered),
            "relayed" => Some(Self::Relayed),
            "expanded" => Some(Self::Expanded),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Delayed => "delayed",
            Self::Delivered => "delivered",
            Self::Relayed => "relayed",
            Self::Expanded => "expanded",
        }
    }

    /// Delivered, relayed and expanded report success, not a problem.
    pub(crate) fn is_success(self) -> bool {
        matches!(self, Self::Delivered | Self::Relayed | Self::Expanded)
    }
}

/// One per-recipient group of a DSN, or one recipient of a plain bounce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecipientStatus {
    /// `Final-Recipient` without its type prefix (falls back to
    /// `Original-Recipient` when `Final-Recipient` is missing or unreadable).
    pub recipient: String,
    pub original_recipient: Option<String>,
    /// None when the field is missing or not an RFC 3464 value.
    pub action: Option<DsnAction>,
    /// RFC 3463 code; from `Status`, else the first code in the diagnostic.
    pub status: Option<String>,
    /// First 3-digit SMTP reply code in the diagnostic.
    pub smtp_code: Option<u16>,
    pub remote_mta: Option<String>,
    /// `Diagnostic-Code` without its type prefix, unfolded.
    pub diagnostic: Option<String>,
    pub last_attempt_date: Option<String>,
    pub will_retry_until: Option<String>,
}

/// RFC 5965 feedback-report fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Feedback {
    /// Lower-cased `Feedback-Type`; None when the field is missing.
    pub feedback_type: Option<String>,
    pub user_agent: Option<String>,
    pub version: Option<String>,
    pub original_mail_from: Option<String>,
    /// Bounded by `Limits::max_recipients`.
    pub original_rcpt_to: Vec<String>,
    pub source_ip: Option<String>,
    pub arrival_date: Option<String>,
    /// Bounded by `Limits::max_recipients`.
    pub reported_domain: Vec<String>,
}

/// Header fields of the returned message, kept for trace validation
/// (did we send this?). Values are unfolded but not RFC 2047-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OriginalHeaders {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    /// Values of the Received fields, top first; at most [`MAX_RECEIVED_HEADERS`](super::MAX_RECEIVED_HEADERS).
    pub received: Vec<String>,
}

/// Everything read from one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub kind: ReportKind,
    /// Set exactly when `kind` is `Unparsed`.
    pub unparsed_reason: Option<UnparsedReason>,
    pub reporting_mta: Option<String>,
    pub arrival_date: Option<String>,
    /// At most `Limits::max_recipients`.
    pub recipients: Vec<RecipientStatus>,
    /// Present for feedback reports, also when unusable (missing or unknown type).
    pub feedback: Option<Feedback>,
    pub original: Option<OriginalHeaders>,
    /// Something was cut: input beyond `max_bytes`, recipients, list entries,
    /// field values, Received headers or MIME parts beyond a cap.
    pub truncated: bool,
}

impl Report {
    pub(super) fn new(kind: ReportKind) -> Self {
        Self {
            kind,
            unparsed_reason: None,
            reporting_mta: None,
            arrival_date: None,
            recipients: Vec::new(),
            feedback: None,
            original: None,
            truncated: false,
        }
    }

    pub(super) fn unparsed(reason: UnparsedReason, truncated: bool) -> Self {
        Self {
            unparsed_reason: Some(reason),
            truncated,
            ..Self::new(ReportKind::Unparsed)
        }
    }

    pub(super) fn set_unparsed(&mut self, reason: UnparsedReason) {
        self.kind = ReportKind::Unparsed;
        self.unparsed_reason = Some(reason);
    }

    /// Last pass: cuts every kept string to `max` bytes, whatever produced it
    /// (values found inside text, such as a remote host name, are not cut by
    /// the field reader).
    pub(super) fn cap_fields(&mut self, max: usize) {
        let mut cut = false;
        let mut cap = |s: &mut String| {
            if s.len() > max {
                *s = cap_str(s, max, &mut cut);
            }
        };
        let cap_opt = |s: &mut Option<String>, cap: &mut dyn FnMut(&mut String)| {
            if let Some(s) = s.as_mut() {
                cap(s);
            }
        };
        cap_opt(&mut self.reporting_mta, &mut cap);
        cap_opt(&mut self.arrival_date, &mut cap);
        for r in &mut self.recipients {
            cap(&mut r.recipient);
            for f in [
                &mut r.original_recipient,
                &mut r.status,
                &mut r.remote_mta,
                &mut r.diagnostic,
                &mut r.last_attempt_date,
                &mut r.will_retry_until,
            ] {
                cap_opt(f, &mut cap);
            }
        }
        // A recipient cut to nothing is no recipient.
        self.recipients.retain(|r| !r.recipient.is_empty());
        if let Some(f) = self.feedback.as_mut() {
            for v in [
                &mut f.feedback_type,
                &mut f.user_agent,
                &mut f.version,
                &mut f.original_mail_from,
                &mut f.source_ip,
                &mut f.arrival_date,
            ] {
                cap_opt(v, &mut cap);
            }
            f.original_rcpt_to.iter_mut().for_each(&mut cap);
            f.reported_domain.iter_mut().for_each(&mut cap);
        }
        if let Some(o) = self.original.as_mut() {
            for v in [&mut o.message_id, &mut o.from, &mut o.to, &mut o.subject] {
                cap_opt(v, &mut cap);
            }
            o.received.iter_mut().for_each(&mut cap);
        }
        self.truncated |= cut;
    }
}
