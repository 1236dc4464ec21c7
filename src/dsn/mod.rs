//! Bounce and feedback-report parsing and classification.
//!
//! - [`parse`] reads RFC 3464 delivery status notifications, RFC 5965 feedback
//!   reports and common plain-text bounces into a bounded [`Report`]; it never
//!   panics and never reads more than [`Limits::max_bytes`].
//! - [`RuleSet`] holds the YAML classification rules (built-in set from
//!   `providers.yaml`, operator overrides merged with [`RuleSet::merge`]).
//! - [`classify`] turns a report into one [`Classification`] per recipient
//!   (or per feedback report); [`json_lines`] prints them.
//!
//! Pure logic: no I/O, no other listwarden module.

mod classify;
mod fields;
mod notice;
mod parse;
mod plain;
mod report;
mod rules;
pub mod tag;

use std::sync::LazyLock;

pub use classify::{Classification, FALLBACK_RULE, classify, json_lines};
pub use parse::{MAX_RECEIVED_HEADERS, parse};
pub use report::{
    DsnAction, Feedback, Limits, OriginalHeaders, RecipientStatus, Report, ReportKind,
    UnparsedReason,
};
pub use rules::{
    Class, Fault, MatchInput, Problem, Reason, Retry, Rule, RuleAction, RuleIssue, RuleResult,
    RuleSet, RulesError,
};

/// The built-in rules, compiled once for [`fuzz_parse_classify`]. A unit test
/// guarantees they load; if they ever did not, the fallback still classifies.
static BUILTIN_FOR_FUZZ: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::builtin().unwrap_or_else(|_| RuleSet::empty("builtin (failed to load)"))
});

/// Fuzz entry point: parse with default limits, classify with the built-in
/// rules, render the JSON lines, drop everything. Must never panic.
pub fn fuzz_parse_classify(data: &[u8]) {
    let report = parse(data, &Limits::default());
    let classes = classify(&report, &BUILTIN_FOR_FUZZ);
    let _ = json_lines("fuzz", &report, &classes);
}
