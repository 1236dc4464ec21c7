//! What the log says about outbound mail: each delivery result classified
//! with the bounce rules, counted per provider; messages sent per list and
//! complaints per list, for the complaint-rate gauge.

use super::{Delivery, DeliveryStatus, LogEvent, QueueMap};
use crate::dsn::{
    Classification, DsnAction, RecipientStatus, Report, ReportKind, RuleSet, classify,
};

/// Queue ids of list mail remembered between the `from=` line and the
/// delivery lines.
const QUEUE_CAPACITY: usize = 100_000;

/// Classifies one delivery result as if it were a DSN recipient group.
pub(crate) fn classify_delivery(d: &Delivery, rules: &RuleSet) -> Classification {
    let action = match d.status {
        DeliveryStatus::Sent => DsnAction::Delivered,
        DeliveryStatus::Deferred => DsnAction::Delayed,
        DeliveryStatus::Bounced | DeliveryStatus::Expired => DsnAction::Failed,
    };
    let group = RecipientStatus {
        recipient: d.recipient.clone(),
        action: Some(action),
        status: d.dsn.clone(),
        smtp_code: first_smtp_code(&d.text),
        remote_mta: d.relay.clone(),
        diagnostic: Some(d.text.clone()),
        ..RecipientStatus::default()
    };
    let report = Report {
        kind: ReportKind::Dsn,
        unparsed_reason: None,
        reporting_mta: None,
        arrival_date: None,
        recipients: vec![group],
        feedback: None,
        original: None,
        truncated: false,
    };
    classify(&report, rules)
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable_fallback(d))
}

/// `classify` yields one result per recipient group; this only guards the
/// impossible empty case without a panic.
fn unreachable_fallback(d: &Delivery) -> Classification {
    Classification {
        recipient: Some(d.recipient.clone()),
        action: None,
        status: d.dsn.clone(),
        class: crate::dsn::Class::Soft,
        reason: crate::dsn::Reason::Other,
        provider: "unknown".into(),
        rule: crate::dsn::FALLBACK_RULE.into(),
        retry: crate::dsn::Retry::Later,
        rule_action: crate::dsn::RuleAction::Accept,
        feedback_type: None,
        fault: crate::dsn::Fault::Unknown,
        incident: false,
    }
}

fn first_smtp_code(text: &str) -> Option<u16> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 3 && matches!(w.as_bytes()[0], b'2'..=b'5'))
        .and_then(|w| w.parse().ok())
}

/// Follows log events: remembers which queue ids carry list mail, and
/// reports each delivery result.
pub struct Tracker {
    queue: QueueMap<String>,
}

/// What one log line meant.
pub enum Seen {
    /// A delivery result, and the list it belongs to (if it is list mail).
    Delivery(Delivery, Option<String>),
    Nothing,
}

impl Tracker {
    pub fn new() -> Tracker {
        // QUEUE_CAPACITY is a non-zero constant, so this cannot fail.
        let queue =
            QueueMap::new(QUEUE_CAPACITY).unwrap_or_else(|_| unreachable!("non-zero capacity"));
        Tracker { queue }
    }

    /// Feeds one event; `list_of` names the list a sender belongs to.
    pub fn see(&mut self, event: LogEvent, list_of: impl Fn(&str) -> Option<String>) -> Seen {
        match event {
            LogEvent::QueuedFrom { queue_id, sender } => {
                if let Some(list) = list_of(&sender) {
                    self.queue.insert(queue_id, list);
                }
                Seen::Nothing
            }
            LogEvent::Removed { queue_id } => {
                self.queue.remove(&queue_id);
                Seen::Nothing
            }
            LogEvent::Delivery(d) => {
                let list = self.queue.get(&d.queue_id).cloned();
                Seen::Delivery(d, list)
            }
            LogEvent::Other => Seen::Nothing,
        }
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logwatch::parse_line;

    #[test]
    fn a_yahoo_deferral_in_the_log_is_a_complaint_deferral() {
        let line = b"Nov 27 10:00:01 lists postfix/smtp[1234]: 4ABCD123: to=<gina@yahoo.com>, relay=mta5.am0.yahoodns.net[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.0, status=deferred (host mta5.am0.yahoodns.net[192.0.2.1] said: 421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred due to user complaints (in reply to MAIL FROM command))";
        let LogEvent::Delivery(d) = parse_line(line) else {
            panic!("not a delivery")
        };
        let c = classify_delivery(&d, &RuleSet::builtin().unwrap());
        assert_eq!(
            (c.class.as_str(), c.reason.as_str(), c.provider.as_str()),
            ("deferral", "complaint", "yahoo")
        );
    }

    #[test]
    fn list_mail_is_followed_from_queue_to_delivery() {
        let mut t = Tracker::new();
        let list_of = |s: &str| s.contains("members-bounces").then(|| "members".to_string());
        let lines: [&[u8]; 4] = [
            b"4AAA1111: from=<prvs=1234abcdef=members-bounces@lists.example.org>, size=1000, nrcpt=2 (queue active)",
            b"4AAA1111: to=<a@example.net>, relay=mx.example.net[192.0.2.2]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 OK)",
            b"4AAA1111: removed",
            b"4AAA1111: to=<b@example.net>, relay=mx.example.net[192.0.2.2]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 OK)",
        ];
        let mut lists = Vec::new();
        for l in lines {
            // qmgr's line carries the daemon tag in real logs; the bare form is judged by content.
            if let Seen::Delivery(_, list) = t.see(parse_line(l), list_of) {
                lists.push(list);
            }
        }
        assert_eq!(lists, [Some("members".to_string()), None]);
    }
}
