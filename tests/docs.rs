//! listwarden.yaml(5) is the configuration reference, kept by hand, so it
//! is checked against the code:
//!
//! - every key of the serde model (`src/config/model.rs`) has an entry
//!   (`.TP`, then `.B key.path`), and every entry names a real key,
//!   so a new key without documentation, or a renamed one, fails here;
//! - every metric `src/metrics.rs` registers is in its METRICS section.

use std::collections::{BTreeMap, BTreeSet};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const MAN: &str = "packaging/man/listwarden.yaml.5";

/// `Raw*` struct name → its fields as (name, type), from src/config/model.rs.
fn raw_structs() -> BTreeMap<String, Vec<(String, String)>> {
    let model = read("src/config/model.rs");
    let mut structs = BTreeMap::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for line in model.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct Raw") {
            let name = rest.trim_end_matches('{').trim();
            current = Some((format!("Raw{name}"), Vec::new()));
        } else if t == "}" {
            if let Some((name, fields)) = current.take() {
                structs.insert(name, fields);
            }
        } else if let Some((_, fields)) = current.as_mut()
            && let Some(rest) = t.strip_prefix("pub ")
            && let Some((name, ty)) = rest.split_once(':')
        {
            let ty = ty.trim().trim_end_matches(',').to_string();
            fields.push((name.trim().to_string(), ty));
        }
    }
    assert!(
        structs.len() > 15 && structs.contains_key("RawConfig"),
        "the model parser found only {:?}",
        structs.keys()
    );
    structs
}

/// The `Raw*` struct a field type holds (`Option<Vec<RawKey>>` → `RawKey`).
fn raw_in(ty: &str) -> Option<&str> {
    let start = ty.find("Raw")?;
    let rest = &ty[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Every documented key path: `milter.listen`, `signing.keys[].id`,
/// `lists[].expand.posting`. A struct used in several places (a quota) is
/// documented once by its own field names, and each use by its path.
fn config_keys() -> BTreeSet<String> {
    let structs = raw_structs();
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for fields in structs.values() {
        for (_, ty) in fields {
            if let Some(r) = raw_in(ty) {
                *uses.entry(r).or_default() += 1;
            }
        }
    }
    let mut keys = BTreeSet::new();
    for (name, count) in &uses {
        if *count > 1 {
            for (field, _) in &structs[*name] {
                keys.insert(field.clone());
            }
        }
    }
    let mut stack = vec![(String::new(), "RawConfig")];
    while let Some((prefix, name)) = stack.pop() {
        for (field, ty) in &structs[name] {
            let list = if ty.contains("Vec<Raw") { "[]" } else { "" };
            let path = format!("{prefix}{field}{list}");
            match raw_in(ty) {
                Some(inner) if uses[inner] == 1 => stack.push((format!("{path}."), inner)),
                _ => {
                    keys.insert(path);
                }
            }
        }
    }
    assert!(keys.len() > 60, "only {} keys: {keys:?}", keys.len());
    keys
}

/// The entries of the man page's key sections (before RULES FILES): the
/// `.B KEY` line that follows each `.TP`.
fn man_entries() -> BTreeSet<String> {
    let man = read(MAN);
    let keys_end = man
        .find(".SH \"RULES FILES\"")
        .expect("a RULES FILES section");
    let lines: Vec<&str> = man[..keys_end].lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| w[1].strip_prefix(".B "))
        .map(|k| k.trim().to_string())
        .collect()
}

#[test]
fn every_config_key_has_an_entry_in_the_man_page() {
    let entries = man_entries();
    let missing: Vec<_> = config_keys()
        .into_iter()
        .filter(|k| !entries.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys without a `.B KEY` entry in {MAN}: {missing:?}"
    );
}

#[test]
fn every_man_page_entry_is_a_config_key() {
    let keys = config_keys();
    let stale: Vec<_> = man_entries()
        .into_iter()
        .filter(|k| !keys.contains(k))
        .collect();
    assert!(
        stale.is_empty(),
        "entries in {MAN} that name no config key: {stale:?}"
    );
}

#[test]
fn every_metric_is_in_the_man_page() {
    let man = read(MAN);
    let metrics = &man[man.find(".SH METRICS").expect("a METRICS section")..];
    let source = read("src/metrics.rs");
    let names: BTreeSet<&str> = source
        .split('"')
        .filter(|s| {
            s.starts_with("listwarden_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .collect();
    assert!(names.len() >= 17, "found only {names:?}");
    let missing: Vec<_> = names.into_iter().filter(|n| !metrics.contains(n)).collect();
    assert!(missing.is_empty(), "metrics not in {MAN}: {missing:?}");
}
