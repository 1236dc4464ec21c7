//! Turns a bounce or feedback message into a [`Report`].
//!
//! mail-parser splits the MIME tree and undoes transfer encodings; everything
//! inside the report parts (delivery-status groups, feedback fields, returned
//! headers, plain-text notices) is read by this module's own bounded readers.
//! `parse` never fails: what cannot be read becomes `ReportKind::Unparsed` with a
//! reason, or a partial report.

use std::borrow::Cow;
use std::panic::{self, AssertUnwindSafe};

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::fields::{
    FieldReader, clean_address, find_address, find_smtp_code, find_status, parse_status,
    strip_type_prefix,
};
use super::plain;
use super::report::{
    DsnAction, Feedback, Limits, OriginalHeaders, RecipientStatus, Report, ReportKind,
    UnparsedReason,
};

/// Received headers kept from the returned message (trace checks need a few,
/// not hundreds).
pub const MAX_RECEIVED_HEADERS: usize = 32;

/// Header fields read from the returned message before giving up.
const MAX_ORIGINAL_FIELDS: usize = 1000;

/// MIME parts visited in one message, whatever their nesting.
const MAX_MIME_PARTS: usize = 256;

/// Bytes of `text/plain` notification text handed to the plain-bounce scanner.
const MAX_NOTICE_TEXT: usize = 64 * 1024;

/// Levels of reports wrapped in an attached `message/rfc822` (a DSN
/// forwarded or re-sent by a mail client) that are unwrapped.
const MAX_NESTED_REPORTS: usize = 1;

/// Attached messages tried as wrapped reports, per level.
const MAX_NESTED_TRIES: usize = 4;

/// Addresses read from `X-Failed-Recipients`.
const MAX_X_FAILED: usize = 32;

/// Feedback types registered at IANA (RFC 5965, RFC 6430 `not-spam`,
/// RFC 6591 `auth-failure`).
const REGISTERED_FEEDBACK_TYPES: &[&str] = &[
    "abuse",
    "fraud",
    "other",
    "virus",
    "not-spam",
    "auth-failure",
];

/// Parses a bounce or feedback message. Never panics; reads at most
/// `limits.max_bytes` of `raw`.
///
/// mail-parser 0.11.6 fixed its known panic on a folded header truncated at the
/// end of input (mail-parser #155), and the input is trimmed of trailing whitespace before
/// it is handed over, but its debug assertions can still fire on odd input, so
/// the call runs under `catch_unwind` and a panic gives `Unparsed`
/// (`ParserPanic`). That only works with `panic = "unwind"` (the default); under
/// `panic = "abort"` the process would still die.
pub fn parse(raw: &[u8], limits: &Limits) -> Report {
    let truncated = raw.len() > limits.max_bytes;
    let input = prepare_input(raw, limits.max_bytes);
    if input.is_empty() {
        return Report::unparsed(UnparsedReason::Empty, truncated);
    }
    let parser = MessageParser::new()
        .with_mime_headers()
        .default_header_ignore();
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| parser.parse(input.as_ref())));
    match parsed {
        Ok(Some(message)) => {
            let mut report = extract(&message, limits);
            report.truncated |= truncated;
            report.cap_fields(limits.max_field_len);
            if report.recipients.is_empty()
                && matches!(report.kind, ReportKind::Dsn | ReportKind::PlainBounce)
            {
                report.set_unparsed(UnparsedReason::NoRecipients);
            }
            report
        }
        Ok(None) => Report::unparsed(UnparsedReason::NoHeaders, truncated),
        Err(_) => Report::unparsed(UnparsedReason::ParserPanic, truncated),
    }
}

/// Cuts the input to `max_bytes` (back to the last line end when cut), drops
/// trailing whitespace (so no folded header dangles at the end) and ends it
/// with one line feed. Borrows when nothing needs changing.
fn prepare_input(raw: &[u8], max_bytes: usize) -> Cow<'_, [u8]> {
    let mut data = raw.get(..max_bytes.min(raw.len())).unwrap_or_default();
    if raw.len() > max_bytes
        && let Some(nl) = data.iter().rposition(|&b| b == b'\n')
    {
        data = data.get(..=nl).unwrap_or_default();
    }
    let content = data.trim_ascii_end();
    if content.is_empty() {
        return Cow::Borrowed(b"");
    }
    let tail = data.get(content.len()..).unwrap_or_default();
    if tail == b"\n" || tail == b"\r\n" {
        return Cow::Borrowed(data);
    }
    let mut owned = Vec::with_capacity(content.len() + 1);
    owned.extend_from_slice(content);
    owned.push(b'\n');
    Cow::Owned(owned)
}

