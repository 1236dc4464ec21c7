//! A read-only view of a message's header block, as byte spans.
//!
//! The expander rewrites no header it did not write, with one exception
//! (a poster's `List-*` and `Feedback-ID` fields are renamed, see the
//! `post` module): DKIM signatures cover the original bytes. So this
//! module finds fields (to read `From:`, `List-Id:`,
//! `X-Listwarden-Bounce:`), where each starts, and which line ending the
//! message uses, for the headers we prepend.

/// Most header fields examined; the rest of a huge header block is passed
/// through untouched but not looked at.
pub const MAX_FIELDS: usize = 2000;
/// Most bytes of one unfolded value returned by [`unfold`].
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// The message's line ending, copied by the headers we add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newline {
    Lf,
    CrLf,
}

impl Newline {
    pub fn as_str(self) -> &'static str {
        match self {
            Newline::Lf => "\n",
            Newline::CrLf => "\r\n",
        }
    }
}

/// One header field: its name and its raw value (after the colon, folds and
/// the final line ending included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Byte offset of the name in the parsed message.
    pub offset: usize,
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value unfolded and trimmed (see [`unfold`]).
    pub fn text(&self) -> String {
        unfold(self.value)
    }
}

/// The fields of a header block, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderBlock<'a> {
    pub fields: Vec<Field<'a>>,
    pub newline: Newline,
    /// True when [`MAX_FIELDS`] cut the scan short.
    pub truncated: bool,
}

impl<'a> HeaderBlock<'a> {
    /// Fields named `name` (case-insensitive), in order.
    pub fn named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Field<'a>> + 's {
        self.fields.iter().filter(move |f| f.is(name))
    }
}

/// Splits the header block off `raw`. It ends at the first empty line, or at
/// the first line that is neither a field nor a continuation (such a line
/// starts the body, as in Postfix's cleanup).
pub fn parse(raw: &[u8]) -> HeaderBlock<'_> {
    let newline = match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw.get(i - 1) == Some(&b'\r') => Newline::CrLf,
        _ => Newline::Lf,
    };
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut truncated = false;
    // (name, start of value, end of value) of the field being read.
    let mut current: Option<(&[u8], usize, usize)> = None;
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            .map_or(raw.len(), |i| pos + i + 1);
        let line = raw.get(pos..end).unwrap_or_default();
        let content = strip_newline(line);
        let continues = matches!(content.first(), Some(b' ' | b'\t'));
        if continues && current.is_some() {
            pos = end;
            continue;
        }
        if let Some((name, offset, start)) = current.take() {
            fields.push(Field {
                offset,
                name,
                value: raw.get(start..pos).unwrap_or_default(),
            });
        }
        if content.is_empty() || fields.len() >= MAX_FIELDS {
            truncated = !content.is_empty();
            break;
        }
        match field_name(content) {
            Some((name, colon)) => current = Some((name, pos, pos + colon + 1)),
            None => break,
        }
        pos = end;
    }
    if let Some((name, offset, start)) = current {
        fields.push(Field {
            offset,
            name,
            value: raw.get(start..pos).unwrap_or_default(),
        });
    }
    HeaderBlock {
        fields,
        newline,
        truncated,
    }
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The name of a field line and where its colon is: printable ASCII up
/// to the first colon, which spaces or tabs may precede (RFC 5322's
/// obsolete `Name :` form, which Postfix still reads as a header: so must
/// we, or a post could hide fields from us that clients will see).
fn field_name(line: &[u8]) -> Option<(&[u8], usize)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line.get(..colon)?;
    let end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    let name = name.get(..end)?;
    let valid = !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic() && b != b':');
    valid.then_some((name, colon))
}

/// A raw value unfolded (line endings removed, so folding whitespace
/// collapses to the whitespace that follows it), trimmed, lossily decoded
/// and cut at [`MAX_VALUE_BYTES`].
pub fn unfold(value: &[u8]) -> String {
    let bounded = value.get(..MAX_VALUE_BYTES).unwrap_or(value);
    let kept: Vec<u8> = bounded
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    String::from_utf8_lossy(&kept).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_folds_and_line_endings() {
        let raw = b"From: a@b\r\nSubject: one\r\n two\r\nX-Empty:\r\n\r\nbody: not a header\r\n";
        let block = parse(raw);
        assert_eq!(block.newline, Newline::CrLf);
        let names: Vec<&[u8]> = block.fields.iter().map(|f| f.name).collect();
        assert_eq!(names, [&b"From"[..], b"Subject", b"X-Empty"]);
        assert_eq!(block.fields[1].value, b" one\r\n two\r\n");
        assert_eq!(block.fields[1].text(), "one two");
        assert_eq!(block.named("subject").count(), 1);
        assert_eq!(block.fields[2].text(), "");
        assert!(!block.truncated);
    }

    #[test]
    fn odd_blocks_never_panic() {
        let cases: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"\n", 0),
            (b"Subject: x", 1),
            (b"Subject: x\n\t", 1),
            (b" leading continuation\nA: b\n", 0),
            (b"no colon here\nA: b\n", 0),
            (b"A: b\nbad line\nC: d\n", 1),
            (b": empty name\n", 0),
            (b"A b: space in name\n", 0),
            // The obsolete form Postfix still reads as a header.
            (b"A : b\nC\t: d\n", 2),
            (b" : b\n", 0),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse(raw).fields.len(),
                *want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(parse(b"A: b\n").newline, Newline::Lf);
    }

    #[test]
    fn field_count_is_bounded() {
        let raw = "X: y\n".repeat(MAX_FIELDS + 10);
        let block = parse(raw.as_bytes());
        assert_eq!(block.fields.len(), MAX_FIELDS);
        assert!(block.truncated);
        let huge = format!("Subject: {}\n", "x".repeat(100_000));
        assert_eq!(
            parse(huge.as_bytes()).fields[0].text().len(),
            MAX_VALUE_BYTES - 1
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let block = parse(&raw);
            for f in &block.fields {
                proptest::prop_assert!(!f.name.is_empty());
                let _ = f.text();
            }
        }
    }
}
