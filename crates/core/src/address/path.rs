//! An SMTP path read the way Postfix's smtpd reads it (`extract_addr` with
//! the default `strict_rfc821_envelopes = no`), so that a check decides on
//! the address Postfix will queue and deliver, not on a stricter reading of
//! its text.
//!
//! What smtpd does, in order (Postfix 3.x, src/smtpd/smtpd.c `extract_addr`,
//! src/global/tok822_parse.c, src/trivial-rewrite/rewrite.c):
//!
//! 1. One outer `<...>` is removed when the argument starts with `<` and ends
//!    with `>`.
//! 2. If the rest starts with `@` and holds a `:`, everything up to the first
//!    `:` goes (the source route), as plain text, without tokenizing.
//! 3. The rest is tokenized as RFC 822 (atoms, quoted strings, domain
//!    literals, comments, specials; space, tab, CR and LF separate tokens; a
//!    backslash quotes the next character anywhere) and grouped into
//!    addresses. More than one address is a syntax error (501).
//! 4. The address is turned into internal form: quotes and comments gone,
//!    tokens concatenated.
//! 5. Cleanup's canonical rewrite drops a source route that is still there
//!    (`@a:u@d`, for instance after a leading space) and one trailing dot,
//!    and turns `d!u` and `u%d` into `u@d` (default `swap_bangpath`,
//!    `allow_percent_hack`).
//!
//! The smtpd command tokenizer has already refused an argument whose `<` or
//! `"` is never closed; we refuse those too.
//!
//! Where Postfix's reading is not certain we give none (an error: the milter
//! answers 451 when the text names a protected domain): a control character
//! other than tab, CR, LF; more than one source route (a quoted `@x:` counts
//! once its quotes are gone); a route after a phrase (`x <@a:u@d>`). The
//! test oracle in `reference.rs` has no opinion on the same shapes.

use super::{Address, AddressError, MAX_PATH_LEN};

/// One RFC 822 token, comments left out (tok822 moves them aside; they are
/// never part of an address).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An atom, quoted string or domain literal, in internal (unquoted) form.
    /// Domain literals keep their brackets.
    Word(String),
    /// A single-character operator: RFC 822 specials plus `%`, `!`, `|`.
    Op(char),
}

/// tok822's operators: `|%!` and the RFC 822 specials.
const OPS: &str = "|%!()<>@,;:\\\".[]";

fn is_op(c: char) -> bool {
    OPS.contains(c)
}

/// Whitespace as tok822 sees it; other spaces are atom characters.
fn is_822_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Reads an SMTP path argument; `Ok(None)` is the null path.
pub(crate) fn read(s: &str) -> Result<Option<Address>, AddressError> {
    if s.len() > MAX_PATH_LEN {
        return Err(AddressError::TooLong);
    }
    // Postfix never passes surrounding whitespace; other callers may.
    let s = s.trim_matches(is_822_space);
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    check_smtpd_token(s)?;
    // What Postfix makes of a control character (smtpd may refuse it, a
    // later stage may read past it) is not certain: no reading.
    if s.contains(|c: char| c.is_control() && !is_822_space(c)) {
        return Err(AddressError::ControlChar);
    }
    let (text, bracketed) = match s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        Some(inner) => (inner, true),
        None => (s, false),
    };
    let routed = text.starts_with('@');
    // "@a.example" with no ':' is a route that never ends.
    let unended_route = routed && !text.contains(':');
    // Routes cut so far: smtpd's, as text.
    let mut routes = usize::from(routed && !unended_route);
    let text = cut_route_text(text);
    let mut tokens = scan(text);
    if tokens.is_empty() {
        // Only "<>" with nothing but space or comments inside is null. Postfix
        // reads a bare "(x)" and a route to nowhere ("<@a:>") as null too, but
        // no client sends those: refuse them.
        return if routed {
            Err(AddressError::BadRoute)
        } else if bracketed {
            Ok(None)
        } else {
            Err(AddressError::Empty)
        };
    }
    if cut_route_tokens(&mut tokens) {
        routes += 1;
    }
    let read = single_address(&tokens).and_then(|(start, end)| {
        let internal = internalize(tokens.get(start..end).unwrap_or_default());
        // A phrase: anything but '<' before the address (`x <@a:u@d>`).
        let phrase = tokens
            .get(..start)
            .is_some_and(|before| before.iter().any(|t| *t != Tok::Op('<')));
        check_routes(&internal, routes, phrase)?;
        split_internal(&internal)
    });
    match read {
        Ok(a) => Ok(Some(a)),
        Err(_) if unended_route => Err(AddressError::BadRoute),
        Err(e) => Err(e),
    }
}

