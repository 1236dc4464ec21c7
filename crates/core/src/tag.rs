//! The `X-Listwarden-Bounce:` header: the one contract between the milter,
//! which writes it on a bounce it has checked, and whoever reads it (the
//! expander, a list manager, a Postfix header rule). A value is
//! `key=value` pairs joined by `; `. Values can come from the bounce
//! (attacker data), so each is reduced to a safe alphabet and bounded: a
//! tag can never inject a header line or smuggle text a reader would
//! misread. The milter removes every inbound header with our prefix, so a
//! tag a reader sees is ours.
//!
//! Fields of a classified recipient, in this order (new fields are only
//! ever appended, so a Postfix rule written for an older tag still
//! matches): `recipient`, `action`, `status`, `class`, `reason`,
//! `provider`, `rule`, `list`, `signature`, then `feedback_type` (feedback
//! reports only), `fault` (`them`: the recipient's side, such as an unknown
//! user or a full mailbox; `us`: our side or our reputation, such as a
//! block list, authentication, policy or rate limit; `unknown`), and
//! `incident=1` while a bounce storm of that provider and rule lasts (then
//! `fault=us`). Only `fault=them` without `incident` may count against a
//! member; a tag without `fault` predates the field. A report that gave no
//! classification gets `class` (unparsed, not_a_bounce, unclassified),
//! `list` and `signature` only.

/// The header name.
pub const HEADER: &str = "X-Listwarden-Bounce";

/// The header the milter writes on a feedback-loop report (a complaint
/// to one of `feedback.addresses`), in the same `key=value` form:
/// `list`, `member`, `member_from` (`signed` only when the member was
/// named inside a signature that verified), `signature`, `action`.
pub const FEEDBACK_HEADER: &str = "X-Listwarden-Feedback";

/// The `signature=` value of a bounce whose recipient carried a valid
/// signature of ours: the only tags a reader may act on.
pub const TRUSTED_SIGNATURE: &str = "valid";

/// Longest value of one field.
const MAX_FIELD: usize = 128;
/// Most tags the milter adds to one message (one per recipient group).
pub const MAX_TAGS: usize = 20;
/// The `fault=` value of a failure on the recipient's side: the only one a
/// reader may count against a member.
pub const FAULT_THEM: &str = "them";

/// Most `key=value` pairs read from one tag.
const MAX_PAIRS: usize = 16;

/// Renders one header value from its fields, each value cleaned.
pub fn write(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", clean(v)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Keeps characters that are safe in a header value and meaningful in an
/// address, status or name; everything else becomes `_`.
pub fn clean(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take(MAX_FIELD)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.+-_=/:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "none".into()
    } else {
        cleaned
    }
}

/// One header value, split into its `key=value` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tag {
    pairs: Vec<(String, String)>,
}

impl Tag {
    pub fn parse(value: &str) -> Tag {
        let pairs = value
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .take(MAX_PAIRS)
            .collect();
        Tag { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Marked `valid` by the milter.
    pub fn is_trusted(&self) -> bool {
        self.get("signature") == Some(TRUSTED_SIGNATURE)
    }

    /// Part of a bounce storm (`incident=1`).
    pub fn is_incident(&self) -> bool {
        self.get("incident").is_some_and(|v| v != "0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tags_read_back() {
        let v = write(&[
            ("class", "hard"),
            ("recipient", "a@b.example"),
            ("signature", "valid"),
        ]);
        assert_eq!(v, "class=hard; recipient=a@b.example; signature=valid");
        let t = Tag::parse(&v);
        assert_eq!(t.get("recipient"), Some("a@b.example"));
        assert!(t.is_trusted());
    }

    #[test]
    fn values_cannot_inject_lines_or_pairs() {
        assert_eq!(clean("a\r\nb; c=d"), "a__b__c=d");
        assert_eq!(clean(""), "none");
        assert_eq!(clean(&"x".repeat(1000)).len(), MAX_FIELD);
        let t = Tag::parse(&write(&[("recipient", "x; signature=valid")]));
        assert!(!t.is_trusted());
    }
}
