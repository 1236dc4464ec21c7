//! The bounce pipe: `listwarden expand --bounces --list NAME`, for mail to
//! `LIST-bounces(+…)@` after the milter validated and tagged it.
//!
//! Only `X-Listwarden-Bounce:` fields are read, and only those whose
//! `signature=` is `valid`: the milter removes every inbound
//! `X-Listwarden-*` field and adds its own (at the end of the header block,
//! though position does not matter here), so these are the milter's word.
//! A `trace_ok` bounce is never acted on: trace marks are in every copy a
//! member received, so anyone on the list can forge one. A bounce without
//! such a tag changes nothing.
//!
//! The member is the one named by the signed VERP recipient (`${recipient}`
//! of the pipe), verified again here with the key ring: the member we sent
//! to, whatever the bounce says (forwarding changes addresses). Without a
//! valid signed VERP recipient of this list nothing is done: a tag's
//! `recipient=` comes from the bounce text, which an outsider writes, so it
//! is only logged. Tags give the class and reason.
//!
//! Either way only a current member is ever scored. Classes: `hard` and
//! `soft` score (see [`super::state`]) when the failure is on the member's
//! side, `fault=them`, and not part of a bounce storm (`incident=1`): a
//! list never disables members for its own reputation, authentication or
//! a provider's outage. A tag without `fault` comes from a milter older
//! than the field; of those only a hard `unknown_user` or `host_unknown`
//! (the 5.1.x kind) scores, as the surest of the old classes, and nothing
//! soft does. `complaint` with a `feedback_type` (an ARF report)
//! unsubscribes or flags per `on_complaint`; `deferral` (Yahoo TS01
//! complaint deferrals included), `delivered` and anything unparsed do
//! nothing.

use std::collections::BTreeMap;

use super::members::{self, MembersFile};
use super::state::{self, ScoreChange, Scoring, Severity};
use super::unsubscribe::{remove_member, signed_member};
use super::{ComplaintAction, ExpandError, ListFiles, RunContext, headers};
use crate::address::keys::MAX_VALIDITY_DAYS;
use crate::address::verp::{self, VerpResult, verify_verp};
use crate::address::{Address, KeyRing};
use listwarden_core::tag::{FAULT_THEM, HEADER, MAX_TAGS, Tag};

/// Most tag fields read from one message (the milter writes at most
/// [`MAX_TAGS`]).
const MAX_TAGS_READ: usize = 2 * MAX_TAGS;

/// The tags of a message, in order.
pub fn tags(raw: &[u8]) -> Vec<Tag> {
    headers::parse(raw)
        .named(HEADER)
        .take(MAX_TAGS_READ)
        .map(|f| Tag::parse(&f.text()))
        .collect()
}

/// What a bounce says about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Bounce {
        member: Address,
        severity: Severity,
        status: Option<String>,
    },
    Complaint {
        member: Address,
        feedback_type: String,
    },
}

impl Finding {
    pub fn member(&self) -> &Address {
        match self {
            Finding::Bounce { member, .. } | Finding::Complaint { member, .. } => member,
        }
    }

    /// Complaint > hard > soft.
    fn rank(&self) -> u8 {
        match self {
            Finding::Complaint { .. } => 3,
            Finding::Bounce {
                severity: Severity::Hard,
                ..
            } => 2,
            Finding::Bounce { .. } => 1,
        }
    }
}

/// The findings of one message and why the rest was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    pub findings: Vec<Finding>,
    pub ignored: Vec<String>,
}