/// The reading of an address in Postfix's internal form (quotes removed,
/// as in the `{mail_addr}` and `{rcpt_addr}` macros), after cleanup's
/// canonical rewrite with its defaults: a leading source route goes; without
/// an `@`, `domain!user` becomes `user@domain` (`swap_bangpath`) or else the
/// last `%` becomes `@` (`allow_percent_hack`). Then it splits at the last `@`.
/// A bare local part gets `@$myorigin` from Postfix, which we do not know:
/// that stays [`AddressError::NoAt`].
pub(crate) fn split_internal(internal: &str) -> Result<Address, AddressError> {
    if internal.len() > MAX_PATH_LEN {
        return Err(AddressError::TooLong);
    }
    let internal = cut_route_text(internal);
    // A second route: see `check_routes`.
    if is_routed(internal) {
        return Err(AddressError::BadRoute);
    }
    if internal.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some((local, domain)) = internal.rsplit_once('@') {
        return Address::new(local, domain);
    }
    // A site that turned the rewrite off gets an address it would not
    // deliver to: an over-reading, which only means more checks.
    if let Some((domain, local)) = internal.split_once('!') {
        return Address::new(local, domain);
    }
    match internal.rsplit_once('%') {
        Some((local, domain)) => Address::new(local, domain),
        None => Err(AddressError::NoAt),
    }
}

/// smtpd's command tokenizer marks an argument whose `<...>` or `"..."` is
/// not closed as an error (501 before the milter sees it).
fn check_smtpd_token(s: &str) -> Result<(), AddressError> {
    let mut depth = 0usize;
    let mut in_quote = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' if depth > 0 || in_quote => in_quote = !in_quote,
            '"' => in_quote = true,
            '<' if !in_quote => depth += 1,
            '>' if !in_quote && depth > 0 => depth -= 1,
            _ => {}
        }
    }
    if in_quote {
        Err(AddressError::BadQuoting)
    } else if depth > 0 {
        Err(AddressError::BadBrackets)
    } else {
        Ok(())
    }
}

/// True when `text` starts with a source route (`@...:`).
fn is_routed(text: &str) -> bool {
    text.starts_with('@') && text.contains(':')
}

/// Refuses the route shapes whose reading by Postfix is not certain:
///
/// * more than one route (`<@a:@b:u@d>`, or a route then a quoted `@x:`):
///   smtpd cuts one as text, cleanup's rewrite one more from the internal
///   form, and what is left may still start with `@...:` (a quoted ':'
///   turns into a route once the quotes are gone) for later stages to read
///   as they will;
/// * a route after a phrase (`x <@a:u@d>`): smtpd's text cut does not
///   apply, and tok822's grouping of the phrase decides what cleanup sees.
///
/// `routes` counts the routes already cut (smtpd's text cut, a route cut as
/// tokens); the ones left in `internal` are counted as cleanup would cut
/// them, at the first ':' of the text.
fn check_routes(internal: &str, mut routes: usize, phrase: bool) -> Result<(), AddressError> {
    if phrase && is_routed(internal) {
        return Err(AddressError::BadRoute);
    }
    let mut rest = internal;
    while routes < 2 && is_routed(rest) {
        routes += 1;
        rest = cut_route_text(rest);
    }
    if routes > 1 {
        Err(AddressError::BadRoute)
    } else {
        Ok(())
    }
}

/// A leading `@...:` goes, up to the first `:` as text (smtpd's strchr, and
/// `quote_822_local` for the internal form).
fn cut_route_text(text: &str) -> &str {
    match text.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, rest)) => rest,
        None => text,
    }
}

/// A route that survived as tokens (after a leading space or comment):
/// `@ a , @ b :`. Postfix refuses the form with commas (two addresses) and
/// cleanup drops the one without; reading past it is the safe reading.
/// Only route-shaped prefixes are cut, so no address can be skipped; a word
/// holding ':' (quoted, or a literal) is left to `split_internal`, which cuts
/// at the first ':' of the text as cleanup's `quote_822_local` does.
/// Returns whether it cut one.
fn cut_route_tokens(tokens: &mut Vec<Tok>) -> bool {
    if tokens.first() != Some(&Tok::Op('@')) {
        return false;
    }
    let colon = tokens.iter().position(|t| match t {
        Tok::Word(w) => w.contains(':'),
        Tok::Op(c) => !matches!(c, '@' | ',' | '.'),
    });
    if let Some(i) = colon
        && tokens.get(i) == Some(&Tok::Op(':'))
        && i + 1 < tokens.len()
    {
        tokens.drain(..=i);
        return true;
    }
    false
}

