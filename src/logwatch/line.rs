//! Parse one Postfix log line into the few facts listwarden counts.
//!
//! Three framings reach us: classic syslog (`Nov 27 10:00:01 host tag[pid]: msg`),
//! RFC 3339 timestamps (rsyslog on Debian, Postfix's `maillog_file`) and the bare
//! message that `journalctl -o cat` prints. Rather than parse timestamps we look
//! for the `name[pid]:` tag among the first few tokens, which covers all of them
//! and variants with a year or an ISO offset. Parsing never fails: anything
//! unrecognised is `LogEvent::Other`.

use super::MAX_LINE_BYTES;

/// Longest detail text kept, in bytes; remote replies beyond this add nothing the
/// classifier uses.
pub(crate) const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Tokens (timestamp parts, host, year) that may precede the `name[pid]:` tag.
const MAX_HEADER_TOKENS: usize = 6;
/// `key=value` fields looked at after `to=<..>` before giving up; Postfix writes about six.
const MAX_FIELDS: usize = 16;
/// Postfix queue ids are 6 to about 20 characters; anything longer is not one.
const MAX_QUEUE_ID_LEN: usize = 32;
/// Daemons that log delivery results or queue bookkeeping; the last part of the tag.
const DELIVERY_DAEMONS: &[&str] = &[
    "smtp", "lmtp", "local", "virtual", "pipe", "qmgr", "error", "discard",
];

/// What one log line tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Delivery(Delivery),
    /// `qmgr`: the message entered the active queue with this envelope sender
    /// (empty for the null sender).
    QueuedFrom {
        queue_id: String,
        sender: String,
    },
    /// `qmgr`: the message left the queue; its queue id may be reused.
    Removed {
        queue_id: String,
    },
    Other,
}

/// One recipient's delivery attempt (`to=<..>, relay=.., dsn=.., status=..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub queue_id: String,
    /// As logged between `<` and `>`, quotes included.
    pub recipient: String,
    /// Host name part of `relay=`, without `[address]:port`; `None` for `relay=none`.
    pub relay: Option<String>,
    pub dsn: Option<String>,
    pub status: DeliveryStatus,
    /// The parenthesised detail, unwrapped (for `expired`: the words after the status),
    /// at most `MAX_TEXT_BYTES`.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Sent,
    /// Also Postfix's `SOFTBOUNCE`: with `soft_bounce = yes` the message stays queued.
    Deferred,
    Bounced,
    Expired,
}

/// Parses one log line (without or with its trailing newline). Lines longer than
/// `MAX_LINE_BYTES` are cut; invalid UTF-8 is replaced.
pub(crate) fn parse_line(raw: &[u8]) -> LogEvent {
    let cut = raw.get(..MAX_LINE_BYTES).unwrap_or(raw);
    let line = String::from_utf8_lossy(cut);
    let line = line.trim_end_matches(['\r', '\n']);
    message_part(line)
        .and_then(parse_message)
        .unwrap_or(LogEvent::Other)
}

/// Returns `queue_id: body` when the line comes from a delivery daemon (or has no
/// header at all, as with `journalctl -o cat`).
fn message_part(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let mut rest = line;
    for index in 0..MAX_HEADER_TOKENS {
        let (token, after) = rest.split_once(' ').unwrap_or((rest, ""));
        if index == 0 && token.strip_suffix(':').is_some_and(is_queue_id) {
            return Some(line);
        }
        if let Some(daemon) = tag_daemon(token) {
            return DELIVERY_DAEMONS.contains(&daemon).then_some(after);
        }
        rest = after.trim_start();
    }
    None
}

/// `postfix/smtp[1234]:`, `postfix-out/smtp[1]:` or `postfix/relay/smtp[1]:` → `smtp`.
/// A tag without a `/` is not Postfix's.
fn tag_daemon(token: &str) -> Option<&str> {
    let (name, pid) = token.strip_suffix("]:")?.split_once('[')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.rsplit_once('/').map(|(_, daemon)| daemon)
}