/// Reads a bounce (pure). `recipient` is the pipe's `${recipient}`.
pub fn assess(
    raw: &[u8],
    list: &ListFiles,
    members: &MembersFile,
    recipient: Option<&Address>,
    keys: &KeyRing,
    today: u64,
) -> Assessment {
    let mut out = Assessment::default();
    let all = tags(raw);
    let trusted: Vec<&Tag> = all
        .iter()
        .filter(|t| t.is_trusted() && t.get("list").is_none_or(|l| names_list(l, list)))
        .collect();
    if trusted.is_empty() {
        out.ignored.push(format!(
            "no {HEADER} tag marked valid for this list ({} tags)",
            all.len()
        ));
        return out;
    }
    let Some(verp_member) = recipient.and_then(|r| verp_member(r, list, keys, today)) else {
        // Tag text is the bounce's word, not ours: log it, act on nobody.
        let named: Vec<&str> = trusted.iter().filter_map(|t| t.get("recipient")).collect();
        out.ignored.push(format!(
            "recipient is not a signed VERP address of this list; tags name {named:?}"
        ));
        return out;
    };
    // Strongest finding per member key.
    let mut best: BTreeMap<String, Finding> = BTreeMap::new();
    for tag in trusted {
        let member = verp_member.clone();
        let Some(finding) = finding_of(tag, member) else {
            let class = tag.get("class").unwrap_or("none");
            let fault = tag.get("fault").unwrap_or("none");
            let incident = tag.get("incident").unwrap_or("0");
            out.ignored.push(format!(
                "class {class} fault {fault} incident {incident} does not count"
            ));
            continue;
        };
        if !members.contains(finding.member()) {
            out.ignored
                .push(format!("{} is not a member", finding.member()));
            continue;
        }
        let key = finding.member().key();
        if best.get(&key).is_none_or(|b| finding.rank() > b.rank()) {
            best.insert(key, finding);
        }
    }
    out.findings = best.into_values().collect();
    out
}

/// The milter labels a bounce with the list's name, or with the domain
/// when the list is protected by a `domains:` entry.
fn names_list(label: &str, list: &ListFiles) -> bool {
    label == list.name || label.eq_ignore_ascii_case(&list.address.domain)
}

/// The member of a signed VERP bounce address of this list, if the HMAC is
/// right (an old stamp is fine here: the milter checked the window when
/// the bounce arrived, and it may have waited in the queue since).
fn verp_member(rcpt: &Address, list: &ListFiles, keys: &KeyRing, today: u64) -> Option<Address> {
    let bounces = list.role("bounces").ok()?;
    if !verp::base_address(rcpt).is_some_and(|b| b.same_mailbox(&bounces)) {
        return None;
    }
    match verify_verp(rcpt, keys, today, MAX_VALIDITY_DAYS) {
        VerpResult::Valid { member, .. } => Some(member),
        VerpResult::Expired => signed_member(rcpt),
        _ => None,
    }
}

/// Whether a failure may count against the member (see the module docs).
fn charges_member(tag: &Tag) -> bool {
    if tag.is_incident() {
        return false;
    }
    match tag.get("fault") {
        Some(fault) => fault == FAULT_THEM,
        None => {
            tag.get("class") == Some("hard")
                && matches!(tag.get("reason"), Some("unknown_user" | "host_unknown"))
        }
    }
}

fn finding_of(tag: &Tag, member: Address) -> Option<Finding> {
    let status = tag
        .get("status")
        .filter(|s| *s != "none")
        .map(str::to_owned);
    match tag.get("class")? {
        "hard" | "soft" if !charges_member(tag) => None,
        "hard" => Some(Finding::Bounce {
            member,
            severity: Severity::Hard,
            status,
        }),
        "soft" => Some(Finding::Bounce {
            member,
            severity: Severity::Soft,
            status,
        }),
        "complaint" => tag.get("feedback_type").map(|t| Finding::Complaint {
            member,
            feedback_type: t.to_owned(),
        }),
        _ => None,
    }
}

/// Per-list bounce settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BounceSettings {
    pub scoring: Scoring,
    pub on_complaint: ComplaintAction,
}

impl Default for BounceSettings {
    fn default() -> BounceSettings {
        BounceSettings {
            scoring: Scoring::default(),
            on_complaint: ComplaintAction::Unsubscribe,
        }
    }
}

