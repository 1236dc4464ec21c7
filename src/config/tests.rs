use super::*;
use crate::address::Address;

const GOOD: &str = "\
milter:
  listen: inet:127.0.0.1:8890
trusted_networks: [127.0.0.1/32, \"::1/128\"]
lists:
  - address: Members@Lists.Example.ORG
";

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(src, Path::new("test.yaml"))
}

/// Every diagnostic as `LINE:COLUMN: path: message`.
fn errors(src: &str) -> Vec<String> {
    let e = parse(src).expect_err("config should be invalid");
    e.diagnostics
        .iter()
        .map(|d| {
            format!(
                "{}:{}: {}: {}",
                d.line.unwrap_or(0),
                d.column.unwrap_or(0),
                d.path,
                d.message
            )
        })
        .collect()
}

#[test]
fn shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/listwarden.yaml");
    let c = Config::load(&path).expect("config/listwarden.yaml must load");
    assert_eq!(
        c.milter.listen,
        Socket::Inet {
            host: "127.0.0.1".into(),
            port: 8890
        }
    );
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9890".parse().unwrap()));
    assert_eq!(c.lists.len(), 1);
    for a in [
        "members",
        "members-owner",
        "members-request",
        "members-bounces",
    ] {
        let addr = Address::parse(&format!("{a}@lists.example.org")).unwrap();
        assert!(c.protected(&addr).is_some(), "{a} must be protected");
    }
}

#[test]
fn defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.on_error, OnError::Tempfail);
    assert!(!c.observe);
    assert_eq!(c.milter.socket_mode, 0o660);
    assert_eq!(c.limits, MessageLimits::default());
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.lists[0].name, "Members");
    assert_eq!(
        c.lists[0].roles,
        ["owner", "request", "bounces", "unsubscribe"]
    );
    assert_eq!(c.lists[0].preset, Preset::Listwarden);
    assert_eq!(c.lists[0].bounces, BounceCheck::Off, "no keys, no check");
    assert!(c.signing.is_none());
}

#[test]
fn protected_addresses_match_case_and_detail() {
    let c = parse(GOOD).unwrap();
    let hit = |s: &str| {
        c.protected(&Address::parse(s).unwrap())
            .map(|p| p.role.clone())
    };
    assert_eq!(hit("members@lists.example.org"), Some(Role::Posting));
    assert_eq!(
        hit("MEMBERS-Bounces@LISTS.example.org."),
        Some(Role::Suffix("bounces".into()))
    );
    assert_eq!(
        hit("members-bounces+alice=example.net@lists.example.org"),
        Some(Role::Suffix("bounces".into()))
    );
    assert_eq!(hit("members@other.example"), None);
    assert_eq!(hit("members-editor@lists.example.org"), None);
    assert_eq!(hit("nonmembers@lists.example.org"), None);
}

#[test]
fn trusted_networks() {
    let c = parse(GOOD).unwrap();
    assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
    assert!(c.is_trusted("::1".parse().unwrap()));
    assert!(!c.is_trusted("127.0.0.2".parse().unwrap()));
    assert!(!c.is_trusted("203.0.113.7".parse().unwrap()));
}

#[test]
fn socket_forms() {
    let cases = [
        (
            "inet:localhost:8890",
            Socket::Inet {
                host: "localhost".into(),
                port: 8890,
            },
        ),
        (
            "inet:[::1]:8890",
            Socket::Inet {
                host: "::1".into(),
                port: 8890,
            },
        ),
        (
            "unix:/run/listwarden/milter.sock",
            Socket::Unix("/run/listwarden/milter.sock".into()),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            validate::milter::parse_socket(text).unwrap(),
            want,
            "{text}"
        );
        assert_eq!(want.to_string(), text);
    }
    for bad in [
        "tcp:1.2.3.4:5",
        "inet:1.2.3.4",
        "inet:1.2.3.4:0",
        "inet::25",
        "unix:relative.sock",
        "",
    ] {
        assert!(validate::milter::parse_socket(bad).is_err(), "{bad}");
    }
}

