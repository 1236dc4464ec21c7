//! Classification rules: YAML, validated and compiled once, then matched many
//! times. The file format is documented at the top of `providers.yaml`, which
//! is also the built-in rule set.
//!
//! Loading collects every problem (bad regex, unknown key, unknown class,
//! reason or action, duplicate name) with the rule's index, name and key path,
//! so an operator fixes a file in one pass.

use std::collections::HashSet;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::report::DsnAction;

/// The shipped rules (`config/rules/providers.yaml` in listwarden).
pub(crate) const BUILTIN_RULES_YAML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/rules/providers.yaml"
));

/// Largest rules file accepted (fault C1: a 100 MB file is refused unread).
pub(crate) const MAX_RULES_TEXT_BYTES: usize = 1024 * 1024;

/// Most rules in one file.
pub(crate) const MAX_RULES: usize = 2000;

/// Compiled size limit per regex (regex's own guard against huge automata).
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// Longest regex source accepted.
const MAX_PATTERN_LEN: usize = 2048;

/// Longest rule or provider name; names become metric labels, so they are short.
const MAX_NAME_LEN: usize = 64;

/// How the failure counts for the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Permanent failure of the recipient address itself (counts as a bounce).
    Hard,
    /// Failure not (yet) attributable to the recipient: full mailbox, blocks
    /// and policy against the sender, too big, expired in the queue.
    Soft,
    /// Temporary refusal; the message is still queued. Never a bounce.
    Deferral,
    /// A complaint (feedback report, complaint-driven block).
    Complaint,
    /// Success or a report that is not a problem (e.g. ARF `not-spam`).
    Delivered,
}

/// Why it failed. `snake_case` in YAML and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The mailbox does not exist (5.1.1).
    UnknownUser,
    /// Over quota (5.2.2 / 4.2.2).
    MailboxFull,
    /// The recipient domain does not resolve or accepts no mail (5.1.2).
    HostUnknown,
    /// Our IP or domain is blocked (provider or RBL).
    Blocked,
    /// Slowed down for volume or rate.
    RateLimited,
    /// Refused because of user complaints.
    Complaint,
    /// Refused for content judged to be spam.
    SpamContent,
    /// Refused by a local policy (5.7.x not otherwise known).
    Policy,
    /// SPF, DKIM or DMARC failure of our mail.
    AuthFailure,
    /// Larger than the receiver accepts (5.3.4, 5.2.3).
    MessageTooBig,
    /// Gave up after the queue lifetime (4.4.7).
    Expired,
    /// Connection or routing trouble (4.4.x).
    Network,
    /// Receiving system trouble (x.3.x).
    System,
    /// An auto-reply, not a failure.
    Vacation,
    /// A feedback report (ARF).
    Feedback,
    /// The receiver's own setup is wrong (e.g. RBL queried through an open
    /// resolver, Spamhaus 127.255.255.254); not our fault.
    ReceiverMisconfig,
    /// Anything else.
    Other,
}

/// Whose side the failure is on. Only `them` may count against a member:
/// a list must never unsubscribe people for its own reputation or setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The recipient's side: the mailbox does not exist, is full or
    /// disabled, the domain takes no mail.
    Them,
    /// Our side or our reputation: block lists, authentication, content
    /// and policy refusals, rate limits, relay denied.
    Us,
    /// Neither is shown (network, queue expiry, the receiver's own setup).
    Unknown,
}

impl Fault {
    /// The snake_case name, as in rules, tags and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Them => "them",
            Fault::Us => "us",
            Fault::Unknown => "unknown",
        }
    }

    /// The fault a reason implies when a rule names none.
    pub fn default_for(reason: Reason) -> Fault {
        match reason {
            Reason::UnknownUser | Reason::MailboxFull | Reason::HostUnknown => Fault::Them,
            Reason::Blocked
            | Reason::RateLimited
            | Reason::Complaint
            | Reason::SpamContent
            | Reason::Policy
            | Reason::AuthFailure
            | Reason::MessageTooBig => Fault::Us,
            Reason::Expired
            | Reason::Network
            | Reason::System
            | Reason::Vacation
            | Reason::Feedback
            | Reason::ReceiverMisconfig
            | Reason::Other => Fault::Unknown,
        }
    }
}

