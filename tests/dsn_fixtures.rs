//! Walks tests/fixtures/dsn/: every NAME.eml is parsed with default limits and
//! classified with the built-in rules, and the result is compared with NAME.json:
//!
//! ```json
//! { "kind": "dsn", "unparsed_reason": null,
//!   "original_message_id": "<...@lists.example.org>", "trace": true,
//!   "lines": [ { ...one json_lines object... } ] }
//! ```
//! `kind` and `lines` are required; the other keys are checked when present
//! (`trace: true` asks for a `Received: from lists.example.org` in the returned
//! headers). `BLESS=1 cargo test --test dsn_fixtures` rewrites the JSON files from
//! the current output; review the diff before keeping it.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsn")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
}

/// What the code produces for one fixture, in the expected-file shape.
fn actual(path: &Path) -> Value {
    let raw = fs::read(path).expect("read fixture");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let report = listwarden::dsn::parse(&raw, &listwarden::dsn::Limits::default());
    let rules = listwarden::dsn::RuleSet::builtin().expect("built-in rules");
    let cls = listwarden::dsn::classify(&report, &rules);
    let lines: Vec<Value> = listwarden::dsn::json_lines(name, &report, &cls)
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line parses"))
        .collect();
    let original = report.original.as_ref();
    let trace = original.is_some_and(|o| {
        o.received
            .iter()
            .any(|r| r.to_ascii_lowercase().starts_with("from lists.example.org"))
    });
    json!({
        "kind": serde_json::to_value(report.kind).expect("kind"),
        "unparsed_reason": serde_json::to_value(report.unparsed_reason).expect("reason"),
        "original_message_id": original.and_then(|o| o.message_id.clone()),
        "trace": trace,
        "lines": lines,
    })
}

#[test]
fn fixtures_match_expected_output() {
    let bless = std::env::var_os("BLESS").is_some();
    let files = fixtures();
    assert!(files.len() >= 25, "only {} fixtures", files.len());
    let mut failures = Vec::new();
    for eml in &files {
        let json_path = eml.with_extension("json");
        let got = actual(eml);
        if bless {
            let text = serde_json::to_string_pretty(&got).expect("pretty") + "\n";
            fs::write(&json_path, text).expect("write expected");
            continue;
        }
        let Ok(text) = fs::read_to_string(&json_path) else {
            failures.push(format!("{}: no expected file", json_path.display()));
            continue;
        };
        let want: Value = serde_json::from_str(&text).expect("expected file is JSON");
        for key in [
            "kind",
            "lines",
            "unparsed_reason",
            "original_message_id",
            "trace",
        ] {
            let required = matches!(key, "kind" | "lines");
            match want.get(key) {
                Some(w) if Some(w) != got.get(key) => failures.push(format!(
                    "{}: {key}\n  want {w}\n  got  {}",
                    eml.display(),
                    got.get(key).unwrap_or(&Value::Null)
                )),
                None if required => failures.push(format!(
                    "{}: expected file lacks {key}",
                    json_path.display()
                )),
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every good fixture (a DSN, plain bounce or feedback report) carries our
/// Message-ID and Received header, so trace validation can be tested on them.
#[test]
fn good_fixtures_carry_trace_headers() {
    for eml in fixtures() {
        let got = actual(&eml);
        let kind = got["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "dsn" | "feedback" | "plain_bounce") {
            continue;
        }
        let name = eml.display();
        // The Exim delay warning returns no copy of the message; the
        // truncated report lost its copy (its notice is still read).
        if name.to_string().ends_with("exim_delay_plain.eml")
            || name
                .to_string()
                .ends_with("broken_truncated_mid_header.eml")
        {
            continue;
        }
        let id = got["original_message_id"].as_str().unwrap_or_default();
        assert!(
            id.ends_with("@lists.example.org>"),
            "{name}: message id {id:?}"
        );
        assert_eq!(
            got["trace"],
            json!(true),
            "{name}: no Received from lists.example.org"
        );
    }
}
