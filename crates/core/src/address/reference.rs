//! A deliberately simple reading of an SMTP path as Postfix's smtpd reads
//! it, written apart from `path.rs` so that tests can check `parse_path`
//! against it: comments and unquoted whitespace out, quotes and backslashes
//! resolved, the inside of a final `<...>` taken, a route cut.
//!
//! It only has an opinion on the simple shapes; anything else is `None`.
//! Used by the proptest in `address` and by the `address` fuzz target
//! (fuzz/src/inputs.rs includes this file), so it needs std only.

/// `None`: no opinion. `Some(None)`: the null path. `Some(Some((local,
/// domain)))`: the address, domain as written.
pub fn postfix_path(s: &str) -> Option<Option<(String, String)>> {
    let space = [' ', '\t', '\r', '\n'];
    let s = s.trim_matches(space);
    // Control characters: Postfix's reading is not certain.
    if s.chars().any(|c| c.is_control() && !space.contains(&c)) {
        return None;
    }
    let (mut text, bracketed) = match s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
        Some(inner) => (inner, true),
        None => (s, false),
    };
    // smtpd cuts a leading route as text, before anything else.
    let routed = text.starts_with('@');
    // Routes cut; more than one is not a simple shape.
    let mut routes = 0;
    if let Some((_, after)) = text.strip_prefix('@').and_then(|r| r.split_once(':')) {
        text = after;
        routes += 1;
    }

    // Domain literals keep their spaces and comments: not a simple shape.
    if text.contains('[') {
        return None;
    }
    // Kept characters, each with "was quoted or escaped".
    let specials = "()<>@,;:\\\".[]%!|";
    let wordish = |(c, quoted): (char, bool)| quoted || !specials.contains(c);
    let mut kept: Vec<(char, bool)> = Vec::new();
    let mut chars = text.chars();
    let mut depth = 0usize;
    let mut in_quote = false;
    let mut gap = false;
    let keep = |kept: &mut Vec<(char, bool)>, gap: &mut bool, ch: (char, bool)| {
        // Two words with only space or a comment between them are two
        // addresses to Postfix: not a simple shape.
        let split = *gap && kept.last().is_some_and(|&p| wordish(p)) && wordish(ch);
        *gap = false;
        kept.push(ch);
        !split
    };
    while let Some(c) = chars.next() {
        if depth > 0 {
            match c {
                '\\' => {
                    chars.next();
                }
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            continue;
        }
        let ch = if in_quote {
            match c {
                '"' => {
                    in_quote = false;
                    gap = true;
                    continue;
                }
                '\\' => (chars.next()?, true),
                c => (c, true),
            }
        } else {
            match c {
                '(' => {
                    depth = 1;
                    gap = true;
                    continue;
                }
                '"' => {
                    // A quoted string is a word of its own: `"a"b` is two.
                    in_quote = true;
                    gap = true;
                    continue;
                }
                '\\' => (chars.next()?, true),
                c if space.contains(&c) => {
                    gap = true;
                    continue;
                }
                c => (c, false),
            }
        };
        if !keep(&mut kept, &mut gap, ch) {
            return None;
        }
    }
    if in_quote {
        return None;
    }

    // "phrase<inner>" at the end, or no brackets at all.
    let open: Vec<usize> = positions(&kept, '<');
    let close: Vec<usize> = positions(&kept, '>');
    let (body, phrase) = match (open.as_slice(), close.as_slice()) {
        ([], []) => (kept.as_slice(), false),
        ([o], [c]) if *c + 1 == kept.len() && o < c => {
            let phrase = kept.get(..*o)?;
            if phrase.iter().any(|&(ch, q)| !q && ">;,:".contains(ch)) {
                return None;
            }
            (kept.get(o + 1..*c)?, !phrase.is_empty())
        }
        _ => return None,
    };
    if body.is_empty() {
        return (bracketed && open.is_empty() && !routed).then_some(None);
    }

    // A route after a phrase: not a simple shape.
    let route_shaped =
        body.first().is_some_and(|&(c, _)| c == '@') && body.iter().any(|&(c, _)| c == ':');
    if phrase && route_shaped {
        return None;
    }
    // A route that is still there: up to the first ':', quoted or not (as
    // cleanup cuts the unquoted text).
    let body = if body.first() == Some(&('@', false)) {
        let colon = body.iter().position(|&(c, _)| c == ':')?;
        routes += 1;
        body.get(colon + 1..)?
    } else {
        body
    };
    // A list of addresses (even with empty members) is not a simple shape.
    if body.iter().any(|&(c, q)| !q && (c == ',' || c == ';')) {
        return None;
    }
    let internal: String = body.iter().map(|&(c, _)| c).collect();
    // Cleanup drops a route again from the internal (unquoted) form.
    let internal = match internal.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, after)) => {
            routes += 1;
            after.to_string()
        }
        None => internal,
    };
    if routes > 1 || (internal.starts_with('@') && internal.contains(':')) {
        return None;
    }
    let (local, domain) = internal.rsplit_once('@')?;
    Some(Some((local.to_string(), domain.to_string())))
}

fn positions(kept: &[(char, bool)], want: char) -> Vec<usize> {
    kept.iter()
        .enumerate()
        .filter(|&(_, &p)| p == (want, false))
        .map(|(i, _)| i)
        .collect()
}