/// Short ids are upper-case hex; long ids (`enable_long_queue_ids`) are alphanumeric
/// and at least 10 long. This rejects `NOQUEUE`, `warning` and the like.
fn is_queue_id(s: &str) -> bool {
    let hex = s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    let long = s.len() >= 10 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (6..=MAX_QUEUE_ID_LEN).contains(&s.len()) && (hex || long)
}

fn parse_message(msg: &str) -> Option<LogEvent> {
    let (queue_id, body) = msg.split_once(": ")?;
    if !is_queue_id(queue_id) {
        return None;
    }
    let queue_id = queue_id.to_owned();
    if body == "removed" {
        return Some(LogEvent::Removed { queue_id });
    }
    if let Some(rest) = body.strip_prefix("to=") {
        return parse_delivery(queue_id, rest).map(LogEvent::Delivery);
    }
    let (sender, rest) = take_address(body.strip_prefix("from=")?)?;
    // `from=<..>, status=expired, returned to sender` is not a queue entry.
    rest.starts_with(", size=").then(|| LogEvent::QueuedFrom {
        queue_id,
        sender: sender.to_owned(),
    })
}

fn parse_delivery(queue_id: String, rest: &str) -> Option<Delivery> {
    let (recipient, mut rest) = take_address(rest)?;
    let (mut relay, mut dsn) = (None, None);
    for _ in 0..MAX_FIELDS {
        let (key, value) = rest.strip_prefix(", ")?.split_once('=')?;
        if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        if key == "status" {
            let end = value.find([' ', ',']).unwrap_or(value.len());
            let (word, detail) = value.split_at(end);
            let status = match word {
                "sent" => DeliveryStatus::Sent,
                "deferred" | "SOFTBOUNCE" => DeliveryStatus::Deferred,
                "bounced" => DeliveryStatus::Bounced,
                "expired" => DeliveryStatus::Expired,
                _ => return None, // e.g. `deliverable` from address verification
            };
            let (recipient, text) = (recipient.to_owned(), detail_text(detail));
            return Some(Delivery {
                queue_id,
                recipient,
                relay,
                dsn,
                status,
                text,
            });
        }
        let (field, after) = if value.starts_with('<') {
            take_address(value)?
        } else {
            value.split_at(value.find(", ").unwrap_or(value.len()))
        };
        match key {
            "relay" => relay = relay_host(field),
            "dsn" => dsn = Some(field.to_owned()),
            _ => {}
        }
        rest = after;
    }
    None
}

/// Splits `<addr>rest` into `addr` and `rest`, honouring quoted local parts, which may
/// hold `>`, `,` or spaces (`<"a, b>"@example.org>`).
fn take_address(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('<')?;
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some((inner.get(..i)?, inner.get(i + 1..)?)),
            _ => {}
        }
    }
    None
}

/// `mx.example[192.0.2.1]:25` → `mx.example`; `local` stays; `none` → `None`.
fn relay_host(value: &str) -> Option<String> {
    let host = value.split_once('[').map_or(value, |(host, _)| host);
    (!host.is_empty() && host != "none").then(|| host.to_owned())
}

