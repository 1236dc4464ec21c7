//! The `X-Listwarden-Bounce:` values the milter writes for a classified
//! bounce; the header's format is [`listwarden_core::tag`].

use super::{Classification, Report, ReportKind};
pub use listwarden_core::tag::{HEADER, MAX_TAGS};
use listwarden_core::tag::{clean, write};

/// One header value per classification: `key=value` pairs joined by `; `.
pub(crate) fn bounce_tags(
    report: &Report,
    cls: &[Classification],
    list: &str,
    signature: &str,
) -> Vec<String> {
    if cls.is_empty() {
        let kind = match report.kind {
            ReportKind::Unparsed => "unparsed",
            ReportKind::NotABounce => "not_a_bounce",
            _ => "unclassified",
        };
        return vec![format!(
            "class={kind}; list={}; signature={}",
            clean(list),
            clean(signature)
        )];
    }
    cls.iter()
        .take(MAX_TAGS)
        .map(|c| {
            let mut fields = vec![
                ("recipient", c.recipient.as_deref().unwrap_or("unknown")),
                ("action", c.action.map(|a| a.as_str()).unwrap_or("unknown")),
                ("status", c.status.as_deref().unwrap_or("none")),
                ("class", c.class.as_str()),
                ("reason", c.reason.as_str()),
                ("provider", c.provider.as_str()),
                ("rule", c.rule.as_str()),
                ("list", list),
                ("signature", signature),
            ];
            if let Some(t) = c.feedback_type.as_deref() {
                fields.push(("feedback_type", t));
            }
            // New fields go last: readers and Postfix rules written for
            // older tags match the fields above in this order.
            fields.push(("fault", c.fault.as_str()));
            if c.incident {
                fields.push(("incident", "1"));
            }
            write(&fields)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsn::{Limits, RuleSet, classify, parse};

    const DSN: &str = "From: MAILER-DAEMON@mx.example.net\r\nSubject: Delivery delayed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nDelayed.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; bob@yahoo.com\r\nAction: delayed\r\nStatus: 4.7.0\r\nRemote-MTA: dns; mta5.am0.yahoodns.net\r\nDiagnostic-Code: smtp; 421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred due to user complaints\r\n\r\n--b--\r\n";

    #[test]
    fn a_yahoo_ts01_deferral_is_tagged_as_a_complaint_deferral() {
        let report = parse(DSN.as_bytes(), &Limits::default());
        let cls = classify(&report, &RuleSet::builtin().unwrap());
        let tags = bounce_tags(&report, &cls, "members", "valid");
        assert_eq!(tags.len(), 1);
        let t = &tags[0];
        for want in [
            "recipient=bob@yahoo.com",
            "action=delayed",
            "class=deferral",
            "reason=complaint",
            "provider=yahoo",
            "list=members",
            "signature=valid",
            "; fault=us",
        ] {
            assert!(t.contains(want), "{want} missing in {t}");
        }
        assert!(t.ends_with("; signature=valid; fault=us"), "{t}");
        assert!(!t.contains("incident="), "{t}");
    }

    #[test]
    fn an_incident_is_marked_after_the_fault() {
        let report = parse(DSN.as_bytes(), &Limits::default());
        let mut cls = classify(&report, &RuleSet::builtin().unwrap());
        cls[0].incident = true;
        let tags = bounce_tags(&report, &cls, "members", "valid");
        assert!(tags[0].ends_with("; fault=us; incident=1"), "{}", tags[0]);
    }

    #[test]
    fn attacker_data_cannot_inject_lines_or_grow_unbounded() {
        let evil = DSN.replace(
            "bob@yahoo.com",
            &format!("bob@yahoo.com\\r\\nX-Injected: 1 {}", "x".repeat(10_000)),
        );
        let report = parse(evil.as_bytes(), &Limits::default());
        let cls = classify(&report, &RuleSet::builtin().unwrap());
        for t in bounce_tags(&report, &cls, "members", "valid") {
            assert!(
                !t.contains('\r') && !t.contains('\n') && !t.contains("X-Injected: "),
                "{t}"
            );
            assert!(t.len() < 2_000, "bounded: {}", t.len());
        }
    }

    #[test]
    fn unparsed_bounces_still_get_a_tag() {
        let report = parse(b"garbage", &Limits::default());
        let tags = bounce_tags(&report, &[], "members", "trace_ok");
        assert_eq!(tags, ["class=unparsed; list=members; signature=trace_ok"]);
    }
}
