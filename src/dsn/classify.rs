//! Classification of a parsed report with a rule set, and the JSON-lines view.

use serde::Serialize;

use super::report::{DsnAction, Feedback, RecipientStatus, Report, ReportKind};
use super::rules::{Class, Fault, MatchInput, Reason, Retry, RuleAction, RuleResult, RuleSet};

/// The `rule` of a classification that no rule matched.
pub const FALLBACK_RULE: &str = "builtin-fallback";

/// How one recipient (or one feedback report) is classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The failed recipient; for a feedback report the first
    /// `Original-Rcpt-To`, else the returned message's To address (often
    /// redacted, RFC 6590), else None.
    pub recipient: Option<String>,
    pub action: Option<DsnAction>,
    pub status: Option<String>,
    pub class: Class,
    pub reason: Reason,
    pub provider: String,
    /// The matching rule's name, or [`FALLBACK_RULE`].
    pub rule: String,
    pub retry: Retry,
    pub rule_action: RuleAction,
    /// Set for feedback reports.
    pub feedback_type: Option<String>,
    /// Whose side the failure is on; only `them` may count against the
    /// member. The milter turns it to `us` during a bounce storm.
    pub fault: Fault,
    /// Part of a storm of one provider and rule (set by the milter's
    /// incident book, never by [`classify`]).
    pub incident: bool,
}

/// Classifies every recipient group of a DSN or plain bounce, or the one
/// feedback report, trying rules in order (first match wins) and falling back
/// to the status class. Unparsed and non-bounce reports give nothing.
///
/// Two guards apply after the rules:
/// - `Action: delayed` is never a bounce: hard or soft becomes deferral
///   (sympa-community/sympa#397 shows the damage otherwise).
/// - Success actions (delivered, relayed, expanded) skip the rules and are
///   `delivered`.
pub fn classify(report: &Report, rules: &RuleSet) -> Vec<Classification> {
    match report.kind {
        ReportKind::Dsn | ReportKind::PlainBounce => report
            .recipients
            .iter()
            .map(|r| classify_recipient(r, report, rules))
            .collect(),
        ReportKind::Feedback => report
            .feedback
            .iter()
            .map(|f| classify_feedback(f, report, rules))
            .collect(),
        ReportKind::Unparsed | ReportKind::NotABounce => Vec::new(),
    }
}

fn classify_recipient(r: &RecipientStatus, report: &Report, rules: &RuleSet) -> Classification {
    let input = MatchInput {
        diagnostic: r.diagnostic.as_deref(),
        status: r.status.as_deref(),
        smtp_code: r.smtp_code,
        remote_mta: r.remote_mta.as_deref(),
        reporting_mta: report.reporting_mta.as_deref(),
        recipient: Some(&r.recipient),
        action: r.action,
        feedback_type: None,
    };
    let matched = if r.action.is_some_and(DsnAction::is_success) {
        None
    } else {
        rules.first_match(&input)
    };
    let (result, rule, rule_action) = match matched {
        Some(rule) => (rule.result().clone(), rule.name().to_owned(), rule.action()),
        None => (
            status_fallback(r.action, r.status.as_deref(), r.smtp_code),
            FALLBACK_RULE.to_owned(),
            RuleAction::Accept,
        ),
    };
    let class = match (r.action, result.class) {
        (Some(DsnAction::Delayed), Class::Hard | Class::Soft) => Class::Deferral,
        (_, class) => class,
    };
    let provider = if result.provider == "unknown" {
        provider_hint(&[
            r.remote_mta.as_deref(),
            r.diagnostic.as_deref(),
            report.reporting_mta.as_deref(),
        ])
        .unwrap_or("unknown")
        .to_owned()
    } else {
        result.provider
    };
    Classification {
        recipient: Some(r.recipient.clone()),
        action: r.action,
        status: r.status.clone(),
        class,
        reason: result.reason,
        provider,
        rule,
        retry: result.retry,
        rule_action,
        feedback_type: None,
        fault: if class == Class::Delivered {
            Fault::Unknown
        } else {
            result.fault
        },
        incident: false,
    }
}