/// ` (detail)` → `detail`; `, returned to sender` → `returned to sender`.
fn detail_text(detail: &str) -> String {
    let detail = detail.trim_start_matches([',', ' ']);
    let detail = match detail.strip_prefix('(') {
        Some(inner) => inner.strip_suffix(')').unwrap_or(inner),
        None => detail,
    };
    let mut end = detail.len().min(MAX_TEXT_BYTES);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as one short string, so the table below stays readable.
    fn show(event: &LogEvent) -> String {
        match event {
            LogEvent::Delivery(d) => {
                let relay = d.relay.as_deref().unwrap_or("-");
                let dsn = d.dsn.as_deref().unwrap_or("-");
                format!(
                    "{} {:?} <{}> {relay} {dsn} | {}",
                    d.queue_id, d.status, d.recipient, d.text
                )
            }
            LogEvent::QueuedFrom { queue_id, sender } => format!("{queue_id} from <{sender}>"),
            LogEvent::Removed { queue_id } => format!("{queue_id} removed"),
            LogEvent::Other => "other".into(),
        }
    }

    const CASES: &[(&str, &str)] = &[
        // Delivery results in each framing.
        (
            "Nov 27 10:00:01 lists postfix/smtp[1234]: 4ABCD123: to=<a@b.example>, \
             relay=mx.b.example[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.0, status=deferred \
             (host mx.b.example[192.0.2.1] said: 421 4.7.0 [TS01] Messages from 192.0.2.9 temporarily deferred \
             due to user complaints (in reply to MAIL FROM command))",
            "4ABCD123 Deferred <a@b.example> mx.b.example 4.7.0 | host mx.b.example[192.0.2.1] said: 421 4.7.0 \
             [TS01] Messages from 192.0.2.9 temporarily deferred due to user complaints (in reply to MAIL FROM command)",
        ),
        (
            "2026-11-27T10:00:01.123456+00:00 lists postfix/smtp[2201]: 4ABCD123: to=<bob@gmail.example>, \
             relay=gmail-smtp-in.l.google.example[2001:db8::1]:25, delay=0.9, delays=0.1/0/0.3/0.5, dsn=2.0.0, \
             status=sent (250 2.0.0 OK  1732700401 a1si1234wrb.12 - gsmtp)",
            "4ABCD123 Sent <bob@gmail.example> gmail-smtp-in.l.google.example 2.0.0 | 250 2.0.0 OK  1732700401 \
             a1si1234wrb.12 - gsmtp",
        ),
        (
            "4ABCD123: to=<nobody@b.example>, relay=mx.b.example[192.0.2.1]:25, delay=0.5, delays=0.1/0/0.2/0.2, \
             dsn=5.1.1, status=bounced (host mx.b.example[192.0.2.1] said: 550 5.1.1 <nobody@b.example>: \
             Recipient address rejected: User unknown (in reply to RCPT TO command))",
            "4ABCD123 Bounced <nobody@b.example> mx.b.example 5.1.1 | host mx.b.example[192.0.2.1] said: 550 5.1.1 \
             <nobody@b.example>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
        ),
        (
            "Nov  7 09:05:12 lists postfix-out/smtp[990]: 4ABCD123: to=<carol@slow.example>, relay=none, \
             delay=30, delays=0.01/0/30/0, dsn=4.4.1, status=deferred (connect to mx.slow.example[198.51.100.7]:25: \
             Connection timed out)",
            "4ABCD123 Deferred <carol@slow.example> - 4.4.1 | connect to mx.slow.example[198.51.100.7]:25: \
             Connection timed out",
        ),
        (
            "Nov 27 10:00:01 lists postfix/error[77]: 4ABCD123: to=<d@e.example>, relay=none, delay=432000, \
             delays=432000/0/0/0, dsn=4.4.1, status=expired, returned to sender",
            "4ABCD123 Expired <d@e.example> - 4.4.1 | returned to sender",
        ),
        // A quoted local part may hold spaces, commas and `>`; orig_to must not confuse the fields.
        (
            "Nov 27 10:00:01 lists postfix/relay/smtp[5]: 4ABCD123: to=<\"john smith, jr>\"@c.example>, \
             orig_to=<\"x, relay=evil\"@lists.example>, relay=mx.c.example[192.0.2.3]:25, conn_use=2, delay=1, \
             delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            "4ABCD123 Sent <\"john smith, jr>\"@c.example> mx.c.example 2.0.0 | 250 ok",
        ),
        (
            "Nov 27 10:00:01 lists postfix/local[31]: 4Tz3Yq1wP8z9ZvK: to=<owner@lists.example>, \
             orig_to=<list-owner@lists.example>, relay=local, delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, \
             status=sent (delivered to mailbox)",
            "4Tz3Yq1wP8z9ZvK Sent <owner@lists.example> local 2.0.0 | delivered to mailbox",
        ),
        (
            "Nov 27 10:00:01 lists postfix/lmtp[12]: 4ABCD123: to=<a@lists.example>, \
             relay=mail.lists.example[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, \
             status=sent (250 2.0.0 <a@lists.example> Saved)",
            "4ABCD123 Sent <a@lists.example> mail.lists.example 2.0.0 | 250 2.0.0 <a@lists.example> Saved",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtp[9]: 4ABCD123: to=<a@b.example>, relay=mx.b.example[192.0.2.1]:25, \
             delay=1, delays=0/0/0/1, dsn=5.7.1, status=SOFTBOUNCE (host mx.b.example[192.0.2.1] said: 550 no)",
            "4ABCD123 Deferred <a@b.example> mx.b.example 5.7.1 | host mx.b.example[192.0.2.1] said: 550 no",
        ),
        // Queue bookkeeping.
        (
            "Nov 27 10:00:00 lists postfix/qmgr[880]: 4ABCD123: from=<list-bounces@lists.example>, size=4321, \
             nrcpt=250 (queue active)",
            "4ABCD123 from <list-bounces@lists.example>",
        ),
        (
            "4ABCD123: from=<>, size=900, nrcpt=1 (queue active)",
            "4ABCD123 from <>",
        ),
        (
            "2026-11-27T10:00:01+0100 lists postfix/qmgr[880]: 4ABCD123: removed",
            "4ABCD123 removed",
        ),
        // Not delivery results.
        (
            "Nov 27 10:00:01 lists postfix/smtpd[1]: 4ABCD123: client=mx.example[192.0.2.5]",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/submission/smtpd[1]: 4ABCD123: to=<a@b.example>, status=sent (x)",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.5]: 554 5.7.1; \
             from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x>",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/cleanup[2]: 4ABCD123: message-id=<1@lists.example>",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/qmgr[3]: 4ABCD123: from=<a@b.example>, status=expired, returned to sender",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtp[4]: 4ABCD123: to=<a@b.example>, relay=x[192.0.2.1]:25, delay=1, \
             delays=0/0/0/1, dsn=2.1.5, status=deliverable (250 ok)",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtp[4]: 4ABCD123: host mx.b.example[192.0.2.1] said: 421 busy",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtp[4]: 4ABCD123: to=<a@b.example, status=sent (x)",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtp[4]: warning: removed",
            "other",
        ),
        (
            "Nov 27 10:00:01 lists postfix/smtp[x]: 4ABCD123: removed",
            "other",
        ),
        ("Nov 27 10:00:01 lists sshd[22]: 4ABCD123: removed", "other"),
        ("", "other"),
        ("[]:", "other"),
        ("a/b[1]:", "other"),
    ];

    #[test]
    fn parses_realistic_lines() {
        for (line, want) in CASES {
            assert_eq!(show(&parse_line(line.as_bytes())), *want, "{line}");
            assert_eq!(
                show(&parse_line(format!("{line}\r\n").as_bytes())),
                *want,
                "{line} + CRLF"
            );
        }
    }

    #[test]
    fn bounds_text_and_line_length_and_survives_any_cut() {
        let long = "é".repeat(20_000);
        let long =
            format!("4ABCD123: to=<a@b.example>, relay=none, dsn=5.0.0, status=bounced ({long})");
        let LogEvent::Delivery(d) = parse_line(long.as_bytes()) else {
            panic!("not a delivery")
        };
        assert!(d.text.len() <= MAX_TEXT_BYTES && d.text.starts_with('é'));

        let mut bytes = CASES
            .first()
            .map(|(line, _)| line.as_bytes().to_vec())
            .unwrap_or_default();
        bytes.extend_from_slice(&[0xff, 0xfe, b'(', b'"', b'<']);
        for end in 0..=bytes.len() {
            let _ = parse_line(&bytes[..end]);
        }
        assert_eq!(parse_line(&[0u8; 100_000]), LogEvent::Other);
    }
}
