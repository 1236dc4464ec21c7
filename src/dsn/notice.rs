//! Data-described bounce layouts: the many MTAs whose notice is "a marker line,
//! then the failed addresses" or "a phrase, then the address", and the
//! free-text fallback that finds an address beside an SMTP reply.
//!
//! Each table row is a lower-case phrase with the MTAs known to write it.
//! Everything works line by line over the notice (already cut to
//! `MAX_NOTICE_LINES` by the caller), so the cost stays linear.

use super::fields::{clean_address, find_address, find_smtp_code, find_status};
use aho_corasick::AhoCorasick;
use std::sync::LazyLock;

/// Any of `patterns`, in one pass over a line: most lines of a notice name
/// none of the markers or phrases, and trying each one by one costs a
/// searcher per pattern per line.
fn any_of(patterns: &[&str]) -> Option<AhoCorasick> {
    AhoCorasick::new(patterns).ok()
}

static ANY_SECTION_MARKER: LazyLock<Option<AhoCorasick>> =
    LazyLock::new(|| any_of(SECTION_MARKERS));
static ANY_ADDRESS_AFTER: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| any_of(ADDRESS_AFTER));

/// False only when `line` surely contains none of the patterns (an
/// automaton that could not be built lets every line through).
fn may_contain(any: &LazyLock<Option<AhoCorasick>>, line: &str) -> bool {
    any.as_ref().is_none_or(|a| a.is_match(line))
}

/// Lines after a section marker that are read as its addresses and details.
const MAX_SECTION_LINES: usize = 200;

/// Lines around a reply line searched for the address it belongs to.
const FALLBACK_WINDOW: usize = 3;

/// Markers after which the failed addresses are listed one a line (possibly
/// after blank lines), each optionally followed by detail lines.
const SECTION_MARKERS: &[&str] = &[
    // Gmail 2011-2015, "Mail Delivery System" reports without a DSN part
    "delivery to the following recipients failed permanently",
    "delivery to the following recipient failed permanently",
    // IIS / Exchange 2000 SMTP service
    "delivery to the following recipients failed",
    "delivery to the following recipients has been delayed",
    // au / ezweb
    "the following recipients did not receive this message",
    // Post.Office
    "failed addresses follow",
    // Lotus Domino
    "was not delivered to:",
    // Novell GroupWise
    "undeliverable to the following",
    // KDDI
    "could not be delivered to the following recipient",
    // MessageLabs
    "unable to deliver your message to the following address",
    // Barracuda, Haraka, LSMTP, generic
    "could not be delivered to the following recipient",
    "your message could not be delivered to the following recipients",
    "cannot be delivered to the following recipients",
    // OpenSMTPD
    "the following list of recipients",
    // Exchange 5.5 IMS
    "did not reach the following recipient",
    // Exchange 2000/2003, hMailServer, Kerio
    "the following recipient(s) cannot be reached",
    "the following recipient(s) could not be reached",
    // Courier
    "cannot be delivered to the following",
    // generic university / ISP mailers
    "---- failed recipient",
];

/// Phrases directly followed (after optional spaces, `<`, quotes or
/// `[SMTP:`) by the failed address, on the same line.
const ADDRESS_AFTER: &[&str] = &[
    // Trend Micro InterScan
    "unable to deliver message to ",
    "sent <<< rcpt to:",
    // 1&1 / GMX / mail.ru
    "local mailbox ",
    // Ipswitch IMail and small ISP mailers (one line per recipient)
    "unknown user: ",
    " attempts: ",
    "user unknown: ",
    "user's mailbox is full: ",
    "mailbox is full: ",
    "invalid recipient: ",
    "no such user: ",
    // EarthLink
    "unable to deliver your message to ",
    // DragonFly dma
    "error delivering your mail to ",
    // SpamLion and filters
    "your message to ",
    // Barracuda block notice
    "your message to: ",
    // Verizon
    "addresses failed: ",
    // Mimecast, ISP postmasters, MailEnable, IceWarp
    "recipient address: ",
    "failed recipient: ",
    "recipient: ",
    // Lotus Notes (`was not delivered to:<TAB>ADDR`)
    "was not delivered to:",
    // generic
    "delivery to ",
    "failed to deliver to ",
    "original address: ",
];