/// No rule matched: decide by the status class (or the SMTP code's first
/// digit). Unknown means soft, never hard: a guess must not unsubscribe anyone.
/// That includes a group whose `Action` is missing or not an RFC 3464 value
/// (fault D2: a malformed group is classified "unknown").
fn status_fallback(
    action: Option<DsnAction>,
    status: Option<&str>,
    smtp_code: Option<u16>,
) -> RuleResult {
    let digit = status
        .and_then(|s| s.chars().next())
        .or_else(|| smtp_code.and_then(|c| char::from_digit(u32::from(c / 100), 10)));
    let class = match (action, digit) {
        (Some(a), _) if a.is_success() => Class::Delivered,
        (Some(DsnAction::Delayed), _) => Class::Deferral,
        (None, _) => Class::Soft,
        (_, Some('5')) => Class::Hard,
        (_, Some('2')) => Class::Delivered,
        _ => Class::Soft,
    };
    RuleResult {
        class,
        reason: Reason::Other,
        provider: "unknown".to_owned(),
        retry: Retry::default_for(class),
        // A status no rule knows says nothing about whose side it is.
        fault: Fault::Unknown,
    }
}

/// Feedback types that are complaints; the other registered ones (`not-spam`,
/// `auth-failure`) say nothing against the recipient.
const COMPLAINT_FEEDBACK_TYPES: &[&str] = &["abuse", "fraud", "virus", "other"];

fn classify_feedback(f: &Feedback, report: &Report, rules: &RuleSet) -> Classification {
    let recipient = f.original_rcpt_to.first().cloned().or_else(|| {
        report
            .original
            .as_ref()
            .and_then(|o| o.to.as_deref())
            .and_then(super::fields::find_address)
    });
    let input = MatchInput {
        reporting_mta: report.reporting_mta.as_deref(),
        recipient: recipient.as_deref(),
        feedback_type: f.feedback_type.as_deref(),
        ..MatchInput::default()
    };
    let (result, rule, rule_action) = match rules.first_match(&input) {
        Some(rule) => (rule.result().clone(), rule.name().to_owned(), rule.action()),
        None => {
            let complaint = f
                .feedback_type
                .as_deref()
                .is_some_and(|t| COMPLAINT_FEEDBACK_TYPES.contains(&t));
            let (class, reason) = match f.feedback_type.as_deref() {
                _ if complaint => (Class::Complaint, Reason::Feedback),
                Some("auth-failure") => (Class::Delivered, Reason::AuthFailure),
                _ => (Class::Delivered, Reason::Feedback),
            };
            // A complaint is the recipient's own act; the rest is about us
            // (auth-failure) or nobody.
            let fault = match (class, reason) {
                (Class::Complaint, _) => Fault::Them,
                (_, Reason::AuthFailure) => Fault::Us,
                _ => Fault::Unknown,
            };
            let result = RuleResult {
                class,
                reason,
                provider: "unknown".to_owned(),
                retry: Retry::default_for(class),
                fault,
            };
            (result, FALLBACK_RULE.to_owned(), RuleAction::Accept)
        }
    };
    let provider = if result.provider == "unknown" {
        provider_hint(&[report.reporting_mta.as_deref(), f.user_agent.as_deref()])
            .unwrap_or("unknown")
            .to_owned()
    } else {
        result.provider
    };
    Classification {
        recipient,
        action: None,
        status: None,
        class: result.class,
        reason: result.reason,
        provider,
        rule,
        retry: result.retry,
        rule_action,
        feedback_type: f.feedback_type.clone(),
        fault: result.fault,
        incident: false,
    }
}