#[test]
fn every_validation_error_is_collected_with_its_place() {
    let src = "\
milter:
  listen: tcp:nowhere
  socket_mode: \"999\"
  max_connections: 0
metrics:
  listen: localhost
on_error: maybe
trusted_networks:
  - 127.0.0.1/33
  - 10.0.0.1/8
limits:
  max_recipients: 0
  max_mime_depth: 33
lists:
  - address: members@lists.example.org
  - address: not-an-address
  - address: a+b@lists.example.org
  - address: MEMBERS@lists.example.org
    roles: [owner, \"bad role\"]
";
    assert_eq!(
        errors(src),
        [
            "2:11: milter.listen: `tcp:nowhere` is not a socket such as inet:127.0.0.1:8890 or unix:/run/listwarden/milter.sock",
            "3:16: milter.socket_mode: `999` is not an octal file mode such as \"0660\"",
            "4:20: milter.max_connections: must be at least 1",
            "6:11: metrics.listen: `localhost` is not an IP:PORT address such as 127.0.0.1:9890 (or `off`)",
            "7:11: on_error: `maybe` is not one of: tempfail, accept",
            "9:5: trusted_networks[0]: `127.0.0.1/33` is not a network such as 192.0.2.0/24 or 2001:db8::/48",
            "10:5: trusted_networks[1]: `10.0.0.1/8` has host bits set; did you mean 10.0.0.0/8?",
            "12:19: limits.max_recipients: must be at least 1",
            "13:19: limits.max_mime_depth: must be at most 32",
            "16:14: lists[1].address: `not-an-address` is not a mail address: address has no '@'",
            "17:14: lists[2].address: a list address may not contain `+` (it separates VERP details)",
            "18:14: lists[3].address: `members@lists.example.org` is already protected by list `members@lists.example.org`",
            "19:13: lists[3].roles[0]: `members-owner@lists.example.org` is already protected by list `members@lists.example.org`",
            "19:20: lists[3].roles[1]: `bad role` is not a role suffix such as `owner`",
        ]
    );
}

#[test]
fn the_list_servers_socket_is_checked_where_it_is_written() {
    let c = Config::parse(
        "milter:\n  listen: inet:127.0.0.1:8890\n  trusted_listen: unix:/run/listwarden/list.sock\ntrusted_networks: [127.0.0.1/32]\n",
        std::path::Path::new("t.yaml"),
    )
    .unwrap();
    assert_eq!(
        c.milter.trusted_listen,
        Some(Socket::Unix("/run/listwarden/list.sock".into()))
    );
    assert_eq!(
        errors("milter:\n  listen: inet:127.0.0.1:8890\n  trusted_listen: 127.0.0.1:8891\n"),
        [
            "3:19: milter.trusted_listen: `127.0.0.1:8891` is not a socket such as inet:127.0.0.1:8890 or unix:/run/listwarden/milter.sock"
        ]
    );
    assert_eq!(
        errors("milter:\n  listen: inet:127.0.0.1:8890\n  trusted_listen: inet:127.0.0.1:8890\n"),
        ["3:19: milter.trusted_listen: must differ from milter.listen"]
    );
}

/// review2 M4: the socket serves only trusted_networks, and Postfix shows
/// sendmail(1) submissions to non_smtpd_milters as 127.0.0.1.
#[test]
fn the_list_servers_socket_needs_trusted_networks_with_the_sendmail_path() {
    let sock = "milter:\n  listen: inet:127.0.0.1:8890\n  trusted_listen: inet:127.0.0.1:8891\n";
    assert_eq!(
        errors(sock),
        [
            "3:19: milter.trusted_listen: needs trusted_networks: only their clients are served on this socket (add 127.0.0.1 for Postfix's sendmail path, non_smtpd_milters)"
        ]
    );
    let c = Config::parse(
        &format!("{sock}trusted_networks: [192.0.2.0/24]\n"),
        Path::new("t.yaml"),
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with(
            "t.yaml:3:19: milter.trusted_listen: trusted_networks does not contain 127.0.0.1"
        ),
        "{}",
        c.warnings[0]
    );
    let c = Config::parse(
        &format!("{sock}trusted_networks: [127.0.0.0/8]\n"),
        Path::new("t.yaml"),
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// review2 L3: the same socket file named through `..` or a symlinked
/// directory is the same socket (binding one would delete the other).
#[test]
fn the_list_servers_socket_differs_after_resolving_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("spool");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    let listen = real.join("milter.sock");
    for other in [
        dir.path().join("link/milter.sock"),
        dir.path().join("spool/../spool/milter.sock"),
        dir.path().join("spool/./milter.sock"),
        std::path::PathBuf::from("/nonexistent/x/../milter.sock"),
    ] {
        let listen = if other.starts_with("/nonexistent") {
            std::path::PathBuf::from("/nonexistent/milter.sock")
        } else {
            listen.clone()
        };
        let src = format!(
            "milter:\n  listen: unix:{}\n  trusted_listen: unix:{}\ntrusted_networks: [127.0.0.1/32]\n",
            listen.display(),
            other.display()
        );
        let e = parse(&src).expect_err(&src);
        assert!(
            e.diagnostics[0]
                .message
                .contains("must differ from milter.listen"),
            "{src}: {:?}",
            e.diagnostics
        );
    }
    let src = format!(
        "milter:\n  listen: unix:{}\n  trusted_listen: unix:{}\ntrusted_networks: [127.0.0.1/32]\n",
        listen.display(),
        dir.path().join("link/list.sock").display()
    );
    assert!(parse(&src).is_ok());
}

#[test]
fn unknown_keys_and_wrong_types_are_located() {
    let e = errors("milter:\n  listen: inet:127.0.0.1:1\n  lissten: x\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("3:3: milter: unknown field `lissten`"),
        "{e:?}"
    );

    let e = errors(
        "milter:\n  listen: inet:127.0.0.1:1\nlists:\n  - address: a@b\n    observe: sometimes\n",
    );
    assert!(
        e[0].starts_with("5:14: lists[0].observe: invalid type"),
        "{e:?}"
    );

    let e = errors("lists: []\n");
    assert!(e[0].contains("missing field `milter`"), "{e:?}");
}

#[test]
fn broken_yaml_is_located() {
    let e = errors("milter:\n  listen: \"unterminated\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("2:") || e[0].starts_with("3:"), "{e:?}");
}

#[test]
fn alias_bombs_and_deep_nesting_are_refused() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in 'b'..='k' {
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = name;
    }
    bomb.push_str("milter:\n  listen: inet:127.0.0.1:1\n");
    assert!(parse(&bomb).is_err());

    let deep = format!("milter: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse(&deep).is_err());
}

#[test]
fn oversized_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
    let e = Config::load(&big).unwrap_err().to_string();
    assert!(
        e.contains("big.yaml:1:1: (file): file is larger than"),
        "{e}"
    );

    let e = Config::load(&dir.path().join("nope.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.yaml:1:1: (file): cannot read file"), "{e}");

    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, b"milter:\n  listen: \xff\xfe\n").unwrap();
    let e = Config::load(&bin).unwrap_err().to_string();
    assert!(e.contains("not UTF-8"), "{e}");
}

#[test]
fn error_display_is_file_line_column_path_message() {
    let e = Config::parse(
        "milter:\n  listen: nope\n",
        Path::new("/etc/listwarden/listwarden.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/listwarden/listwarden.yaml:2:11: milter.listen: `nope` is not a socket such as inet:127.0.0.1:8890 or unix:/run/listwarden/milter.sock"
    );
}

/// Writes `files` and the config into a temp dir and parses it from there.
fn parse_in_dir(
    config: &str,
    files: &[(&str, &[u8])],
) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.path().join(name), private).unwrap();
        }
    }
    let path = dir.path().join("listwarden.yaml");
    std::fs::write(&path, config).unwrap();
    let result = Config::load(&path);
    (dir, result)
}

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef\n";

