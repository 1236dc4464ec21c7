//! The packaging files stay in step with the code:
//!
//! - every metric the Grafana dashboard or an (uncommented) Prometheus rule
//!   queries is one that `src/metrics.rs` registers, so a renamed metric
//!   cannot leave a silent, empty panel or an alert that never fires;
//! - the systemd unit checks the config before start and reload;
//! - the config the Debian package ships is valid, and its key path is the
//!   one `postinst` creates;
//! - the Dockerfile runs what the unit runs.
//!
//! Plain std string scanning: no JSON or YAML parser needed for this.

use std::path::{Path, PathBuf};

/// Every listwarden metric name starts with this.
const METRIC_PREFIX: &str = "listwarden_";
/// Series Prometheus derives from one histogram.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];
/// Names longer than this are not metric names; stops a runaway scan.
const MAX_NAME_LEN: usize = 128;

const DASHBOARD: &str = "packaging/grafana/listwarden.json";
const ALERTS: &str = "packaging/prometheus/alerts.yaml";
const METRICS_SOURCE: &str = "src/metrics.rs";
const UNIT: &str = "packaging/systemd/listwarden.service";
const PACKAGED_CONFIG: &str = "packaging/debian/listwarden.yaml";
const POSTINST: &str = "packaging/debian/postinst";
const POSTRM: &str = "packaging/debian/postrm";
/// cargo-deb replaces this token with the generated systemd fragments,
/// wherever it appears, comments included.
const DEBHELPER_TOKEN: &str = "#DEBHELPER#";
const DOCKERFILE: &str = "Dockerfile";
/// Where the package keeps the signing key (config and postinst agree).
const PACKAGED_KEY: &str = "/etc/listwarden/keys/1.key";

/// The metrics the dashboard must show: everything exported today.
const DASHBOARD_MUST_SHOW: [&str; 9] = [
    "listwarden_build_info",
    "listwarden_messages_total",
    "listwarden_bounces_total",
    "listwarden_signed_total",
    "listwarden_decision_seconds",
    "listwarden_connections_active",
    "listwarden_config_reloads_total",
    "listwarden_config_last_reload_success_timestamp_seconds",
    "listwarden_spoofed_headers_removed_total",
];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// Every `listwarden_[a-z0-9_]+` in `text`, in order, duplicates kept. A match
/// must not continue an identifier (`x_listwarden_y` is not one).
fn metric_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(offset) = text.get(from..).and_then(|rest| rest.find(METRIC_PREFIX)) {
        let start = from + offset;
        let tail_start = start + METRIC_PREFIX.len();
        let tail_len = bytes
            .get(tail_start..)
            .unwrap_or_default()
            .iter()
            .take(MAX_NAME_LEN)
            .take_while(|b| is_name_byte(**b))
            .count();
        let continues_identifier = start
            .checked_sub(1)
            .and_then(|i| bytes.get(i))
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let name = text.get(start..tail_start + tail_len).unwrap_or_default();
        let name = name.trim_end_matches('_');
        if !continues_identifier && name.len() > METRIC_PREFIX.len() {
            names.push(name.to_string());
        }
        from = tail_start + tail_len;
    }
    names
}

/// YAML text without its comment lines (placeholders for future metrics
/// live there).
fn without_comment_lines(yaml: &str) -> String {
    yaml.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// True when `src/metrics.rs` registers `name`: it appears there quoted.
fn registered(name: &str, metrics_source: &str) -> bool {
    metrics_source.contains(&format!("\"{name}\""))
}

/// The registered metric a queried series name belongs to, if any:
/// the name itself, or a histogram it is the `_bucket`/`_sum`/`_count` of.
fn resolve<'a>(name: &'a str, metrics_source: &str) -> Option<&'a str> {
    if registered(name, metrics_source) {
        return Some(name);
    }
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| registered(base, metrics_source))
}

