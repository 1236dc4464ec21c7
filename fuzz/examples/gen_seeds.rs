//! Writes the seed corpora under fuzz/corpus/ (run from anywhere):
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//!
//! milter_session: Postfix-like conversations (each prefixed with the two
//! chunking bytes, see `milter::split_plan`); address: paths and From:
//! values behind a day-offset byte; config: the shipped configs and small
//! variants; dsn: the test fixtures. Every seed file is named `seed-*` (the
//! only corpus files kept in git).

use listwarden::address::{Address, KeyRing, prvs};
use listwarden_fuzz::frames::{
    self, abort, connect, connect_unknown, eom, header, macros, mail, quit, rcpt,
};
use listwarden_fuzz::inputs::{RING, TODAY};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
}

fn example_ring() -> KeyRing {
    let key = repo().join("config/keys/EXAMPLE-PUBLIC-KEY.key");
    KeyRing::load(&[(1, key)], 1, 7).expect("example key")
}

fn today() -> u64 {
    listwarden::policy::day_of(listwarden::unix_now())
}

/// `(max chunk, seed)` prefixes: whole, byte by byte, and ragged.
const PLANS: [[u8; 2]; 3] = [[0, 0], [1, 0], [13, 77]];

fn milter_seeds() {
    let key = example_ring();
    let plain = Address::parse("members-bounces@lists.example.org").unwrap();
    let signed = format!("<{}>", prvs::sign(&plain, &key, today()));
    let dsn = std::fs::read(repo().join("integration/scenarios/data/dsn-ours.txt")).unwrap();
    let yahoo =
        std::fs::read(repo().join("integration/scenarios/data/dsn-yahoo-ts01.txt")).unwrap();

    let mut sessions: Vec<(&str, Vec<u8>)> = Vec::new();
    let stranger = || frames::session_start("203.0.113.7");
    let from = |a: &'static str| {
        vec![
            ("From", a),
            ("Subject", "hello"),
            ("Message-ID", "<1@example.net>"),
        ]
    };

    let mut s = stranger();
    s.extend(frames::transaction(
        "<alice@example.net>",
        &["<bob@example.com>"],
        &from("Alice <alice@example.net>"),
        b"",
    ));
    s.extend(quit());
    sessions.push(("ordinary", s));

    let mut s = stranger();
    s.extend(frames::transaction(
        "<members@lists.example.org>",
        &["<bob@example.com>"],
        &from("x@example.net"),
        b"",
    ));
    s.extend(frames::transaction(
        "<alice@example.net>",
        &["<bob@example.com>"],
        &from("\"M\" <members@lists.example.org>, a@b.example"),
        b"body\r\n",
    ));
    s.extend(quit());
    sessions.push(("forged-envelope-then-from", s));

    let mut s = frames::session_start("198.51.100.9");
    s.extend(frames::transaction(
        "<>",
        &[signed.as_str()],
        &from("MAILER-DAEMON@mx.example.net"),
        &yahoo,
    ));
    s.extend(frames::transaction(
        "<>",
        &["<members-bounces@lists.example.org>"],
        &from("MAILER-DAEMON@mx.example.net"),
        b"",
    ));
    s.extend(quit());
    sessions.push(("bounces-signed-unsigned", s));

    let mut s = frames::session_start("192.0.2.77");
    s.extend(frames::transaction(
        "<>",
        &["<legacy-owner@lists.example.org>"],
        &from("MAILER-DAEMON@mx.example.com"),
        &dsn,
    ));
    s.extend(quit());
    sessions.push(("trace-bounce", s));

    let mut s = frames::session_start("127.0.0.1");
    s.extend(frames::transaction(
        "<members-bounces@lists.example.org>",
        &["<a@example.net>", "<b@example.com>"],
        &from("carol@example.org"),
        b"hi\r\n",
    ));
    s.extend(quit());
    sessions.push(("outbound-signed", s));

    let mut s = stranger();
    s.extend(macros(b'M', &[(b"i", b""), (b"{auth_authen}", b"")]));
    s.extend(mail(&[b"<>"]));
    s.extend(rcpt(&[b"<bob@example.com>"]));
    s.extend(header(b"X-Listwarden-Bounce", b"class=hard forged"));
    s.extend(header(b"x-listwarden-bounce", b"again"));
    s.extend(header(b"From", b"mailer-daemon@example.net"));
    s.extend(abort());
    let many: Vec<String> = (0..25).map(|i| format!("<r{i}@example.com>")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    s.extend(frames::transaction(
        "<x@example.net>",
        &many,
        &[("X-Listwarden-Other", "1"), ("From", "x@example.net")],
        b"",
    ));
    s.extend(quit());
    sessions.push(("spoofed-abort-many-rcpts", s));

    let mut s = frames::postfix_optneg();
    s.extend(connect(b"v6.example", b'6', 0, b"2001:db8::7"));
    s.extend(frames::transaction(
        "<a@[IPv6:2001:db8::1]>",
        &["<\"quoted local\"@example.com>"],
        &from("=?utf-8?q?M=C3=BCller?= <m@example.net>"),
        b"",
    ));
    s.extend(quit());
    s.extend(frames::postfix_optneg());
    s.extend(connect_unknown(b"unknown"));
    s.extend(macros(b'M', &[]));
    s.extend(mail(&[b"<@a,@b:u@d.example>"]));
    s.extend(eom());
    sessions.push(("v6-unknown-family-odd", s));

    let mut s = frames::postfix_optneg();
    s.extend(connect(b"localhost", b'L', 0, b"/var/run/x.sock"));
    s.extend(frames::transaction(
        "<quiet@lists.example.org>",
        &["<quiet@lists.example.org>"],
        &from("quiet@lists.example.org"),
        b"",
    ));
    sessions.push(("unix-family-observe", s));

    for (name, s) in &sessions {
        for (i, plan) in PLANS.iter().enumerate() {
            // The byte-by-byte plan only for the short sessions (it is slow).
            if plan[0] == 1 && s.len() > 2000 {
                continue;
            }
            let mut data = plan.to_vec();
            data.extend_from_slice(s);
            write("milter_session", &format!("{name}-{i}"), &data);
        }
    }
}

