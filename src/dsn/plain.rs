//! Reads non-standard bounces: plain-text notices from Postfix (without DSN),
//! Exim, qmail, Sendmail, Exchange/Office 365 and Gmail.
//!
//! Each MTA has its own layout, so there is one small extractor per layout.
//! All of them run over the notice text (cut before any inline copy of the
//! original message) and their findings are merged by address, first finding
//! first. The extractors only look at lines, never at a regex over the whole
//! text, so the cost is linear and bounded by `MAX_NOTICE_LINES`.

use super::fields::{
    cap_str, clean_address, find_address, find_remote_host, find_smtp_code, find_status,
};
use super::notice::{self, Hit};
use super::report::{DsnAction, Limits, RecipientStatus};
use aho_corasick::AhoCorasick;
use std::sync::LazyLock;

/// Lines of notice text examined.
const MAX_NOTICE_LINES: usize = 4000;

/// Lines of an inline copy of the original message kept for its header.
const MAX_ORIGINAL_LINES: usize = 1000;

/// Distinct addresses one extractor collects (keeps the merge cost bounded;
/// `Limits::max_recipients` then cuts the result).
const MAX_FOUND: usize = 512;

/// Words on an Exchange recipient line (`Display Name (a@b)`); more is prose.
const MAX_ADDRESS_LINE_WORDS: usize = 5;

/// Sendmail transcript reply lines kept for filling in missing reasons.
const MAX_TRANSCRIPT_REPLIES: usize = 64;

/// Phrases that mark a bounce notice, lower case, with the MTA that writes them.
const BOUNCE_MARKERS: &[&str] = &[
    // Postfix
    "this is the mail system at host",
    // Exim
    "this message was created automatically by mail delivery software",
    // qmail
    "this is the qmail-send program",
    // Sendmail
    "the following addresses had permanent fatal errors",
    "the following addresses had transient non-fatal errors",
    "transcript of session follows",
    "the original message was received at",
    // Exchange / Office 365
    "delivery has failed to these recipients or groups",
    "delivery is delayed to these recipients or groups",
    "diagnostic information for administrators",
    // Gmail
    "** address not found **",
    "** message not delivered **",
    "your message wasn't delivered to",
    "delivery to the following recipient failed permanently",
    "delivery to the following recipient has been delayed",
    "there was a temporary problem delivering your message",
    // Exchange 5.5 / 2003, hMailServer, Kerio
    "did not reach the following recipient",
    "did not reach some or all of the intended recipients",
    // MDaemon
    "permanent fatal delivery errors",
    // Courier, OpenSMTPD, DragonFly dma
    "undeliverable mail",
    "this is the mailer-daemon",
    "there was an error delivering your mail",
];

/// Phrases that say the failure is permanent (RFC 3463 class 5 without a
/// code): Exim, qmail, Sendmail, Gmail, MDaemon and most ISP notices.
const PERMANENT_MARKERS: &[&str] = &[
    "permanent error",
    "permanent fatal",
    "failed permanently",
    "permanent failure",
    "permanently failed",
    "permanent delivery failure",
];

/// Phrases that make a whole notice a delay warning rather than a failure.
const DELAY_MARKERS: &[&str] = &[
    // Postfix delay notice
    "this is a warning only",
    // Exim delay warning
    "has not yet been delivered to one or more of its recipients",
    // Gmail
    "delivery incomplete",
];

/// Subject fragments of bounce notices (lower case).
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "delivery status notification",
    "returned mail",
    "failure notice",
    "mail delivery failed",
    "delivery failure",
    "non-delivery",
    "could not be delivered",
    "warning: could not send",
    "delayed mail",
    "delivery delayed",
    "not delivered",
    "mail system error",
    "delivery notification",
    "mail delivery status",
    "message status - undeliverable",
    "delivery status",
];

/// [`COPY_MARKERS`] in one pass over a line (every line of a notice is
/// tried until the copy starts).
static ANY_COPY_MARKER: LazyLock<Option<AhoCorasick>> =
    LazyLock::new(|| AhoCorasick::new(COPY_MARKERS).ok());

/// [`BOUNCE_SUBJECTS`] in one pass over a Subject.
static ANY_BOUNCE_SUBJECT: LazyLock<Option<AhoCorasick>> =
    LazyLock::new(|| AhoCorasick::new(BOUNCE_SUBJECTS).ok());

