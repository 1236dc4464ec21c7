//! Mail addresses as listwarden sees them, and the signed forms it mints.
//!
//! * [`Address`]: a mailbox in canonical form, with [`Address::parse`] for a bare
//!   `local@domain` and [`parse_path`] for an SMTP path as a milter receives it.
//! * [`prvs`]: BATV `prvs=` tags (draft-levine-smtp-batv-01, as batv-tools does it).
//! * [`verp`]: plain VERP (`bounce+user=domain@list`) and listwarden's own signed VERP.
//! * [`keys`]: the key ring shared by both signers.
//!
//! Parsing is deliberately tolerant (real MTAs emit `a..b@x`, 100-byte local parts and
//! trailing-dot domains) but bounded: nothing here allocates more than a few times
//! [`MAX_PATH_LEN`] for one input.

mod header;
pub mod keys;
mod path;
pub mod prvs;
#[cfg(test)]
mod reference;
pub mod verp;

pub use header::{mailboxes_in_header, visit_mailboxes};

pub use keys::{Key, KeyError, KeyRing};
pub use prvs::PrvsResult;
pub use verp::{VerpAddress, VerpError, VerpResult};

use std::fmt;

/// Longest accepted mailbox, `local` + `@` + `domain`, in bytes of the unquoted form.
/// RFC 5321 says 64 + 1 + 255 (and 254 in practice); VERP and BATV push real addresses
/// past that, so we tolerate twice the usual size and reject beyond.
pub const MAX_ADDRESS_LEN: usize = 512;

/// Longest raw input to [`parse_path`] / [`Address::parse`], checked before any work.
/// Room for a fully escaped local part (each byte doubled), brackets, whitespace and a
/// short source route on top of [`MAX_ADDRESS_LEN`].
pub const MAX_PATH_LEN: usize = 2 * MAX_ADDRESS_LEN + 64;

/// Characters that may not appear in an unquoted local part (RFC 5322 specials minus
/// `@` and `.`; `@` is tolerated because we split at the last one, dots anywhere
/// because `a..b@x` exists in the wild).
const LOCAL_SPECIALS: &[char] = &['"', '(', ')', ',', ':', ';', '<', '>', '[', '\\', ']'];

/// Why an address or path was rejected. Carries no address text: callers log the
/// input themselves, sanitised, if they want it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is too long")]
    TooLong,
    #[error("address has no '@'")]
    NoAt,
    #[error("local part is empty")]
    EmptyLocal,
    #[error("domain is empty")]
    EmptyDomain,
    #[error("address contains a control character")]
    ControlChar,
    #[error("local part contains a character that needs quoting")]
    BadLocal,
    #[error("quoted local part is malformed")]
    BadQuoting,
    #[error("domain is malformed")]
    BadDomain,
    #[error("angle brackets are unbalanced")]
    BadBrackets,
    #[error("source route is malformed")]
    BadRoute,
    #[error("path holds more than one address")]
    Several,
}