/// Host-name and text fragments that identify a provider when the matching
/// rule names none (tamingdns: Yahoo's MXs are `*.yahoodns.net`; Gmail replies
/// end in `- gsmtp`). Looked up in Remote-MTA, then the diagnostic, then
/// Reporting-MTA (which is often our own MTA, so it comes last).
const PROVIDER_HINTS: &[(&str, &str)] = &[
    ("yahoodns.net", "yahoo"),
    ("yahoo.com", "yahoo"),
    ("aol.com", "yahoo"),
    ("yahoo!", "yahoo"),
    ("gsmtp", "gmail"),
    ("google.com", "gmail"),
    ("outlook.com", "microsoft"),
    ("hotmail.com", "microsoft"),
    ("spamhaus.org", "spamhaus"),
];

fn provider_hint(texts: &[Option<&str>]) -> Option<&'static str> {
    texts.iter().flatten().find_map(|text| {
        let lower = text.to_ascii_lowercase();
        PROVIDER_HINTS
            .iter()
            .find(|(needle, _)| lower.contains(needle))
            .map(|&(_, provider)| provider)
    })
}

/// One line of `classify`-style output.
#[derive(Serialize)]
struct JsonLine<'a> {
    file: &'a str,
    kind: ReportKind,
    recipient: Option<&'a str>,
    action: Option<DsnAction>,
    status: Option<&'a str>,
    class: Option<Class>,
    reason: Option<Reason>,
    provider: Option<&'a str>,
    rule: Option<&'a str>,
    feedback_type: Option<&'a str>,
    fault: Option<Fault>,
}