/// A leaf of the MIME tree, with what the report readers need.
struct Leaf<'m> {
    /// `type/subtype`, lower case; `text/plain` when absent.
    ctype: String,
    body: &'m [u8],
    /// The parsed message of a `message/*` part.
    nested: Option<&'m Message<'m>>,
}

/// Walk state: the leaves found and the parts budget.
struct Walk<'m> {
    leaves: Vec<Leaf<'m>>,
    parts_left: usize,
    max_depth: usize,
    truncated: bool,
    /// A multipart below `max_depth` was skipped.
    too_deep: bool,
}

impl<'m> Walk<'m> {
    /// Collects leaves depth-first. Nested messages are leaves (their header
    /// bytes): a returned message is never searched for report parts.
    fn visit(&mut self, message: &'m Message<'m>, part_id: usize, depth: usize) {
        if self.parts_left == 0 {
            self.truncated = true;
            return;
        }
        self.parts_left -= 1;
        let Some(part) = message.parts.get(part_id) else {
            return;
        };
        let ctype = part.content_type().map_or_else(
            || "text/plain".to_owned(),
            |ct| {
                format!(
                    "{}/{}",
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or_default().to_ascii_lowercase()
                )
            },
        );
        let mut nested_message = None;
        let body: &'m [u8] = match &part.body {
            PartType::Multipart(children) => {
                if depth >= self.max_depth {
                    self.truncated = true;
                    self.too_deep = true;
                    return;
                }
                for &child in children {
                    // Children always come after their parent; anything else
                    // would be a cycle.
                    let child = child as usize;
                    if child > part_id {
                        self.visit(message, child, depth + 1);
                    }
                }
                return;
            }
            PartType::Text(text) | PartType::Html(text) => text.as_bytes(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.as_ref(),
            PartType::Message(nested) => {
                nested_message = Some(nested);
                nested_header_bytes(nested)
            }
        };
        self.leaves.push(Leaf {
            ctype,
            body,
            nested: nested_message,
        });
    }
}

/// The bytes from a nested message's header onwards (the field reader stops at
/// the first blank line).
fn nested_header_bytes<'m>(nested: &'m Message<'m>) -> &'m [u8] {
    let raw: &[u8] = nested.raw_message.as_ref();
    nested
        .parts
        .first()
        .and_then(|p| raw.get(p.offset_header as usize..))
        .unwrap_or(raw)
}

/// The top-level header bytes of the message.
fn top_header_bytes<'m>(message: &'m Message<'m>) -> &'m [u8] {
    let raw: &[u8] = message.raw_message.as_ref();
    message
        .parts
        .first()
        .and_then(|p| raw.get(p.offset_header as usize..p.offset_body as usize))
        .unwrap_or_default()
}

fn is_returned_message_type(ctype: &str) -> bool {
    matches!(
        ctype,
        "message/rfc822"
            | "message/global"
            | "text/rfc822-headers"
            | "message/rfc822-headers"
            | "message/global-headers"
    )
}

fn extract(message: &Message<'_>, limits: &Limits) -> Report {
    extract_at(message, limits, 0)
}