/// Names in `text` that `src/metrics.rs` does not register.
fn unknown_names(text: &str, metrics_source: &str) -> Vec<String> {
    let mut unknown: Vec<String> = metric_names(text)
        .into_iter()
        .filter(|name| resolve(name, metrics_source).is_none())
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
}

#[test]
fn metric_names_are_found_table() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("listwarden_", &[]),
        (
            "rate(listwarden_messages_total{a=\"b\"}[5m])",
            &["listwarden_messages_total"],
        ),
        (
            "histogram_quantile(0.99, rate(listwarden_decision_seconds_bucket[5m]))",
            &["listwarden_decision_seconds_bucket"],
        ),
        (
            "x_listwarden_messages_total listwarden_up",
            &["listwarden_up"],
        ),
        ("Listwarden_messages_total X-Listwarden-Class", &[]),
        (
            "\"listwarden_a\",\"listwarden_b_\"",
            &["listwarden_a", "listwarden_b"],
        ),
        ("listwarden_ipv6_total", &["listwarden_ipv6_total"]),
        ("listwarden_Up", &[]),
    ];
    for (text, want) in cases {
        assert_eq!(metric_names(text), *want, "in {text:?}");
    }
}

#[test]
fn histogram_series_resolve_to_their_histogram() {
    let source = r#"HistogramOpts::new("listwarden_decision_seconds", "...")"#;
    for name in [
        "listwarden_decision_seconds",
        "listwarden_decision_seconds_bucket",
        "listwarden_decision_seconds_sum",
        "listwarden_decision_seconds_count",
    ] {
        assert_eq!(resolve(name, source), Some("listwarden_decision_seconds"));
    }
    assert_eq!(resolve("listwarden_decision", source), None);
    assert_eq!(resolve("listwarden_decision_seconds_total", source), None);
}

#[test]
fn comment_lines_are_dropped() {
    let yaml = "a: 1\n  # expr: listwarden_future_total\nb: listwarden_now_total # trailing\n";
    assert_eq!(
        metric_names(&without_comment_lines(yaml)),
        ["listwarden_now_total"]
    );
}

#[test]
fn dashboard_queries_only_registered_metrics() {
    let metrics = read(METRICS_SOURCE);
    let dashboard = read(DASHBOARD);
    let unknown = unknown_names(&dashboard, &metrics);
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} queries metrics that {METRICS_SOURCE} does not register: {unknown:?}"
    );
    let shown: Vec<String> = metric_names(&dashboard)
        .iter()
        .filter_map(|name| resolve(name, &metrics).map(str::to_string))
        .collect();
    for name in DASHBOARD_MUST_SHOW {
        assert!(
            shown.iter().any(|s| s == name),
            "{DASHBOARD} has no panel for {name}"
        );
    }
}

#[test]
fn alerts_query_only_registered_metrics() {
    let metrics = read(METRICS_SOURCE);
    let rules = without_comment_lines(&read(ALERTS));
    let names = metric_names(&rules);
    assert!(
        names.len() >= 3,
        "{ALERTS}: expected rules on listwarden metrics, found {names:?}"
    );
    let unknown = unknown_names(&rules, &metrics);
    assert!(
        unknown.is_empty(),
        "{ALERTS} queries metrics that {METRICS_SOURCE} does not register: {unknown:?} \
         (keep rules for future metrics commented out)"
    );
    assert!(
        rules.contains("up{job=\"listwarden\"} == 0"),
        "{ALERTS}: no listwarden-down rule"
    );
}

/// `Key=value` settings of a unit file, in order, comments dropped.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with(';'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}

