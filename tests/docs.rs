//! listwarden.yaml(5) is the configuration reference, kept by hand, so it
//! is checked against the code:
//!
//! - every key of the serde model (`src/config/model.rs` and the
//!   `Raw*` structs of core's signing and the expander's settings) has an entry
//!   (`.TP`, then `.B key.path`), and every entry names a real key,
//!   so a new key without documentation, or a renamed one, fails here;
//! - every metric `src/metrics.rs` registers is in its METRICS section.

use std::collections::{BTreeMap, BTreeSet};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const MAN: &str = "packaging/man/listwarden.yaml.5";

/// Where the file's serde model lives: the milter's sections, the
/// `signing:` section (shared), the expander's blocks.
const MODEL: [&str; 3] = [
    "src/config/model.rs",
    "crates/core/src/signing.rs",
    "crates/expand/src/settings.rs",
];

/// `Raw*` struct name → its fields as (name, type), from [`MODEL`].
fn raw_structs() -> BTreeMap<String, Vec<(String, String)>> {
    let model: String = MODEL.iter().map(|f| read(f)).collect::<Vec<_>>().join("\n");
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

/// The `Default:` text of a key's entry (roff font requests removed).
fn man_default(key: &str) -> String {
    let man = read(MAN);
    let entry = format!(".TP\n.B {key}\n");
    let start = man
        .find(&entry)
        .unwrap_or_else(|| panic!("no entry for {key}"));
    let rest = &man[start + entry.len()..];
    let end = rest.find("\n.TP\n").unwrap_or(rest.len());
    let body = &rest[..end];
    let at = body
        .find("Default:")
        .unwrap_or_else(|| panic!("{key}: no Default:"));
    let text: String = body[at + "Default:".len()..]
        .lines()
        .map(|l| {
            l.trim_start_matches(".BR ")
                .trim_start_matches(".B ")
                .replace("\\(dq", "")
        })
        .take_while(|l| !l.starts_with("Reload:"))
        .collect::<Vec<_>>()
        .join(" ");
    text.trim()
        .trim_end_matches('.')
        .trim_end_matches(" .")
        .trim()
        .to_string()
}

fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 300 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn budget((rate, per, burst): (u32, u64, u32)) -> String {
    let per = match per {
        p if p % 3600 == 0 => format!("{}h", p / 3600),
        p if p % 60 == 0 => format!("{}m", p / 60),
        p => format!("{p}s"),
    };
    format!("{rate} per {per}, burst {burst}")
}

/// The man page states the defaults the code uses (`config::defaults`,
/// the key ring's, the expander's), so neither can drift alone.
#[test]
fn man_page_defaults_are_the_code_defaults() {
    use listwarden::config::defaults as d;
    let scoring = listwarden_expand::state::Scoring::default();
    let want: Vec<(&str, String)> = vec![
        ("milter.socket_mode", format!("{:04o}", d::SOCKET_MODE)),
        ("milter.max_connections", d::MAX_CONNECTIONS.to_string()),
        (
            "milter.negotiate_timeout",
            secs(d::DEFAULT_NEGOTIATE_TIMEOUT),
        ),
        ("milter.timeout", secs(d::DEFAULT_MILTER_TIMEOUT)),
        ("limits.max_recipients", d::MAX_RECIPIENTS.to_string()),
        ("limits.max_header_bytes", d::MAX_HEADER_BYTES.to_string()),
        ("limits.max_body_bytes", d::MAX_BODY_BYTES.to_string()),
        ("limits.max_mime_depth", d::MIME_DEPTH.to_string()),
        (
            "signing.validity_days",
            listwarden_core::signing::DEFAULT_VALIDITY_DAYS.to_string(),
        ),
        ("ratelimit.max_keys", d::MAX_KEYS.to_string()),
        ("ratelimit.redis_prefix", d::REDIS_PREFIX.to_string()),
        (
            "ratelimit.redis_deadline_ms",
            d::REDIS_DEADLINE_MS.to_string(),
        ),
        ("ratelimit.node_count", d::NODE_COUNT.to_string()),
        ("ratelimit.ipv4_prefix", d::IPV4_PREFIX.to_string()),
        ("ratelimit.ipv6_prefix", d::IPV6_PREFIX.to_string()),
        (
            "ratelimit.budgets.list_invalid",
            budget(d::BUDGET_LIST_INVALID),
        ),
        ("ratelimit.budgets.list_valid", budget(d::BUDGET_LIST_VALID)),
        ("ratelimit.budgets.network", budget(d::BUDGET_NETWORK)),
        ("ratelimit.budgets.address", budget(d::BUDGET_ADDRESS)),
        ("shield.trigger", d::SHIELD_TRIGGER.to_string()),
        ("throttle.map", d::THROTTLE_MAP.to_string()),
        (
            "shield.within",
            secs(std::time::Duration::from_secs(d::SHIELD_WITHIN_SECS)),
        ),
        (
            "shield.hold",
            secs(std::time::Duration::from_secs(d::SHIELD_HOLD_SECS)),
        ),
        (
            "canary.wait",
            secs(std::time::Duration::from_secs(d::CANARY_WAIT_SECS)),
        ),
        (
            "canary.max_age",
            secs(std::time::Duration::from_secs(d::CANARY_MAX_AGE_SECS)),
        ),
        ("canary.dir", d::CANARY_DIR.to_string()),
        ("canary.helo", d::CANARY_HELO.to_string()),
        (
            "expander.max_message_bytes",
            listwarden_expand::settings::DEFAULT_MAX_MESSAGE_BYTES.to_string(),
        ),
        (
            "lists[].expand.bounce_threshold",
            format!("{:.1}", scoring.threshold),
        ),
        (
            "lists[].expand.bounce_stale_days",
            scoring.stale_after_days.to_string(),
        ),
    ];
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(key, value)| {
            let man = man_default(key);
            (man != *value).then(|| format!("{key}: man page says `{man}`, code says `{value}`"))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