/// Reads one message; `nest` counts the attached reports unwrapped so far.
fn extract_at(message: &Message<'_>, limits: &Limits, nest: usize) -> Report {
    let mut report = Report::new(ReportKind::NotABounce);
    let mut walk = Walk {
        leaves: Vec::new(),
        parts_left: MAX_MIME_PARTS,
        max_depth: limits.max_depth,
        truncated: false,
        too_deep: false,
    };
    walk.visit(message, 0, 0);
    report.truncated |= walk.truncated;

    let top_type = message.parts.first().and_then(|p| p.content_type());
    let claimed_report = top_type
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);

    let find = |pred: &dyn Fn(&str) -> bool| walk.leaves.iter().find(|l| pred(&l.ctype));
    let dsn_part =
        find(&|t| t == "message/delivery-status" || t == "message/global-delivery-status");
    let arf_part = find(&|t| t == "message/feedback-report");
    let returned = find(&is_returned_message_type);

    if let Some(leaf) = returned {
        report.original = read_original(leaf.body, limits, &mut report.truncated);
    }

    let top = read_top_headers(top_header_bytes(message), limits);
    // A status in a delivery-status part whose groups name no recipient
    // (Google Workspace, broken MTAs): it applies to the recipients found
    // in the text.
    let mut orphan_status = None;
    if let Some(leaf) = dsn_part {
        report.kind = ReportKind::Dsn;
        orphan_status = read_delivery_status(leaf.body, limits, &mut report);
        if !report.recipients.is_empty() {
            return report;
        }
        report.kind = ReportKind::NotABounce;
    } else if let Some(leaf) = arf_part {
        read_feedback(leaf.body, limits, &mut report);
        return report;
    }
    // Nothing usable, and part of the tree was skipped for depth: say so.
    let missing = if walk.too_deep {
        UnparsedReason::TooDeep
    } else {
        UnparsedReason::ReportPartMissing
    };
    // A report declared with a boundary that the body never uses at all
    // (Sendmail variants): the body is the report, read it as one.
    let mut text = String::new();
    let mut report_part_missing = false;
    if dsn_part.is_none()
        && matches!(
            claimed_report.as_deref(),
            Some("delivery-status" | "global-delivery-status")
        )
        && let Some(body) = unsplit_body(message, limits)
    {
        report.kind = ReportKind::Dsn;
        orphan_status = read_delivery_status(body, limits, &mut report);
        if !report.recipients.is_empty() {
            return report;
        }
        report.kind = ReportKind::NotABounce;
        report_part_missing = true;
        let body = body
            .get(..MAX_NOTICE_TEXT.min(body.len()))
            .unwrap_or_default();
        text.push_str(&String::from_utf8_lossy(body));
    } else if dsn_part.is_none()
        && matches!(
            claimed_report.as_deref(),
            Some("delivery-status" | "global-delivery-status" | "feedback-report")
        )
    {
        // The parts were split but none is the report ("Mail Delivery
        // System" notices without a delivery-status part): read the notice
        // below. When the split failed (no or wrong boundary, FAULTS D1),
        // or for a feedback report, the report part is missing.
        let split = message
            .parts
            .first()
            .is_some_and(|p| matches!(&p.body, PartType::Multipart(c) if !c.is_empty()));
        if !split || claimed_report.as_deref() == Some("feedback-report") {
            report.set_unparsed(missing);
            return report;
        }
        report_part_missing = true;
    }

    // No usable report part: look for a plain-text bounce notice (HTML
    // when there is no plain text).
    let plain_leaves = walk
        .leaves
        .iter()
        .filter(|l| l.ctype == "text/plain")
        .count();
    for leaf in walk
        .leaves
        .iter()
        .filter(|l| l.ctype == "text/plain" || (plain_leaves == 0 && l.ctype == "text/html"))
    {
        let room = MAX_NOTICE_TEXT.saturating_sub(text.len());
        if room == 0 {
            report.truncated = true;
            break;
        }
        if leaf.body.len() > room {
            report.truncated = true;
        }
        let bytes = leaf
            .body
            .get(..room.min(leaf.body.len()))
            .unwrap_or_default();
        let part = String::from_utf8_lossy(bytes);
        if leaf.ctype == "text/html" {
            text.push_str(&plain::html_text(&part));
        } else {
            text.push_str(&part);
        }
        text.push_str("\n\n");
    }
    let mut ctx = plain::Context {
        subject: top.subject.clone(),
        from: top.from.clone(),
        exclude: top.own_addresses.clone(),
    };
    if let Some(from) = report
        .original
        .as_ref()
        .and_then(|o| o.from.as_deref())
        .and_then(find_address)
    {
        ctx.exclude.push(from.to_ascii_lowercase());
    }
    let scan = plain::scan(&text, &ctx, limits);
    report.truncated |= scan.truncated;
    if report.original.is_none()
        && let Some(header_text) = scan.original_header_text.as_deref()
    {
        report.original = read_original(header_text.as_bytes(), limits, &mut report.truncated);
    }
    let is_bounce = scan.is_bounce || !top.x_failed.is_empty() || report_part_missing;
    if !is_bounce {
        return report;
    }
    report.reporting_mta = report.reporting_mta.take().or(scan.reporting_mta);
    report.recipients = scan.recipients;
    if report.recipients.is_empty() && !top.x_failed.is_empty() {
        // Only the header names them (Google Groups, localised Google
        // Workspace notices, customised Exim texts).
        for address in top.x_failed.iter().filter(|a| !ctx.exclude.contains(a)) {
            if report.recipients.len() >= limits.max_recipients {
                report.truncated = true;
                break;
            }
            report.recipients.push(plain::status_for(
                address,
                scan.first_reply.as_deref(),
                scan.permanent,
                limits,
                &mut report.truncated,
            ));
        }
    }
    if report.recipients.is_empty()
        && nest < MAX_NESTED_REPORTS
        && let Some(inner) = nested_report(&walk, limits, nest)
    {
        let truncated = report.truncated;
        report = inner;
        report.truncated |= truncated;
        return report;
    }
    if let Some(status) = orphan_status {
        for r in report.recipients.iter_mut().filter(|r| r.status.is_none()) {
            r.status = Some(status.clone());
        }
    }
    if !report.recipients.is_empty() {
        report.kind = ReportKind::PlainBounce;
    } else if report_part_missing {
        report.set_unparsed(missing);
    } else if walk.too_deep {
        report.set_unparsed(UnparsedReason::TooDeep);
    } else {
        report.set_unparsed(UnparsedReason::NoRecipients);
    }
    report
}