fn address_seeds() {
    let plain = Address::parse("members-bounces@lists.example.org").unwrap();
    let signed = prvs::sign(&plain, &RING, TODAY).to_string();
    let member = Address::parse("alice@example.net").unwrap();
    let verp = listwarden::address::verp::sign_verp(&plain, &member, &RING, TODAY)
        .unwrap()
        .to_string();
    let texts = [
        "<members@lists.example.org>".to_string(),
        "<>".into(),
        "<@r1.example,@r2.example:u@d.example>".into(),
        "\"quoted local\"@Example.ORG.".into(),
        format!("<{signed}>"),
        format!("<{}>", signed.to_uppercase()),
        format!("<{verp}>"),
        "members-bounces+alice=example.net@lists.example.org".into(),
        "\"Alice\" <alice@example.net>, Group: a@b.example, c@d.example;, (comment) e@f.example"
            .into(),
        "=?utf-8?q?M=C3=BCller?= <m\u{fc}ller@b\u{fc}cher.example>".into(),
        // Postfix's reading of paths: comments, spaces, quotes, long routes.
        "<members-bounces(x)@lists.example.org>".into(),
        "<(c) members-bounces @ lists.example.org (a (nested \\) one))>".into(),
        format!("<{}:members-bounces@lists.example.org>", long_route()),
        "< @a , @b : \"members-bounces\"@lists.example.org. >".into(),
        "<Evil <m\\embers-bounces@lists.example.org>>".into(),
        "<\"@x.example:members-bounces\"@lists.example.org>".into(),
        "<(x)>".into(),
        // From: with CFWS, obsolete routes and broken forms.
        "members (c) @ lists . example . org, Evil <@route,@x:members@lists.example.org>".into(),
        "Evil\r\n <members @\r\n lists.example.org>, members@[lists.example.org]".into(),
        "a@b.example. members (x) @ lists.example.org\r\n .evil, \"members\"@lists.example.org\"x\"".into(),
    ];
    for (i, t) in texts.iter().enumerate() {
        let mut data = vec![8u8]; // day offset 0
        data.extend_from_slice(t.as_bytes());
        write("address", &format!("{i:02}"), &data);
    }
}

/// `@h0.example,...,@h49.example`: a 50-hop source route.
fn long_route() -> String {
    (0..50)
        .map(|i| format!("@h{i}.example"))
        .collect::<Vec<_>>()
        .join(",")
}

fn config_seeds() {
    for (name, path) in [
        ("example.yaml", "config/listwarden.yaml"),
        ("debian.yaml", "packaging/debian/listwarden.yaml"),
    ] {
        let text = std::fs::read(repo().join(path)).unwrap();
        write("config", name, &text);
    }
    let small = [
        (
            "minimal.yaml",
            "milter:\n  listen: inet:127.0.0.1:8890\nlists:\n  - address: members@lists.example.org\n",
        ),
        (
            "unix-observe.yaml",
            "milter:\n  listen: unix:/run/x.sock\n  socket_mode: \"0660\"\nobserve: true\non_error: accept\ntrusted_networks: [192.0.2.0/24, \"2001:db8::/48\"]\nlists:\n  - address: a@b.example\n    roles: [owner, request]\n    observe: true\n",
        ),
        (
            "budgets.yaml",
            "milter:\n  listen: inet:127.0.0.1:8890\nratelimit:\n  state: memory\n  max_keys: 1000\n  budgets:\n    network: {rate: 1, per: 1h, burst: 3}\nshield:\n  trigger: 4\n  within: 10m\n  hold: 1h\nclassification:\n  builtin: false\nlists:\n  - address: members@lists.example.org\n",
        ),
        (
            "anchors.yaml",
            "milter: &m\n  listen: inet:127.0.0.1:8890\nlists:\n  - &l {address: a@b.example}\n  - *l\n",
        ),
        (
            "bad.yaml",
            "milter:\n  listen: inet:nowhere\nobsreve: true\ntrusted_networks: [127.0.0.1/33]\nlists:\n  - address: broken\n",
        ),
    ];
    for (name, text) in small {
        write("config", name, text.as_bytes());
    }
}

fn dsn_seeds() {
    let dir = repo().join("tests/fixtures/dsn");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        write("dsn", &name, &std::fs::read(&p).unwrap());
    }
}

fn main() {
    milter_seeds();
    address_seeds();
    config_seeds();
    dsn_seeds();
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