/// A mailbox in canonical form: domain lowercased without a trailing dot,
/// local part kept as given (quoted forms unquoted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    /// Builds an address from an unquoted local part and a domain, validating both and
    /// canonicalising the domain. Use this rather than a struct literal for input that
    /// did not come from [`Address::parse`].
    pub fn new(local: &str, domain: &str) -> Result<Address, AddressError> {
        validate_local_content(local)?;
        let domain = canonical_domain(domain)?;
        check_total_len(local, &domain)?;
        Ok(Address {
            local: local.to_owned(),
            domain,
        })
    }

    /// Stands for a non-null envelope sender that could not be read: in the
    /// reserved `.invalid` domain, so it never matches a configured address
    /// and is never taken for the null sender.
    pub fn unreadable() -> Address {
        Address {
            local: "unreadable".into(),
            domain: "unreadable.invalid".into(),
        }
    }

    /// Parses a bare `local@domain` (no angle brackets, no surrounding whitespace).
    ///
    /// Accepts a quoted local part (`"a b"@x`, stored unquoted), splits an unquoted
    /// address at the *last* `@`, strips one trailing dot from the domain and lowercases
    /// it. Rejects empty parts, control characters (including NUL) and anything longer
    /// than [`MAX_ADDRESS_LEN`].
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        if s.len() > MAX_PATH_LEN {
            return Err(AddressError::TooLong);
        }
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let (local, domain) = if s.starts_with('"') {
            split_quoted(s)?
        } else {
            let (local, domain) = s.rsplit_once('@').ok_or(AddressError::NoAt)?;
            validate_unquoted_local(local)?;
            (local.to_owned(), domain)
        };
        let domain = canonical_domain(domain)?;
        check_total_len(&local, &domain)?;
        Ok(Address { local, domain })
    }

    /// The local part with ASCII letters lowercased: the form both signers authenticate,
    /// so that MTAs which case-fold local parts do not break signatures.
    /// The form listwarden compares addresses in: local part ASCII-lowercased
    /// (no list server treats local parts case-sensitively), domain canonical.
    pub fn key(&self) -> String {
        format!("{}@{}", self.folded_local(), self.domain)
    }

    pub fn folded_local(&self) -> String {
        self.local.to_ascii_lowercase()
    }

    /// True when both addresses name the same mailbox, ignoring ASCII case in the local
    /// part (the domain is compared after Unicode lowercasing).
    pub fn same_mailbox(&self, other: &Address) -> bool {
        self.local.eq_ignore_ascii_case(&other.local)
            && fold_domain(&self.domain) == fold_domain(&other.domain)
    }

    /// Length of the unquoted `local@domain` form in bytes.
    pub fn len(&self) -> usize {
        self.local.len() + 1 + self.domain.len()
    }

    /// True only for a hand-built empty value; parsed addresses are never empty.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.domain.is_empty()
    }
}

impl fmt::Display for Address {
    /// Writes `local@domain`, quoting the local part when it could not be re-read
    /// unquoted (whitespace, specials, `@`, empty). `parse(display(a)) == a` holds for
    /// every address [`Address::parse`] or [`Address::new`] returned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if local_needs_quoting(&self.local) {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// Parses an SMTP path as a milter sees it (`MAIL FROM` / `RCPT TO` argument 0),
/// reading it as Postfix's smtpd does (see `path.rs`): comments and unquoted
/// whitespace dropped, quotes and backslashes removed, the address inside the
/// last `<...>` taken, a source route of any length cut.
///
/// `<>` (with nothing but space or comments inside) is the null path and gives
/// `Ok(None)`; anything else that holds no address, or more than one, is an
/// error, never the null path. IDN domains stay UTF-8.
pub fn parse_path(s: &str) -> Result<Option<Address>, AddressError> {
    path::read(s)
}

/// Parses Postfix's `{mail_addr}` / `{rcpt_addr}` macro value: the resolved
/// address as smtpd (and cleanup) externalize it with `quote_821_local`,
/// without brackets. A local part that needs quoting in SMTP (a space, `..`,
/// a leading or trailing dot, specials) comes as one quoted string, with `"`
/// and `\` escaped inside; it is unquoted here, so that
/// `"members-bounces+a..b"@lists.example.org` is the list's bounce address
/// it is to Postfix. Empty is the null sender. Splits at the last `@`; a
/// source route left in it is dropped, as cleanup does.
pub fn parse_macro_addr(s: &str) -> Result<Option<Address>, AddressError> {
    if s.is_empty() {
        return Ok(None);
    }
    match unquote_821(s)? {
        Some(internal) => path::split_internal(&internal).map(Some),
        None => path::split_internal(s).map(Some),
    }
}

/// `quote_821_local`'s output back in internal form; `None` when the local
/// part is not one quoted string (then it was never quoted).
fn unquote_821(s: &str) -> Result<Option<String>, AddressError> {
    if !s.starts_with('"') {
        return Ok(None);
    }
    let (local, domain) = match s.rfind('@') {
        Some(at) => (&s[..at], &s[at..]),
        None => (s, ""),
    };
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return Ok(None);
    };
    let mut out = String::with_capacity(s.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(AddressError::BadQuoting)?),
            '"' => return Err(AddressError::BadQuoting),
            c => out.push(c),
        }
    }
    out.push_str(domain);
    Ok(Some(out))
}