/// When sending to this recipient again makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    Now,
    Later,
    Never,
}

impl Class {
    /// The snake_case name, as in rules, tags and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Hard => "hard",
            Class::Soft => "soft",
            Class::Deferral => "deferral",
            Class::Complaint => "complaint",
            Class::Delivered => "delivered",
        }
    }
}

impl Reason {
    /// The snake_case name, as in rules, tags and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownUser => "unknown_user",
            Reason::MailboxFull => "mailbox_full",
            Reason::HostUnknown => "host_unknown",
            Reason::Blocked => "blocked",
            Reason::RateLimited => "rate_limited",
            Reason::Complaint => "complaint",
            Reason::SpamContent => "spam_content",
            Reason::Policy => "policy",
            Reason::AuthFailure => "auth_failure",
            Reason::MessageTooBig => "message_too_big",
            Reason::Expired => "expired",
            Reason::Network => "network",
            Reason::System => "system",
            Reason::Vacation => "vacation",
            Reason::Feedback => "feedback",
            Reason::ReceiverMisconfig => "receiver_misconfig",
            Reason::Other => "other",
        }
    }
}

impl Retry {
    /// The retry implied by a class when a rule gives none.
    pub fn default_for(class: Class) -> Self {
        match class {
            Class::Hard | Class::Complaint => Self::Never,
            Class::Soft | Class::Deferral => Self::Later,
            Class::Delivered => Self::Now,
        }
    }
}

/// What the milter does with the bounce message itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Accept and tag it with the classification.
    #[default]
    Accept,
    /// Put it in Postfix's hold queue.
    Quarantine,
    /// 4xx: the sender retries.
    Tempfail,
    // No "discard": a bounce that reached classification passed its check,
    // and dropping mail silently is for proven backscatter only (refused
    // at RCPT instead). A rules file that asks for it is refused at load.
}

/// What a rule says about a matching recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleResult {
    pub class: Class,
    pub reason: Reason,
    /// `unknown` when the rule names none.
    pub provider: String,
    pub retry: Retry,
    /// From the rule, else [`Fault::default_for`] the reason.
    pub fault: Fault,
}

/// The fields a rule is matched against. Absent values never match a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchInput<'a> {
    pub diagnostic: Option<&'a str>,
    pub status: Option<&'a str>,
    pub smtp_code: Option<u16>,
    pub remote_mta: Option<&'a str>,
    pub reporting_mta: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub action: Option<DsnAction>,
    pub feedback_type: Option<&'a str>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    matcher: Matcher,
    result: RuleResult,
    action: RuleAction,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn result(&self) -> &RuleResult {
        &self.result
    }

    pub fn action(&self) -> RuleAction {
        self.action
    }

    /// True when every key present in the rule's `match` matches.
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        self.matcher.matches(input)
    }
}

#[derive(Debug, Clone, Default)]
struct Matcher {
    diagnostic: Option<Regex>,
    status: Option<Regex>,
    smtp_code: Option<Regex>,
    remote_mta: Option<Regex>,
    reporting_mta: Option<Regex>,
    recipient: Option<Regex>,
    feedback_type: Option<Regex>,
    action: Option<Vec<DsnAction>>,
}