/// Text after `ADDRESS_AFTER` phrases that means the line is not about a
/// failed address (e.g. `your message to X was delivered`).
const NOT_FAILURE: &[&str] = &["was delivered", "has been delivered", "succeeded"];

/// Phrases (one the same line) that make `ADDRESS_AFTER` phrases that are
/// also common in prose count only with a failure word nearby.
const WEAK_PHRASES: &[&str] = &["your message to ", "delivery to ", "recipient: "];

const FAILURE_WORDS: &[&str] = &[
    "fail",
    "not delivered",
    "undeliver",
    "unable",
    "rejected",
    "could not",
    "couldn't",
    "blocked",
];

/// A table-driven extractor: notice lines, their lower-case copies, the
/// most addresses to return.
pub(super) type Extractor = fn(&[&str], &[String], usize) -> Vec<Hit>;

/// One address found in a notice and the text about it.
#[derive(Debug, Default)]
pub(super) struct Hit {
    pub(super) address: String,
    pub(super) diagnostic: String,
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

/// The address a list line starts with: `ADDR`, `* ADDR`, `<ADDR>:`,
/// `"ADDR":`, `[SMTP:ADDR]`, `ADDR on DATE`, `ADDR (reason)`, or the X.400
/// form `c=US;...;dda:SMTP=ADDR; on DATE`. Returns the address and the rest
/// of the line.
pub(super) fn leading_address(line: &str) -> Option<(String, &str)> {
    let trimmed = line.trim();
    let lower = trimmed.to_ascii_lowercase();
    if let Some(at) = lower.find("dda:smtp=") {
        let rest = trimmed.get(at + "dda:smtp=".len()..).unwrap_or_default();
        let (addr, after) = rest.split_once(';').unwrap_or((rest, ""));
        return clean_address(addr).map(|a| (a, after));
    }
    let body = trimmed.trim_start_matches(['*', '-', '\u{2022}', ' ', '\t']);
    let body = strip_prefix_ci(body, "[smtp:").unwrap_or(body);
    let body = strip_prefix_ci(body, "smtp:").unwrap_or(body);
    let end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
    let (first, rest) = body.split_at(end);
    let first = first.trim_end_matches([':', ',', ';', ']']);
    clean_address(first).map(|a| (a, rest))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..).unwrap_or_default())
}