/// Subject and From of the bounce itself, for recognising plain bounces.
struct TopHeaders {
    subject: String,
    from: String,
    /// Lower-case addresses of the bounce's own From, To, Return-Path and
    /// Sender: never the failed recipient.
    own_addresses: Vec<String>,
    /// Lower-case addresses of `X-Failed-Recipients` (Exim, Google).
    x_failed: Vec<String>,
}

fn read_top_headers(bytes: &[u8], limits: &Limits) -> TopHeaders {
    let mut top = TopHeaders {
        subject: String::new(),
        from: String::new(),
        own_addresses: Vec::new(),
        x_failed: Vec::new(),
    };
    let mut reader = FieldReader::new(bytes, limits.max_field_len);
    if !reader.next_block() {
        return top;
    }
    let mut seen = 0;
    while let Some((name, value)) = reader.next_field() {
        seen += 1;
        if seen > MAX_ORIGINAL_FIELDS {
            break;
        }
        if matches!(name.as_str(), "from" | "to" | "return-path" | "sender")
            && let Some(a) = find_address(&value)
            && top.own_addresses.len() < MAX_X_FAILED
        {
            top.own_addresses.push(a.to_ascii_lowercase());
        }
        match name.as_str() {
            "subject" if top.subject.is_empty() => top.subject = value,
            "from" if top.from.is_empty() => top.from = value,
            "x-failed-recipients" => {
                for part in value.split(',') {
                    if top.x_failed.len() >= MAX_X_FAILED {
                        break;
                    }
                    if let Some(a) = clean_address(part).map(|a| a.to_ascii_lowercase())
                        && !top.x_failed.contains(&a)
                    {
                        top.x_failed.push(a);
                    }
                }
            }
            _ => {}
        }
    }
    top
}

/// The body of a message declared `multipart/report` that holds no MIME
/// part at all (no delimiter of the declared boundary, no line starting
/// with `--` followed by a `Content-Type` line): such bodies are the report
/// itself. None when the body has parts
/// (a wrong boundary stays a missing report part, FAULTS D1).
fn unsplit_body<'m>(message: &'m Message<'m>, limits: &Limits) -> Option<&'m [u8]> {
    let raw: &[u8] = message.raw_message.as_ref();
    let start = message.parts.first()?.offset_body as usize;
    let body = raw.get(start..)?;
    let body = body.get(..body.len().min(limits.max_bytes))?;
    if super::fields::is_blank(body) {
        return None;
    }
    let boundary = message
        .parts
        .first()
        .and_then(|p| p.content_type())
        .and_then(|ct| ct.attribute("boundary"))
        .map(|b| format!("--{b}"));
    let mut lines = super::fields::Lines::new(body).peekable();
    while let Some(line) = lines.next() {
        if boundary
            .as_deref()
            .is_some_and(|b| line.starts_with(b.as_bytes()))
        {
            return None;
        }
        if line.starts_with(b"--")
            && lines.peek().is_some_and(|next| {
                next.len() >= 13
                    && next
                        .get(..13)
                        .is_some_and(|h| h.eq_ignore_ascii_case(b"content-type:"))
            })
        {
            return None;
        }
    }
    Some(body)
}