/// One compact JSON object per classification, keys in this order: `file`,
/// `kind`, `recipient`, `action`, `status`, `class`, `reason`, `provider`,
/// `rule`, `feedback_type`, `fault` (new keys go last). A report with no classification (unparsed, not a
/// bounce) gives one line with `kind` set and the other keys null, so every
/// input file shows up.
pub fn json_lines(file_label: &str, report: &Report, cls: &[Classification]) -> Vec<String> {
    let lines: Vec<JsonLine<'_>> = if cls.is_empty() {
        vec![JsonLine {
            file: file_label,
            kind: report.kind,
            recipient: None,
            action: None,
            status: None,
            class: None,
            reason: None,
            provider: None,
            rule: None,
            feedback_type: None,
            fault: None,
        }]
    } else {
        cls.iter()
            .map(|c| JsonLine {
                file: file_label,
                kind: report.kind,
                recipient: c.recipient.as_deref(),
                action: c.action,
                status: c.status.as_deref(),
                class: Some(c.class),
                reason: Some(c.reason),
                provider: Some(&c.provider),
                rule: Some(&c.rule),
                feedback_type: c.feedback_type.as_deref(),
                fault: Some(c.fault),
            })
            .collect()
    };
    lines
        .iter()
        .filter_map(|line| serde_json::to_string(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::super::report::Limits;
    use super::*;

    fn builtin() -> RuleSet {
        RuleSet::builtin().expect("built-in rules load")
    }

    fn report_with(recipients: Vec<RecipientStatus>) -> Report {
        let mut report = parse(b"From: a@b\n\nx\n", &Limits::default());
        report.kind = ReportKind::Dsn;
        report.unparsed_reason = None;
        report.recipients = recipients;
        report
    }

    fn rcpt(
        action: Option<DsnAction>,
        status: Option<&str>,
        diagnostic: Option<&str>,
    ) -> RecipientStatus {
        RecipientStatus {
            recipient: "u@example.com".into(),
            action,
            status: status.map(str::to_owned),
            diagnostic: diagnostic.map(str::to_owned),
            smtp_code: diagnostic.and_then(super::super::fields::find_smtp_code),
            ..RecipientStatus::default()
        }
    }

    #[test]
    fn delayed_is_never_hard() {
        use DsnAction::*;
        // A rule that says hard for everything, tried first.
        let always_hard = RuleSet::from_yaml_str(
            "rules:\n  - name: all-hard\n    match: { status: '.' }\n    result: { class: hard, reason: unknown_user }\n  - name: all-soft\n    match: { diagnostic: '.' }\n    result: { class: soft, reason: other }\n",
            "t",
        )
        .expect("valid");
        let cases = [
            (
                Some(Delayed),
                Some("5.1.1"),
                None,
                Class::Deferral,
                "all-hard",
            ),
            (Some(Failed), Some("5.1.1"), None, Class::Hard, "all-hard"),
            (Some(Delayed), None, Some("x"), Class::Deferral, "all-soft"),
            (Some(Delayed), None, None, Class::Deferral, FALLBACK_RULE),
            (
                Some(Delivered),
                Some("5.1.1"),
                None,
                Class::Delivered,
                FALLBACK_RULE,
            ),
        ];
        for (action, status, diag, want, rule) in cases {
            let report = report_with(vec![rcpt(action, status, diag)]);
            let got = classify(&report, &always_hard);
            assert_eq!(got.len(), 1);
            assert_eq!(
                (got[0].class, got[0].rule.as_str()),
                (want, rule),
                "{action:?} {status:?}"
            );
        }
    }

    #[test]
    fn builtin_rules_table() {
        use DsnAction::*;
        type Case<'a> = (
            Option<DsnAction>,
            Option<&'a str>,
            Option<&'a str>,
            Class,
            Reason,
            &'a str,
            &'a str,
        );
        let cases: &[Case<'_>] = &[
            (
                Some(Delayed),
                Some("4.7.0"),
                Some(
                    "421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints",
                ),
                Class::Deferral,
                Reason::Complaint,
                "yahoo",
                "yahoo-ts01",
            ),
            (
                Some(Delayed),
                Some("4.7.0"),
                Some(
                    "421 4.7.0 [IPTS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
                ),
                Class::Deferral,
                Reason::RateLimited,
                "yahoo",
                "yahoo-tss04",
            ),
            (
                Some(Delayed),
                Some("4.7.1"),
                Some("421 4.7.1 [TS03] All messages from 192.0.2.1 permanently deferred"),
                Class::Deferral,
                Reason::Blocked,
                "yahoo",
                "yahoo-ts03",
            ),
            (
                Some(Failed),
                Some("5.7.2"),
                Some(
                    "553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed",
                ),
                Class::Soft,
                Reason::Blocked,
                "yahoo",
                "yahoo-tss09",
            ),
            (
                Some(Delayed),
                Some("4.7.28"),
                Some(
                    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. - gsmtp",
                ),
                Class::Deferral,
                Reason::RateLimited,
                "gmail",
                "gmail-4.7.28-rate-limit",
            ),
            (
                Some(Failed),
                Some("5.7.26"),
                Some(
                    "550-5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy. - gsmtp",
                ),
                Class::Soft,
                Reason::AuthFailure,
                "gmail",
                "gmail-5.7.26-dmarc-spf",
            ),
            (
                Some(Failed),
                Some("5.7.1"),
                Some(
                    "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).",
                ),
                Class::Soft,
                Reason::Blocked,
                "microsoft",
                "microsoft-s3140-s3150",
            ),
            (
                Some(Failed),
                Some("5.7.1"),
                Some(
                    "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; Error: open resolver; https://www.spamhaus.org/returnc/pub/ 127.255.255.254",
                ),
                Class::Soft,
                Reason::ReceiverMisconfig,
                "spamhaus",
                "spamhaus-open-resolver",
            ),
            (
                Some(Failed),
                Some("5.7.1"),
                Some(
                    "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
                ),
                Class::Soft,
                Reason::Blocked,
                "spamhaus",
                "spamhaus-listed",
            ),
            (
                Some(Failed),
                Some("5.1.1"),
                Some("550 5.1.1 <u@example.com>: Recipient address rejected: User unknown"),
                Class::Hard,
                Reason::UnknownUser,
                "unknown",
                "text-unknown-user",
            ),
            (
                Some(Failed),
                Some("5.1.1"),
                None,
                Class::Hard,
                Reason::UnknownUser,
                "unknown",
                "rfc3463-5.1.1-unknown-user",
            ),
            (
                Some(Failed),
                Some("5.1.2"),
                Some("Host or domain name not found. Name service error"),
                Class::Hard,
                Reason::HostUnknown,
                "unknown",
                "text-host-unknown",
            ),
            (
                Some(Failed),
                Some("5.1.2"),
                Some("550 5.1.2 <u@nonexist.example>: Sender address rejected: Domain not found"),
                Class::Soft,
                Reason::Policy,
                "unknown",
                "text-sender-rejected",
            ),
            (
                Some(Delayed),
                Some("4.2.2"),
                None,
                Class::Deferral,
                Reason::MailboxFull,
                "unknown",
                "rfc3463-x.2.2-mailbox-full",
            ),
            (
                Some(Failed),
                Some("5.2.2"),
                Some("552 5.2.2 Mailbox full - gsmtp"),
                Class::Soft,
                Reason::MailboxFull,
                "gmail",
                "text-mailbox-full",
            ),
            (
                Some(Failed),
                Some("5.3.4"),
                None,
                Class::Soft,
                Reason::MessageTooBig,
                "unknown",
                "rfc3463-x.2.3-x.3.4-too-big",
            ),
            (
                Some(Failed),
                Some("4.4.7"),
                None,
                Class::Soft,
                Reason::Expired,
                "unknown",
                "rfc3463-x.4.7-expired",
            ),
            (
                Some(Delayed),
                Some("4.4.1"),
                None,
                Class::Deferral,
                Reason::Network,
                "unknown",
                "rfc3463-x.4.x-network",
            ),
            (
                Some(Failed),
                Some("5.7.1"),
                Some("550 5.7.1 relay access denied"),
                Class::Soft,
                Reason::Policy,
                "unknown",
                "text-relay-denied",
            ),
            (
                Some(Failed),
                Some("5.5.0"),
                None,
                Class::Hard,
                Reason::Other,
                "unknown",
                FALLBACK_RULE,
            ),
            (
                Some(Failed),
                None,
                Some("451 try later"),
                Class::Soft,
                Reason::Other,
                "unknown",
                FALLBACK_RULE,
            ),
            (
                None,
                None,
                None,
                Class::Soft,
                Reason::Other,
                "unknown",
                FALLBACK_RULE,
            ),
            (
                None,
                Some("5.5.0"),
                None,
                Class::Soft,
                Reason::Other,
                "unknown",
                FALLBACK_RULE,
            ),
        ];
        let rules = builtin();
        for (action, status, diag, class, reason, provider, rule) in cases {
            let report = report_with(vec![rcpt(*action, *status, *diag)]);
            let got = classify(&report, &rules);
            let got = &got[0];
            assert_eq!(
                (
                    got.class,
                    got.reason,
                    got.provider.as_str(),
                    got.rule.as_str()
                ),
                (*class, *reason, *provider, *rule),
                "{diag:?} {status:?}"
            );
        }
    }

    #[test]
    fn provider_hint_from_remote_mta() {
        let mut r = rcpt(Some(DsnAction::Failed), Some("5.1.1"), None);
        r.remote_mta = Some("mta6.am0.yahoodns.net".into());
        let got = classify(&report_with(vec![r]), &builtin());
        assert_eq!(got[0].provider, "yahoo");
    }

    #[test]
    fn feedback_classification() {
        let cases: &[(&str, Class, Reason)] = &[
            ("abuse", Class::Complaint, Reason::Feedback),
            ("other", Class::Complaint, Reason::Feedback),
            ("not-spam", Class::Delivered, Reason::Feedback),
            ("auth-failure", Class::Delivered, Reason::AuthFailure),
        ];
        for rules in [builtin(), RuleSet::empty("none")] {
            for (ftype, class, reason) in cases {
                let mut report = report_with(Vec::new());
                report.kind = ReportKind::Feedback;
                report.feedback = Some(Feedback {
                    feedback_type: Some((*ftype).to_owned()),
                    original_rcpt_to: vec!["u@example.com".into()],
                    ..Feedback::default()
                });
                let got = classify(&report, &rules);
                assert_eq!(got.len(), 1);
                assert_eq!(
                    (got[0].class, got[0].reason),
                    (*class, *reason),
                    "{ftype} with {}",
                    rules.origin()
                );
                assert_eq!(got[0].feedback_type.as_deref(), Some(*ftype));
                assert_eq!(got[0].recipient.as_deref(), Some("u@example.com"));
            }
        }
    }

    /// Whose side each failure is on, rule by rule: every rule added for
    /// the fault work has a reply written from the provider's documentation
    /// here (sources beside the rules in providers.yaml).
    #[test]
    fn fault_table() {
        use DsnAction::*;
        use Fault::*;
        type Case<'a> = (Option<DsnAction>, &'a str, &'a str, &'a str, Fault);
        let cases: &[Case<'_>] = &[
            // Microsoft
            (
                Some(Failed),
                "5.7.515",
                "550 5.7.515 Access denied, sending domain example.org does not meet the required authentication level. [BN1PEPF0000.namprd.prod.outlook.com]",
                "microsoft-5.7.515-auth",
                Us,
            ),
            (
                Some(Failed),
                "5.7.606",
                "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/ and follow the directions.",
                "microsoft-5.7.606-649-banned-ip",
                Us,
            ),
            (
                Some(Failed),
                "5.7.608",
                "550 5.7.608 Access denied, banned sending IP [192.0.2.1].",
                "microsoft-5.7.606-649-banned-ip",
                Us,
            ),
            (
                Some(Failed),
                "5.7.501",
                "550 5.7.501 Access denied, spam abuse detected.",
                "microsoft-5.7.501-503-spam-abuse",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). [AM0EUR02FT001.eop-eur02.prod.protection.outlook.com]",
                "microsoft-s3140-s3150",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (AS3150).",
                "microsoft-s3140-s3150",
                Us,
            ),
            // Gmail
            (
                Some(Failed),
                "5.7.26",
                "550-5.7.26 This message does not have authentication information or fails to pass authentication checks (SPF or DKIM). - gsmtp",
                "gmail-auth-missing",
                Us,
            ),
            (
                Some(Delayed),
                "4.7.26",
                "421-4.7.26 This mail has been rate limited because it is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp",
                "gmail-x.7.26-unauthenticated",
                Us,
            ),
            (
                Some(Failed),
                "5.7.26",
                "550-5.7.26 This mail has been blocked because the sender is unauthenticated. 550-5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM.",
                "gmail-x.7.26-unauthenticated",
                Us,
            ),
            (
                Some(Failed),
                "5.7.26",
                "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail users, and has been blocked.",
                "gmail-x.7.26-unauthenticated",
                Us,
            ),
            (
                Some(Failed),
                "5.7.27",
                "550-5.7.27 This mail has been blocked because the sender is not authenticated with SPF. x1si2 - gsmtp",
                "gmail-bulk-sender-auth",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550-5.7.1 This message does not have authentication information or fails to pass authentication checks. To best protect our users from spam, the message has been blocked. - gsmtp",
                "gmail-auth-missing",
                Us,
            ),
            (
                Some(Delayed),
                "4.7.28",
                "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail. To protect our users from spam, mail has been temporarily rate limited. https://support.google.com/mail/?p=UnsolicitedRateLimitError - gsmtp",
                "gmail-4.7.28-rate-limit",
                Us,
            ),
            (
                Some(Failed),
                "5.7.28",
                "550-5.7.28 Gmail has detected an unusual rate of unsolicited mail. To protect our users from spam, mail has been blocked. - gsmtp",
                "gmail-5.7.28-blocked",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550-5.7.1 [192.0.2.1] Our system has detected an unusual rate 550-5.7.1 of unsolicited mail originating from your IP address. - gsmtp",
                "gmail-unusual-rate-blocked",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550-5.7.1 [192.0.2.1 12] Our system has detected that this message is likely unsolicited mail. https://support.google.com/mail/?p=UnsolicitedMessageError - gsmtp",
                "gmail-5.7.1-unsolicited",
                Us,
            ),
            (
                Some(Delayed),
                "4.2.1",
                "450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. - gsmtp",
                "gmail-4.2.1-recipient-rate",
                Them,
            ),
            (
                Some(Failed),
                "5.1.1",
                "550-5.1.1 The email account that you tried to reach does not exist. - gsmtp",
                "text-unknown-user",
                Them,
            ),
            // Yahoo (TS01 delayed and expired: both ours)
            (
                Some(Delayed),
                "4.7.0",
                "421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints",
                "yahoo-ts01",
                Us,
            ),
            (
                Some(Failed),
                "4.7.0",
                "421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints",
                "yahoo-ts01",
                Us,
            ),
            (
                Some(Delayed),
                "4.7.0",
                "421 4.7.0 [TS02] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
                "yahoo-ts02",
                Us,
            ),
            (
                Some(Failed),
                "4.7.1",
                "421 4.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
                "yahoo-ts03",
                Us,
            ),
            (
                Some(Delayed),
                "4.7.0",
                "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
                "yahoo-tss04",
                Us,
            ),
            (
                Some(Failed),
                "5.7.2",
                "553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
                "yahoo-tss09",
                Us,
            ),
            (
                Some(Failed),
                "5.7.9",
                "554 5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes",
                "yahoo-policy",
                Us,
            ),
            (
                Some(Failed),
                "5.7.9",
                "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.",
                "yahoo-unauthenticated",
                Us,
            ),
            // Block lists
            (
                Some(Failed),
                "5.7.1",
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
                "spamhaus-listed",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; Error: open resolver; https://www.spamhaus.org/returnc/pub/ 127.255.255.254",
                "spamhaus-open-resolver",
                Unknown,
            ),
            (
                Some(Failed),
                "5.0.0",
                "554 Service unavailable; Client host [192.0.2.1] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.1",
                "barracuda-listed",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using bl.spamcop.net; Blocked - see https://www.spamcop.net/bl.shtml?192.0.2.1",
                "spamcop-listed",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using dnsbl.example.net",
                "rbl-listed",
                Us,
            ),
            // Apple, Orange, La Poste
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 [CS01] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137",
                "apple-cs-policy",
                Us,
            ),
            (
                Some(Delayed),
                "4.7.1",
                "421 4.7.1 Messages to u@icloud.com deferred due to excessive volume. Try again later - https://support.apple.com/en-us/HT204137",
                "apple-excessive-volume",
                Them,
            ),
            (
                Some(Failed),
                "5.2.0",
                "550 5.2.0 Mail rejete. Mail rejected. ofr_506 [506]",
                "orange-refused",
                Us,
            ),
            (
                Some(Delayed),
                "4.0.0",
                "421 mwinf5c10 ME Trop de connexions, veuillez verifier votre configuration. Too many connections, slow down. OFR004_104 [104]",
                "orange-too-many-connections",
                Us,
            ),
            (
                Some(Failed),
                "5.5.0",
                "550 5.5.0 Service refuse. Veuillez essayer plus tard. service refused, please try later. LPN007_510",
                "orange-refused",
                Us,
            ),
            // Any MTA, by wording
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 Message rejected due to local policy",
                "text-local-policy",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "554 5.7.1 <u@example.com>: Relay access denied",
                "text-relay-denied",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 Message refused as spam",
                "text-spam-content",
                Us,
            ),
            (
                Some(Delayed),
                "4.7.0",
                "421 4.7.0 Too many connections from your IP, slow down",
                "text-rate-limit",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 Email rejected per DMARC policy for example.org",
                "text-auth-failure",
                Us,
            ),
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 SPF check failed for 192.0.2.1",
                "text-auth-failure",
                Us,
            ),
            (
                Some(Failed),
                "5.2.1",
                "550 5.2.1 The email account that you tried to reach is disabled.",
                "text-disabled-account",
                Them,
            ),
            // A relay refusing our own account is not the member's.
            (
                Some(Failed),
                "5.7.1",
                "550 5.7.1 Your account has been suspended or disabled for sending",
                "rfc3463-x.7.x-policy",
                Us,
            ),
            (
                Some(Failed),
                "5.2.2",
                "552 5.2.2 Mailbox full",
                "text-mailbox-full",
                Them,
            ),
            (
                Some(Failed),
                "5.1.2",
                "Host or domain name not found. Name service error",
                "text-host-unknown",
                Them,
            ),
            (
                Some(Failed),
                "5.4.7",
                "delivery expired (message too old)",
                "rfc3463-x.4.7-expired",
                Unknown,
            ),
            (Some(Failed), "5.5.0", "550 go away", FALLBACK_RULE, Unknown),
        ];
        let rules = builtin();
        for (action, status, diag, rule, fault) in cases {
            let report = report_with(vec![rcpt(*action, Some(status), Some(diag))]);
            let got = &classify(&report, &rules)[0];
            assert_eq!((got.rule.as_str(), got.fault), (*rule, *fault), "{diag:?}");
        }
    }

    #[test]
    fn every_builtin_rule_has_a_fault_and_the_counts_are_reported() {
        let rules = builtin();
        let mut counts = std::collections::BTreeMap::new();
        for rule in rules.rules() {
            *counts.entry(rule.result().fault.as_str()).or_insert(0) += 1;
        }
        println!("built-in rules by fault: {counts:?}");
        assert!(counts.get("us").copied().unwrap_or(0) > counts.get("them").copied().unwrap_or(0));
    }

    #[test]
    fn feedback_faults() {
        for rules in [builtin(), RuleSet::empty("none")] {
            for (ftype, fault) in [
                ("abuse", Fault::Them),
                ("auth-failure", Fault::Us),
                ("not-spam", Fault::Unknown),
            ] {
                let mut report = report_with(Vec::new());
                report.kind = ReportKind::Feedback;
                report.feedback = Some(Feedback {
                    feedback_type: Some(ftype.to_owned()),
                    original_rcpt_to: vec!["u@example.com".into()],
                    ..Feedback::default()
                });
                assert_eq!(classify(&report, &rules)[0].fault, fault, "{ftype}");
            }
        }
    }

    #[test]
    fn json_line_shape() {
        let report = report_with(vec![rcpt(Some(DsnAction::Failed), Some("5.1.1"), None)]);
        let cls = classify(&report, &builtin());
        let lines = json_lines("a.eml", &report, &cls);
        assert_eq!(
            lines,
            vec![
                r#"{"file":"a.eml","kind":"dsn","recipient":"u@example.com","action":"failed","status":"5.1.1","class":"hard","reason":"unknown_user","provider":"unknown","rule":"rfc3463-5.1.1-unknown-user","feedback_type":null,"fault":"them"}"#
            ]
        );
        let unparsed = parse(b"", &Limits::default());
        let lines = json_lines("b.eml", &unparsed, &[]);
        assert_eq!(
            lines,
            vec![
                r#"{"file":"b.eml","kind":"unparsed","recipient":null,"action":null,"status":null,"class":null,"reason":null,"provider":null,"rule":null,"feedback_type":null,"fault":null}"#
            ]
        );
    }
}
