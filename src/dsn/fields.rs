//! Bounded readers for header-style text: the blocks of a `message/delivery-status`
//! or `message/feedback-report` part, the header of a returned message, and the
//! small tokens inside them (addresses, RFC 3463 status codes, SMTP reply codes).
//!
//! mail-parser splits the MIME tree, but it does not parse report bodies, and a
//! hand-written reader lets every field length and count be capped by `Limits`.

/// Header field names longer than this are not header fields (RFC 5322 suggests 78
/// characters per line; no registered name comes close).
const MAX_FIELD_NAME_LEN: usize = 76;

/// Longest address we accept (RFC 5321 path limit is 256 octets).
pub(super) const MAX_ADDRESS_LEN: usize = 320;

/// Splits bytes into lines. `\n` and `\r\n` end a line; the terminator is not
/// part of the line.
#[derive(Clone)]
pub(super) struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let (line, advance) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => (rest.get(..nl).unwrap_or_default(), nl + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

pub(super) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

fn starts_with_wsp(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// Reads header fields block by block. Blocks are separated by blank lines
/// (a line of only whitespace counts as blank, so a fold dangling at the end of
/// the input is simply dropped: mail-parser #155 class). Folded lines are joined
/// with one space. Values longer than `max_value_len` bytes are cut at a UTF-8
/// boundary and `truncated` is set. Lines without a colon are skipped.
pub(super) struct FieldReader<'a> {
    lines: std::iter::Peekable<Lines<'a>>,
    max_value_len: usize,
    /// Set when a value was cut to `max_value_len`.
    pub(super) truncated: bool,
}

impl<'a> FieldReader<'a> {
    pub(super) fn new(data: &'a [u8], max_value_len: usize) -> Self {
        Self {
            lines: Lines::new(data).peekable(),
            max_value_len,
            truncated: false,
        }
    }

    /// Skips blank lines up to the next block. Returns false at end of input.
    pub(super) fn next_block(&mut self) -> bool {
        while let Some(line) = self.lines.peek() {
            if is_blank(line) {
                self.lines.next();
            } else {
                return true;
            }
        }
        false
    }

    /// Next field of the current block: `(lower-case name, unfolded value)`.
    /// Returns None at the end of the block (a blank line, left unconsumed so
    /// that `next_block` can step over it) or of the input.
    pub(super) fn next_field(&mut self) -> Option<(String, String)> {
        loop {
            let line = *self.lines.peek()?;
            if is_blank(line) {
                return None;
            }
            self.lines.next();
            if starts_with_wsp(line) {
                // A continuation with no field to belong to.
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = line.get(..colon).unwrap_or_default().trim_ascii();
            if name.is_empty()
                || name.len() > MAX_FIELD_NAME_LEN
                || !name.iter().all(|b| b.is_ascii_graphic())
            {
                continue;
            }
            let mut value = Vec::new();
            self.push_capped(&mut value, line.get(colon + 1..).unwrap_or_default());
            while let Some(&next) = self.lines.peek() {
                if is_blank(next) || !starts_with_wsp(next) {
                    break;
                }
                self.lines.next();
                self.push_capped(&mut value, b" ");
                self.push_capped(&mut value, next.trim_ascii_start());
            }
            let value = String::from_utf8_lossy(&value);
            let value = cap_str(value.trim(), self.max_value_len, &mut self.truncated);
            return Some((String::from_utf8_lossy(name).to_ascii_lowercase(), value));
        }
    }

    /// Appends at most what keeps `buf` within the cap (plus 3 bytes so that a
    /// multi-byte character cut by the byte cap is still decoded whole by
    /// `cap_str`, which then cuts at a character boundary).
    fn push_capped(&mut self, buf: &mut Vec<u8>, bytes: &[u8]) {
        let room = self
            .max_value_len
            .saturating_add(3)
            .saturating_sub(buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        buf.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }
}

/// Copies `s` cut to at most `max` bytes at a character boundary.
pub(super) fn cap_str(s: &str, max: usize, truncated: &mut bool) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    *truncated = true;
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// Strips an RFC 3464 type prefix (`rfc822;`, `utf-8;`, `dns;`, `smtp;`, `x-unix;`)
/// when the text before the first `;` is a plain token.
pub(super) fn strip_type_prefix(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

/// Makes an address from a field value or a line of text: strips a type
/// prefix, angle brackets, quotes and a trailing dot. Returns None unless the
/// result looks like `local@domain` with no whitespace.
pub(super) fn clean_address(value: &str) -> Option<String> {
    let value = strip_type_prefix(value);
    let value = value.trim_matches(|c: char| c == '<' || c == '>' || c == '"' || c == '\'');
    let value = value.trim().trim_end_matches('.');
    if value.is_empty() || value.len() > MAX_ADDRESS_LEN {
        return None;
    }
    let (local, domain) = value.rsplit_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && !value.contains(['<', '>', '(', ')', ',', ';'])
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.');
    ok.then(|| value.to_owned())
}

/// Finds the first thing in `text` that looks like an address (`local@domain`),
/// with or without angle brackets.
pub(super) fn find_address(text: &str) -> Option<String> {
    let is_atom = |c: char| {
        c.is_alphanumeric()
            || matches!(
                c,
                '.' | '-'
                    | '_'
                    | '+'
                    | '='
                    | '!'
                    | '#'
                    | '$'
                    | '%'
                    | '&'
                    | '*'
                    | '/'
                    | '?'
                    | '^'
                    | '`'
                    | '{'
                    | '|'
                    | '}'
                    | '~'
                    | '\''
            )
    };
    let bytes = text.as_bytes();
    let mut search = 0;
    while let Some(rel) = text.get(search..).and_then(|t| t.find('@')) {
        let at = search + rel;
        let start = text
            .get(..at)
            .unwrap_or_default()
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_atom(c))
            .last()
            .map_or(at, |(i, _)| i);
        let end = text
            .get(at + 1..)
            .unwrap_or_default()
            .char_indices()
            .take_while(|&(_, c)| {
                c.is_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':'
            })
            .last()
            .map_or(at + 1, |(i, c)| at + 1 + i + c.len_utf8());
        // A trailing `:` or `.` ends a sentence or an `addr:` line.
        let end = start
            + text
                .get(start..end)
                .unwrap_or_default()
                .trim_end_matches([':', '.'])
                .len();
        if let Some(found) = text.get(start..end).and_then(clean_address) {
            // Reject a match glued to more address characters (e.g. "a@b@c").
            if bytes.get(end) != Some(&b'@') {
                return Some(found);
            }
        }
        search = at + 1;
    }
    None
}

/// Validates an RFC 3463 status code `class.subject.detail` (class 2, 4 or 5;
/// subject and detail 1 to 3 digits) at the start of `value`, ignoring any
/// comment after it.
pub(super) fn parse_status(value: &str) -> Option<String> {
    let token = value.split_whitespace().next()?;
    let token = token.trim_end_matches([';', ',', ')']);
    let mut parts = token.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let ok = parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && digits(subject, 3)
        && digits(detail, 3);
    ok.then(|| token.to_owned())
}

/// Finds the first RFC 3463 status code in free text. The code must stand
/// alone: not part of an IP address or a longer dotted number.
pub(super) fn find_status(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !matches!(b, b'2' | b'4' | b'5') {
            continue;
        }
        let before = i.checked_sub(1).and_then(|j| bytes.get(j));
        if before.is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'.') {
            continue;
        }
        let mut end = i + 1;
        let mut groups = 0;
        while groups < 2 && bytes.get(end) == Some(&b'.') {
            let digits = bytes
                .get(end + 1..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits == 0 || digits > 3 {
                break;
            }
            end += 1 + digits;
            groups += 1;
        }
        if groups != 2 {
            continue;
        }
        let after = bytes.get(end);
        let after2 = bytes.get(end + 1);
        let glued = after.is_some_and(|c| c.is_ascii_alphanumeric())
            || (after == Some(&b'.') && after2.is_some_and(|c| c.is_ascii_digit()));
        if !glued {
            return text.get(i..end).map(str::to_owned);
        }
    }
    None
}

/// Finds the first 3-digit SMTP reply code (2xx, 4xx, 5xx) standing alone in
/// free text: preceded by the start, whitespace or punctuation such as `;(':#`
/// and followed by the end, whitespace, `-` or a quote.
pub(super) fn find_smtp_code(text: &str) -> Option<u16> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !matches!(b, b'2' | b'4' | b'5') {
            continue;
        }
        let before = i.checked_sub(1).and_then(|j| bytes.get(j));
        if !before.is_none_or(|&c| c.is_ascii_whitespace() || b";(':#\"<[=".contains(&c)) {
            continue;
        }
        let (Some(d1), Some(d2)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return None;
        };
        if !d1.is_ascii_digit() || !d2.is_ascii_digit() {
            continue;
        }
        let after = bytes.get(i + 3);
        if after.is_none_or(|&c| c.is_ascii_whitespace() || b"-'\")".contains(&c)) {
            let code = u16::from(b - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0');
            return Some(code);
        }
    }
    None
}

/// Finds a remote host name in bounce text: `host NAME[ip]`, `host NAME [ip]`
/// (Postfix, Exim) or `while talking to NAME.:` (Sendmail).
pub(super) fn find_remote_host(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let candidates = [
        lower.find("host ").map(|i| i + "host ".len()),
        lower
            .find("while talking to ")
            .map(|i| i + "while talking to ".len()),
    ];
    for start in candidates.into_iter().flatten() {
        let name: String = text
            .get(start..)
            .unwrap_or_default()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .take(255)
            .collect();
        let name = name.trim_end_matches('.');
        if name.contains('.') && name.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Some(name.to_ascii_lowercase());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_fields(data: &[u8], max: usize) -> Vec<Vec<(String, String)>> {
        let mut reader = FieldReader::new(data, max);
        let mut blocks = Vec::new();
        while reader.next_block() {
            let mut block = Vec::new();
            while let Some(f) = reader.next_field() {
                block.push(f);
            }
            blocks.push(block);
        }
        blocks
    }

    #[test]
    fn reads_blocks_and_unfolds() {
        let data = b"Reporting-MTA: dns; a.example\r\n\r\nFinal-Recipient: rfc822; x@y.example\r\nDiagnostic-Code: smtp; 550 5.1.1\r\n    user unknown\r\n\r\n\r\nAction: failed\n";
        let blocks = all_fields(data, 100);
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            blocks[0],
            vec![("reporting-mta".into(), "dns; a.example".into())]
        );
        assert_eq!(blocks[1][1].1, "smtp; 550 5.1.1 user unknown");
        assert_eq!(blocks[2][0], ("action".into(), "failed".into()));
    }

    #[test]
    fn dangling_fold_and_junk_lines_are_dropped() {
        let blocks = all_fields(b"Received: from a\n\t\n", 100);
        assert_eq!(blocks, vec![vec![("received".into(), "from a".into())]]);
        let blocks = all_fields(b"  orphan\nno colon here\n: empty name\nA: 1\n", 100);
        assert_eq!(blocks, vec![vec![("a".into(), "1".into())]]);
    }

    #[test]
    fn caps_values_at_char_boundary() {
        let mut reader = FieldReader::new("X: ééééé\n".as_bytes(), 5);
        assert!(reader.next_block());
        let (_, v) = reader.next_field().unwrap_or_default();
        assert_eq!(v, "éé");
        assert!(reader.truncated);
    }

    #[test]
    fn addresses() {
        let cases: &[(&str, Option<&str>)] = &[
            ("rfc822; alice@example.com", Some("alice@example.com")),
            ("rfc822;<bob@example.org>", Some("bob@example.org")),
            ("utf-8; ünï@例え.jp", Some("ünï@例え.jp")),
            ("alice", None),
            ("rfc822; a b@example.com", None),
            ("@example.com", None),
            ("a@", None),
        ];
        for (input, want) in cases {
            assert_eq!(clean_address(input).as_deref(), *want, "{input}");
        }
        assert_eq!(
            find_address("Your message wasn't delivered to grace@example.com because").as_deref(),
            Some("grace@example.com")
        );
        assert_eq!(
            find_address("frank@example.com<mailto:frank@example.com>").as_deref(),
            Some("frank@example.com")
        );
        assert_eq!(find_address("no address here @ all"), None);
    }

    #[test]
    fn status_codes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("5.1.1", Some("5.1.1")),
            ("4.7.0 (delayed)", Some("4.7.0")),
            ("5.1.10", Some("5.1.10")),
            ("9.9.9", None),
            ("5.1", None),
            ("5.1.1.1", None),
            ("5.1.1234", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_status(input).as_deref(), *want, "{input}");
        }
        let found: &[(&str, Option<&str>)] = &[
            ("smtp; 550 5.1.1 <a@b>: user unknown", Some("5.1.1")),
            ("421-4.7.28 rate", Some("4.7.28")),
            ("host [10.5.1.1] said 550", None),
            ("from 192.0.2.45 blocked", None),
            ("Status 4.4.7.", Some("4.4.7")),
        ];
        for (input, want) in found {
            assert_eq!(find_status(input).as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn smtp_codes() {
        let cases: &[(&str, Option<u16>)] = &[
            ("smtp; 550 5.1.1 user", Some(550)),
            ("said: 421-4.7.0 [TS01]", Some(421)),
            ("Remote Server returned '550 5.1.10 RESOLVER'", Some(550)),
            ("after 24 hours", None),
            ("host 250.1.2.3 said", None),
            ("553", Some(553)),
            ("x5500", None),
        ];
        for (input, want) in cases {
            assert_eq!(find_smtp_code(input), *want, "{input}");
        }
    }

    #[test]
    fn remote_hosts() {
        assert_eq!(
            find_remote_host("host mx.example.com[192.0.2.1] said: 550").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(
            find_remote_host("host MX1.Example.NET [192.0.2.7]").as_deref(),
            Some("mx1.example.net")
        );
        assert_eq!(
            find_remote_host("... while talking to mx.example.com.:").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(find_remote_host("host 192.0.2.1 said"), None);
    }
}