/// Addresses listed after a `SECTION_MARKERS` line. Non-address lines that
/// follow an address are its details; the section ends after two blank
/// lines once an address was seen, at a `---`/`===` rule, or after
/// `MAX_SECTION_LINES`.
pub(super) fn sections(lines: &[&str], lower: &[String], max: usize) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let mut i = 0;
    while i < lines.len() && out.len() < max {
        let l = lower.get(i).map_or("", String::as_str);
        i += 1;
        if !may_contain(&ANY_SECTION_MARKER, l) {
            continue;
        }
        let Some(marker) = SECTION_MARKERS.iter().find(|m| l.contains(*m)) else {
            continue;
        };
        // The marker line itself may end with the first address
        // (`was not delivered to:<TAB>a@b`, `---- Failed recipient ---- a@b`).
        let start_in_line = l
            .find(marker)
            .map(|at| at + marker.len())
            .and_then(|at| lines.get(i - 1).and_then(|line| line.get(at..)));
        if let Some(rest) = start_in_line {
            let rest = rest.trim_start_matches([':', '-', ' ', '\t', '.']);
            if let Some((address, after)) = leading_address(rest) {
                push_hit(&mut out, address, after);
            }
        }
        let mut blanks = 0;
        let mut seen = false;
        // Details after a blank line below the list belong to every listed
        // address that has none yet (Gmail's shared technical details,
        // Domino's `because:`).
        let first_hit = out.len();
        let mut shared: Vec<usize> = Vec::new();
        let end = (i + MAX_SECTION_LINES).min(lines.len());
        while i < end && out.len() < max {
            let line = lines.get(i).copied().unwrap_or_default();
            let l2 = lower.get(i).map_or("", String::as_str);
            let t = line.trim();
            if t.is_empty() {
                blanks += 1;
                if seen && blanks >= 2 {
                    break;
                }
                i += 1;
                continue;
            }
            let rule = t.starts_with("---") || t.starts_with("===");
            let subheading = ["response", "reason", "error"]
                .iter()
                .any(|w| l2.contains(w));
            if rule && (!seen || subheading) {
                // A rule under the marker, or a sub-heading of the details.
                i += 1;
                continue;
            }
            if rule || SECTION_MARKERS.iter().any(|m| l2.contains(m)) {
                break;
            }
            if let Some((address, after)) = leading_address(t) {
                seen = true;
                shared.clear();
                push_hit(&mut out, address, after);
            } else if seen {
                if blanks > 0 && shared.is_empty() {
                    shared = (first_hit..out.len())
                        .filter(|&k| out.get(k).is_some_and(|h| h.diagnostic.is_empty()))
                        .collect();
                }
                if shared.is_empty() {
                    if let Some(last) = out.last_mut() {
                        append(&mut last.diagnostic, t);
                    }
                } else {
                    for &k in &shared {
                        if let Some(h) = out.get_mut(k) {
                            append(&mut h.diagnostic, t);
                        }
                    }
                }
            }
            blanks = 0;
            i += 1;
        }
    }
    out
}

fn push_hit(out: &mut Vec<Hit>, address: String, after: &str) {
    let after = after
        .trim()
        .trim_start_matches([':', ')', '>', ';'])
        .trim_start();
    // `ADDR on DATE` (Exchange): the date is no diagnostic.
    let after = if after.to_ascii_lowercase().starts_with("on ") {
        ""
    } else {
        after
    };
    if let Some(known) = out
        .iter_mut()
        .find(|h| h.address.eq_ignore_ascii_case(&address))
    {
        append(&mut known.diagnostic, after);
        return;
    }
    let mut diagnostic = String::new();
    append(
        &mut diagnostic,
        after.trim_start_matches('(').trim_end_matches(')'),
    );
    out.push(Hit {
        address,
        diagnostic,
    });
}

