//! Mailboxes in an address header such as `From:` (RFC 5322 §3.4).
//!
//! The forged-sender check needs every mailbox, never "the first one"
//! (CVE-2019-16378 class): display names, comments, quoted strings, groups
//! and several mailboxes are all handled. Each mailbox is read as mail
//! clients and Python's email package (Mailman) read it: CFWS (comments,
//! folded whitespace) anywhere between tokens, `members @ lists.example.org`,
//! quoted local parts and an obsolete route in `<@a,@b:u@d>` all name
//! `u@d`. A domain literal (`u@[lists.example.org]`) is kept as written:
//! Python reads it so, and it is not the domain.
//!
//! A header that does not parse, or whose display name holds a bare `@`
//! (Python's headerregistry reads that as the mailbox), falls back to scans
//! that read more than any real reader, split addresses included, so a
//! malformed header cannot hide a list address.

use super::Address;
use std::collections::HashSet;

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
/// (work is linear in the value's length; only the fallback keeps the keys
/// it has visited). A value that does not parse is scanned for
/// address-shaped tokens as well, so some mailboxes may be visited twice.
pub fn visit_mailboxes(value: &str, mut visit: impl FnMut(Address)) {
    let Some(decoded) = decode_address_words(value) else {
        visit_read(value, &mut visit);
        return;
    };
    // Encoded-words that spell address text (`=?utf-8?q?members?=@...`):
    // Python's headerregistry and some mail clients decode them there
    // (Mailsploit), so the decoded reading is seen as well, each mailbox
    // once.
    let mut seen = HashSet::new();
    visit_read(value, &mut |a: Address| {
        seen.insert(a.key());
        visit(a);
    });
    visit_read(&decoded, &mut |a: Address| {
        if !seen.contains(&a.key()) {
            visit(a);
        }
    });
}

/// [`visit_mailboxes`] without encoded-word decoding.
fn visit_read(value: &str, visit: &mut dyn FnMut(Address)) {
    if parse_strict(value, visit).is_none() {
        // The three scans overlap; each mailbox once, so that copies of one
        // address do not crowd out another where callers keep a few.
        let mut seen = HashSet::new();
        let mut once = |a: Address| {
            if seen.insert(a.key()) {
                visit(a);
            }
        };
        scan_tokens(value, &mut once);
        scan_compacted(value, Comments::Drop, &mut once);
        scan_compacted(value, Comments::Separate, &mut once);
    }
}

/// The value with each RFC 2047 encoded-word (`=?charset?q|b?text?=`) whose
/// decoded text could stand inside an address (atext and dots only)
/// replaced by that text; `None` when there is none. Words that decode to
/// anything else (an `@`, spaces, brackets) stay as they are: such a word
/// is a display name, which no reader takes for the mailbox.
fn decode_address_words(value: &str) -> Option<String> {
    if !value.contains("=?") {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut changed = false;
    while let Some(at) = rest.find("=?") {
        out.push_str(&rest[..at]);
        let word = &rest[at..];
        match decode_word(word) {
            Some((text, len))
                if !text.is_empty() && text.chars().all(|c| c == '.' || is_atext(c)) =>
            {
                out.push_str(&text);
                rest = &word[len..];
                changed = true;
            }
            _ => {
                out.push_str("=?");
                rest = &word[2..];
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Decodes one encoded-word at the start of `s`: its text (bytes read as
/// UTF-8, lossily; only ASCII matters for an address) and its length.
fn decode_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, after) = body.split_once('?')?;
    let (enc, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let text = &after[..end];
    let bad = |t: &str| t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '?');
    if charset.is_empty()
        || charset.contains(char::is_whitespace)
        || enc.len() != 1
        || text.contains(char::is_whitespace)
        || bad(enc)
    {
        return None;
    }
    let bytes = match enc {
        "q" | "Q" => {
            let mut out = Vec::with_capacity(text.len());
            let mut b = text.bytes();
            while let Some(c) = b.next() {
                match c {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex = [b.next()?, b.next()?];
                        let hex = std::str::from_utf8(&hex).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                    }
                    c => out.push(c),
                }
            }
            out
        }
        "b" | "B" => base64_decode(text)?,
        _ => return None,
    };
    let len = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), len))
}