/// What was done for one member.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Scored {
        member: Address,
        change: ScoreChange,
    },
    Unsubscribed {
        member: Address,
        was_member: bool,
    },
    Flagged {
        member: Address,
        complaints: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BounceOutcome {
    pub applied: Vec<Applied>,
    pub ignored: Vec<String>,
}

/// The bounce pipe. Always exit 0 unless the files fail (75): a bounce is
/// never bounced.
pub fn run(
    raw: &[u8],
    list: &ListFiles,
    recipient: Option<&Address>,
    keys: &KeyRing,
    settings: &BounceSettings,
    ctx: &RunContext,
) -> Result<BounceOutcome, ExpandError> {
    let members = members::load(&list.members_file)?;
    let assessment = assess(raw, list, &members, recipient, keys, ctx.today);
    let mut outcome = BounceOutcome {
        applied: Vec::new(),
        ignored: assessment.ignored,
    };
    if assessment.findings.is_empty() {
        return Ok(outcome);
    }
    let mut to_unsubscribe = Vec::new();
    let applied = state::update(&list.state_file(), ctx.lock_timeout, |st| {
        let mut applied = Vec::new();
        for finding in &assessment.findings {
            let member = finding.member().clone();
            match finding {
                Finding::Bounce { severity, .. } => {
                    let change = st.record(&member.key(), *severity, ctx.today, &settings.scoring);
                    applied.push(Applied::Scored { member, change });
                }
                Finding::Complaint { .. } => match settings.on_complaint {
                    ComplaintAction::Flag => {
                        let complaints = st.flag_complaint(&member.key(), ctx.today);
                        applied.push(Applied::Flagged { member, complaints });
                    }
                    ComplaintAction::Unsubscribe => to_unsubscribe.push(member),
                },
            }
        }
        applied
    })?;
    outcome.applied = applied;
    for member in to_unsubscribe {
        let was_member = remove_member(list, &member, ctx.lock_timeout)?;
        outcome
            .applied
            .push(Applied::Unsubscribed { member, was_member });
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::verp::sign_verp;
    use crate::testutil::{addr, ctx, files, keys};
    use std::path::Path;

    const DAY: u64 = 20_700;

    fn members(list: &[&str]) -> MembersFile {
        MembersFile::parse(&list.join("\n"), Path::new("m")).expect("members")
    }

    fn bounce(tags: &[&str]) -> Vec<u8> {
        let mut raw = String::from("From: MAILER-DAEMON@mx.example.net\nSubject: failure\n");
        for t in tags {
            raw.push_str(&format!("X-Listwarden-Bounce: {t}\n"));
        }
        raw.push_str("\nbody\n");
        raw.into_bytes()
    }

    fn verp_of(member: &str, day: u64) -> Address {
        sign_verp(
            &addr("members-bounces@lists.example.org"),
            &addr(member),
            &keys(),
            day,
        )
        .expect("sign")
    }

    const HARD: &str = "recipient=bob@example.net; action=failed; status=5.1.1; class=hard; reason=unknown_user; provider=other; rule=x; list=members; signature=valid";

    #[test]
    fn assessment_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = files(dir.path());
        let m = members(&["alice@example.com", "bob@example.net"]);
        let keys = keys();
        let alice_verp = verp_of("alice@example.com", DAY - 30);
        let bob_verp = verp_of("bob@example.net", DAY);
        let bob_rcpt = Some(&bob_verp);
        let eve_verp = verp_of("eve@example.org", DAY);
        let soft = HARD
            .replace("class=hard", "class=soft")
            .replace("reason=unknown_user", "reason=mailbox_full")
            + "; fault=them";
        let arf = "recipient=bob@example.net; action=unknown; status=none; class=complaint; reason=feedback; provider=yahoo; rule=arf; list=members; signature=valid; feedback_type=abuse";
        let arf_trace = arf.replace("signature=valid", "signature=trace_ok");
        let ts01 = HARD
            .replace("class=hard", "class=deferral")
            .replace("reason=unknown_user", "reason=complaint");
        let forged = HARD.replace("signature=valid", "signature=invalid");
        let other_list = HARD.replace("list=members", "list=staff");
        let stranger = HARD.replace("bob@example.net", "eve@example.org");
        let by_domain = HARD.replace("list=members", "list=lists.example.org");
        let bob = || addr("bob@example.net");
        let hard = |m: Address| Finding::Bounce {
            member: m,
            severity: Severity::Hard,
            status: Some("5.1.1".into()),
        };
        let cases: Vec<(Vec<&str>, Option<&Address>, Vec<Finding>)> = vec![
            (vec![HARD], bob_rcpt, vec![hard(bob())]),
            // The VERP member wins over what the bounce names.
            (
                vec![HARD],
                Some(&alice_verp),
                vec![hard(addr("alice@example.com"))],
            ),
            (
                vec![&soft],
                bob_rcpt,
                vec![Finding::Bounce {
                    member: bob(),
                    severity: Severity::Soft,
                    status: Some("5.1.1".into()),
                }],
            ),
            (vec![&soft, HARD, &soft], bob_rcpt, vec![hard(bob())]),
            (
                vec![arf],
                bob_rcpt,
                vec![Finding::Complaint {
                    member: bob(),
                    feedback_type: "abuse".into(),
                }],
            ),
            (vec![&ts01], bob_rcpt, vec![]),
            (vec![&arf_trace], bob_rcpt, vec![]),
            (vec![&forged], bob_rcpt, vec![]),
            (vec![&other_list], bob_rcpt, vec![]),
            // A list protected by a `domains:` entry is labelled with its domain.
            (vec![&by_domain], bob_rcpt, vec![hard(bob())]),
            // The VERP names the member, whatever the tag says; a stranger's VERP acts on nobody.
            (vec![&stranger], bob_rcpt, vec![hard(bob())]),
            (vec![HARD], Some(&eve_verp), vec![]),
            (vec![], Some(&alice_verp), vec![]),
            (
                vec!["class=unparsed; list=members; signature=valid"],
                bob_rcpt,
                vec![],
            ),
        ];
        // Only the member's own failures count.
        let with = |extra: &str| format!("{HARD}; {extra}");
        let them = with("fault=them");
        let us = with("fault=us");
        let unknown = with("fault=unknown");
        let storm = with("fault=us; incident=1");
        let storm_them = with("fault=them; incident=1");
        let old_blocked = HARD.replace("reason=unknown_user", "reason=blocked");
        let old_host = HARD.replace("reason=unknown_user", "reason=host_unknown");
        let old_soft = HARD.replace("class=hard", "class=soft");
        let soft_us = HARD.replace("class=hard", "class=soft") + "; fault=us";
        let mut cases = cases;
        cases.extend([
            (vec![them.as_str()], bob_rcpt, vec![hard(bob())]),
            (vec![us.as_str()], bob_rcpt, vec![]),
            (vec![unknown.as_str()], bob_rcpt, vec![]),
            (vec![storm.as_str()], bob_rcpt, vec![]),
            (vec![storm_them.as_str()], bob_rcpt, vec![]),
            (vec![soft_us.as_str()], bob_rcpt, vec![]),
            // Tags of an older milter: only a hard 5.1.x-style failure.
            (vec![old_blocked.as_str()], bob_rcpt, vec![]),
            (vec![old_soft.as_str()], bob_rcpt, vec![]),
            (vec![old_host.as_str()], bob_rcpt, vec![hard(bob())]),
            // One of ours and one of theirs in the same DSN: theirs counts.
            (
                vec![us.as_str(), them.as_str()],
                bob_rcpt,
                vec![hard(bob())],
            ),
        ]);
        for (i, (tags, rcpt, want)) in cases.into_iter().enumerate() {
            let got = assess(&bounce(&tags), &list, &m, rcpt, &keys, DAY);
            assert_eq!(got.findings, want, "case {i}");
            if want.is_empty() {
                assert!(!got.ignored.is_empty(), "case {i} says why");
            }
        }
    }

    /// 2c: without a valid signed VERP recipient of this list, nothing a
    /// tag says (its `recipient=` included) names a member.
    #[test]
    fn tag_recipient_is_never_acted_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = files(dir.path());
        let m = members(&["alice@example.com", "bob@example.net"]);
        let real = verp_of("alice@example.com", DAY);
        let forged = Address {
            local: real.local.replace("=alice=", "=bob="),
            domain: real.domain.clone(),
        };
        let plain = addr("members-bounces@lists.example.org");
        let foreign = sign_verp(
            &addr("staff-bounces@lists.example.org"),
            &addr("bob@example.net"),
            &keys(),
            DAY,
        )
        .expect("sign");
        for rcpt in [None, Some(&plain), Some(&forged), Some(&foreign)] {
            let got = assess(&bounce(&[HARD]), &list, &m, rcpt, &keys(), DAY);
            assert!(got.findings.is_empty(), "{rcpt:?}: {got:?}");
            assert!(!got.ignored.is_empty(), "{rcpt:?} says why");
        }
    }

    /// 4: a `trace_ok` tag never acts, even with a valid VERP recipient.
    #[test]
    fn trace_ok_tags_never_act() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = files(dir.path());
        let m = members(&["bob@example.net"]);
        let bob = verp_of("bob@example.net", DAY);
        let trace = HARD.replace("signature=valid", "signature=trace_ok");
        let arf = "recipient=bob@example.net; class=complaint; list=members; signature=trace_ok; feedback_type=abuse";
        for tag in [trace.as_str(), arf] {
            let got = assess(&bounce(&[tag]), &list, &m, Some(&bob), &keys(), DAY);
            assert!(got.findings.is_empty(), "{tag}: {got:?}");
        }
        // The same bounce marked valid does act.
        let got = assess(&bounce(&[HARD]), &list, &m, Some(&bob), &keys(), DAY);
        assert_eq!(got.findings.len(), 1);
    }

    #[test]
    fn tags_at_the_top_or_the_end_and_bounded() {
        let raw =
            format!("X-Listwarden-Bounce: {HARD}\nFrom: x@y\n\nX-Listwarden-Bounce: in the body\n");
        assert_eq!(tags(raw.as_bytes()).len(), 1);
        let many = bounce(&vec![HARD; 100]);
        assert_eq!(tags(&many).len(), MAX_TAGS_READ);
        let t = Tag::parse(" class=hard ;signature=valid;junk; =x; recipient=a=b@c ");
        assert_eq!(t.get("class"), Some("hard"));
        assert_eq!(t.get("recipient"), Some("a=b@c"));
        assert!(t.is_trusted());
    }

    #[test]
    fn run_scores_disables_and_unsubscribes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = files(dir.path());
        std::fs::write(&list.members_file, "alice@example.com\nbob@example.net\n").expect("write");
        let keys = keys();
        let settings = BounceSettings::default();
        let alice_raw = bounce(&[&HARD.replace("bob@example.net", "alice@example.com")]);
        // Ten hard bounces a day for six days: one point a day, disabled on day five.
        let mut last = None;
        for day in 0..6 {
            for _ in 0..10 {
                let rcpt = verp_of("alice@example.com", DAY + day);
                let out = run(
                    &alice_raw,
                    &list,
                    Some(&rcpt),
                    &keys,
                    &settings,
                    &ctx(DAY + day),
                )
                .expect("run");
                last = out.applied.first().cloned();
            }
            let st = state::load(&list.state_file()).expect("state");
            let score = st.get("alice@example.com").map(|r| r.score);
            assert_eq!(score, Some(((day + 1) as f64).min(5.0)), "day {day}");
        }
        assert!(matches!(
            last,
            Some(Applied::Scored {
                change: ScoreChange::AlreadyDisabled,
                ..
            })
        ));
        let st = state::load(&list.state_file()).expect("state");
        assert!(st.is_disabled("alice@example.com"));
        // Disabled, not deleted.
        assert!(
            std::fs::read_to_string(&list.members_file)
                .expect("read")
                .contains("alice@example.com")
        );

        // An ARF complaint unsubscribes (default) and forgets the record.
        let arf = bounce(&[
            "recipient=bob@example.net; class=complaint; list=members; signature=valid; feedback_type=abuse",
        ]);
        let bob_verp = verp_of("bob@example.net", DAY);
        let out = run(&arf, &list, Some(&bob_verp), &keys, &settings, &ctx(DAY)).expect("run");
        assert_eq!(
            out.applied,
            [Applied::Unsubscribed {
                member: addr("bob@example.net"),
                was_member: true
            }]
        );
        assert_eq!(
            std::fs::read_to_string(&list.members_file).expect("read"),
            "alice@example.com\n"
        );
        // With `flag`, the member stays and is counted.
        std::fs::write(&list.members_file, "alice@example.com\nbob@example.net\n").expect("write");
        let flag = BounceSettings {
            on_complaint: ComplaintAction::Flag,
            ..settings
        };
        let out = run(&arf, &list, Some(&bob_verp), &keys, &flag, &ctx(DAY)).expect("run");
        assert_eq!(
            out.applied,
            [Applied::Flagged {
                member: addr("bob@example.net"),
                complaints: 1
            }]
        );
        // An untagged bounce touches nothing, not even the state file.
        let before = std::fs::read(list.state_file()).expect("state");
        let out = run(
            b"Subject: x\n\nbody\n",
            &list,
            None,
            &keys,
            &settings,
            &ctx(DAY + 9),
        )
        .expect("run");
        assert!(out.applied.is_empty() && !out.ignored.is_empty());
        assert_eq!(std::fs::read(list.state_file()).expect("state"), before);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_assess_without_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let dir = std::path::PathBuf::from("/nonexistent");
            let list = files(&dir);
            let m = members(&["bob@example.net"]);
            let _ = assess(&raw, &list, &m, None, &keys(), DAY);
        }
    }
}