#[test]
fn signing_keys_are_loaded_relative_to_the_config() {
    let src = "milter: {listen: inet:127.0.0.1:1}\nsigning:\n  keys: [{id: 3, file: k.key}]\n  sign_with: 3\n  validity_days: 10\nlists:\n  - address: l@x.example\n";
    let (_dir, c) = parse_in_dir(src, &[("k.key", KEY)]);
    let c = c.unwrap();
    let ring = c.signing.as_ref().unwrap();
    assert_eq!((ring.signing_id(), ring.validity_days()), (3, 10));
    assert_eq!(
        c.lists[0].bounces,
        BounceCheck::Signed,
        "keys make signed the default"
    );
    assert!(c.warnings.is_empty());
    assert!(
        !format!("{c:?}").contains("0123456789abcdef"),
        "secrets never show in Debug"
    );
}

#[test]
fn key_problems_are_errors_at_their_key() {
    let src = "milter: {listen: inet:127.0.0.1:1}\nsigning:\n  keys:\n    - {id: 1, file: missing.key}\n    - {id: 2, file: short.key}\n    - {id: 12, file: k.key}\n  sign_with: 1\n";
    let (_dir, r) = parse_in_dir(src, &[("short.key", b"tooshort"), ("k.key", KEY)]);
    let e = r.unwrap_err();
    let lines: Vec<String> = e
        .diagnostics
        .iter()
        .map(|d| format!("{}:{}: {}", d.line.unwrap(), d.column.unwrap(), d.path))
        .collect();
    assert_eq!(
        lines,
        [
            "4:21: signing.keys[0].file",
            "5:21: signing.keys[1].file",
            "6:12: signing.keys[2].id"
        ]
    );
    assert!(
        e.diagnostics[0].message.contains("missing.key"),
        "{:?}",
        e.diagnostics[0]
    );
    assert!(
        e.diagnostics[1].message.contains("fewer than 16 bytes"),
        "{:?}",
        e.diagnostics[1]
    );

    let src = "milter: {listen: inet:127.0.0.1:1}\nsigning:\n  keys: [{id: 1, file: k.key}]\n  sign_with: 2\n";
    let (_dir, r) = parse_in_dir(src, &[("k.key", KEY)]);
    let e = r.unwrap_err();
    assert_eq!(e.diagnostics[0].path, "signing.sign_with");
    assert!(
        e.diagnostics[0]
            .message
            .contains("not among the listed keys")
    );
}