/// The bounce, permanent and delay markers, in this order, in one
/// automaton: one pass over the notice instead of one per marker.
static NOTICE_MARKERS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    let all = [BOUNCE_MARKERS, PERMANENT_MARKERS, DELAY_MARKERS].concat();
    AhoCorasick::new(all).ok()
});

/// Which kinds of marker a notice names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Marked {
    bounce: bool,
    permanent: bool,
    delayed: bool,
}

/// The markers `lower` (lower-case notice text) names. Overlapping matches
/// count: MDaemon's "permanent fatal delivery errors" is a bounce marker
/// that starts with the permanent marker "permanent fatal".
fn marked(lower: &str) -> Marked {
    let mut m = Marked::default();
    let Some(ac) = NOTICE_MARKERS.as_ref() else {
        // Never for these fixed patterns; one by one if it ever were.
        let any = |set: &[&str]| set.iter().any(|p| lower.contains(p));
        return Marked {
            bounce: any(BOUNCE_MARKERS),
            permanent: any(PERMANENT_MARKERS),
            delayed: any(DELAY_MARKERS),
        };
    };
    let permanent_from = BOUNCE_MARKERS.len();
    let delay_from = permanent_from + PERMANENT_MARKERS.len();
    for found in ac.find_overlapping_iter(lower) {
        match found.pattern().as_usize() {
            i if i < permanent_from => m.bounce = true,
            i if i < delay_from => m.permanent = true,
            _ => m.delayed = true,
        }
        if m.bounce && m.permanent && m.delayed {
            break;
        }
    }
    m
}

/// Lines that introduce an inline copy of the original message (lower case).
const COPY_MARKERS: &[&str] = &[
    "this is a copy of the message",
    "below this line is a copy of the message",
    "original message follows",
    "message header follows",
    "message headers follow",
    "original message headers:",
    // Post.Office
    "message text follows:",
];

/// What the scanner found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// A bounce marker, bounce-like Subject or a MAILER-DAEMON/postmaster From.
    pub(super) is_bounce: bool,
    pub(super) recipients: Vec<RecipientStatus>,
    pub(super) reporting_mta: Option<String>,
    /// The header lines of an inline copy of the original message.
    pub(super) original_header_text: Option<String>,
    /// The first failure reply line of the notice (a 4xx/5xx SMTP reply or
    /// a 4.x.x/5.x.x status), for recipients named elsewhere (e.g. only in
    /// `X-Failed-Recipients`).
    pub(super) first_reply: Option<String>,
    /// The notice says the failure is permanent.
    pub(super) permanent: bool,
    pub(super) truncated: bool,
}

/// What the scanner knows about the message besides its text.
#[derive(Debug, Default)]
pub(super) struct Context {
    pub(super) subject: String,
    pub(super) from: String,
    /// Lower-case addresses that are never the failed recipient: the
    /// bounce's own envelope and sender, the returned message's author.
    pub(super) exclude: Vec<String>,
}

/// The notice text as lines, with a lower-cased copy of each line.
struct Notice<'a> {
    lines: &'a [&'a str],
    lower: &'a [String],
    exclude: &'a [String],
}

impl Notice<'_> {
    fn excluded(&self, address: &str) -> bool {
        self.exclude.iter().any(|e| e.eq_ignore_ascii_case(address))
    }
}

impl<'a> Notice<'a> {
    /// `(line, lower-cased line)` pairs.
    fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.lines
            .iter()
            .copied()
            .zip(self.lower.iter().map(String::as_str))
    }
}

/// One recipient as an extractor saw it.
#[derive(Debug, Default)]
struct Found {
    address: String,
    diagnostic: String,
    delayed: bool,
    remote: Option<String>,
}