fn values<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn unit_checks_config_before_start_and_reload() {
    let settings = unit_settings(&read(UNIT));
    let check = "/usr/bin/listwarden check-config /etc/listwarden/listwarden.yaml";

    assert_eq!(values(&settings, "ExecStartPre"), [check]);
    assert_eq!(
        values(&settings, "ExecStart"),
        ["/usr/bin/listwarden run --config /etc/listwarden/listwarden.yaml"]
    );
    // Reload lines run in order and stop at the first failure: the check
    // must come before the signal.
    assert_eq!(
        values(&settings, "ExecReload"),
        [check, "/bin/kill -HUP $MAINPID"]
    );
    assert_eq!(values(&settings, "Restart"), ["on-failure"]);
    assert_eq!(values(&settings, "RestartPreventExitStatus"), ["78"]);
    assert_eq!(values(&settings, "User"), ["listwarden"]);
    assert_eq!(values(&settings, "DynamicUser"), ["no"]);
    assert_eq!(values(&settings, "CapabilityBoundingSet"), [""]);
    assert!(
        values(&settings, "ReadWritePaths")
            .iter()
            .any(|v| v.trim_start_matches('-') == "/var/spool/postfix/listwarden"),
        "the socket directory in Postfix's chroot must stay writable"
    );
}

#[test]
fn packaged_config_is_valid() {
    let text = read(PACKAGED_CONFIG);
    assert_eq!(
        text.matches(PACKAGED_KEY).count(),
        1,
        "{PACKAGED_CONFIG} must name its key as {PACKAGED_KEY}"
    );
    assert!(
        read(POSTINST).contains(&format!("KEY={PACKAGED_KEY}\n")),
        "{POSTINST} must create {PACKAGED_KEY}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("1.key");
    // What postinst writes: 32 random bytes, base64 (fixed here).
    std::fs::write(&key, "q7JHhNQ3oUH4mXqzD0lSx1Vv0zk2W2b9zJm7rS3c5xU=\n").expect("write key");
    let key_path = key.to_str().expect("temp path is UTF-8");
    let text = text.replace(PACKAGED_KEY, key_path);
    let origin = dir.path().join("listwarden.yaml");
    if let Err(e) = listwarden::config::Config::parse(&text, &origin) {
        panic!("{PACKAGED_CONFIG} is not a valid config:\n{e}");
    }
}

#[test]
fn maintainer_scripts_place_the_systemd_fragments_once() {
    for script in [POSTINST, POSTRM] {
        let text = read(script);
        assert_eq!(
            text.matches(DEBHELPER_TOKEN).count(),
            1,
            "{script}: {DEBHELPER_TOKEN} must appear exactly once (cargo-deb also replaces it inside comments)"
        );
        assert!(
            text.lines().any(|line| line.trim() == DEBHELPER_TOKEN),
            "{script}: {DEBHELPER_TOKEN} must stand on a line of its own"
        );
    }
    // The fragments start the service: the key must exist by then.
    let postinst = read(POSTINST);
    let key_made = postinst
        .find("/dev/urandom")
        .expect("postinst makes the key");
    let fragments = postinst.find(DEBHELPER_TOKEN).unwrap_or(0);
    assert!(
        key_made < fragments,
        "{POSTINST}: the key must be made before the service is started"
    );
}

#[test]
fn dockerfile_runs_what_the_unit_runs() {
    let dockerfile = read(DOCKERFILE);
    let entrypoint = dockerfile
        .lines()
        .find(|line| line.starts_with("ENTRYPOINT"))
        .expect("Dockerfile has an ENTRYPOINT");
    for word in [
        "\"/usr/bin/listwarden\"",
        "\"run\"",
        "\"--config\"",
        "\"/etc/listwarden/listwarden.yaml\"",
    ] {
        assert!(
            entrypoint.contains(word),
            "ENTRYPOINT lacks {word}: {entrypoint}"
        );
    }
    let user = dockerfile
        .lines()
        .rfind(|line| line.starts_with("USER "))
        .expect("Dockerfile sets USER");
    assert!(
        !user.contains("root") && !user.ends_with(" 0"),
        "runs as root: {user}"
    );
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("EXPOSE") && l.contains("8890") && l.contains("9890")),
        "Dockerfile must EXPOSE the milter and metrics ports"
    );
}