#[test]
fn the_public_example_key_is_a_loud_warning() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/listwarden.yaml");
    let c = Config::load(&path).unwrap();
    assert!(c.signing.is_some());
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("public example key"),
        "{}",
        c.warnings[0]
    );
    assert!(
        c.warnings[0].contains("listwarden.yaml:"),
        "names the file and line: {}",
        c.warnings[0]
    );
}

#[test]
fn bounce_modes_presets_and_domains() {
    let src = "milter: {listen: inet:127.0.0.1:1}\n\
trace: {received_by: [lists.example.org]}\n\
lists:\n  - {address: a@l.example, preset: sympa, bounces: trace}\n  - {address: b@l.example, preset: mailman3, bounces: off}\n\
domains:\n  - {domain: Big.Example., preset: mailman3, bounces: trace}\n";
    let c = parse(src).unwrap();
    assert_eq!(
        c.lists[0].roles,
        ["owner", "request", "editor", "subscribe", "unsubscribe"]
    );
    assert_eq!(c.lists[1].roles[0], "bounces");
    assert_eq!(c.domains[0].domain, "big.example");
    let label = |a: &str| {
        c.protected(&Address::parse(a).unwrap())
            .map(|p| p.owner.label().to_string())
    };
    // Both Sympa lists of a domain would share bounce@; it names its list.
    assert_eq!(
        label("bounce+x==a==y.example==a@l.example").as_deref(),
        Some("a")
    );
    assert_eq!(
        label("whatever@big.example").as_deref(),
        Some("big.example")
    );
    assert_eq!(label("whatever@sub.big.example"), None);
}

#[test]
fn sympa_verp_with_a_probe_or_tracking_suffix_names_its_list() {
    let src = "milter: {listen: inet:127.0.0.1:1}\n\
trace: {received_by: [l.example]}\n\
lists:\n  - {address: a@l.example, preset: sympa, bounces: trace}\n  - {address: c@l.example, preset: sympa, bounces: trace}\n";
    let c = parse(src).unwrap();
    let label = |a: &str| {
        c.protected(&Address::parse(a).unwrap())
            .map(|p| p.owner.label().to_string())
    };
    // `a` was declared first and claims the shared bounce@; the address
    // still names `c`, last or last but one (Sympa's List.pm
    // get_bounce_address: welcome `==w`, remind `==r`, tracking `==ENVID`).
    for addr in [
        "bounce+x==a==y.example==c@l.example",
        "bounce+x==a==y.example==c==w@l.example",
        "bounce+x==a==y.example==c==r@l.example",
        "bounce+x==a==y.example==c==17a3f0@l.example",
    ] {
        assert_eq!(label(addr).as_deref(), Some("c"), "{addr}");
    }
    // Only a posting address names a list: a suffix that is some list's
    // role, or no list at all, leaves the claimant.
    assert_eq!(
        label("bounce+x==a==y.example==c-owner@l.example").as_deref(),
        Some("a")
    );
    assert_eq!(
        label("bounce+x==a==y.example==nobody==w@l.example").as_deref(),
        Some("a")
    );
}

#[test]
fn bounce_mode_errors() {
    let e = errors(
        "milter: {listen: inet:127.0.0.1:1}\nlists:\n  - {address: a@l.example, bounces: signed}\n  - {address: b@l.example, bounces: trace}\n  - {address: c@l.example, bounces: sometimes, preset: majordomo}\ndomains:\n  - {domain: x.example}\n  - {domain: X.example}\n",
    );
    assert_eq!(
        e,
        [
            "3:37: lists[0].bounces: this bounce check needs signing keys (signing.keys)",
            "4:37: lists[1].bounces: this bounce check needs trace.received_by or trace.message_id_domains",
            "5:56: lists[2].preset: `majordomo` is not one of: listwarden, sympa, mailman3",
            "5:37: lists[2].bounces: `sometimes` is not one of: signed, trace, either, off",
            "8:14: domains[1].domain: domain `x.example` is listed twice",
        ]
    );
}