/// Addresses right after an `ADDRESS_AFTER` phrase; the rest of the line
/// and the next indented or `Reason:` lines are the diagnostic.
pub(super) fn phrases(lines: &[&str], lower: &[String], max: usize) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    for (i, (line, l)) in lines.iter().zip(lower).enumerate() {
        if out.len() >= max {
            break;
        }
        if !may_contain(&ANY_ADDRESS_AFTER, l) {
            continue;
        }
        for phrase in ADDRESS_AFTER {
            let Some(at) = l.find(phrase) else { continue };
            let rest = line.get(at + phrase.len()..).unwrap_or_default();
            let rest_trim = rest.trim_start_matches([' ', '\t', '<', '"', '\'']);
            let rest_trim = strip_prefix_ci(rest_trim, "[smtp:").unwrap_or(rest_trim);
            let end = rest_trim
                .find(|c: char| c.is_whitespace() || c == '>' || c == '"' || c == '\'' || c == ']')
                .unwrap_or(rest_trim.len());
            let token = rest_trim.get(..end).unwrap_or_default();
            let Some(address) = clean_address(token.trim_end_matches([':', ',', ';', '.', ')']))
            else {
                continue;
            };
            if NOT_FAILURE.iter().any(|n| l.contains(n)) {
                continue;
            }
            if WEAK_PHRASES.contains(phrase) && !FAILURE_WORDS.iter().any(|w| l.contains(w)) {
                // `Recipient: a@b` / `Your message to a@b` count in a
                // notice only with a failure word on the line or next one.
                let next = lower.get(i + 1).map_or("", String::as_str);
                let reason_next = next.trim_start().starts_with("reason")
                    || find_smtp_code(next).is_some_and(|c| c >= 400);
                if !reason_next && !FAILURE_WORDS.iter().any(|w| next.contains(w)) {
                    continue;
                }
            }
            // The line itself (its phrase often is the reason: `Unknown
            // user: a@b`), then details on the following lines: `Reason:
            // ...`, an SMTP reply.
            let mut diagnostic = line.trim().to_owned();
            let mut took = false;
            for next in lines.iter().skip(i + 1).take(4) {
                let n = next.trim();
                let nl = n.to_ascii_lowercase();
                if n.is_empty() {
                    if took {
                        break;
                    }
                    continue;
                }
                if nl.starts_with("reason")
                    || nl.starts_with("mta response")
                    || nl.starts_with("diagnostic")
                    || nl.starts_with("error")
                    || nl.starts_with("last error")
                    || nl.starts_with("remote server replied")
                    || nl.starts_with("because")
                    || find_smtp_code(n).is_some_and(|c| c >= 400)
                    || find_status(n).is_some()
                {
                    append(&mut diagnostic, n);
                    took = true;
                } else if ADDRESS_AFTER.iter().any(|p| nl.contains(p)) {
                    break;
                }
            }
            if let Some(known) = out
                .iter_mut()
                .find(|h| h.address.eq_ignore_ascii_case(&address))
            {
                if known.diagnostic.is_empty() {
                    known.diagnostic = diagnostic;
                }
            } else {
                out.push(Hit {
                    address,
                    diagnostic,
                });
            }
            break;
        }
    }
    out
}

/// Zoho: `ADDR Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 ...`.
pub(super) fn error_code_lines(lines: &[&str], lower: &[String], max: usize) -> Vec<Hit> {
    let mut out = Vec::new();
    for (line, l) in lines.iter().zip(lower) {
        if out.len() >= max {
            break;
        }
        if !l.contains("error_code") {
            continue;
        }
        if let Some((address, rest)) = leading_address(line) {
            let mut diagnostic = String::new();
            append(&mut diagnostic, &rest.replace("ERROR_CODE :", ""));
            out.push(Hit {
                address,
                diagnostic,
            });
        }
    }
    out
}

/// True for a line that carries a failure reply: a 4xx/5xx SMTP code or a
/// 4.x.x/5.x.x status.
pub(super) fn is_failure_reply(line: &str) -> bool {
    find_smtp_code(line).is_some_and(|c| c >= 400)
        || find_status(line).is_some_and(|s| !s.starts_with('2'))
}

/// Free-text fallback for MTAs with no known layout: every failure reply
/// line, with the address on it or on a `RCPT TO:<addr>` / address line
/// within `FALLBACK_WINDOW` lines before it. Addresses in `exclude` (our
/// own envelope, the bounce's sender, the original author) never count.
pub(super) fn fallback(lines: &[&str], exclude: &[String], max: usize) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let ok = |a: &str| {
        let a = a.to_ascii_lowercase();
        let local = a.split('@').next().unwrap_or_default();
        !exclude.iter().any(|e| e.eq_ignore_ascii_case(&a))
            && !matches!(local, "mailer-daemon" | "postmaster" | "root" | "abuse")
    };
    for (i, line) in lines.iter().enumerate() {
        if out.len() >= max {
            break;
        }
        if !is_failure_reply(line) {
            continue;
        }
        let mut address = find_address(line).filter(|a| ok(a));
        if address.is_none() {
            let from = i.saturating_sub(FALLBACK_WINDOW);
            for prev in lines.get(from..i).unwrap_or_default().iter().rev() {
                if let Some(a) = find_address(prev).filter(|a| ok(a)) {
                    address = Some(a);
                    break;
                }
            }
        }
        let Some(address) = address else { continue };
        if out.iter().any(|h| h.address.eq_ignore_ascii_case(&address)) {
            continue;
        }
        let mut diagnostic = String::new();
        append(
            &mut diagnostic,
            line.trim_start_matches(['<', '-', ' ', '\t']),
        );
        out.push(Hit {
            address,
            diagnostic,
        });
    }
    out
}