/// Splits `"quoted local"@domain`, unescaping quoted-pairs.
fn split_quoted(s: &str) -> Result<(String, &str), AddressError> {
    let mut local = String::new();
    let mut chars = s.char_indices().skip(1);
    let mut close = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                close = Some(i);
                break;
            }
            '\\' => match chars.next() {
                Some((_, escaped)) if !escaped.is_control() => local.push(escaped),
                Some(_) => return Err(AddressError::ControlChar),
                None => return Err(AddressError::BadQuoting),
            },
            c if c.is_control() => return Err(AddressError::ControlChar),
            c => local.push(c),
        }
    }
    let close = close.ok_or(AddressError::BadQuoting)?;
    let after = s.get(close + 1..).ok_or(AddressError::BadQuoting)?;
    let domain = after.strip_prefix('@').ok_or(AddressError::BadQuoting)?;
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    Ok((local, domain))
}

fn validate_unquoted_local(local: &str) -> Result<(), AddressError> {
    validate_local_content(local)?;
    if local.contains(|c: char| c.is_whitespace() || LOCAL_SPECIALS.contains(&c)) {
        return Err(AddressError::BadLocal);
    }
    Ok(())
}

/// Rules for the stored (unquoted) local part, whatever its original form.
fn validate_local_content(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    if local.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    if local.contains(char::is_control) {
        return Err(AddressError::ControlChar);
    }
    Ok(())
}

fn local_needs_quoting(local: &str) -> bool {
    local.is_empty()
        || local.starts_with('"')
        || local.contains(|c: char| {
            c == '@' || c.is_whitespace() || c.is_control() || LOCAL_SPECIALS.contains(&c)
        })
}

fn check_total_len(local: &str, domain: &str) -> Result<(), AddressError> {
    if local.len() + 1 + domain.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    Ok(())
}

/// The case folding used for domains everywhere in this module (canonical form and
/// signed input alike), so that signers and verifiers cannot disagree.
fn fold_domain(domain: &str) -> String {
    domain.to_lowercase()
}

/// Validates a domain and returns its canonical form: one trailing dot removed,
/// lowercased. Accepts LDH labels (plus `_`, seen in the wild), UTF-8 labels and
/// address literals (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
fn canonical_domain(raw: &str) -> Result<String, AddressError> {
    if raw.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    if raw.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if raw.contains(char::is_control) {
        return Err(AddressError::ControlChar);
    }
    let domain = fold_domain(raw);
    let valid = match domain.strip_prefix('[') {
        Some(literal) => literal.strip_suffix(']').is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-'))
        }),
        None => domain.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || c == '-'
                        || c == '_'
                        || (!c.is_ascii() && !c.is_whitespace())
                })
        }),
    };
    if !valid {
        return Err(AddressError::BadDomain);
    }
    Ok(domain)
}

/// Where "today" falls relative to a tag's validity window, on a day counter that
/// wraps at `modulus`. Shared by prvs (mod 1000) and signed VERP (mod 10000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayWindow {
    Inside,
    /// Past the last valid day.
    Expired,
    /// Before the first valid day: future-dated beyond any allowed skew.
    Future,
}

/// Classifies `today` against a window of `width + 1` days ending on `last_day`
/// (both taken mod `modulus`). A wrapped counter cannot tell "expired k days ago"
/// from "starts in modulus − width − k days"; we pick the nearer reading and call a
/// tie expired. `width` must be below `modulus / 2` (enforced by the key ring).
fn classify_day(last_day: u64, today: u64, width: u64, modulus: u64) -> DayWindow {
    let last = last_day % modulus;
    let now = today % modulus;
    let ahead = (last + modulus - now) % modulus;
    if ahead <= width {
        return DayWindow::Inside;
    }
    let days_past = modulus - ahead;
    let days_early = ahead - width;
    if days_past <= days_early {
        DayWindow::Expired
    } else {
        DayWindow::Future
    }
}