/// A report wrapped in one of the first attached messages (a DSN forwarded
/// or re-sent by a mail client), read one level down.
fn nested_report(walk: &Walk<'_>, limits: &Limits, nest: usize) -> Option<Report> {
    walk.leaves
        .iter()
        .filter_map(|l| l.nested)
        .take(MAX_NESTED_TRIES)
        .map(|m| extract_at(m, limits, nest + 1))
        .find(|r| {
            !r.recipients.is_empty() && matches!(r.kind, ReportKind::Dsn | ReportKind::PlainBounce)
        })
}

/// Reads the header of the returned message (first block of `bytes`).
fn read_original(bytes: &[u8], limits: &Limits, truncated: &mut bool) -> Option<OriginalHeaders> {
    let mut reader = FieldReader::new(bytes, limits.max_field_len);
    if !reader.next_block() {
        return None;
    }
    let mut original = OriginalHeaders::default();
    let mut seen = 0;
    while let Some((name, value)) = reader.next_field() {
        seen += 1;
        if seen > MAX_ORIGINAL_FIELDS {
            *truncated = true;
            break;
        }
        let slot = match name.as_str() {
            "message-id" => &mut original.message_id,
            "from" => &mut original.from,
            "to" => &mut original.to,
            "subject" => &mut original.subject,
            "received" => {
                if original.received.len() < MAX_RECEIVED_HEADERS {
                    original.received.push(value);
                } else {
                    *truncated = true;
                }
                continue;
            }
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    *truncated |= reader.truncated;
    (seen > 0).then_some(original)
}

/// Fields of one recipient group as they are read.
#[derive(Default)]
struct Group {
    final_recipient: Option<String>,
    original_recipient: Option<String>,
    /// `Original-Recipient` has the `rfc822` address type.
    original_is_rfc822: bool,
    action: Option<DsnAction>,
    status: Option<String>,
    remote_mta: Option<String>,
    diagnostic: Option<String>,
    last_attempt_date: Option<String>,
    will_retry_until: Option<String>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.final_recipient.is_none() && self.original_recipient.is_none()
    }

    /// Builds the recipient status, or None when no recipient was readable.
    /// An `rfc822` Original-Recipient that differs from Final-Recipient is
    /// the address we sent to (Final-Recipient is then an internal route or
    /// forward: Sun/Oracle Messaging Server, PMDF, Exchange), so it wins.
    fn finish(self) -> Option<RecipientStatus> {
        let original = self
            .original_recipient
            .clone()
            .filter(|_| self.original_is_rfc822);
        let recipient = match (self.final_recipient, original) {
            (Some(f), Some(o)) if !f.eq_ignore_ascii_case(&o) => o,
            (Some(f), _) => f,
            (None, _) => self.original_recipient.clone()?,
        };
        let diagnostic = self.diagnostic;
        let status = self
            .status
            .or_else(|| diagnostic.as_deref().and_then(find_status));
        let smtp_code = diagnostic.as_deref().and_then(find_smtp_code);
        Some(RecipientStatus {
            recipient,
            original_recipient: self.original_recipient,
            action: self.action,
            status,
            smtp_code,
            remote_mta: self.remote_mta,
            diagnostic,
            last_attempt_date: self.last_attempt_date,
            will_retry_until: self.will_retry_until,
        })
    }
}

fn set_once(slot: &mut Option<String>, value: Option<String>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn mta_name(value: &str) -> Option<String> {
    non_empty(strip_type_prefix(value).trim_end_matches('.'))
}

/// Reads a `message/delivery-status` body. Blocks may come in any order; a
/// block with a recipient field is a recipient group, other fields are
/// per-message. A second `Final-Recipient` in one block starts a new group
/// (some MTAs omit the blank line). Groups without a readable recipient are
/// dropped; unknown `Action` and invalid `Status` values become None.
///
/// Returns the `Status` of the first group that names no recipient, for the
/// caller to apply to recipients found elsewhere.
fn read_delivery_status(body: &[u8], limits: &Limits, report: &mut Report) -> Option<String> {
    let mut reader = FieldReader::new(body, limits.max_field_len);
    let mut full = false;
    let mut orphan_status = None;
    let push = |group: Group, report: &mut Report, full: &mut bool| {
        if group.is_empty() {
            return;
        }
        if report.recipients.len() >= limits.max_recipients {
            report.truncated = true;
            *full = true;
            return;
        }
        if let Some(status) = group.finish() {
            report.recipients.push(status);
        }
    };
    while !full && reader.next_block() {
        let mut group = Group::default();
        while let Some((name, value)) = reader.next_field() {
            match name.as_str() {
                "reporting-mta" => set_once(&mut report.reporting_mta, mta_name(&value)),
                "arrival-date" => set_once(&mut report.arrival_date, non_empty(&value)),
                "final-recipient" => {
                    if group.final_recipient.is_some() {
                        push(std::mem::take(&mut group), report, &mut full);
                        if full {
                            break;
                        }
                    }
                    // When unreadable, Original-Recipient can stand in for it.
                    group.final_recipient = clean_address(&value);
                }
                "original-recipient" => {
                    if group.original_recipient.is_none() {
                        group.original_is_rfc822 = value
                            .split_once(';')
                            .is_some_and(|(t, _)| t.trim().eq_ignore_ascii_case("rfc822"));
                    }
                    set_once(&mut group.original_recipient, clean_address(&value));
                }
                "action" => group.action = group.action.or(DsnAction::parse(&value)),
                "status" => set_once(&mut group.status, parse_status(&value)),
                "remote-mta" => set_once(&mut group.remote_mta, mta_name(&value)),
                "diagnostic-code" => {
                    set_once(&mut group.diagnostic, non_empty(strip_type_prefix(&value)));
                }
                "last-attempt-date" => set_once(&mut group.last_attempt_date, non_empty(&value)),
                "will-retry-until" => set_once(&mut group.will_retry_until, non_empty(&value)),
                _ => {}
            }
        }
        if group.is_empty() && orphan_status.is_none() {
            orphan_status.clone_from(&group.status);
        }
        if !full {
            push(group, report, &mut full);
        }
    }
    report.truncated |= reader.truncated;
    orphan_status
}

/// Reads a `message/feedback-report` body and sets the report kind.
fn read_feedback(body: &[u8], limits: &Limits, report: &mut Report) {
    let mut feedback = Feedback::default();
    let mut reader = FieldReader::new(body, limits.max_field_len);
    let push_bounded = |list: &mut Vec<String>, value: Option<String>, truncated: &mut bool| {
        let Some(value) = value else { return };
        if list.len() < limits.max_recipients {
            list.push(value);
        } else {
            *truncated = true;
        }
    };
    while reader.next_block() {
        while let Some((name, value)) = reader.next_field() {
            match name.as_str() {
                "feedback-type" => set_once(
                    &mut feedback.feedback_type,
                    value.split_whitespace().next().map(str::to_ascii_lowercase),
                ),
                "user-agent" => set_once(&mut feedback.user_agent, non_empty(&value)),
                "version" => set_once(&mut feedback.version, non_empty(&value)),
                "original-mail-from" => set_once(
                    &mut feedback.original_mail_from,
                    clean_address(&value).or_else(|| non_empty(&value)),
                ),
                "original-rcpt-to" => push_bounded(
                    &mut feedback.original_rcpt_to,
                    clean_address(&value),
                    &mut report.truncated,
                ),
                "source-ip" => set_once(&mut feedback.source_ip, non_empty(&value)),
                "arrival-date" | "received-date" => {
                    set_once(&mut feedback.arrival_date, non_empty(&value));
                }
                "reported-domain" => push_bounded(
                    &mut feedback.reported_domain,
                    non_empty(&value),
                    &mut report.truncated,
                ),
                "reporting-mta" => set_once(&mut report.reporting_mta, mta_name(&value)),
                _ => {}
            }
        }
    }
    report.truncated |= reader.truncated;
    report.arrival_date.clone_from(&feedback.arrival_date);
    match feedback.feedback_type.as_deref() {
        None => report.set_unparsed(UnparsedReason::MissingFeedbackType),
        Some(t) if REGISTERED_FEEDBACK_TYPES.contains(&t) => report.kind = ReportKind::Feedback,
        Some(_) => report.set_unparsed(UnparsedReason::UnknownFeedbackType),
    }
    report.feedback = Some(feedback);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_input_cases() {
        let cases: &[(&[u8], usize, &[u8])] = &[
            (b"", 10, b""),
            (b"  \r\n\t", 10, b""),
            (b"A: b\n", 10, b"A: b\n"),
            (b"A: b\r\n", 10, b"A: b\r\n"),
            (b"Received: x\n\t", 100, b"Received: x\n"),
            (b"A: b\nC: d\n", 7, b"A: b\n"),
            (b"A: bbbbbbbb", 4, b"A: b\n"),
        ];
        for (input, max, want) in cases {
            assert_eq!(prepare_input(input, *max).as_ref(), *want, "{input:?}");
        }
    }

    #[test]
    fn action_values() {
        assert_eq!(DsnAction::parse("Failed"), Some(DsnAction::Failed));
        assert_eq!(
            DsnAction::parse(" delayed (retrying)"),
            Some(DsnAction::Delayed)
        );
        assert_eq!(DsnAction::parse("bogus"), None);
        assert_eq!(DsnAction::parse(""), None);
    }

    fn dsn_body(body: &str) -> Report {
        let mut report = Report::new(ReportKind::Dsn);
        read_delivery_status(body.as_bytes(), &Limits::default(), &mut report);
        report
    }

    #[test]
    fn delivery_status_groups() {
        let r = dsn_body(
            "Reporting-MTA: dns; mx.example.net\nArrival-Date: Mon, 3 Mar 2025 10:00:00 +0000\n\n\
             Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n\
             Diagnostic-Code: smtp; 550 5.1.1 user\n  unknown\n\n\
             Final-Recipient: rfc822; b@example.com\nAction: bogus\nStatus: 9.9.9\n\
             Final-Recipient: rfc822; c@example.com\nAction: delayed\nStatus: 4.4.1\n\n\
             Action: failed\nStatus: 5.0.0\n\n\
             Final-Recipient: rfc822; not an address\nOriginal-Recipient: rfc822; d@example.com\nAction: failed\n",
        );
        assert_eq!(r.reporting_mta.as_deref(), Some("mx.example.net"));
        let got: Vec<_> = r
            .recipients
            .iter()
            .map(|s| {
                (
                    s.recipient.as_str(),
                    s.action,
                    s.status.as_deref(),
                    s.smtp_code,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a@example.com",
                    Some(DsnAction::Failed),
                    Some("5.1.1"),
                    Some(550)
                ),
                ("b@example.com", None, None, None),
                (
                    "c@example.com",
                    Some(DsnAction::Delayed),
                    Some("4.4.1"),
                    None
                ),
                ("d@example.com", Some(DsnAction::Failed), None, None),
            ]
        );
        assert_eq!(
            r.recipients[0].diagnostic.as_deref(),
            Some("550 5.1.1 user unknown")
        );
    }

    #[test]
    fn delivery_status_caps_groups() {
        let mut body = String::from("Reporting-MTA: dns; x.example\n");
        for i in 0..500 {
            body.push_str(&format!(
                "\nFinal-Recipient: rfc822; u{i}@example.com\nAction: failed\nStatus: 5.1.1\n"
            ));
        }
        let limits = Limits {
            max_recipients: 7,
            ..Limits::default()
        };
        let mut report = Report::new(ReportKind::Dsn);
        read_delivery_status(body.as_bytes(), &limits, &mut report);
        assert_eq!(report.recipients.len(), 7);
        assert!(report.truncated);
    }

    #[test]
    fn feedback_types() {
        let cases: &[(&str, ReportKind, Option<UnparsedReason>)] = &[
            ("Feedback-Type: abuse\n", ReportKind::Feedback, None),
            ("Feedback-Type: Not-Spam\n", ReportKind::Feedback, None),
            (
                "Feedback-Type: opt-out\n",
                ReportKind::Unparsed,
                Some(UnparsedReason::UnknownFeedbackType),
            ),
            (
                "User-Agent: x/1\nVersion: 1\n",
                ReportKind::Unparsed,
                Some(UnparsedReason::MissingFeedbackType),
            ),
        ];
        for (body, kind, reason) in cases {
            let mut report = Report::new(ReportKind::Feedback);
            read_feedback(body.as_bytes(), &Limits::default(), &mut report);
            assert_eq!(
                (report.kind, report.unparsed_reason),
                (*kind, *reason),
                "{body}"
            );
            assert!(report.feedback.is_some());
        }
    }
}