#[test]
fn expander_lists_need_their_blocks_and_valid_settings() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    let ok = format!(
        "milter: {{listen: inet:127.0.0.1:1}}\nsigning: {{keys: [{{id: 1, file: {key}}}], sign_with: 1, demo: true}}\n\
         expander: {{state_dir: /var/lib/listwarden/lists, inject: \"smtp:127.0.0.1:10026\", helo: lists.example.org, unsubscribe_listen: \"127.0.0.1:8081\"}}\n\
         lists:\n  - address: members@lists.example.org\n    expand: {{members_file: members.txt, posting: announce, announcers: [boss@example.org], unsubscribe_url: \"https://lists.example.org/unsubscribe\"}}\n"
    );
    let c = parse(&ok).unwrap();
    let (files, settings) = c.expander_list("members").unwrap();
    assert_eq!(
        files.state_dir,
        Path::new("/var/lib/listwarden/lists/members")
    );
    assert!(
        matches!(settings.policy, listwarden_expand::PostingPolicy::Announce(ref a) if a.len() == 1)
    );
    assert_eq!(
        settings.refuse,
        listwarden_expand::RefuseAction::Hold,
        "holding is the safe default"
    );
    assert_eq!(c.expander_lists().len(), 1);

    let e = errors(
        "milter: {listen: inet:127.0.0.1:1}\nlists:\n  - address: members@lists.example.org\n    expand: {members_file: m.txt, posting: everyone, refused_post: shout, unsubscribe_url: \"http://x/u\", on_complaint: ignore, bounce_threshold: 0}\n",
    );
    let paths: Vec<&str> = e
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap_or(""))
        .collect();
    for want in [
        "lists[0].expand.posting",
        "lists[0].expand.refused_post",
        "lists[0].expand.unsubscribe_url",
        "lists[0].expand.bounce_threshold",
        "lists[0].expand.on_complaint",
        "lists[0].expand",
    ] {
        assert!(paths.contains(&want), "{want} missing in {e:?}");
    }
    assert!(
        e.iter()
            .any(|l| l.contains("needs the top-level expander: block")),
        "{e:?}"
    );
    assert!(e.iter().any(|l| l.contains("needs signing keys")), "{e:?}");
}

/// 4: an expander list acts on bounces, so only signed bounces may reach it.
#[test]
fn expander_lists_must_be_bounces_signed() {
    let head = "milter: {listen: inet:127.0.0.1:1}\nsigning: {keys: [{id: 1, file: k.key}], sign_with: 1}\n\
                trace: {received_by: [lists.example.org]}\n\
                expander: {state_dir: state}\nlists:\n";
    for mode in ["trace", "either", "off"] {
        let src = format!(
            "{head}  - address: members@lists.example.org\n    bounces: {mode}\n    expand: {{members_file: m.txt}}\n"
        );
        let (_dir, r) = parse_in_dir(&src, &[("k.key", KEY)]);
        let e = r.expect_err(mode);
        let shown = e.to_string();
        assert!(
            shown.contains(
                "listwarden.yaml:7:14: lists[0].bounces: an expand: list must use bounces: signed"
            ),
            "{mode}: {shown}"
        );
    }
    for ok in ["    bounces: signed\n", ""] {
        let src = format!(
            "{head}  - address: members@lists.example.org\n{ok}    expand: {{members_file: m.txt}}\n"
        );
        let (_dir, r) = parse_in_dir(&src, &[("k.key", KEY)]);
        assert_eq!(
            r.expect("signed is fine").lists[0].bounces,
            BounceCheck::Signed
        );
    }
}

/// 17: an expander list's name becomes a directory under state_dir; it is
/// checked on the parsed address, whatever the address's spelling.
#[test]
fn expander_list_names_are_safe_directory_names() {
    let head = "milter: {listen: inet:127.0.0.1:1}\nsigning: {keys: [{id: 1, file: k.key}], sign_with: 1}\n\
                expander: {state_dir: state}\nlists:\n";
    for address in [
        "'../evil@lists.example.org.'",
        "'\"../evil\"@lists.example.org'",
        "'\"a/b\"@Lists.Example.ORG'",
        "'.hidden@lists.example.org.'",
        "'a..b@lists.example.org.'",
    ] {
        let src = format!("{head}  - address: {address}\n    expand: {{members_file: m.txt}}\n");
        let (_dir, r) = parse_in_dir(&src, &[("k.key", KEY)]);
        match r {
            Err(e) => assert!(
                e.diagnostics.iter().any(|d| d.path == "lists[0].address"),
                "{address}: {e}"
            ),
            Ok(c) => panic!("{address} accepted as list `{}`", c.lists[0].name),
        }
    }
}