/// Standard base64 (padding optional).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A strict-ish parse; `None` when the structure is broken.
fn parse_strict(value: &str, out: &mut dyn FnMut(Address)) -> Option<()> {
    // Text of the current mailbox outside comments, and an angle address.
    let mut plain = String::new();
    let mut angle: Option<String> = None;
    let mut chars = value.chars().peekable();
    let mut in_group = false;
    // An '@' outside quotes in the text before "<" or a group's ':': a
    // display name that Python's headerregistry reads as the mailbox, or a
    // mailbox a group would swallow. Treated as broken.
    let mut bare_at = false;

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
        if !rfc5322_mailbox(spec) {
            return None;
        }
        let addr = super::parse_path(spec).ok().flatten()?;
        out(addr);
        Some(())
    };

    while let Some(c) = chars.next() {
        match c {
            '(' => {
                // A comment separates what is on either side, like a space.
                skip_comment(&mut chars)?;
                plain.push(' ');
            }
            '"' => copy_quoted(&mut chars, &mut plain)?,
            '<' => {
                if angle.is_some() || bare_at {
                    return None;
                }
                let mut inner = String::new();
                loop {
                    match chars.next()? {
                        '>' => break,
                        '(' => {
                            skip_comment(&mut chars)?;
                            inner.push(' ');
                        }
                        '"' => copy_quoted(&mut chars, &mut inner)?,
                        '<' => return None,
                        other => inner.push(other),
                    }
                }
                // The display name before an angle address is not an address.
                plain.clear();
                angle = Some(inner);
            }
            ':' if angle.is_none() && !in_group => {
                // "group-name:" opens a group; the name is not an address,
                // unless it looks like one.
                if bare_at {
                    return None;
                }
                in_group = true;
                plain.clear();
                bare_at = false;
            }
            ';' if in_group => {
                finish(&mut plain, &mut angle, out)?;
                in_group = false;
                bare_at = false;
            }
            ',' => {
                finish(&mut plain, &mut angle, out)?;
                bare_at = false;
            }
            '>' => return None,
            // ';' outside a group.
            ';' => return None,
            other => {
                if angle.is_some() && !other.is_whitespace() {
                    // Text after "<addr>" other than a comment.
                    return None;
                }
                bare_at |= other == '@';
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

/// Copies a quoted string, quotes and quoted-pairs included, after its
/// opening quote; `None` when it never closes or holds a line break (see
/// [`skip_comment`]).
fn copy_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    to: &mut String,
) -> Option<()> {
    to.push('"');
    loop {
        match chars.next()? {
            '\\' => {
                to.push('\\');
                to.push(chars.next()?);
            }
            '"' => break,
            '\r' | '\n' => return None,
            other => to.push(other),
        }
    }
    to.push('"');
    Some(())
}

/// RFC 5322 atext, with UTF-8 allowed (RFC 6532).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
}

/// True when a mailbox (comments already gone) has the RFC 5322 shape
/// `[@route:] words-and-dots @ atoms-and-dots-or-[literal]` with only spaces
/// and tabs between tokens. Anything else is read differently by different
/// readers: `a@b.example. x @ y` is one address to headerregistry and
/// `x@y` to getaddresses (which Mailman uses); a line break inside an
/// address ends it for getaddresses; `)x@y` or `x\@y` are junk and an
/// address to some. Such a value is broken, and the fallback reads it all.
fn rfc5322_mailbox(spec: &str) -> bool {
    let spec = spec.trim_matches([' ', '\t']);
    // An obsolete route, "@a,@b:", up to the first ':'.
    let spec = match spec.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((route, rest)) if !route.contains('"') => rest,
        _ => spec,
    };
    let mut ats = 0usize;
    let mut in_quote = false;
    let mut literal = 0u8; // 0 none, 1 inside, 2 closed
    let mut in_domain = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if in_quote {
            match c {
                '\\' if chars.next().is_none() => return false,
                '"' => in_quote = false,
                '\r' | '\n' => return false,
                _ => {}
            }
            continue;
        }
        if literal == 1 {
            match c {
                ']' => literal = 2,
                '[' | '\\' | '\r' | '\n' => return false,
                _ => {}
            }
            continue;
        }
        let domain_started = in_domain;
        if ats > 0 && c != ' ' && c != '\t' {
            in_domain = true;
        }
        match c {
            ' ' | '\t' => {}
            _ if literal == 2 => return false,
            '"' if ats == 0 => in_quote = true,
            '@' => ats += 1,
            // A domain literal is the whole domain.
            '[' if ats == 1 && !domain_started => literal = 1,
            '.' => {}
            c if is_atext(c) => {}
            _ => return false,
        }
    }
    ats == 1 && !in_quote && literal != 1
}