impl Matcher {
    fn matches(&self, input: &MatchInput<'_>) -> bool {
        fn key(re: &Option<Regex>, value: Option<&str>) -> bool {
            re.as_ref()
                .is_none_or(|re| value.is_some_and(|v| re.is_match(v)))
        }
        let code_matches = self.smtp_code.as_ref().is_none_or(|re| {
            input
                .smtp_code
                .is_some_and(|code| re.is_match(&code.to_string()))
        });
        code_matches
            && key(&self.diagnostic, input.diagnostic)
            && key(&self.status, input.status)
            && key(&self.remote_mta, input.remote_mta)
            && key(&self.reporting_mta, input.reporting_mta)
            && key(&self.recipient, input.recipient)
            && key(&self.feedback_type, input.feedback_type)
            && self
                .action
                .as_ref()
                .is_none_or(|set| input.action.is_some_and(|a| set.contains(&a)))
    }
}

/// An ordered list of rules; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    origin: String,
    rules: Vec<Rule>,
}

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleIssue {
    /// Index in `rules`, when the problem is inside a rule.
    pub index: Option<usize>,
    /// The rule's name, when it has a readable one.
    pub name: Option<String>,
    /// Key path, e.g. `rules[3].match.diagnostic`.
    pub key: String,
    pub problem: Problem,
}

/// What is wrong at one key of a rules file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("the file must be a mapping with a `rules` list")]
    FileNotAMapping,
    #[error("only version 1 is known")]
    UnknownVersion,
    #[error("{0} rules, more than the limit of {MAX_RULES}")]
    TooManyRules(usize),
    #[error("must be a list of rules")]
    RulesNotAList,
    #[error("unknown key, expected one of: {}", .0.join(", "))]
    UnknownKey(&'static [&'static str]),
    #[error("a rule must be a mapping")]
    RuleNotAMapping,
    #[error("duplicate rule name")]
    DuplicateName,
    #[error("missing")]
    Missing,
    #[error("must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -")]
    NotALabel,
    /// A value of the wrong shape or an unknown word, in serde's words.
    #[error("{0}")]
    Value(String),
    #[error(
        "{0}; expected one of failed, delayed, delivered, relayed, expanded, or a list of them"
    )]
    DsnAction(String),
    #[error("must be a mapping of match keys")]
    MatchNotAMapping,
    #[error("empty: a rule must match on at least one key")]
    EmptyMatch,
    #[error("unknown key, expected one of: {}, action", MATCH_REGEX_KEYS.join(", "))]
    UnknownMatchKey,
    #[error("must be a regex string (quote numbers: '^550$')")]
    NotARegexString,
    #[error("must be a mapping")]
    ResultNotAMapping,
    #[error("regex is {0} bytes, over the {MAX_PATTERN_LEN}-byte limit")]
    PatternTooLong(usize),
    #[error("{0}")]
    Regex(#[from] regex::Error),
}