/// Feeds `bytes` to a MAC with ASCII letters lowercased, without allocating.
fn update_ascii_lower(mac: &mut impl hmac::Mac, bytes: &[u8]) {
    const CHUNK: usize = 64;
    let mut buf = [0u8; CHUNK];
    for chunk in bytes.chunks(CHUNK) {
        if let Some(dst) = buf.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
            dst.make_ascii_lowercase();
            mac.update(dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `AbCd…`: every other ASCII letter upper-cased, for the mixed-case tag tests.
    pub(super) fn alternate_case(s: &str) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    fn addr(local: &str, domain: &str) -> Address {
        Address {
            local: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn parse_table() {
        let long_local = "a".repeat(400);
        let ok: &[(&str, Address)] = &[
            ("user@example.org", addr("user", "example.org")),
            ("User@Example.ORG", addr("User", "example.org")),
            ("user@example.org.", addr("user", "example.org")),
            ("a..b@docomo.ne.jp", addr("a..b", "docomo.ne.jp")),
            (".a.@x", addr(".a.", "x")),
            ("a+tag=x@x.y", addr("a+tag=x", "x.y")),
            ("\"a b\"@x.org", addr("a b", "x.org")),
            ("\"a\\\"b\\\\c\"@x", addr("a\"b\\c", "x")),
            ("\"a@b\"@x", addr("a@b", "x")),
            ("a@b@x.org", addr("a@b", "x.org")),
            ("jöhn@Bücher.Example", addr("jöhn", "bücher.example")),
            ("用户@例子.广告", addr("用户", "例子.广告")),
            ("u@[192.0.2.1]", addr("u", "[192.0.2.1]")),
            ("u@[IPv6:2001:DB8::1]", addr("u", "[ipv6:2001:db8::1]")),
            ("u@under_score.example", addr("u", "under_score.example")),
        ];
        for (input, want) in ok {
            assert_eq!(Address::parse(input).as_ref(), Ok(want), "{input}");
        }
        let long_ok = format!("{long_local}@example.org");
        assert!(Address::parse(&long_ok).is_ok());

        use AddressError as E;
        let too_long = format!("{}@example.org", "a".repeat(MAX_ADDRESS_LEN));
        let huge = "a".repeat(MAX_PATH_LEN + 1);
        let bad: &[(&str, AddressError)] = &[
            ("", E::Empty),
            ("userexample.org", E::NoAt),
            ("@example.org", E::EmptyLocal),
            ("user@", E::EmptyDomain),
            ("user@.", E::EmptyDomain),
            ("user@x..", E::BadDomain),
            ("user@a..b", E::BadDomain),
            ("us\0er@x", E::ControlChar),
            ("user@x\0y", E::ControlChar),
            ("us\ter@x", E::ControlChar),
            ("us\u{85}er@x", E::ControlChar),
            ("us er@x", E::BadLocal),
            ("us<er@x", E::BadLocal),
            ("us:er@x", E::BadLocal),
            ("\"\"@x", E::EmptyLocal),
            ("\"abc@x", E::BadQuoting),
            ("\"a\"b@x", E::BadQuoting),
            ("\"a\rb\"@x", E::ControlChar),
            ("\"a\\\0\"@x", E::ControlChar),
            ("user@exa mple.org", E::BadDomain),
            ("user@exa=mple.org", E::BadDomain),
            ("user@[1.2.3.4", E::BadDomain),
            ("user@[]", E::BadDomain),
            ("user@x>", E::BadDomain),
            (too_long.as_str(), E::TooLong),
            (huge.as_str(), E::TooLong),
        ];
        for (input, want) in bad {
            assert_eq!(Address::parse(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn parse_path_table() {
        let some = |l: &str, d: &str| Ok(Some(addr(l, d)));
        let cases: &[(&str, Result<Option<Address>, AddressError>)] = &[
            ("<>", Ok(None)),
            (" <> ", Ok(None)),
            ("< >", Ok(None)),
            ("<user@Example.org>", some("user", "example.org")),
            ("user@example.org", some("user", "example.org")),
            ("  <user@example.org.>\r\n", some("user", "example.org")),
            (
                "<@a.example,@b.example:user@d.example>",
                some("user", "d.example"),
            ),
            ("<@a.example:user@d.example>", some("user", "d.example")),
            // smtpd cuts a route at the first ':' as text (strchr), inside
            // the literal: Postfix reads the local part "2001:db8::1]:u".
            ("<@[IPv6:2001:db8::1]:u@d>", some("2001:db8::1]:u", "d")),
            ("@a:u@d", some("u", "d")),
            ("<\"a b\"@x>", some("a b", "x")),
            ("<\"a:b\"@x>", some("a:b", "x")),
            ("<prvs=0123abcdef=u@x>", some("prvs=0123abcdef=u", "x")),
            ("<用户@例子.广告>", some("用户", "例子.广告")),
            ("", Err(AddressError::Empty)),
            ("   ", Err(AddressError::Empty)),
            ("<user@x", Err(AddressError::BadBrackets)),
            // tok822 ignores an unmatched '>': Postfix reads user@x.
            ("user@x>", some("user", "x")),
            ("<", Err(AddressError::BadBrackets)),
            // The address inside the inner brackets (tok822), as Postfix.
            ("<<a@b>>", some("a", "b")),
            ("<postmaster>", Err(AddressError::NoAt)),
            ("<@a.example user@d>", Err(AddressError::BadRoute)),
            ("<@a.example>", Err(AddressError::BadRoute)),
            // smtpd drops everything up to the first ':' after a leading
            // '@' without looking at it: these read as Postfix reads them.
            ("<@:u@d>", some("u", "d")),
            ("<@a,b:u@d>", some("u", "d")),
            ("<@[::1:u@d>", some(":1:u", "d")),
            // tok822 makes "junk" an address of its own: two addresses.
            ("<a@b> junk", Err(AddressError::Several)),
            ("<user@exa\0mple>", Err(AddressError::ControlChar)),
            // Shapes whose reading by Postfix is not certain are refused (the
            // milter fails closed); the reference has no opinion on them
            // (`reference_declines_uncertain_shapes`). Fuzz artifact
            // crash-reference-route-after-phrase and its smaller forms.
            // A control character anywhere, even in a dropped phrase.
            ("\u{8}<u@d>", Err(AddressError::ControlChar)),
            ("<u\u{93}@d>", Err(AddressError::ControlChar)),
            // More than one route: smtpd cuts one, cleanup one more, and a
            // quoted ':' becomes a route once the quotes are gone.
            ("<@a:@b:u@d>", Err(AddressError::BadRoute)),
            ("< @a : @b : u@d >", Err(AddressError::BadRoute)),
            ("<@a:\"@b:u\"@d>", Err(AddressError::BadRoute)),
            ("<@b:@m@\"s:x\"@L>", Err(AddressError::BadRoute)),
            // A route after a phrase.
            ("x <@a:u@d>", Err(AddressError::BadRoute)),
            ("x <\"@a:u\"@d>", Err(AddressError::BadRoute)),
            (
                "x< @b:@   ms&@\"siemt e'o: \"mems&@LisA >",
                Err(AddressError::BadRoute),
            ),
            // A quoted string and an atom in a row are two words to tok822:
            // two addresses, which smtpd refuses (501).
            ("<@b:@m@\"s:\"mm@L>", Err(AddressError::Several)),
            ("< @b:@ m@\"s e'o: \"mm@L >", Err(AddressError::Several)),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_path(input), want, "{input:?}");
        }
        let huge = format!("<{}@x>", "a".repeat(20_000));
        assert_eq!(parse_path(&huge), Err(AddressError::TooLong));
    }

    /// Paths as Postfix's smtpd reads them (`extract_addr`: tok822 tokens,
    /// comments and unquoted whitespace dropped, route cut, quotes removed).
    #[test]
    fn parse_path_postfix_forms() {
        let list = addr("members-bounces", "lists.example.org");
        let hops: Vec<String> = (0..50).map(|i| format!("@h{i}.example")).collect();
        let long_route = format!("<{}:members-bounces@lists.example.org>", hops.join(","));
        let as_list: &[&str] = &[
            "<members-bounces(x)@lists.example.org>",
            "<members-bounces @lists.example.org>",
            "<members-bounces@lists.example.org(x)>",
            "<members-bounces@ lists.example.org>",
            "<(c) members-bounces@lists.example.org>",
            "<members-bounces@lists.example.org (a (nested \\) one))>",
            "<members-bounces\r\n @lists.example.org>",
            long_route.as_str(),
            "< @a , @b : members-bounces@lists.example.org >",
            "<(x)@a,@b:members-bounces@lists.example.org>",
            "< @a : members-bounces@lists.example.org >",
            "<\"members-bounces\"@lists.example.org>",
            "<members-bounces@\"lists\".example.org>",
            "<m\\embers-bounces@lists.example.org>",
            "<members-bounces@lists.example.org.>",
            "<MEMBERS-BOUNCES@Lists.Example.Org>",
            // Postfix takes the address inside the last <...>; a phrase
            // before it is not an address.
            "<<members-bounces@lists.example.org>>",
            "<Evil <members-bounces@lists.example.org>>",
            // Inside a quoted local part, a route is still a route once the
            // quotes are gone (cleanup's canonical rewrite drops it).
            "<\"@x.example:members-bounces\"@lists.example.org>",
        ];
        for input in as_list {
            let got = parse_path(input);
            assert_eq!(
                got.as_ref().map(|a| a.as_ref().map(Address::key)),
                Ok(Some(list.key())),
                "{input:?}"
            );
        }
        let other: &[(&str, Address)] = &[
            (
                "<members(x)@lists.example.org>",
                addr("members", "lists.example.org"),
            ),
            ("<\"members\".\"bounces\"@x>", addr("members.bounces", "x")),
            ("<\"a b\"(c)@x>", addr("a b", "x")),
            ("<a\\@b@x>", addr("a@b", "x")),
            // An unterminated comment runs to the end (tok822_comment).
            ("<a@b (unterminated>", addr("a", "b")),
            // A quoted ':' in a route: cleanup cuts at the first ':' of the
            // internal text, "@a:b:u@d", leaving "b:u".
            ("< @\"a:b\":u@d>", addr("b:u", "d")),
            // Without '@', cleanup's default rewrite reads these as u@d.
            (
                "<lists.example.org!members-bounces>",
                addr("members-bounces", "lists.example.org"),
            ),
            (
                "<members-bounces%lists.example.org>",
                addr("members-bounces", "lists.example.org"),
            ),
            // Inside nested brackets tok822 keeps two words in one address
            // and internalizes them without a space (see path.rs).
            ("<<a b@c>>", addr("ab", "c")),
            (
                "<<members- bounces@lists.example.org>>",
                addr("members-bounces", "lists.example.org"),
            ),
        ];
        for (input, want) in other {
            assert_eq!(
                parse_path(input).as_ref(),
                Ok(&Some(want.clone())),
                "{input:?}"
            );
        }
        // Null only when nothing but space and comments is inside.
        for null in ["<>", "< >", "<(x)>", "< (x) (y) >", "<\r\n>"] {
            assert_eq!(parse_path(null), Ok(None), "{null:?}");
        }
        // Two addresses (or two words) are refused by Postfix (501); we
        // cannot read them either. Never the null sender.
        for bad in [
            "<a@b> junk",
            "<a@b><c@d>",
            "<a b@c>",
            "<\"a\"b@c>",
            "<a@b, c@d>",
            "(x)",
            "<<>>",
            "<,>",
            "<\"unterminated@x>",
        ] {
            let got = parse_path(bad);
            assert!(got.is_err(), "{bad:?} read as {got:?}");
        }
    }

    /// `{mail_addr}` / `{rcpt_addr}`: Postfix's internal form.
    #[test]
    fn parse_macro_addr_table() {
        let some = |l: &str, d: &str| Ok(Some(addr(l, d)));
        let cases: &[(&str, Result<Option<Address>, AddressError>)] = &[
            ("", Ok(None)),
            (
                "members-bounces@Lists.Example.ORG.",
                some("members-bounces", "lists.example.org"),
            ),
            ("a b@x", some("a b", "x")),
            ("a@b@x", some("a@b", "x")),
            // Postfix externalizes the macros with quote_821_local: a local
            // part that needs quoting (a space, "..", a trailing dot) comes
            // quoted, with '"' and '\\' escaped inside.
            ("\"q\"@x", some("q", "x")),
            (
                "\"members-bounces+a..b\"@lists.example.org",
                some("members-bounces+a..b", "lists.example.org"),
            ),
            (
                "\"members-bounces+x y\"@lists.example.org",
                some("members-bounces+x y", "lists.example.org"),
            ),
            ("\"a\\\"b\\\\c\"@x", some("a\"b\\c", "x")),
            ("\"a@b\"@x", some("a@b", "x")),
            // Cleanup drops a route left in the internal form.
            ("@r.example:u@x", some("u", "x")),
            (
                "@x:members@lists.example.org",
                some("members", "lists.example.org"),
            ),
            // A route still there after cleanup's cut: later stages may cut
            // it again (see path.rs `check_routes`). No reading.
            ("@a:@b:u@x", Err(AddressError::BadRoute)),
            (
                "@a:@b:members@lists.example.org",
                Err(AddressError::BadRoute),
            ),
            ("postmaster", Err(AddressError::NoAt)),
            // Cleanup's default rewrite of addresses without '@'.
            (
                "lists.example.org!members",
                some("members", "lists.example.org"),
            ),
            (
                "members%lists.example.org",
                some("members", "lists.example.org"),
            ),
            ("a%b%x", some("a%b", "x")),
            ("x!a!b", some("a!b", "x")),
            ("@x", Err(AddressError::EmptyLocal)),
            ("u@", Err(AddressError::EmptyDomain)),
            ("u\r@x", Err(AddressError::ControlChar)),
            ("u@exa mple", Err(AddressError::BadDomain)),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_macro_addr(input), want, "{input:?}");
        }
        let huge = format!("{}@x", "a".repeat(MAX_PATH_LEN));
        assert_eq!(parse_macro_addr(&huge), Err(AddressError::TooLong));
    }

    #[test]
    fn display_quotes_only_when_needed() {
        let cases = [
            (addr("user", "x"), "user@x"),
            (addr("a..b", "x"), "a..b@x"),
            (addr("a b", "x"), "\"a b\"@x"),
            (addr("a@b", "x"), "\"a@b\"@x"),
            (addr("a\"b\\c", "x"), "\"a\\\"b\\\\c\"@x"),
            (addr("\"q", "x"), "\"\\\"q\"@x"),
        ];
        for (a, want) in cases {
            assert_eq!(a.to_string(), want);
        }
    }

    #[test]
    fn new_validates_and_canonicalises() {
        assert_eq!(Address::new("U", "X.Org."), Ok(addr("U", "x.org")));
        assert_eq!(Address::new("a b", "x"), Ok(addr("a b", "x")));
        assert_eq!(Address::new("", "x"), Err(AddressError::EmptyLocal));
        assert_eq!(Address::new("a\nb", "x"), Err(AddressError::ControlChar));
        assert_eq!(Address::new("a", "x y"), Err(AddressError::BadDomain));
    }

    #[test]
    fn day_window_wraps() {
        use DayWindow::*;
        // prvs shape: expiry day 6, 7-day window, counter mod 1000.
        assert_eq!(classify_day(6, 20_999, 7, 1000), Inside);
        assert_eq!(classify_day(6, 21_006, 7, 1000), Inside);
        assert_eq!(classify_day(6, 21_007, 7, 1000), Expired);
        assert_eq!(classify_day(6, 20_998, 7, 1000), Future);
        // Ties go to Expired: ahead 504 = 496 past vs 497 early.
        assert_eq!(classify_day(504, 0, 7, 1000), Expired);
        assert_eq!(classify_day(503, 0, 7, 1000), Future);
    }

    fn local_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,40}",
            "[a-z \"\\\\@(),:;<>\\[\\]]{1,20}",
            "\\PC{1,12}",
        ]
    }

    fn domain_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){0,3}",
            "[a-zäöüß]{1,10}\\.[a-z]{2,5}",
        ]
    }

    /// Paths built from the pieces Postfix's reader cares about: comments,
    /// whitespace, quotes, escapes, brackets and routes.
    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[a-zA-Z0-9.-]{1,6}",
            1 => Just("@".to_string()),
            1 => Just(" ".to_string()),
            1 => Just("\r\n ".to_string()),
            1 => "\\([a-z ()\\\\]{0,6}\\)",
            1 => "\"[a-z @:<>()\\\\.]{0,6}\"",
            1 => "\\\\[a-z@ ]",
            1 => "@[a-z]{1,4}(,@[a-z]{1,4}){0,3}:",
            1 => "[<>,:;.%!\\[\\]]",
        ];
        (prop::collection::vec(piece, 0..10), any::<bool>()).prop_map(|(pieces, bracket)| {
            let inner = pieces.concat();
            if bracket { format!("<{inner}>") } else { inner }
        })
    }

    fn check_reference_agreement(s: &str) -> Result<(), TestCaseError> {
        let (Ok(got), Some(want)) = (parse_path(s), reference::postfix_path(s)) else {
            return Ok(());
        };
        match want {
            None => prop_assert_eq!(got, None, "{:?}", s),
            Some((local, domain)) => {
                if let Ok(want) = Address::new(&local, &domain) {
                    prop_assert_eq!(got, Some(want), "{:?}", s);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn reference_agrees_on_the_table() {
        let hops: Vec<String> = (0..50).map(|i| format!("@h{i}.example")).collect();
        let long_route = format!("<{}:members-bounces@lists.example.org>", hops.join(","));
        for s in [
            "<members-bounces(x)@lists.example.org>",
            "< @a , @b : members-bounces@lists.example.org >",
            "<\"members-bounces\"@lists.example.org>",
            "<m\\embers-bounces@lists.example.org>",
            "<Evil <members-bounces@lists.example.org>>",
            "<\"@x.example:members-bounces\"@lists.example.org>",
            "<(x)>",
            long_route.as_str(),
        ] {
            let want = reference::postfix_path(s);
            assert!(want.is_some(), "reference has no opinion on {s:?}");
            assert!(check_reference_agreement(s).is_ok(), "{s:?}");
        }
    }

    /// Shapes whose reading by Postfix is uncertain (or that Postfix
    /// refuses): the reference has no opinion, `parse_path` refuses them.
    #[test]
    fn reference_declines_uncertain_shapes() {
        for s in [
            "\u{8}< @b\u{a4}:@   ms&@\"siemt\u{93}\\\u{669a6}...e'o: \"mems&@LisA >",
            "x< @b:@   ms&@\"siemt e'o: \"mems&@LisA >",
            "\u{8}<u@d>",
            "<@a:@b:u@d>",
            "< @a : @b : u@d >",
            "<@a:\"@b:u\"@d>",
            "<@b:@m@\"s:x\"@L>",
            "x <@a:u@d>",
            "x <\"@a:u\"@d>",
            "<@b:@m@\"s:\"mm@L>",
            "< @b:@ m@\"s e'o: \"mm@L >",
            "<\"a\"b@c>",
        ] {
            assert_eq!(reference::postfix_path(s), None, "{s:?}");
            assert!(parse_path(s).is_err(), "{s:?}: {:?}", parse_path(s));
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(local in local_strategy(), domain in domain_strategy()) {
            // Postfix drops "@x:" at the start of an internal address as a
            // source route, so such a local part cannot come back out of a path.
            let route_like = local.starts_with('@') && local.contains(':');
            if let Ok(a) = Address::new(&local, &domain)
                && !route_like
            {
                let shown = a.to_string();
                prop_assert_eq!(Address::parse(&shown), Ok(a.clone()));
                prop_assert_eq!(parse_path(&format!("<{shown}>")), Ok(Some(a)));
            }
        }

        /// `parse_path` and the simple reference reading (reference.rs)
        /// agree whenever both read something.
        #[test]
        fn parse_path_agrees_with_reference(s in path_strategy()) {
            check_reference_agreement(&s)?;
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}|[\"<>@\\\\ ,:.\\[\\]a]{0,30}") {
            let _ = Address::parse(&s);
            let _ = parse_path(&s);
        }
    }
}