/// 13: one-click has a listener of its own; an https unsubscribe_url
/// without it is an error (the link would lead nowhere).
#[test]
fn one_click_needs_its_own_listener() {
    let config = |listen: &str| {
        format!(
            "milter: {{listen: inet:127.0.0.1:1}}\nsigning: {{keys: [{{id: 1, file: k.key}}], sign_with: 1}}\n\
             expander: {{state_dir: state{listen}}}\nlists:\n  - address: members@lists.example.org\n    \
             expand: {{members_file: m.txt, unsubscribe_url: \"https://lists.example.org/unsubscribe\"}}\n"
        )
    };
    let (_dir, r) = parse_in_dir(
        &config(", unsubscribe_listen: \"127.0.0.1:8081\""),
        &[("k.key", KEY)],
    );
    let c = r.expect("valid");
    let e = c.expander.as_ref().expect("expander");
    assert_eq!(
        e.unsubscribe_listen,
        Some("127.0.0.1:8081".parse().unwrap())
    );
    assert_ne!(e.unsubscribe_listen, c.metrics_listen);

    let (_dir, r) = parse_in_dir(&config(""), &[("k.key", KEY)]);
    let shown = r.expect_err("no listener").to_string();
    assert!(
        shown.contains(
            "lists[0].expand.unsubscribe_url: a one-click unsubscribe_url needs unsubscribe_listen"
        ),
        "{shown}"
    );

    let (_dir, r) = parse_in_dir(&config(", unsubscribe_listen: nope"), &[("k.key", KEY)]);
    let shown = r.expect_err("bad address").to_string();
    assert!(
        shown.contains(":3:50: expander.unsubscribe_listen: `nope` is not an IP:PORT"),
        "{shown}"
    );
}

/// 15: the public example key is an error unless `signing.demo: true`.
#[test]
fn the_public_example_key_needs_the_demo_flag() {
    let example = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keys/EXAMPLE-PUBLIC-KEY.key"),
    )
    .unwrap();
    let src = "milter: {listen: inet:127.0.0.1:1}\nsigning:\n  keys: [{id: 1, file: k.key}]\n  sign_with: 1\n";
    let (_dir, r) = parse_in_dir(src, &[("k.key", &example)]);
    let shown = r.expect_err("example key without demo").to_string();
    assert!(
        shown.contains("listwarden.yaml:3:24: signing.keys[0].file:")
            && shown.contains("public example key")
            && shown.contains("signing.demo: true"),
        "{shown}"
    );
    let demo = format!("{src}  demo: true\n");
    let (_dir, r) = parse_in_dir(&demo, &[("k.key", &example)]);
    let c = r.expect("a demo may use it");
    assert!(c.warnings.iter().any(|w| w.contains("public example key")));
}

/// 15: a key file others can read is a warning (its group may read it
/// only if that is the group this process runs with).
#[test]
fn key_files_readable_by_others_are_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let src = "milter: {listen: inet:127.0.0.1:1}\nsigning:\n  keys: [{id: 1, file: k.key}]\n  sign_with: 1\n";
    for (mode, warns) in [(0o600, false), (0o640, false), (0o644, true), (0o604, true)] {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, KEY).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let path = dir.path().join("listwarden.yaml");
        std::fs::write(&path, src).unwrap();
        let c = Config::load(&path).unwrap();
        let warned = c.warnings.iter().any(|w| w.contains("readable by"));
        assert_eq!(warned, warns, "{mode:o}: {:?}", c.warnings);
        if warns {
            assert!(
                c.warnings[0].contains("listwarden.yaml:3:24: signing.keys[0].file"),
                "{:?}",
                c.warnings
            );
        }
    }
}

#[test]
fn rules_file_problems_are_placed_in_the_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: r1\n    match: { status: '^5', bogus: x }\n    result: { class: hardd, reason: other }\n",
    )
    .unwrap();
    let config = dir.path().join("lw.yaml");
    std::fs::write(
        &config,
        "milter:\n  listen: inet:127.0.0.1:8890\nclassification:\n  rules: [r.yaml]\n",
    )
    .unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    let rules = dir.path().join("r.yaml").display().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with(&format!(
            "{rules}:3:35: rules[0].match.bogus: (rule \"r1\") unknown key"
        )),
        "{e}"
    );
    assert!(
        lines[1].starts_with(&format!("{rules}:4:22: rules[0].result.class:")),
        "{e}"
    );

    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: r1\n    match: { status: '^5'\n",
    )
    .unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{rules}:4:1: ")), "{e}");
}