impl fmt::Display for RuleIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if let Some(name) = &self.name {
            write!(f, " (rule {name:?})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

fn list_issues(issues: &[RuleIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn location(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l} column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// Why a rules file was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RulesError {
    #[error("{origin}: {size} bytes is over the {max}-byte limit for a rules file")]
    TooLarge {
        origin: String,
        size: usize,
        max: usize,
    },
    #[error("{origin}: YAML error{}: {message}", location(.line, .column))]
    Yaml {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{origin}: {} problem(s):\n{}", .issues.len(), list_issues(.issues))]
    Invalid {
        origin: String,
        issues: Vec<RuleIssue>,
    },
}

// ---- the YAML shape (strict; used after the key-by-key check below) ----

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(rename = "match")]
    matcher: RawMatch,
    result: RawResult,
    #[serde(default)]
    action: RuleAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    diagnostic: Option<String>,
    status: Option<String>,
    smtp_code: Option<String>,
    remote_mta: Option<String>,
    reporting_mta: Option<String>,
    recipient: Option<String>,
    feedback_type: Option<String>,
    action: Option<OneOrMany<DsnAction>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResult {
    class: Class,
    reason: Reason,
    provider: Option<String>,
    retry: Option<Retry>,
    fault: Option<Fault>,
}

const TOP_KEYS: &[&str] = &["version", "rules"];
const RULE_KEYS: &[&str] = &["name", "match", "result", "action"];
const MATCH_REGEX_KEYS: &[&str] = &[
    "diagnostic",
    "status",
    "smtp_code",
    "remote_mta",
    "reporting_mta",
    "recipient",
    "feedback_type",
];
const RESULT_KEYS: &[&str] = &["class", "reason", "provider", "retry", "fault"];

/// Collects the issues of one file.
struct Issues {
    list: Vec<RuleIssue>,
}

impl Issues {
    fn add(&mut self, index: Option<usize>, name: Option<&str>, key: String, problem: Problem) {
        self.list.push(RuleIssue {
            index,
            name: name.map(str::to_owned),
            key,
            problem,
        });
    }
}

/// Why `value` is not a `T`, in serde_yaml_ng's words (a `Value` has no
/// location, so the message carries none).
fn value_error<T: DeserializeOwned>(value: &Value) -> Option<String> {
    serde_yaml_ng::from_value::<T>(value.clone())
        .err()
        .map(|e| e.to_string())
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn compile(pattern: &str) -> Result<Regex, Problem> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(Problem::PatternTooLong(pattern.len()));
    }
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(Problem::from)
}

impl RuleSet {
    /// An empty set: everything falls back to the built-in classification.
    pub fn empty(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            rules: Vec::new(),
        }
    }

    /// The shipped rules, compiled once per process (every config load and
    /// reload uses them; compiling their regexes is most of a load's cost).
    /// A test guarantees they load.
    pub fn builtin() -> Result<Self, RulesError> {
        static BUILTIN: std::sync::LazyLock<Result<RuleSet, RulesError>> =
            std::sync::LazyLock::new(|| {
                RuleSet::from_yaml_str(BUILTIN_RULES_YAML, "builtin:providers.yaml")
            });
        BUILTIN.clone()
    }

    /// Parses and compiles a rules file. `origin` names it in errors.
    pub(crate) fn from_yaml_str(text: &str, origin: &str) -> Result<Self, RulesError> {
        if text.len() > MAX_RULES_TEXT_BYTES {
            return Err(RulesError::TooLarge {
                origin: origin.to_owned(),
                size: text.len(),
                max: MAX_RULES_TEXT_BYTES,
            });
        }
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| RulesError::Yaml {
            origin: origin.to_owned(),
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message: e.to_string(),
        })?;
        let mut issues = Issues { list: Vec::new() };
        let mut rules = Vec::new();
        match &doc {
            Value::Mapping(top) => {
                for (key, value) in top {
                    match key.as_str() {
                        Some("version") => {
                            if value.as_u64() != Some(1) {
                                issues.add(None, None, "version".into(), Problem::UnknownVersion);
                            }
                        }
                        Some("rules") => match value {
                            Value::Sequence(items) if items.len() > MAX_RULES => issues.add(
                                None,
                                None,
                                "rules".into(),
                                Problem::TooManyRules(items.len()),
                            ),
                            Value::Sequence(items) => {
                                let mut seen = HashSet::new();
                                for (index, item) in items.iter().enumerate() {
                                    let name = item.get("name").and_then(Value::as_str);
                                    if let Some(name) = name
                                        && !seen.insert(name)
                                    {
                                        issues.add(
                                            Some(index),
                                            Some(name),
                                            format!("rules[{index}].name"),
                                            Problem::DuplicateName,
                                        );
                                    }
                                    if let Some(rule) = compile_rule(index, item, &mut issues) {
                                        rules.push(rule);
                                    }
                                }
                            }
                            Value::Null => {}
                            _ => issues.add(None, None, "rules".into(), Problem::RulesNotAList),
                        },
                        _ => issues.add(
                            None,
                            None,
                            key.as_str().unwrap_or("?").to_owned(),
                            Problem::UnknownKey(TOP_KEYS),
                        ),
                    }
                }
            }
            Value::Null => {}
            _ => issues.add(None, None, String::new(), Problem::FileNotAMapping),
        }
        if !issues.list.is_empty() {
            return Err(RulesError::Invalid {
                origin: origin.to_owned(),
                issues: issues.list,
            });
        }
        Ok(Self {
            origin: origin.to_owned(),
            rules,
        })
    }