/// Text of an HTML part with tags removed: `<br>`, `<p>`, `<div>` and `<tr>`
/// end a line; `&lt;`, `&gt;`, `&amp;`, `&quot;`, `&nbsp;` are decoded.
/// Linear; output never longer than the input.
pub(super) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_decoded(&mut out, rest.get(..lt).unwrap_or_default());
        let after = rest.get(lt + 1..).unwrap_or_default();
        let Some(gt) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after.get(..gt).unwrap_or_default().trim_start_matches('/');
        let name: String = tag
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        rest = after.get(gt + 1..).unwrap_or_default();
        if matches!(name.as_str(), "br" | "p" | "div" | "tr" | "li") {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            // `<BR>` followed by a line end is one line end.
            rest = rest
                .strip_prefix("\r\n")
                .or_else(|| rest.strip_prefix('\n'))
                .unwrap_or(rest);
        }
    }
    push_decoded(&mut out, rest);
    out
}

fn push_decoded(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or_default());
        let after = rest.get(amp..).unwrap_or_default();
        let entities = [
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&amp;", "&"),
            ("&quot;", "\""),
            ("&nbsp;", " "),
            ("&#39;", "'"),
        ];
        match entities.iter().find(|(e, _)| after.starts_with(e)) {
            Some((e, r)) => {
                out.push_str(r);
                rest = after.get(e.len()..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_ascii_lowercase()).collect()
    }

    #[test]
    fn leading_address_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("  a@example.com", Some("a@example.com")),
            ("* a@example.com", Some("a@example.com")),
            ("<a@example.com>:", Some("a@example.com")),
            ("\"a@example.com\":", Some("a@example.com")),
            ("[SMTP:a@example.com]", Some("a@example.com")),
            ("a@example.com on Mon, 3 Mar 2025", Some("a@example.com")),
            (
                "c=US;a= ;p=X;o=Y;dda:SMTP=a@example.com; on Mon",
                Some("a@example.com"),
            ),
            ("The mail system", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                leading_address(line).map(|(a, _)| a).as_deref(),
                *want,
                "{line}"
            );
        }
    }

    #[test]
    fn section_list_with_details() {
        let lines = [
            "Delivery to the following recipients failed permanently:",
            "",
            "     * a@example.com",
            "     * b@example.net",
            "",
            "Technical details of permanent failure:",
        ];
        let hits = sections(&lines, &lower(&lines), 10);
        let got: Vec<_> = hits.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(got, ["a@example.com", "b@example.net"]);
    }

    #[test]
    fn phrase_needs_failure_word_when_weak() {
        let lines = ["Your message to a@example.com was delivered."];
        assert!(phrases(&lines, &lower(&lines), 10).is_empty());
        let lines = ["Your message to <a@example.com> was not delivered."];
        assert_eq!(phrases(&lines, &lower(&lines), 10).len(), 1);
        let lines = ["Unknown user: a@example.com"];
        assert_eq!(
            phrases(&lines, &lower(&lines), 10)[0].address,
            "a@example.com"
        );
    }

    #[test]
    fn fallback_skips_excluded() {
        let lines = [
            "RCPT TO:<list-bounces@lists.example.org>",
            "550 5.1.1 <list-bounces@lists.example.org> no",
            "--> RCPT To:<m@example.com>",
            "<-- 550 5.1.1 User unknown",
        ];
        let hits = fallback(&lines, &["list-bounces@lists.example.org".into()], 10);
        let got: Vec<_> = hits.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(got, ["m@example.com"]);
    }

    #[test]
    fn html_text() {
        assert_eq!(
            html_to_text("<p>a &lt;x@y.z&gt;:<BR>\nline</p>"),
            "\na <x@y.z>:\nline\n"
        );
        assert_eq!(html_to_text("x < y"), "x ");
    }
}