#[test]
#[cfg(feature = "redis")]
fn redis_deployments_and_their_mistakes_are_located() {
    for url in [
        "redis://127.0.0.1:6379/",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/",
        "rediss://127.0.0.1:6380/",
    ] {
        let c = parse(&format!("{GOOD}ratelimit:\n  state: \"{url}\"\n"))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(matches!(c.ratelimit.state, StateBackend::Redis { .. }));
    }
    assert_eq!(
        errors(&format!(
            "{GOOD}ratelimit:\n  state: \"redis+sentinel://127.0.0.1:26379\"\n"
        )),
        [
            "7:10: ratelimit.state: not a usable Redis URL: no service name after the sentinels (…/mymaster)"
        ]
    );
    assert_eq!(
        errors(&format!("{GOOD}ratelimit:\n  state: \"http://h:1/\"\n")),
        [
            "7:10: ratelimit.state: not a usable Redis URL: unknown scheme `http` (redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster, rediss+cluster, unix)"
        ]
    );
    let e = errors(&format!(
        "{GOOD}ratelimit:\n  state: \"rediss://h:1/\"\n  redis_tls:\n    ca_file: /nonexistent/ca.pem\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("9:14: ratelimit.redis_tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{GOOD}ratelimit:\n  state: \"redis://h:1/\"\n  redis_tls:\n    ca_file: /nonexistent/ca.pem\n"
    ));
    assert!(
        e[0].starts_with("9:5: ratelimit.redis_tls: TLS files are given but the URL is not rediss"),
        "{e:?}"
    );
    // A password in a bad URL is not repeated in the message.
    let e = errors(&format!(
        "{GOOD}ratelimit:\n  state: \"redis+cluster://u:hunter2@h:1/2\"\n"
    ));
    assert!(e.iter().all(|e| !e.contains("hunter2")), "{e:?}");
}