/// Skips a comment after its `(`; `None` when it never closes or holds a
/// line break (getaddresses ends a comment or quoted string at CR, so what
/// follows is an address to Mailman).
fn skip_comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<()> {
    let mut depth = 1usize;
    while depth > 0 {
        match chars.next()? {
            '\\' => {
                chars.next()?;
            }
            '(' => depth += 1,
            ')' => depth -= 1,
            '\r' | '\n' => return None,
            _ => {}
        }
    }
    Some(())
}

/// How [`scan_compacted`] treats parentheses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Comments {
    /// As comments (nested, with quoted-pairs), read like whitespace.
    Drop,
    /// As separators: an unclosed `(` may be no comment to some reader.
    Separate,
}

/// Characters that end an address-shaped run in [`scan_compacted`].
fn is_run_boundary(c: char) -> bool {
    matches!(c, ' ' | '<' | '>' | '(' | ')' | ',' | ';' | ':') || (c.is_control() && c != JOIN)
}

/// Stands for whitespace dropped inside a run by [`scan_compacted`]; a
/// control character, so it is never part of an address.
const JOIN: char = '\u{1}';

/// Every `x@y` a CFWS-tolerant reader could see: whitespace, comments,
/// quotes and brackets next to `@` or `.` are dropped (`members (c) @ lists
/// . example . org`, `"members"@[lists.example.org]`), elsewhere they
/// separate, and what remains is cut into runs at characters no bare
/// address holds. Where whitespace was dropped, the
/// shorter reading is tried as well (`a@b.example. members @ x`). Reads more
/// than any real reader does; over-matching only leads to the forged-sender
/// check. Linear work.
fn scan_compacted(value: &str, comments: Comments, out: &mut dyn FnMut(Address)) {
    let mut compact = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    let mut pending_space = false;
    while let Some(c) = chars.next() {
        match c {
            '(' if comments == Comments::Drop => {
                let mut depth = 1usize;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        // getaddresses ends a comment there.
                        Some('\r' | '\n') | None => break,
                        Some(_) => {}
                    }
                }
                pending_space = true;
            }
            // A stray ')' (its comment ended at a line break) is CFWS too.
            ')' if comments == Comments::Drop => pending_space = true,
            // Dropped: a reader that unescapes sees "m\embers" as "members".
            '\\' if comments == Comments::Drop => {}
            // Like whitespace: "\"members\"@x", "x@[y]" and "x@y\"z\"" hold x@y.
            c if c.is_whitespace() || matches!(c, '"' | '\\' | '[' | ']') => pending_space = true,
            c => {
                if pending_space {
                    // A space between two words separates them; next to '@'
                    // or '.' it may be CFWS inside one address.
                    let joins = matches!(c, '@' | '.') || compact.ends_with(['@', '.']);
                    compact.push(if joins { JOIN } else { ' ' });
                    pending_space = false;
                }
                compact.push(c);
            }
        }
    }
    for run in compact.split(is_run_boundary) {
        let mut parts = run.split('@');
        let Some(mut left) = parts.next() else {
            continue;
        };
        for right in parts {
            let local = left.trim_end_matches(JOIN);
            let domain = right.trim_start_matches(JOIN);
            let short_local = local.rsplit(JOIN).next().unwrap_or(local);
            let short_domain = domain.split(JOIN).next().unwrap_or(domain);
            // And the plainest tail: "=?utf-8?q?x?=members" may be
            // read as junk then "members".
            let plain_local = short_local
                .rsplit(|c: char| !(c.is_alphanumeric() || "._+-".contains(c)))
                .next()
                .unwrap_or(short_local);
            let joined = |s: &str| s.replace(JOIN, "");
            for (l, d) in [
                (joined(local), joined(domain)),
                (short_local.to_owned(), joined(domain)),
                (joined(local), short_domain.to_owned()),
                (short_local.to_owned(), short_domain.to_owned()),
                (plain_local.to_owned(), joined(domain)),
                (plain_local.to_owned(), short_domain.to_owned()),
            ] {
                if let Ok(a) = Address::new(&l, &d) {
                    out(a);
                }
            }
            left = right;
        }
    }
}