    /// Operator rules on top of a base set. A rule whose name is in `base`
    /// replaces that rule *in its place*, so the base's specific-before-generic
    /// order holds; rules with new names are tried *before* all base rules, in
    /// their own order.
    pub fn merge(base: RuleSet, overrides: RuleSet) -> RuleSet {
        let base_names: HashSet<&str> = base.rules.iter().map(|r| r.name.as_str()).collect();
        let mut new_rules = Vec::new();
        let mut replacements = Vec::new();
        for rule in overrides.rules {
            if base_names.contains(rule.name.as_str()) {
                replacements.push(rule);
            } else {
                new_rules.push(rule);
            }
        }
        let mut rules = new_rules;
        for rule in base.rules {
            match replacements.iter().position(|r| r.name == rule.name) {
                Some(i) => rules.push(replacements.swap_remove(i)),
                None => rules.push(rule),
            }
        }
        RuleSet {
            origin: format!("{} + {}", base.origin, overrides.origin),
            rules,
        }
    }

    /// The first rule that matches.
    pub(crate) fn first_match(&self, input: &MatchInput<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(input))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Checks one rule key by key (so that every problem is reported), then
/// builds it with the strict serde shape and compiles its regexes.
fn compile_rule(index: usize, item: &Value, issues: &mut Issues) -> Option<Rule> {
    let before = issues.list.len();
    let path = format!("rules[{index}]");
    let Value::Mapping(map) = item else {
        issues.add(Some(index), None, path, Problem::RuleNotAMapping);
        return None;
    };
    let name = map.get("name").and_then(Value::as_str);
    let name_ok = name.filter(|n| is_label(n));
    for required in ["name", "match", "result"] {
        if !map.contains_key(required) {
            issues.add(
                Some(index),
                name,
                format!("{path}.{required}"),
                Problem::Missing,
            );
        }
    }
    if name.is_some() && name_ok.is_none() {
        issues.add(
            Some(index),
            name,
            format!("{path}.name"),
            Problem::NotALabel,
        );
    }
    let mut add = |key: String, problem: Problem| issues.add(Some(index), name, key, problem);
    for (key, value) in map {
        let key_str = key.as_str().unwrap_or("?");
        let key_path = format!("{path}.{key_str}");
        match key_str {
            "name" => {
                if let Some(e) = value_error::<String>(value) {
                    add(key_path, Problem::Value(e));
                }
            }
            "action" => {
                if let Some(e) = value_error::<RuleAction>(value) {
                    add(key_path, Problem::Value(e));
                }
            }
            "match" => check_match(value, &key_path, &mut add),
            "result" => check_result(value, &key_path, &mut add),
            _ => add(key_path, Problem::UnknownKey(RULE_KEYS)),
        }
    }
    if issues.list.len() > before {
        return None;
    }
    let raw: RawRule = match serde_yaml_ng::from_value(item.clone()) {
        Ok(raw) => raw,
        Err(e) => {
            issues.add(Some(index), name, path, Problem::Value(e.to_string()));
            return None;
        }
    };
    let mut regex = |key: &str, pattern: Option<String>| -> Option<Regex> {
        let pattern = pattern?;
        match compile(&pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                issues.add(Some(index), name, format!("{path}.match.{key}"), e);
                None
            }
        }
    };
    let m = raw.matcher;
    let matcher = Matcher {
        diagnostic: regex("diagnostic", m.diagnostic),
        status: regex("status", m.status),
        smtp_code: regex("smtp_code", m.smtp_code),
        remote_mta: regex("remote_mta", m.remote_mta),
        reporting_mta: regex("reporting_mta", m.reporting_mta),
        recipient: regex("recipient", m.recipient),
        feedback_type: regex("feedback_type", m.feedback_type),
        action: m.action.map(|a| match a {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(list) => list,
        }),
    };
    if issues.list.len() > before {
        return None;
    }
    let provider = raw.result.provider.unwrap_or_else(|| "unknown".to_owned());
    Some(Rule {
        name: raw.name,
        matcher,
        result: RuleResult {
            class: raw.result.class,
            reason: raw.result.reason,
            retry: raw
                .result
                .retry
                .unwrap_or(Retry::default_for(raw.result.class)),
            fault: raw
                .result
                .fault
                .unwrap_or(Fault::default_for(raw.result.reason)),
            provider,
        },
        action: raw.action,
    })
}