/// tok822_scan: the text as tokens, comments and whitespace dropped.
fn scan(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if is_822_space(c) => {}
            '(' => skip_comment(&mut chars),
            '"' => out.push(Tok::Word(collect_until(&mut chars, '"'))),
            '[' => {
                let inner = collect_until(&mut chars, ']');
                out.push(Tok::Word(format!("[{inner}]")));
            }
            c if c != '\\' && is_op(c) => out.push(Tok::Op(c)),
            first => {
                // An atom; a backslash takes the next character as is.
                let mut atom = String::new();
                let mut c = first;
                loop {
                    if c == '\\' {
                        match chars.next() {
                            Some(q) => atom.push(q),
                            None => break,
                        }
                    } else {
                        atom.push(c);
                    }
                    match chars.peek() {
                        Some(&n) if !is_822_space(n) && (n == '\\' || !is_op(n)) => {
                            c = n;
                            chars.next();
                        }
                        _ => break,
                    }
                }
                out.push(Tok::Word(atom));
            }
        }
    }
    out
}

/// Quoted string or domain literal body; an unterminated one runs to the end.
fn collect_until(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, close: char) -> String {
    let mut s = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(q) => s.push(if is_822_space(q) { ' ' } else { q }),
                None => break,
            },
            c if c == close => break,
            c => s.push(if is_822_space(c) { ' ' } else { c }),
        }
    }
    s
}

/// Nested comment with quoted-pairs; an unterminated one runs to the end.
fn skip_comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let mut depth = 1usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// tok822_parse's grouping, right to left: returns the one address's token
/// range, or an error when there are several (smtpd answers 501) or none.
///
/// Addresses are separated by `,`, by `<...>` (whose inside is an address and
/// whose left-hand phrase is skipped), by `:`/`;` of a group, and by two
/// words in a row. The position only moves left, so the work is linear.
fn single_address(tokens: &[Tok]) -> Result<(usize, usize), AddressError> {
    const WORD: u8 = 1;
    const GROUP: u8 = 2;
    // Token positions as tok822's list nodes: -1 is the head sentinel and
    // `len` the tail; an address is what lies strictly between two nodes.
    let op = |at: isize| match usize::try_from(at).ok().and_then(|i| tokens.get(i)) {
        Some(Tok::Op(c)) => Some(*c),
        _ => None,
    };
    let is_word = |at: isize| {
        matches!(
            usize::try_from(at).ok().and_then(|i| tokens.get(i)),
            Some(Tok::Word(_))
        )
    };
    let mut found: Option<(usize, usize)> = None;
    let mut count = 0usize;
    let mut add = |left: isize, right: isize| {
        if let (Ok(start), Ok(end)) = (usize::try_from(left + 1), usize::try_from(right))
            && start < end
        {
            count += 1;
            // Right to left: the first one found is the last in the list.
            found.get_or_insert((start, end));
        }
    };
    let len = isize::try_from(tokens.len()).map_err(|_| AddressError::TooLong)?;
    let mut state = WORD;
    let mut right = len;
    let mut at = len - 1;
    while at >= 0 {
        match op(at) {
            Some(';') => {
                add(at, right);
                right = at;
                state = GROUP | WORD;
            }
            Some(':') if state & GROUP != 0 => {
                add(at, right);
                // Back to the ',' before the group's name (not an address).
                while at >= 0 && op(at) != Some(',') {
                    at -= 1;
                }
                right = at;
                continue;
            }
            Some('>') => {
                // Junk after '>' is an address of its own.
                add(at, right);
                let close = at;
                while at >= 0 && op(at) != Some('<') {
                    at -= 1;
                }
                add(at, close);
                // The '<' and the phrase before it are no address.
                while at >= 0 && !matches!(op(at), Some('>' | ';' | ',' | ':')) {
                    at -= 1;
                }
                right = at;
                state |= WORD;
                continue;
            }
            Some(',') => {
                add(at, right);
                right = at;
                state |= WORD;
            }
            _ if is_word(at) => {
                if state & WORD == 0 {
                    add(at, right);
                    right = at + 1;
                }
                state &= !WORD;
            }
            _ => state |= WORD,
        }
        at -= 1;
    }
    add(-1, right);
    match (count, found) {
        (1, Some(span)) => Ok(span),
        (0, _) => Err(AddressError::Empty),
        _ => Err(AddressError::Several),
    }
}

/// tok822_internalize: the tokens concatenated. Two words in a row (only
/// possible inside nested brackets, `<<a b@c>>`) are joined without a space:
/// every token of an address is owned by it, and owned tokens get none
/// (tok822_append_space). Releases whose tok822_sub_append left the first
/// token unowned put one space after it; reading the joined form may then
/// over-match, which is safe; an error would let the milter skip the check.
fn internalize(tokens: &[Tok]) -> String {
    let mut out = String::new();
    for t in tokens {
        match t {
            Tok::Word(w) => out.push_str(w),
            Tok::Op(c) => out.push(*c),
        }
    }
    out
}
