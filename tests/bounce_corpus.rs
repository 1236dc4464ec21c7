//! Replays the labelled bounce corpus (tests/corpus/messages/, see its README):
//! every NAME.eml is parsed with default limits and classified with the
//! built-in rules, and compared with NAME.json:
//!
//! ```json
//! { "family": "exim", "source": "...", "recipients": ["a@example.com"],
//!   "class": "hard", "reason": "unknown_user" }
//! ```
//! `class` is one of hard, soft, deferral, complaint, auto-reply, not-bounce
//! (the last two expect no recipient at all). It prints a per-family table
//! (`cargo test --test bounce_corpus -- --nocapture`) and asserts, per
//! message, that exactly the expected recipients were found; messages named
//! in tests/corpus/KNOWN_GAPS (one `NAME  why` a line) are reported but not
//! asserted. `LISTWARDEN_CORPUS_REPORT_ONLY=1` prints without asserting (to
//! measure an older parser).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use listwarden::dsn::{Class, Limits, RuleSet, classify, parse};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[derive(Default)]
struct Tally {
    messages: usize,
    expected: usize,
    found: usize,
    false_positives: usize,
    class_agree: usize,
    reason_agree: usize,
    reason_total: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.messages += o.messages;
        self.expected += o.expected;
        self.found += o.found;
        self.false_positives += o.false_positives;
        self.class_agree += o.class_agree;
        self.reason_agree += o.reason_agree;
        self.reason_total += o.reason_total;
    }
}

fn class_name(c: Class) -> &'static str {
    match c {
        Class::Hard => "hard",
        Class::Soft => "soft",
        Class::Deferral => "deferral",
        Class::Complaint => "complaint",
        Class::Delivered => "delivered",
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        100.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

#[test]
fn corpus_replay() {
    let dir = corpus_dir().join("messages");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 300, "only {} corpus messages", files.len());
    let gaps: BTreeSet<String> = fs::read_to_string(corpus_dir().join("KNOWN_GAPS"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let report_only = std::env::var_os("LISTWARDEN_CORPUS_REPORT_ONLY").is_some();
    let rules = RuleSet::builtin().expect("built-in rules");
    let mut families: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut misses = Vec::new();
    let mut fixed_gaps = Vec::new();
    for eml in &files {
        let name = eml
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let want: Value =
            serde_json::from_str(&fs::read_to_string(eml.with_extension("json")).expect("json"))
                .expect("expected file is JSON");
        let family = want["family"].as_str().expect("family").to_owned();
        let want_class = want["class"].as_str().expect("class");
        let want_reason = want["reason"].as_str();
        let want_rcpts: BTreeSet<String> = want["recipients"]
            .as_array()
            .expect("recipients")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
            .collect();

        let raw = fs::read(eml).expect("read");
        let report = parse(&raw, &Limits::default());
        let cls = classify(&report, &rules);
        let got: BTreeSet<String> = cls
            .iter()
            .filter_map(|c| c.recipient.as_deref().map(str::to_ascii_lowercase))
            .collect();
        let found = want_rcpts.intersection(&got).count();
        let fps: Vec<&String> = got.difference(&want_rcpts).collect();
        // The class of the first classification of an expected recipient.
        let first = cls.iter().find(|c| {
            c.recipient
                .as_deref()
                .is_some_and(|r| want_rcpts.contains(&r.to_ascii_lowercase()))
        });
        let class_ok = match want_class {
            "auto-reply" | "not-bounce" => cls.is_empty(),
            "complaint" => cls.iter().any(|c| c.class == Class::Complaint),
            w => first.is_some_and(|c| class_name(c.class) == w),
        };
        let mut t = Tally {
            messages: 1,
            expected: want_rcpts.len(),
            found,
            false_positives: fps.len(),
            class_agree: usize::from(class_ok),
            ..Tally::default()
        };
        if let Some(r) = want_reason {
            t.reason_total = 1;
            t.reason_agree = usize::from(first.is_some_and(|c| c.reason.as_str() == r));
        }
        families.entry(family.clone()).or_default().add(&t);
        let exact = found == want_rcpts.len() && fps.is_empty();
        if !exact {
            let line = format!(
                "{name}: want {want_rcpts:?} got {got:?} (kind {:?})",
                report.kind
            );
            if gaps.contains(&name) {
                misses.push(line);
            } else {
                failures.push(line);
            }
        } else if gaps.contains(&name) {
            fixed_gaps.push(name.clone());
        }
        if exact && !class_ok {
            misses.push(format!(
                "{name}: class want {want_class} got {:?}",
                first.map(|c| c.class)
            ));
        }
    }

    let mut total = Tally::default();
    println!(
        "\n{:<30} {:>4} {:>9} {:>4} {:>6} {:>7}",
        "family", "msgs", "rcpts", "fp", "class", "reason"
    );
    for (family, t) in &families {
        println!(
            "{family:<30} {:>4} {:>4}/{:<4} {:>4} {:>3}/{:<2} {:>3}/{:<3}",
            t.messages,
            t.found,
            t.expected,
            t.false_positives,
            t.class_agree,
            t.messages,
            t.reason_agree,
            t.reason_total
        );
        total.add(t);
    }
    let reported = total.found + total.false_positives;
    println!(
        "\n{} messages, {} families: recipients found {}/{} (recall {:.1}%), precision {:.1}% ({} false), class agree {:.1}%, reason agree {:.1}%",
        total.messages,
        families.len(),
        total.found,
        total.expected,
        pct(total.found, total.expected),
        pct(total.found, reported),
        total.false_positives,
        pct(total.class_agree, total.messages),
        pct(total.reason_agree, total.reason_total),
    );
    for m in &misses {
        println!("known gap or class miss: {m}");
    }
    if report_only {
        for f in &failures {
            println!("miss: {f}");
        }
        return;
    }
    assert!(families.len() >= 60, "only {} families", families.len());
    assert!(
        fixed_gaps.is_empty(),
        "now found, remove from KNOWN_GAPS: {fixed_gaps:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Floors for what is not asserted per message.
    assert!(pct(total.class_agree, total.messages) >= 90.0);
    assert!(pct(total.reason_agree, total.reason_total) >= 85.0);
}
