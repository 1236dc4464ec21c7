//! Mail addresses: the canonical form listwarden compares, and the parsers
//! for SMTP paths and `From:` headers.

mod header;

pub use header::mailboxes_in_header;

use std::fmt;

/// Longest address we look at; anything longer is garbage, not mail.
const MAX_ADDRESS_LEN: usize = 512;

/// A mailbox in canonical form: domain lowercased without a trailing dot,
/// local part kept as given (quoted forms unquoted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than {MAX_ADDRESS_LEN} bytes")]
    TooLong,
    #[error("address has no @domain")]
    NoDomain,
    #[error("address has an empty local part")]
    EmptyLocal,
    #[error("address contains a control character")]
    ControlChar,
}

impl Address {
    /// Parses a bare `local@domain`, splitting at the last `@`.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(AddressError::ControlChar);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::NoDomain)?;
        let domain = domain.trim_end_matches('.').to_lowercase();
        if domain.is_empty() {
            return Err(AddressError::NoDomain);
        }
        let local = unquote(local);
        if local.is_empty() {
            return Err(AddressError::EmptyLocal);
        }
        Ok(Address { local, domain })
    }

    /// Parses an SMTP path as a milter sees it: `<a@b>`, `a@b`, `<>` (the
    /// null sender, `Ok(None)`), or a source route `<@x,@y:a@b>`.
    pub fn parse_path(s: &str) -> Result<Option<Address>, AddressError> {
        let s = s.trim();
        let inner = s
            .strip_prefix('<')
            .map(|rest| rest.strip_suffix('>').unwrap_or(rest))
            .unwrap_or(s)
            .trim();
        if inner.is_empty() {
            return Ok(None);
        }
        let inner = match inner.strip_prefix('@') {
            Some(route) => route.split_once(':').map(|(_, a)| a).unwrap_or(route),
            None => inner,
        };
        Address::parse(inner).map(Some)
    }

    /// The form used to compare addresses: both parts lowercased. Local parts
    /// are case-sensitive in theory; no list server treats them so.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }
}

fn unquote(local: &str) -> String {
    match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => local.to_string(),
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs_quotes = self.local.is_empty()
            || self
                .local
                .chars()
                .any(|c| c.is_whitespace() || "\"(),:;<>@[\\]".contains(c));
        if needs_quotes {
            write!(f, "\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("<>", None),
            ("< >", None),
            ("<a@B.Example.>", Some("a@b.example")),
            ("a@b", Some("a@b")),
            (
                "<@relay.example,@x.example:u@d.example>",
                Some("u@d.example"),
            ),
            (
                "<\"john doe\"@example.org>",
                Some("\"john doe\"@example.org"),
            ),
        ];
        for (input, want) in cases {
            let got = Address::parse_path(input).unwrap().map(|a| a.to_string());
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn bad_paths() {
        for input in ["<nodomain>", "<@>", "<a@>", "<a\u{0}b@c>", &"x".repeat(600)] {
            assert!(Address::parse_path(input).is_err(), "{input:?}");
        }
    }
}
