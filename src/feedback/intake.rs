//! Reading a feedback report: the ARF fields (through [`crate::dsn::parse`])
//! and the header of the message it is about, wherever the provider put
//! it: an attached `message/rfc822` (ARF, JMRP's "RFC822 attachment"),
//! `text/rfc822-headers` (Yahoo's headers-only CFL), a header block pasted
//! into the text, or the report's own header (JMRP's "Original" format,
//! which forwards the complained-of message as it is). Pure and bounded.

use crate::dsn::{self, ReportKind};
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use std::panic::{self, AssertUnwindSafe};

/// Header fields read from one block before giving up.
const MAX_FIELDS: usize = 500;
/// MIME parts looked at.
const MAX_PARTS: usize = 64;
/// Longest field value kept.
const MAX_VALUE: usize = 2048;
/// Bytes of a text part searched for a pasted header block.
const MAX_TEXT: usize = 64 * 1024;

/// How the report was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5965: a `message/feedback-report` part.
    Arf,
    /// The message attached or pasted, without ARF fields.
    Embedded,
    /// The complained-of message forwarded as it is.
    Forwarded,
    /// Nothing of the original message could be found.
    Unreadable,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Arf => "arf",
            Format::Embedded => "embedded",
            Format::Forwarded => "forwarded",
            Format::Unreadable => "unreadable",
        }
    }
}

/// What attribution needs from the complained-of message's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    pub list_id: Option<String>,
    pub return_path: Option<String>,
    pub message_id: Option<String>,
    pub to: Option<String>,
    /// `Feedback-ID:` (Gmail's), when the list mail carried one.
    pub feedback_id: Option<String>,
}

impl Original {
    fn is_empty(&self) -> bool {
        self.list_id.is_none() && self.return_path.is_none() && self.message_id.is_none()
    }
}

/// One report as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    pub format: Format,
    /// `Feedback-Type` (lower case); `abuse` when the report has no ARF
    /// part (a spam button forward is a complaint).
    pub feedback_type: String,
    pub user_agent: Option<String>,
    /// `Original-Rcpt-To` values (reporter's word, never trusted alone).
    pub original_rcpt_to: Vec<String>,
    /// The report's own `Message-ID`, for logs and idempotence.
    pub report_id: Option<String>,
    /// The report's `From:` (who says they are the reporter).
    pub reporter: Option<String>,
    pub original: Original,
}

/// Reads a report (bounded by `limits`). Never panics.
pub fn read(raw: &[u8], limits: &dsn::Limits) -> Intake {
    let report = dsn::parse(raw, limits);
    let feedback = report.feedback.as_ref();
    let raw = raw
        .get(..limits.max_bytes.min(raw.len()))
        .unwrap_or_default();
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| {
        MessageParser::new().parse(raw).map(|m| locate(&m))
    }))
    .ok()
    .flatten();
    let (top, found) = parsed.unwrap_or_default();
    let arf = report.kind == ReportKind::Feedback || feedback.is_some();
    let (format, original) = match found {
        Some(o) if arf => (Format::Arf, o),
        Some(o) => (Format::Embedded, o),
        // An ARF report whose message is missing: its own header is the
        // provider's, never the original's.
        None if arf => (Format::Arf, Original::default()),
        None => {
            // JMRP "Original": the report is the message itself.
            let own = original_of(&top);
            if own.is_empty() {
                (Format::Unreadable, own)
            } else {
                (Format::Forwarded, own)
            }
        }
    };
    let field = |name: &str| top.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    Intake {
        format,
        feedback_type: feedback
            .and_then(|f| f.feedback_type.clone())
            .map(|t| t.to_ascii_lowercase())
            .unwrap_or_else(|| "abuse".into()),
        user_agent: feedback.and_then(|f| f.user_agent.clone()),
        original_rcpt_to: feedback
            .map(|f| f.original_rcpt_to.clone())
            .unwrap_or_default(),
        report_id: field("message-id"),
        reporter: field("from"),
        original,
    }
}

/// The report's own header fields, and the original's when found.
fn locate(message: &Message<'_>) -> (Vec<(String, String)>, Option<Original>) {
    let raw: &[u8] = message.raw_message.as_ref();
    let top = message
        .parts
        .first()
        .and_then(|p| raw.get(p.offset_header as usize..p.offset_body as usize))
        .map(fields)
        .unwrap_or_default();
    let mut text_blocks = Vec::new();
    for part in message.parts.iter().skip(1).take(MAX_PARTS) {
        let ctype = part
            .content_type()
            .map(|ct| {
                format!(
                    "{}/{}",
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or_default().to_ascii_lowercase()
                )
            })
            .unwrap_or_else(|| "text/plain".into());
        match &part.body {
            PartType::Message(nested) => {
                let nraw: &[u8] = nested.raw_message.as_ref();
                let header = nested
                    .parts
                    .first()
                    .and_then(|p| nraw.get(p.offset_header as usize..p.offset_body as usize))
                    .unwrap_or(nraw);
                let o = original_of(&fields(header));
                if !o.is_empty() {
                    return (top, Some(o));
                }
            }
            PartType::Text(text) | PartType::Html(text)
                if ctype.ends_with("rfc822-headers") || ctype == "message/rfc822" =>
            {
                let o = original_of(&fields(text.as_bytes()));
                if !o.is_empty() {
                    return (top, Some(o));
                }
            }
            PartType::Binary(b) | PartType::InlineBinary(b)
                if ctype.ends_with("rfc822-headers") =>
            {
                let o = original_of(&fields(b));
                if !o.is_empty() {
                    return (top, Some(o));
                }
            }
            PartType::Text(text) if ctype == "text/plain" => text_blocks.push(text.as_ref()),
            _ => {}
        }
    }
    // A single-part report has its text as the body of part 0.
    if message.parts.len() == 1
        && let Some(PartType::Text(text)) = message.parts.first().map(|p| &p.body)
    {
        text_blocks.push(text.as_ref());
    }
    for text in text_blocks {
        if let Some(o) = pasted(text) {
            return (top, Some(o));
        }
    }
    (top, None)
}