fn check_match(value: &Value, path: &str, add: &mut impl FnMut(String, Problem)) {
    let Value::Mapping(map) = value else {
        add(path.to_owned(), Problem::MatchNotAMapping);
        return;
    };
    if map.is_empty() {
        add(path.to_owned(), Problem::EmptyMatch);
    }
    for (key, value) in map {
        let key_str = key.as_str().unwrap_or("?");
        let key_path = format!("{path}.{key_str}");
        if key_str == "action" {
            if let Some(e) = value_error::<OneOrMany<DsnAction>>(value) {
                add(key_path, Problem::DsnAction(e));
            }
        } else if MATCH_REGEX_KEYS.contains(&key_str) {
            if !value.is_string() {
                add(key_path, Problem::NotARegexString);
            }
        } else {
            add(key_path, Problem::UnknownMatchKey);
        }
    }
}

fn check_result(value: &Value, path: &str, add: &mut impl FnMut(String, Problem)) {
    let Value::Mapping(map) = value else {
        add(path.to_owned(), Problem::ResultNotAMapping);
        return;
    };
    for required in ["class", "reason"] {
        if !map.contains_key(required) {
            add(format!("{path}.{required}"), Problem::Missing);
        }
    }
    for (key, value) in map {
        let key_str = key.as_str().unwrap_or("?");
        let key_path = format!("{path}.{key_str}");
        let error = match key_str {
            "class" => value_error::<Class>(value).map(Problem::Value),
            "reason" => value_error::<Reason>(value).map(Problem::Value),
            "retry" => value_error::<Retry>(value).map(Problem::Value),
            "fault" => value_error::<Fault>(value).map(Problem::Value),
            "provider" => match value.as_str() {
                Some(p) if is_label(p) => None,
                _ => Some(Problem::NotALabel),
            },
            _ => Some(Problem::UnknownKey(RESULT_KEYS)),
        };
        if let Some(e) = error {
            add(key_path, e);
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    /// `as_str` must agree with the serde names used in rule files.
    #[test]
    fn names_match_serde() {
        for c in [
            Class::Hard,
            Class::Soft,
            Class::Deferral,
            Class::Complaint,
            Class::Delivered,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        for r in [
            Reason::UnknownUser,
            Reason::MailboxFull,
            Reason::HostUnknown,
            Reason::Blocked,
            Reason::RateLimited,
            Reason::Complaint,
            Reason::SpamContent,
            Reason::Policy,
            Reason::AuthFailure,
            Reason::MessageTooBig,
            Reason::Expired,
            Reason::Network,
            Reason::System,
            Reason::Vacation,
            Reason::Feedback,
            Reason::ReceiverMisconfig,
            Reason::Other,
        ] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(text: &str) -> Vec<RuleIssue> {
        match RuleSet::from_yaml_str(text, "test.yaml") {
            Err(RulesError::Invalid { issues, .. }) => issues,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn builtin_rules_load() {
        let set = RuleSet::builtin().expect("built-in rules must load");
        assert!(set.len() > 30, "only {} rules", set.len());
        for name in [
            "yahoo-ts01",
            "yahoo-tss04",
            "gmail-4.7.28-rate-limit",
            "microsoft-s3140-s3150",
            "spamhaus-open-resolver",
        ] {
            assert!(
                set.rules().iter().any(|r| r.name() == name),
                "{name} missing"
            );
        }
    }

    #[test]
    fn minimal_rule_gets_defaults() {
        let set = RuleSet::from_yaml_str(
            "rules:\n  - name: r1\n    match: { status: '^5' }\n    result: { class: hard, reason: other }\n",
            "t",
        )
        .expect("valid");
        let rule = &set.rules()[0];
        assert_eq!(rule.result().provider, "unknown");
        assert_eq!(rule.result().retry, Retry::Never);
        assert_eq!(rule.action(), RuleAction::Accept);
    }

    #[test]
    fn collects_every_problem_with_its_place() {
        let text = r#"
rules:
  - name: bad-regex
    match: { diagnostic: '(unclosed' }
    result: { class: hard, reason: unknown_user }
  - name: unknown-keys
    match: { diagnostc: 'x', action: sometimes }
    result: { class: hardest, reason: whatever, colour: red }
    action: bounce
    extra: 1
  - name: fine
    match: { status: '^5' }
    result: { class: soft, reason: other }
  - name: fine
    match: { status: '^4' }
    result: { class: soft, reason: other }
  - match: {}
    result: { class: soft }
  - name: "has space"
    match: { smtp_code: 550 }
    result: { class: soft, reason: other, provider: "not ok!" }
bogus_top: 1
"#;
        let found = issues(text);
        let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
        for want in [
            "rules[0].match.diagnostic",
            "rules[1].match.diagnostc",
            "rules[1].match.action",
            "rules[1].result.class",
            "rules[1].result.reason",
            "rules[1].result.colour",
            "rules[1].action",
            "rules[1].extra",
            "rules[3].name",
            "rules[4].name",
            "rules[4].match",
            "rules[4].result.reason",
            "rules[5].name",
            "rules[5].match.smtp_code",
            "rules[5].result.provider",
            "bogus_top",
        ] {
            assert!(keys.contains(&want), "missing {want} in {keys:?}");
        }
        let bad_regex = found
            .iter()
            .find(|i| i.key == "rules[0].match.diagnostic")
            .map(|i| &i.problem);
        assert!(
            matches!(bad_regex, Some(Problem::Regex(e)) if e.to_string().contains("unclosed")),
            "{bad_regex:?}"
        );
        let dup = found.iter().find(|i| i.key == "rules[3].name");
        assert_eq!(dup.map(|i| &i.problem), Some(&Problem::DuplicateName));
        assert_eq!(dup.and_then(|i| i.name.as_deref()), Some("fine"));
        assert_eq!(
            found
                .iter()
                .find(|i| i.key == "rules[1].extra")
                .and_then(|i| i.index),
            Some(1)
        );
        // The Display form names the file and each problem.
        let err = RuleSet::from_yaml_str(text, "ops.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("ops.yaml: "), "{err}");
        assert!(
            err.contains(
                "rules[1].result.class (rule \"unknown-keys\"): unknown variant `hardest`"
            ),
            "{err}"
        );
    }

    #[test]
    fn yaml_errors_have_a_location() {
        match RuleSet::from_yaml_str("rules:\n  - name: a\n   bad indent: [\n", "x.yaml") {
            Err(RulesError::Yaml { line, .. }) => assert!(line.is_some()),
            other => panic!("expected Yaml error, got {other:?}"),
        }
    }

    /// `action: discard` used to load and then act as `accept`: a rule
    /// that says one thing and does another is refused instead.
    #[test]
    fn discard_is_refused_at_load() {
        let text = "rules:\n  - name: drop\n    match: { diagnostic: 'x' }\n    result: { class: soft, reason: other }\n    action: discard\n";
        let found = issues(text);
        assert_eq!(found.len(), 1, "{found:?}");
        let said = found[0].problem.to_string();
        assert!(said.contains("discard"), "{said}");
    }

    #[test]
    fn refuses_huge_files_and_regexes() {
        let huge = "#".repeat(MAX_RULES_TEXT_BYTES + 1);
        assert!(matches!(
            RuleSet::from_yaml_str(&huge, "h"),
            Err(RulesError::TooLarge { .. })
        ));
        // Compiles to far more than the size limit.
        let text = "rules:\n  - name: big\n    match: { diagnostic: '\\w{500}\\w{500}' }\n    result: { class: soft, reason: other }\n";
        let found = issues(text);
        assert_eq!(found.len(), 1);
        assert!(
            matches!(&found[0].problem, Problem::Regex(e) if e.to_string().contains("size limit")),
            "{}",
            found[0].problem
        );
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!(
                "a{i}: &a{i} [{p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}]\n",
                p = prev
            ));
        }
        text.push_str("rules: *a8\n");
        assert!(RuleSet::from_yaml_str(&text, "laughs").is_err());
    }

    #[test]
    fn empty_and_null_files_are_empty_sets() {
        for text in ["", "rules:\n", "version: 1\nrules: []\n"] {
            let set = RuleSet::from_yaml_str(text, "e").expect("empty is valid");
            assert!(set.is_empty());
        }
        assert!(RuleSet::from_yaml_str("version: 2\n", "v").is_err());
        assert!(RuleSet::from_yaml_str("- a\n", "seq").is_err());
    }

    fn names(set: &RuleSet) -> Vec<&str> {
        set.rules().iter().map(Rule::name).collect()
    }

    fn set(names_and_class: &[(&str, &str)]) -> RuleSet {
        let mut text = String::from("rules:\n");
        for (name, class) in names_and_class {
            text.push_str(&format!(
                "  - name: {name}\n    match: {{ status: '^5' }}\n    result: {{ class: {class}, reason: other }}\n"
            ));
        }
        RuleSet::from_yaml_str(&text, "s").expect("valid")
    }

    #[test]
    fn merge_order() {
        let base = set(&[("a", "hard"), ("b", "hard"), ("c", "hard")]);
        let ops = set(&[("b", "soft"), ("new1", "soft"), ("new2", "soft")]);
        let merged = RuleSet::merge(base, ops);
        assert_eq!(names(&merged), vec!["new1", "new2", "a", "b", "c"]);
        assert_eq!(merged.rules()[3].result().class, Class::Soft);
        assert_eq!(merged.origin(), "s + s");
    }

    #[test]
    fn matching_needs_every_key() {
        let set = RuleSet::from_yaml_str(
            "rules:\n  - name: y\n    match: { diagnostic: '\\[ts01\\]', status: '^4\\.', remote_mta: 'yahoodns\\.net$', action: [delayed, failed], smtp_code: '^421$' }\n    result: { class: deferral, reason: complaint, provider: yahoo }\n",
            "t",
        )
        .expect("valid");
        let full = MatchInput {
            diagnostic: Some("421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred"),
            status: Some("4.7.0"),
            smtp_code: Some(421),
            remote_mta: Some("MTA7.AM0.YAHOODNS.NET"),
            action: Some(DsnAction::Delayed),
            ..MatchInput::default()
        };
        assert!(set.first_match(&full).is_some());
        let cases = [
            MatchInput {
                status: None,
                ..full
            },
            MatchInput {
                remote_mta: Some("mx.example.com"),
                ..full
            },
            MatchInput {
                action: Some(DsnAction::Delivered),
                ..full
            },
            MatchInput {
                action: None,
                ..full
            },
            MatchInput {
                smtp_code: Some(451),
                ..full
            },
        ];
        for input in cases {
            assert!(set.first_match(&input).is_none(), "{input:?}");
        }
    }
}
