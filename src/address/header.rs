//! Mailboxes in an address header such as `From:` (RFC 5322 §3.4).
//!
//! The forged-sender check needs every mailbox, never "the first one"
//! (CVE-2019-16378 class): display names, comments, quoted strings, groups
//! and several mailboxes are all handled. A header that does not parse
//! falls back to a scan for anything shaped like `local@domain`, so a
//! malformed header cannot hide a list address.

use super::Address;

/// The most mailboxes [`mailboxes_in_header`] returns; the forged-sender
/// check uses [`visit_mailboxes`], which sees every one.
const MAX_MAILBOXES: usize = 100;

/// Returns (up to 100 of) the mailboxes named in an address header value.
/// Malformed input never fails: it yields whatever address-shaped tokens it
/// holds.
pub fn mailboxes_in_header(value: &str) -> Vec<Address> {
    let mut out = Vec::new();
    visit_mailboxes(value, |a| {
        if out.len() < MAX_MAILBOXES {
            out.push(a);
        }
    });
    out
}

/// Calls `visit` for every mailbox in the value, however many there are
/// (work is linear in the value's length; nothing is kept). A value that
/// does not parse is scanned for address-shaped tokens as well, so some
/// mailboxes may be visited twice.
pub fn visit_mailboxes(value: &str, mut visit: impl FnMut(Address)) {
    if parse_strict(value, &mut visit).is_none() {
        scan_tokens(value, &mut visit);
    }
}

/// A strict-ish parse; `None` when the structure is broken.
fn parse_strict(value: &str, out: &mut dyn FnMut(Address)) -> Option<()> {
    // Text of the current mailbox outside comments, and an angle address.
    let mut plain = String::new();
    let mut angle: Option<String> = None;
    let mut chars = value.chars().peekable();
    let mut in_group = false;

    let finish = |plain: &mut String, angle: &mut Option<String>, out: &mut dyn FnMut(Address)| {
        let spec = match angle.take() {
            Some(a) => a,
            None => std::mem::take(plain),
        };
        plain.clear();
        let spec = spec.trim();
        if spec.is_empty() {
            return Some(());
        }
        let addr = super::parse_path(spec).ok().flatten()?;
        out(addr);
        Some(())
    };

    while let Some(c) = chars.next() {
        match c {
            '(' => skip_comment(&mut chars)?,
            '"' => {
                plain.push('"');
                loop {
                    match chars.next()? {
                        '\\' => {
                            plain.push('\\');
                            plain.push(chars.next()?);
                        }
                        '"' => break,
                        other => plain.push(other),
                    }
                }
                plain.push('"');
            }
            '<' => {
                if angle.is_some() {
                    return None;
                }
                let mut inner = String::new();
                loop {
                    match chars.next()? {
                        '>' => break,
                        '(' => skip_comment(&mut chars)?,
                        '<' => return None,
                        other => inner.push(other),
                    }
                }
                // The display name before an angle address is not an address.
                plain.clear();
                angle = Some(inner);
            }
            ':' if angle.is_none() && !in_group => {
                // "group-name:" opens a group; the name is not an address.
                in_group = true;
                plain.clear();
            }
            ';' if in_group => {
                finish(&mut plain, &mut angle, out)?;
                in_group = false;
            }
            ',' => finish(&mut plain, &mut angle, out)?,
            '>' => return None,
            other => {
                if angle.is_some() && !other.is_whitespace() {
                    // Text after "<addr>" other than a comment.
                    return None;
                }
                plain.push(other);
            }
        }
    }
    if in_group {
        return None;
    }
    finish(&mut plain, &mut angle, out)?;
    // A bare mailbox with a display name but no angle brackets is broken.
    Some(())
}

fn skip_comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<()> {
    let mut depth = 1usize;
    while depth > 0 {
        match chars.next()? {
            '\\' => {
                chars.next()?;
            }
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
    }
    Some(())
}

/// Every `x@y` token, delimited by characters that cannot stand in a bare
/// address.
fn scan_tokens(value: &str, out: &mut dyn FnMut(Address)) {
    value
        .split(|c: char| c.is_whitespace() || "<>(),;:\"[]".contains(c))
        .filter(|t| t.contains('@'))
        .filter_map(|t| Address::parse(t).ok())
        .for_each(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &str) -> Vec<String> {
        mailboxes_in_header(v).iter().map(Address::key).collect()
    }

    #[test]
    fn header_forms() {
        let cases: &[(&str, &[&str])] = &[
            ("a@b.example", &["a@b.example"]),
            (" Alice <Alice@B.example>", &["alice@b.example"]),
            (
                "\"Doe, John\" <j@x.example>, k@y.example",
                &["j@x.example", "k@y.example"],
            ),
            ("(comment) a@b.example (more)", &["a@b.example"]),
            (
                "Team: a@x.example, B <b@y.example>;",
                &["a@x.example", "b@y.example"],
            ),
            ("Undisclosed recipients:;", &[]),
            ("=?utf-8?q?Caf=C3=A9?= <c@z.example>", &["c@z.example"]),
            (
                "\"members@lists.example.org\" <evil@x.example>",
                &["evil@x.example"],
            ),
            ("", &[]),
        ];
        for (value, want) in cases {
            assert_eq!(keys(value), *want, "{value}");
        }
    }

    #[test]
    fn malformed_falls_back_to_scan() {
        // Unbalanced brackets and quotes still reveal the address tokens.
        assert_eq!(
            keys("Evil <members@lists.example.org"),
            ["members@lists.example.org"]
        );
        assert_eq!(keys("\"x <a@b.example>"), ["a@b.example"]);
        assert_eq!(
            keys("<a@b.example> junk c@d.example"),
            ["a@b.example", "c@d.example"]
        );
    }

    #[test]
    fn every_mailbox_is_visited_however_many() {
        let mut value: Vec<String> = (0..10_000).map(|i| format!("a{i}@example.net")).collect();
        value.push("members@lists.example.org".into());
        let mut seen = 0;
        let mut last = None;
        visit_mailboxes(&value.join(", "), |a| {
            seen += 1;
            last = Some(a.key());
        });
        assert_eq!(seen, 10_001);
        assert_eq!(last.as_deref(), Some("members@lists.example.org"));
    }

    #[test]
    fn bounded() {
        let many = vec!["a@b.example"; 10_000].join(", ");
        assert_eq!(mailboxes_in_header(&many).len(), MAX_MAILBOXES);
    }
}