/// A header block pasted into text: from the first line that starts a
/// field we know to the first blank line after it.
fn pasted(text: &str) -> Option<Original> {
    // Cut at a character boundary at or below the limit: a cut inside a
    // multibyte character must not fall back to the whole text.
    let mut end = MAX_TEXT.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let starts = [
        "return-path:",
        "received:",
        "list-id:",
        "message-id:",
        "dkim-signature:",
    ];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let lower = line
            .trim_start_matches('>')
            .trim_start()
            .to_ascii_lowercase();
        if starts.iter().any(|s| lower.starts_with(s)) {
            let block: String = text[offset..]
                .lines()
                .map(|l| l.strip_prefix("> ").or(l.strip_prefix('>')).unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n");
            let o = original_of(&fields(block.as_bytes()));
            return (!o.is_empty()).then_some(o);
        }
        offset += line.len();
    }
    None
}

fn original_of(fields: &[(String, String)]) -> Original {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    Original {
        list_id: get("list-id"),
        return_path: get("return-path"),
        message_id: get("message-id"),
        to: get("to"),
        feedback_id: get("feedback-id"),
    }
}

/// Header fields of the first block of `bytes`: names lower case, values
/// unfolded and trimmed, each bounded.
fn fields(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut()
                && v.len() < MAX_VALUE
            {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            // Not a header line: the block ended (or never began).
            if out.is_empty() {
                continue;
            }
            break;
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            break;
        }
        if out.len() >= MAX_FIELDS {
            break;
        }
        out.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    for (_, v) in &mut out {
        if v.len() > MAX_VALUE {
            let mut end = MAX_VALUE;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(s: &str) -> Intake {
        read(s.as_bytes(), &dsn::Limits::default())
    }

    #[test]
    fn arf_with_headers_only() {
        let r = read_str(
            "From: feedback@example.net\r\nMessage-ID: <r1@example.net>\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nspam\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: x/1\r\nVersion: 1\r\nOriginal-Rcpt-To: <a@example.com>\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nReturn-Path: <x-bounces@lists.example.org>\r\nList-Id: <x.lists.example.org>\r\nMessage-ID: <m1@lists.example.org>\r\n\r\n--b--\r\n",
        );
        assert_eq!(r.format, Format::Arf);
        assert_eq!(r.feedback_type, "abuse");
        assert_eq!(r.original_rcpt_to, ["a@example.com"]);
        assert_eq!(r.original.list_id.as_deref(), Some("<x.lists.example.org>"));
        assert_eq!(r.report_id.as_deref(), Some("<r1@example.net>"));
    }

    #[test]
    fn pasted_text_is_cut_at_the_limit_even_inside_a_character() {
        // The limit falls inside the two bytes of the "é": the cut must
        // still hold, so a header block after it is not read.
        let mut text = "x".repeat(MAX_TEXT - 1);
        text.push('é');
        text.push_str("\n> Return-Path: <x-bounces@lists.example.org>\n\n");
        assert_eq!(pasted(&text), None);
        let mut near = "x".repeat(MAX_TEXT - 200);
        near.push_str("\n> Return-Path: <x-bounces@lists.example.org>\n\n");
        assert!(pasted(&near).is_some());
    }

    #[test]
    fn pasted_and_forwarded_forms() {
        let r = read_str(
            "From: someone@example.com\r\nSubject: spam\r\n\r\nThis is spam:\r\n\r\n> Return-Path: <x-bounces@lists.example.org>\r\n> List-Id: x <x.lists.example.org>\r\n> Subject: hi\r\n\r\nbody\r\n",
        );
        assert_eq!(r.format, Format::Embedded);
        assert_eq!(
            r.original.return_path.as_deref(),
            Some("<x-bounces@lists.example.org>")
        );
        let r = read_str(
            "From: a@hotmail.com\r\nList-Id: <x.lists.example.org>\r\nMessage-ID: <q@lists.example.org>\r\n\r\nhello\r\n",
        );
        assert_eq!(r.format, Format::Forwarded);
        let r = read_str("From: a@hotmail.com\r\n\r\nhello\r\n");
        assert_eq!(r.format, Format::Unreadable);
        assert_eq!(read_str("").format, Format::Unreadable);
    }
}