/// Every `x@y` token, delimited by characters that cannot stand in a bare
/// address.
fn scan_tokens(value: &str, out: &mut dyn FnMut(Address)) {
    value
        .split(|c: char| c.is_whitespace() || "<>(),;:\"[]\\".contains(c))
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

    /// RFC 5322 CFWS and obsolete syntax, as Python's email package
    /// (`headerregistry`, Mailman) and mail clients read them.
    #[test]
    fn cfws_and_obsolete_forms() {
        const LIST: &str = "members@lists.example.org";
        let as_list: &[&str] = &[
            "members @ lists.example.org",
            "members (c) @lists.example.org",
            "Evil <members @lists.example.org>",
            "members@lists (x) .example.org",
            "members @ lists . example . org",
            "\"members\"@lists.example.org",
            "Evil <\"members\"@lists.example.org>",
            "Evil <@route,@x:members@lists.example.org>",
            "Evil <@route, @x : members @ lists.example.org>",
            "members\r\n @lists.example.org",
            "members@\r\n\tlists.example.org",
            "Evil\r\n <members@lists.example.org\r\n >",
            "Evil (a (nested) comment) <members(x)@lists.example.org (y)>",
            "MEMBERS@Lists.Example.ORG.",
            "g: members (x) @lists.example.org;",
        ];
        for value in as_list {
            assert_eq!(keys(value), [LIST], "{value:?}");
        }
        // A domain literal is not the domain: Python reads
        // "[lists.example.org]", and nothing delivers it to the list.
        assert_eq!(
            keys("members@[lists.example.org]"),
            ["members@[lists.example.org]"]
        );
        // Several mailboxes, every one seen, whatever the spacing.
        assert_eq!(
            keys("a@b.example,\r\n members (c) @ lists . example . org"),
            ["a@b.example", LIST]
        );
    }

    /// An address-shaped display name is what Python's headerregistry
    /// reads as the mailbox: both are seen.
    #[test]
    fn address_in_display_name_is_seen() {
        let got = keys("members@lists.example.org <x@y.example>");
        assert!(
            got.contains(&"members@lists.example.org".to_string()),
            "{got:?}"
        );
        assert!(got.contains(&"x@y.example".to_string()), "{got:?}");
    }

    /// A broken header cannot hide a split address from the fallback.
    #[test]
    fn fallback_catches_split_addresses() {
        for value in [
            "Evil <members @ lists.example.org",
            "a@b.example. members @ lists.example.org",
            "a@b.example.\r\n members (x) @\r\n lists.example.org",
            "\"x <members @lists.example.org>",
            "Evil <members (c) @lists.example.org",
            "Evil <members@lists (x) .example.org",
            "Evil <\"members\" @ lists.example.org",
            "Evil <members@lists.example.org> junk",
            "(unterminated members @ lists.example.org",
            // Found by comparing with Python's getaddresses and
            // headerregistry, which read the list address in each.
            "]members@lists.example.org",
            "=?utf-8?q?x?=)members@lists.example.org",
            "members@lists.example.org(c)example",
            "members@lists.example.org\r\n .evil.example",
            "(\r\n x <:members@lists.example.org)",
            "\"members\"@lists.example.org\"members\"",
            "members@lists.example.org:a@b.example;",
            "members@lists.example.org;:;",
            "members\r\n (;\nmembers\n)@lists.example.org",
            "members(.=?utf-8?q?x?=members@lists.example.org\n.x.\r\n @x",
        ] {
            let got = keys(value);
            assert!(
                got.contains(&"members@lists.example.org".to_string()),
                "{value:?}: {got:?}"
            );
        }
    }

    /// Encoded-words inside an address (Mailsploit): Python's headerregistry
    /// decodes an atom that is an RFC 2047 encoded-word, in the local part
    /// and in the domain, and so do some mail clients.
    #[test]
    fn encoded_words_in_an_address_are_decoded() {
        for value in [
            "=?us-ascii?q?members?=@lists.example.org",
            "Evil <=?utf-8?q?members?=@lists.example.org>",
            "Evil <=?UTF-8?B?bWVtYmVycw==?=@lists.example.org>",
            "Evil <=?iso-8859-1?q?mem=62ers?=@lists.example.org>",
            "Evil <members@=?utf-8?q?lists?=.example.org>",
            "a@b.example, Evil <=?utf-8*en?q?members?=@=?x?b?bGlzdHMuZXhhbXBsZS5vcmc=?=>",
        ] {
            let got = keys(value);
            assert!(
                got.contains(&"members@lists.example.org".to_string()),
                "{value:?}: {got:?}"
            );
        }
        // An encoded display name that spells an address is a phrase, not a
        // mailbox (Python reads bob@example.net only).
        assert_eq!(
            keys("=?utf-8?q?members=40lists.example.org?= <bob@example.net>"),
            ["bob@example.net"]
        );
        assert_eq!(keys("=?utf-8?q?Caf=C3=A9?= <c@z.example>"), ["c@z.example"]);
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