/// Scans notice `text` of a message with the given Subject and From.
pub(super) fn scan(text: &str, ctx: &Context, limits: &Limits) -> Scan {
    let mut out = Scan::default();
    // Lines up to and including a copy marker (lower-cased once for all
    // extractors), then the lines of the copy.
    let mut lines: Vec<&str> = Vec::new();
    let mut lower: Vec<String> = Vec::new();
    let mut copy_at = None;
    for (i, line) in text.lines().enumerate() {
        if i >= MAX_NOTICE_LINES + MAX_ORIGINAL_LINES {
            out.truncated = true;
            break;
        }
        if copy_at.is_none() {
            let lower_line = line.to_ascii_lowercase();
            if ANY_COPY_MARKER.as_ref().map_or_else(
                || COPY_MARKERS.iter().any(|m| lower_line.contains(m)),
                |a| a.is_match(&lower_line),
            ) {
                copy_at = Some(lines.len());
            }
            lower.push(lower_line);
        }
        lines.push(line);
    }
    let notice_end = copy_at.unwrap_or(lines.len()).min(MAX_NOTICE_LINES);
    let notice = Notice {
        lines: lines.get(..notice_end).unwrap_or_default(),
        lower: lower.get(..notice_end).unwrap_or_default(),
        exclude: &ctx.exclude,
    };
    if let Some(at) = copy_at {
        out.original_header_text = original_header_text(lines.get(at + 1..).unwrap_or_default());
    }

    let marks = marked(&notice.lower.join("\n"));
    let subject = ctx.subject.to_ascii_lowercase();
    let from = ctx.from.to_ascii_lowercase();
    let bounce_subject = ANY_BOUNCE_SUBJECT.as_ref().map_or_else(
        || BOUNCE_SUBJECTS.iter().any(|m| subject.contains(m)),
        |a| a.is_match(&subject),
    );
    out.is_bounce = marks.bounce
        || bounce_subject
        || from.contains("mailer-daemon")
        || from.contains("postmaster@")
        || from.contains("post_master@");
    if !out.is_bounce {
        return out;
    }
    out.permanent = marks.permanent;
    out.first_reply = notice
        .lines
        .iter()
        .find(|l| notice::is_failure_reply(l))
        .map(|l| l.trim().trim_start_matches(['<', '-', '>', ' ']).to_owned());
    let notice_delayed =
        marks.delayed || subject.contains("delayed mail") || subject.contains("(delay)");
    out.reporting_mta = reporting_mta(&notice);

    let mut found: Vec<Found> = Vec::new();
    let extractors: [fn(&Notice<'_>) -> Vec<Found>; 5] =
        [angle_colon, exim, sendmail, exchange, gmail];
    for extract in extractors {
        for f in extract(&notice) {
            merge(&mut found, f, &mut out.truncated);
        }
    }
    // The layouts described as data (notice.rs), then, when nothing at all
    // was found, the free-text fallback.
    let tables: [notice::Extractor; 3] =
        [notice::sections, notice::phrases, notice::error_code_lines];
    for table in tables {
        for hit in table(notice.lines, notice.lower, MAX_FOUND) {
            merge(&mut found, hit_found(hit), &mut out.truncated);
        }
    }
    if found.is_empty() {
        for hit in notice::fallback(notice.lines, &ctx.exclude, MAX_FOUND) {
            merge(&mut found, hit_found(hit), &mut out.truncated);
        }
    }
    found.retain(|f| !notice.excluded(&f.address));
    // `...due to the following reason:` before the address list (Post.Office,
    // EarthLink): the reason of every recipient that has none.
    if let Some(reason) = notice_reason(&notice) {
        for f in found.iter_mut().filter(|f| f.diagnostic.trim().is_empty()) {
            f.diagnostic.clone_from(&reason);
        }
    }
    for f in found {
        if out.recipients.len() >= limits.max_recipients {
            out.truncated = true;
            break;
        }
        out.recipients.push(to_status(
            f,
            notice_delayed,
            out.permanent,
            limits,
            &mut out.truncated,
        ));
    }
    out
}

/// The status of a recipient named outside the notice text (only in
/// `X-Failed-Recipients`), with the notice's first failure reply as its
/// diagnostic.
pub(super) fn status_for(
    address: &str,
    reply: Option<&str>,
    permanent: bool,
    limits: &Limits,
    truncated: &mut bool,
) -> RecipientStatus {
    let f = Found {
        address: address.to_owned(),
        diagnostic: reply.unwrap_or_default().to_owned(),
        ..Found::default()
    };
    to_status(f, false, permanent || reply.is_none(), limits, truncated)
}

/// Notice text of an HTML-only bounce.
pub(super) fn html_text(html: &str) -> String {
    notice::html_to_text(html)
}

/// The first non-blank line after a `...the following reason:` line.
fn notice_reason(notice: &Notice<'_>) -> Option<String> {
    let at = notice
        .lower
        .iter()
        .position(|l| l.trim_end().ends_with("the following reason:"))?;
    notice
        .lines
        .iter()
        .skip(at + 1)
        .take(3)
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

fn hit_found(hit: Hit) -> Found {
    Found {
        address: hit.address,
        diagnostic: hit.diagnostic,
        ..Found::default()
    }
}

/// Builds a recipient status. A failure with no code at all in a notice
/// that calls itself permanent gets status 5.0.0 ("other undefined
/// status", class 5), so that it counts as hard unless a rule knows better.
fn to_status(
    f: Found,
    notice_delayed: bool,
    permanent: bool,
    limits: &Limits,
    truncated: &mut bool,
) -> RecipientStatus {
    let diagnostic = cap_str(f.diagnostic.trim(), limits.max_field_len, truncated);
    let delayed = f.delayed || notice_delayed;
    let action = if delayed {
        DsnAction::Delayed
    } else {
        DsnAction::Failed
    };
    let smtp_code = find_smtp_code(&diagnostic);
    let status = find_status(&diagnostic)
        .or_else(|| (permanent && !delayed && smtp_code.is_none()).then(|| "5.0.0".to_owned()));
    RecipientStatus {
        recipient: cap_str(&f.address, limits.max_field_len, truncated),
        action: Some(action),
        status,
        smtp_code,
        remote_mta: f.remote.or_else(|| find_remote_host(&diagnostic)),
        diagnostic: (!diagnostic.is_empty()).then_some(diagnostic),
        ..RecipientStatus::default()
    }
}

/// Adds `f` unless its address is known; a known address without a
/// diagnostic takes the new one.
fn merge(found: &mut Vec<Found>, f: Found, truncated: &mut bool) {
    if let Some(known) = found
        .iter_mut()
        .find(|k| k.address.eq_ignore_ascii_case(&f.address))
    {
        if known.diagnostic.trim().is_empty() {
            known.diagnostic = f.diagnostic;
        }
        known.remote = known.remote.take().or(f.remote);
        known.delayed |= f.delayed;
        return;
    }
    if found.len() < MAX_FOUND {
        found.push(f);
    } else {
        *truncated = true;
    }
}

/// The header lines following a copy marker: blank lines skipped, then lines
/// up to the next blank line.
fn original_header_text(lines: &[&str]) -> Option<String> {
    let header: Vec<&str> = lines
        .iter()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .take(MAX_ORIGINAL_LINES)
        .copied()
        .collect();
    (!header.is_empty()).then(|| header.join("\n"))
}

/// `This is the mail system at host X.` (Postfix), `qmail-send program at X.`
/// (qmail), `Generating server: X` (Exchange).
fn reporting_mta(notice: &Notice<'_>) -> Option<String> {
    const PREFIXES: &[&str] = &[
        "this is the mail system at host ",
        "this is the qmail-send program at ",
        "generating server: ",
    ];
    for (line, lower) in notice.pairs() {
        for prefix in PREFIXES {
            if let Some(at) = lower.find(prefix) {
                let rest = line.get(at + prefix.len()..).unwrap_or_default();
                let name = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(['.', ':']);
                if !name.is_empty() && name.len() <= 255 {
                    return Some(name.to_owned());
                }
            }
        }
    }
    None
}

fn is_indented(line: &str) -> bool {
    line.starts_with([' ', '\t'])
}

fn indent(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 8 } else { 1 })
        .sum()
}

fn append(diag: &mut String, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if !diag.is_empty() {
        diag.push(' ');
    }
    diag.push_str(text);
}

/// Postfix and qmail: a line `<addr>: text` (Postfix, text continued on
/// indented lines) or `<addr>:` alone (qmail, text on the following lines up
/// to a blank line). Postfix may add ` (expanded from <list@x>)`.
fn angle_colon(notice: &Notice<'_>) -> Vec<Found> {
    let notice = notice.lines;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(line) = notice.get(i) {
        i += 1;
        if out.len() >= MAX_FOUND {
            break;
        }
        let Some(rest) = line.strip_prefix('<') else {
            continue;
        };
        let Some((addr, after)) = rest.split_once('>') else {
            continue;
        };
        let Some(address) = clean_address(addr) else {
            continue;
        };
        let mut after = after.trim_start();
        if after.to_ascii_lowercase().starts_with("(expanded from") {
            after = after.split_once(')').map_or("", |(_, r)| r.trim_start());
        }
        let Some(first) = after.strip_prefix(':') else {
            continue;
        };
        let mut diagnostic = first.trim().to_owned();
        while let Some(next) = notice.get(i) {
            // `<<< 550 ...` (Courier transcript) is a detail, `<b@x>:` the
            // next recipient.
            if next.trim().is_empty() || next.starts_with('<') && !next.starts_with("<<") {
                break;
            }
            append(&mut diagnostic, next);
            i += 1;
        }
        out.push(Found {
            address,
            diagnostic,
            ..Found::default()
        });
    }
    out
}

/// Exim: after `The following address(es) failed:` (or the delay warning's
/// `...has not yet been delivered is:`), addresses indented by two, their
/// details indented further. Providers that customise the text (1&1, GMX,
/// web.de) put the address at column 0, bare or as `addr:`, `"addr":` or
/// `<addr>`, with the details on the following unindented lines. An alias
/// expanded by the remote Exim shows `(generated from ADDR)` under the final
/// address: ADDR is what we sent to.
fn exim(notice: &Notice<'_>) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut in_section = false;
    let mut column0 = false;
    let mut delayed = false;
    let lines: Vec<(&str, &str)> = notice.pairs().collect();
    for (i, &(line, lower)) in lines.iter().enumerate() {
        if out.len() >= MAX_FOUND {
            break;
        }
        let next_failed = lines
            .get(i + 1)
            .is_some_and(|(_, l)| l.trim_start().starts_with("failed:"));
        if lower.contains("address(es) failed")
            || lower.contains("following address failed")
            || lower.contains("following addresses failed")
            || (lower.trim_end().ends_with("address(es)") && next_failed)
        {
            (in_section, column0, delayed) = (true, false, false);
            continue;
        }
        if lower.contains("has not yet been delivered is")
            || lower.contains("have not yet been delivered are")
        {
            (in_section, column0, delayed) = (true, false, true);
            continue;
        }
        if !in_section || line.trim().is_empty() || lower.trim() == "failed:" {
            continue;
        }
        if line.trim_start().starts_with("---") {
            in_section = false;
            continue;
        }
        if let Some(f) = out.last_mut()
            && let Some(at) = lower.find("(generated from ")
        {
            let from = line
                .get(at + "(generated from ".len()..)
                .unwrap_or_default();
            if let Some(address) = clean_address(from.trim().trim_end_matches(')'))
                && !notice.excluded(&address)
            {
                f.address = address;
            }
            continue;
        }
        if !is_indented(line) {
            // Column 0: an address line alone (`addr`, `addr:`, `"addr":`,
            // `<addr>`), or the details of one.
            let bare = line.trim().trim_end_matches(':');
            if let Some(address) = clean_address(bare) {
                column0 = true;
                out.push(Found {
                    address,
                    delayed,
                    ..Found::default()
                });
            } else if column0 && let Some(current) = out.last_mut() {
                append(&mut current.diagnostic, line);
            } else {
                in_section = false;
            }
            continue;
        }
        if indent(line) <= 3 {
            let first = line.split_whitespace().next().unwrap_or_default();
            let address = clean_address(first.trim_end_matches(':')).or_else(|| find_address(line));
            if let Some(address) = address {
                out.push(Found {
                    address,
                    delayed,
                    ..Found::default()
                });
            }
        } else if let Some(current) = out.last_mut() {
            append(&mut current.diagnostic, line);
        }
    }
    out
}

/// Sendmail: `----- The following addresses had permanent fatal errors -----`,
/// then `<addr>` lines with `(reason: ...)` under them; the session transcript
/// gives the remote host (`... while talking to host.:`) and fills a missing
/// reason from a reply line that names the address.
fn sendmail(notice: &Notice<'_>) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut section: Option<bool> = None; // Some(delayed) inside an address list
    let mut remote = None;
    for (line, lower) in notice.pairs() {
        if out.len() >= MAX_FOUND {
            break;
        }
        if lower.contains("the following addresses had permanent fatal errors") {
            section = Some(false);
            continue;
        }
        if lower.contains("the following addresses had transient non-fatal errors") {
            section = Some(true);
            continue;
        }
        if lower.contains("while talking to ") && remote.is_none() {
            remote = find_remote_host(line);
        }
        let Some(delayed) = section else {
            continue;
        };
        if line.trim().is_empty() || line.trim_start().starts_with("-----") {
            section = None;
            continue;
        }
        if !is_indented(line) {
            if let Some(address) = clean_address(line.trim()) {
                out.push(Found {
                    address,
                    delayed,
                    ..Found::default()
                });
            }
        } else if let Some(current) = out.last_mut()
            && let Some(at) = lower.find("(reason:")
        {
            let reason = line.get(at + "(reason:".len()..).unwrap_or_default();
            append(&mut current.diagnostic, reason.trim().trim_end_matches(')'));
        } else if let Some(current) = out.last_mut()
            && let Some(at) = lower.find("(expanded from:")
        {
            // An alias expanded here: the alias is what we sent to.
            let from = line.get(at + "(expanded from:".len()..).unwrap_or_default();
            if let Some(address) = clean_address(from.trim().trim_end_matches(')'))
                && !notice.excluded(&address)
            {
                current.address = address;
            }
        }
    }
    // Transcript reply lines (`<<< 550 5.1.1 <a@b>... User unknown`), lower-cased
    // once, to fill a missing reason.
    let replies: Vec<(&str, &str)> = notice
        .pairs()
        .map(|(l, lower)| (l.trim_start_matches(['<', ' ']), lower))
        .filter(|(l, _)| find_smtp_code(l).is_some_and(|c| c >= 400))
        .take(MAX_TRANSCRIPT_REPLIES)
        .collect();
    for f in &mut out {
        f.remote.clone_from(&remote);
        if f.diagnostic.is_empty() {
            let address = f.address.to_ascii_lowercase();
            if let Some((reply, _)) = replies.iter().find(|(_, lower)| lower.contains(&address)) {
                append(&mut f.diagnostic, reply);
            }
        }
    }
    out
}

/// Exchange / Office 365: the administrators' section has a bare address line
/// followed by `Remote Server returned '550 5.1.10 ...'` (or an older
/// `#550 5.1.1 ...##` line); the users' section lists addresses under
/// `Delivery has failed to these recipients or groups:` with a human
/// explanation. Newer notices say `Your message to X couldn't be delivered.`
fn exchange(notice: &Notice<'_>) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut section = None; // Some(delayed) in the users' list
    let mut admin = false;
    let mut current: Option<usize> = None;
    for (line, lower) in notice.pairs() {
        let trimmed = line.trim();
        if lower.contains("delivery has failed to these recipients or groups") {
            (section, admin, current) = (Some(false), false, None);
            continue;
        }
        if lower.contains("delivery is delayed to these recipients or groups") {
            (section, admin, current) = (Some(true), false, None);
            continue;
        }
        if lower.contains("diagnostic information for administrators") {
            (section, admin, current) = (None, true, None);
            continue;
        }
        if lower.starts_with("original message headers") {
            break;
        }
        if let Some(at) = lower.find("your message to ")
            && lower.contains("couldn't be delivered")
            && let Some(address) = find_address(line.get(at..).unwrap_or_default())
        {
            current = upsert(&mut out, address, false);
            continue;
        }
        if admin {
            if let Some(address) = clean_address(trimmed) {
                let delayed = out.iter().any(|f| f.delayed);
                current = upsert(&mut out, address, delayed);
            } else if let Some(f) = current.and_then(|i| out.get_mut(i)) {
                if let Some(at) = lower.find("remote server returned") {
                    let reply = line
                        .get(at + "remote server returned".len()..)
                        .unwrap_or_default();
                    f.diagnostic = reply.trim().trim_matches('\'').to_owned();
                } else if trimmed.starts_with('#') && find_smtp_code(trimmed).is_some() {
                    f.diagnostic = trimmed.trim_matches('#').trim().to_owned();
                }
            }
            continue;
        }
        if let Some(delayed) = section {
            if trimmed.is_empty() {
                continue;
            }
            // `a@b<mailto:a@b>` or `Display Name (a@b)`, not a sentence.
            let looks_like_address_line = trimmed.contains('@')
                && trimmed.split_whitespace().count() <= MAX_ADDRESS_LINE_WORDS
                && trimmed.len() <= 2 * super::fields::MAX_ADDRESS_LEN;
            if looks_like_address_line && let Some(address) = find_address(trimmed) {
                current = upsert(&mut out, address, delayed);
            } else if let Some(f) = current.and_then(|i| out.get_mut(i))
                && f.diagnostic.is_empty()
            {
                append(&mut f.diagnostic, trimmed);
            }
        }
    }
    out
}

/// Index of `address` in `out`, adding it when new; None once `MAX_FOUND`
/// addresses are collected.
fn upsert(out: &mut Vec<Found>, address: String, delayed: bool) -> Option<usize> {
    if let Some(i) = out
        .iter()
        .position(|f| f.address.eq_ignore_ascii_case(&address))
    {
        return Some(i);
    }
    if out.len() >= MAX_FOUND {
        return None;
    }
    out.push(Found {
        address,
        delayed,
        ..Found::default()
    });
    Some(out.len() - 1)
}

/// Gmail: `Your message wasn't delivered to X because ...`, `There was a
/// temporary problem delivering your message to X.`, or the older
/// `Delivery to the following recipient failed permanently:` followed by the
/// address. The remote reply follows `The response from the remote server
/// was:` / `The response was:` / `Technical details of ... failure:`.
fn gmail(notice: &Notice<'_>) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut expect_address: Option<bool> = None;
    let mut in_response = false;
    let mut response = String::new();
    for (line, lower) in notice.pairs() {
        if in_response {
            if line.trim().is_empty() {
                if !response.is_empty() {
                    in_response = false;
                }
            } else {
                append(&mut response, line);
            }
            continue;
        }
        if let Some(delayed) = expect_address {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(address) = find_address(line) {
                upsert(&mut out, address, delayed);
            }
            expect_address = None;
            continue;
        }
        let phrases = [
            ("your message wasn't delivered to ", false),
            (
                "there was a temporary problem delivering your message to ",
                true,
            ),
        ];
        for (phrase, delayed) in phrases {
            if let Some(at) = lower.find(phrase)
                && let Some(address) =
                    find_address(line.get(at + phrase.len()..).unwrap_or_default())
            {
                upsert(&mut out, address, delayed);
            }
        }
        if lower.contains("delivery to the following recipient failed permanently") {
            expect_address = Some(false);
        } else if lower.contains("delivery to the following recipient has been delayed") {
            expect_address = Some(true);
        } else if lower.contains("the response from the remote server was:")
            || lower.trim() == "the response was:"
            || lower.contains("technical details of permanent failure:")
            || lower.contains("the error that the other server returned was:")
            || lower.contains("technical details of temporary failure:")
        {
            in_response = true;
        }
    }
    for f in &mut out {
        if f.diagnostic.is_empty() {
            f.diagnostic.clone_from(&response);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one pass finds what a search per marker finds, overlaps too.
    #[test]
    fn one_pass_finds_every_marker_as_one_search_each_did() {
        let one_by_one = |text: &str| Marked {
            bounce: BOUNCE_MARKERS.iter().any(|m| text.contains(m)),
            permanent: PERMANENT_MARKERS.iter().any(|m| text.contains(m)),
            delayed: DELAY_MARKERS.iter().any(|m| text.contains(m)),
        };
        let every = [BOUNCE_MARKERS, PERMANENT_MARKERS, DELAY_MARKERS].concat();
        for m in &every {
            let text = format!("hello\nsaid: {m} here\nbye");
            assert_eq!(marked(&text), one_by_one(&text), "{m}");
        }
        let all = every.join(" ");
        assert_eq!(
            marked(&all),
            Marked {
                bounce: true,
                permanent: true,
                delayed: true
            }
        );
        assert_eq!(marked("nothing to see"), Marked::default());
        // MDaemon: a bounce marker that starts with a permanent one.
        let mdaemon = marked("the following: permanent fatal delivery errors");
        assert!(mdaemon.bounce && mdaemon.permanent, "{mdaemon:?}");
    }

    fn ctx(subject: &str, from: &str) -> Context {
        Context {
            subject: subject.to_owned(),
            from: from.to_owned(),
            exclude: Vec::new(),
        }
    }

    fn run(text: &str) -> Scan {
        scan(
            text,
            &ctx("", "MAILER-DAEMON@mx.example.net"),
            &Limits::default(),
        )
    }

    type Summary = (String, Option<DsnAction>, Option<String>, Option<u16>);

    fn summary(scan: &Scan) -> Vec<Summary> {
        scan.recipients
            .iter()
            .map(|r| (r.recipient.clone(), r.action, r.status.clone(), r.smtp_code))
            .collect()
    }

    #[test]
    fn postfix_lines() {
        let s = run(
            "This is the mail system at host mx.example.net.\n\n<a@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1\n    <a@example.com>: user unknown (in reply to RCPT TO command)\n\n<b@example.com> (expanded from <list@example.org>): mailbox full\n",
        );
        assert_eq!(s.reporting_mta.as_deref(), Some("mx.example.net"));
        assert_eq!(
            summary(&s),
            vec![
                (
                    "a@example.com".into(),
                    Some(DsnAction::Failed),
                    Some("5.1.1".into()),
                    Some(550)
                ),
                ("b@example.com".into(), Some(DsnAction::Failed), None, None),
            ]
        );
        assert_eq!(
            s.recipients[0].remote_mta.as_deref(),
            Some("mx.example.com")
        );
    }

    #[test]
    fn not_a_bounce_without_markers() {
        let s = scan(
            "Hello, see you tomorrow.\n<a@example.com>: hi\n",
            &ctx("Re: lunch", "bob@example.com"),
            &Limits::default(),
        );
        assert!(!s.is_bounce);
        assert!(s.recipients.is_empty());
    }

    #[test]
    fn exim_delay() {
        let s = run(
            "This message was created automatically by mail delivery software.\n\nA message that you sent has not yet been delivered to one or more of its\nrecipients after more than 24 hours on the queue on mx.example.net.\n\nThe address to which the message has not yet been delivered is:\n\n  carol@example.com\n    host mx.example.com [192.0.2.7]\n    Delay reason: SMTP error from remote mail server after RCPT TO:<carol@example.com>:\n    451 4.3.0 try again later\n\nNo action is required on your part.\n",
        );
        assert_eq!(
            summary(&s),
            vec![(
                "carol@example.com".into(),
                Some(DsnAction::Delayed),
                Some("4.3.0".into()),
                Some(451)
            )]
        );
    }

    #[test]
    fn copy_marker_cuts_notice_and_yields_header() {
        let s = run(
            "Hi. This is the qmail-send program at mx.example.net.\n\n<d@example.com>:\nRemote host said: 550 no such user\n\n--- Below this line is a copy of the message.\n\nReturn-Path: <x@lists.example.org>\nMessage-ID: <1@lists.example.org>\n\n<e@example.com>: fake\n",
        );
        assert_eq!(s.recipients.len(), 1);
        assert_eq!(
            s.original_header_text.as_deref(),
            Some("Return-Path: <x@lists.example.org>\nMessage-ID: <1@lists.example.org>")
        );
    }

    #[test]
    fn exchange_user_section_only() {
        let s = run(
            "Delivery is delayed to these recipients or groups:\n\nRosa Example (rosa@example.com)\nThe recipient's mailbox is full. Contact rosa@example.com directly, or try again later today.\n\n",
        );
        assert_eq!(
            summary(&s),
            vec![(
                "rosa@example.com".into(),
                Some(DsnAction::Delayed),
                None,
                None
            )]
        );
        assert!(
            s.recipients[0]
                .diagnostic
                .as_deref()
                .unwrap_or_default()
                .starts_with("The recipient's mailbox is full")
        );
    }

    #[test]
    fn gmail_old_format() {
        let s = run(
            "Delivery to the following recipient failed permanently:\n\n     uwe@example.com\n\nTechnical details of permanent failure:\nGoogle tried to deliver your message, but it was rejected by the server.\nThe error that the other server returned was:\n550 5.1.1 <uwe@example.com>: user unknown\n\n",
        );
        assert_eq!(
            summary(&s),
            vec![(
                "uwe@example.com".into(),
                Some(DsnAction::Failed),
                Some("5.1.1".into()),
                Some(550)
            )]
        );
    }

    #[test]
    fn recipients_are_capped() {
        let mut text = String::from("This is the mail system at host a.example.\n\n");
        for i in 0..300 {
            text.push_str(&format!("<u{i}@example.com>: 550 no\n"));
        }
        let limits = Limits {
            max_recipients: 10,
            ..Limits::default()
        };
        let s = scan(&text, &ctx("", ""), &limits);
        assert_eq!(s.recipients.len(), 10);
        assert!(s.truncated);
    }
}