#[test]
fn throttle_section_is_checked_with_places() {
    let base = "milter: {listen: 'inet:127.0.0.1:8890'}\n";
    let ok = format!(
        "{base}throttle:\n  domains: {{yahoo.com: yahoo}}\n  providers:\n    - name: yahoo\n      rules: [yahoo-ts01, yahoo-tss04]\n      window: 2m\n      slow: {{per_minute: 5, share: 0.05, lasts: 15m}}\n      hold: {{per_minute: 50, share: 0.5, lasts: 30m}}\n"
    );
    let c = Config::parse(&ok, std::path::Path::new("t.yaml")).unwrap();
    let t = c.throttle.unwrap();
    assert_eq!(
        t.map.to_string(),
        "hash:/var/spool/postfix/listwarden/transport"
    );
    assert_eq!(
        t.map.index(),
        std::path::Path::new("/var/spool/postfix/listwarden/transport.db")
    );
    assert_eq!(t.providers[0].slow.share_permille, 50);
    assert_eq!(t.providers[0].window, std::time::Duration::from_secs(120));
    assert!(
        t.relays
            .iter()
            .any(|(s, p)| s == "yahoodns.net" && p == "yahoo")
    );
    let bad = format!(
        "{base}throttle:\n  map: dbm:relative/transport\n  slow: 'no colon'\n  domains: {{'bad domain': yahoo}}\n  providers:\n    - name: Yahoo!\n      rules: [no-such-rule]\n      slow: {{per_minute: 0, share: 2, lasts: soon}}\n"
    );
    let e = Config::parse(&bad, std::path::Path::new("t.yaml"))
        .unwrap_err()
        .to_string();
    let relative = "{base}throttle:\n  map: lmdb:relative/transport\n";
    let e2 = Config::parse(
        &relative.replace("{base}", base),
        std::path::Path::new("t.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e2.contains("t.yaml:3:8: throttle.map: `relative/transport` is not an absolute file path"),
        "{e2}"
    );
    for needle in [
        "t.yaml:3:8: throttle.map: `dbm` is not a table type listwarden can write (hash, btree, lmdb, cdb)",
        "t.yaml:4:9: throttle.slow",
        "t.yaml:5:27: throttle.domains.bad domain: is not a plain domain name",
        "throttle.providers[0].name",
        "throttle.providers[0].rules[0]: no classification rule is named `no-such-rule`",
        "throttle.providers[0].slow.per_minute",
        "throttle.providers[0].slow.share",
        "throttle.providers[0].slow.lasts",
    ] {
        assert!(e.contains(needle), "{needle} not in {e}");
    }
}

#[test]
fn the_storm_detector_has_defaults_bounds_and_an_off_switch() {
    let c = parse(GOOD).unwrap();
    assert_eq!(
        c.incident,
        Some(Incident {
            trigger: 20,
            within: std::time::Duration::from_secs(600),
            hold: std::time::Duration::from_secs(3600),
            max_keys: 1000,
        })
    );
    let off = parse(&format!(
        "{GOOD}classification:\n  incident:\n    enabled: false\n"
    ))
    .unwrap();
    assert_eq!(off.incident, None);
    let bad = errors(&format!(
        "{GOOD}classification:\n  incident:\n    trigger: 1\n    within: 0s\n    max_keys: 0\n"
    ));
    for key in ["trigger", "within", "max_keys"] {
        assert!(
            bad.iter()
                .any(|e| e.contains(&format!("classification.incident.{key}"))),
            "{key}: {bad:?}"
        );
    }
}

#[test]
fn the_storm_detector_memory_is_bounded_by_config() {
    let bad = errors(&format!(
        "{GOOD}classification:\n  incident:\n    trigger: 10000\n    max_keys: 1000\n"
    ));
    assert!(
        bad.iter()
            .any(|e| e.contains("classification.incident.max_keys") && e.contains("1000000")),
        "{bad:?}"
    );
}

#[test]
fn canary_section_is_checked_with_places() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    let base = format!(
        "milter: {{listen: 'inet:127.0.0.1:8890'}}\nsigning: {{keys: [{{id: 1, file: {key}}}], sign_with: 1, demo: true}}\n"
    );
    let ok = format!(
        "{base}canary:\n  address: canary@lists.example.org\n  sender: probe@ops.example.net\n  smtp: mx.example.org:25\n  wait: 30s\n"
    );
    let c = Config::parse(&ok, std::path::Path::new("/etc/lw/t.yaml")).unwrap();
    let canary = c.canary.unwrap();
    assert_eq!(canary.wait, std::time::Duration::from_secs(30));
    assert_eq!(canary.max_age, std::time::Duration::from_secs(3600));
    assert_eq!(
        canary.dir,
        std::path::Path::new("/var/lib/listwarden/canary")
    );
    assert_eq!(canary.helo, "localhost");
    let bad = format!(
        "{base}canary:\n  address: not an address\n  sender: probe@ops.example.net\n  smtp: mx.example.org\n  helo: two words\n  wait: 2h\n"
    );
    let e = Config::parse(&bad, std::path::Path::new("t.yaml"))
        .unwrap_err()
        .to_string();
    for needle in [
        "t.yaml:4:12: canary.address",
        "t.yaml:6:9: canary.smtp: `mx.example.org` is not HOST:PORT",
        "canary.helo: must be one word",
        "canary.max_age: must be longer than canary.wait",
    ] {
        assert!(e.contains(needle), "{needle} not in {e}");
    }
    let unsigned = "milter: {listen: 'inet:127.0.0.1:8890'}\ncanary:\n  address: canary@lists.example.org\n  sender: probe@ops.example.net\n  smtp: 127.0.0.1:25\n";
    let e = Config::parse(unsigned, std::path::Path::new("t.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("canary.address: the canary needs `signing:` keys"),
        "{e}"
    );
}

/// Mailman answers 404 to everything without the API version in the URL,
/// which would read as "not a member" for every complaint.
#[test]
fn the_mailman_url_names_the_api_version() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("mm.pass");
    std::fs::write(&pass, "secret\n").unwrap();
    let yaml = |url: &str| {
        format!(
            "milter:\n  listen: inet:127.0.0.1:1\n\
             lists:\n  - {{address: a@l.example, preset: mailman3}}\n\
             feedback:\n  addresses: [fbl@l.example]\n  queue: {}\n  \
             mailman3: {{url: \"{url}\", user: restadmin, password_file: {}}}\n",
            dir.path().join("q").display(),
            pass.display()
        )
    };
    for good in ["http://127.0.0.1:8001/3.1", "http://localhost:8001/3.0/"] {
        parse(&yaml(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["http://127.0.0.1:8001", "https://127.0.0.1:8001/3.1"] {
        let e = errors(&yaml(bad));
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert!(
            e[0].starts_with(
                "8:19: feedback.mailman3.url: must be an http:// URL ending in the API version"
            ),
            "{bad}: {e:?}"
        );
    }
}
