//! Trace check for list managers that do not sign: does a bounce's
//! returned original show mail we sent? We look for a `Received:` header
//! added by one of our hosts, or a Message-ID in one of our domains.
//!
//! This is weaker than a signature: a spammer who knows our host names can
//! plant such headers in the spam whose bounces then pass. Prefer `signed`.

use crate::config::Trace;

/// Most header lines examined in the returned message.
const MAX_LINES: usize = 5_000;

/// True when the (bounded) bounce text holds a trace of our mail.
pub(crate) fn trace_matches(text: &[u8], trace: &Trace) -> bool {
    let text = String::from_utf8_lossy(text);
    let mut current = String::new();
    for line in text.lines().take(MAX_LINES) {
        if line.starts_with([' ', '\t']) && !current.is_empty() {
            current.push(' ');
            current.push_str(line.trim());
            continue;
        }
        if header_matches(&current, trace) {
            return true;
        }
        current.clear();
        current.push_str(line);
    }
    header_matches(&current, trace)
}

fn header_matches(line: &str, trace: &Trace) -> bool {
    let Some((name, value)) = line.split_once(':') else {
        return false;
    };
    let name = name.trim();
    let value = value.to_ascii_lowercase();
    if name.eq_ignore_ascii_case("received") {
        let mut words =
            value.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';');
        while let Some(w) = words.next() {
            if w == "by" {
                let host = words.find(|w| !w.is_empty()).unwrap_or("");
                let host = host.trim_end_matches('.');
                return trace.received_by.iter().any(|h| h == host);
            }
        }
        false
    } else if name.eq_ignore_ascii_case("message-id") {
        let Some(at) = value.rfind('@') else {
            return false;
        };
        let domain = value[at + 1..]
            .trim()
            .trim_end_matches('>')
            .trim_end_matches('.');
        trace.message_id_domains.iter().any(|d| {
            domain == d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|r| r.ends_with('.'))
        })
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace() -> Trace {
        Trace {
            received_by: vec!["lists.example.org".into()],
            message_id_domains: vec!["lists.example.org".into()],
        }
    }

    #[test]
    fn finds_our_received_header_even_folded() {
        let bounce = b"This is the mail system at host mx.example.net.\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nReceived: from localhost (localhost [127.0.0.1])\r\n\tby lists.example.org (Postfix) with ESMTP id 4ABC\r\n\tfor <x@example.net>; Fri, 27 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n";
        assert!(trace_matches(bounce, &trace()));
    }

    #[test]
    fn finds_our_message_id() {
        assert!(trace_matches(
            b"Message-ID: <abc.123@lists.example.org>\n",
            &trace()
        ));
        assert!(trace_matches(
            b"Message-Id: <abc@mail.lists.example.org>\n",
            &trace()
        ));
        assert!(!trace_matches(
            b"Message-ID: <abc@evillists.example.org>\n",
            &trace()
        ));
    }

    #[test]
    fn foreign_mail_has_no_trace() {
        let bounce = b"Received: from spambot by mx.victim.example with SMTP\nMessage-ID: <x@spam.example>\nSubject: lists.example.org\n";
        assert!(!trace_matches(bounce, &trace()));
        assert!(!trace_matches(b"", &trace()));
        assert!(!trace_matches(&[0xff; 1000], &trace()));
        // "by" inside another header does not count.
        assert!(!trace_matches(
            b"X-Note: sent by lists.example.org\n",
            &trace()
        ));
    }
}
