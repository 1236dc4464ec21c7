use super::*;
use std::os::unix::fs::PermissionsExt;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef\n";
const TODAY: u64 = 20_000;

/// A Mailman 3 list and a Sympa list with one-click, a Mailman list
/// without, and an expander list.
pub(crate) const CONFIG: &str = "milter: {listen: inet:127.0.0.1:1}
signing: {keys: [{id: 1, file: k.key}], sign_with: 1}
unsubscribe_listen: \"127.0.0.1:8081\"
expander: {state_dir: state}
feedback:
  addresses: [fbl@lists.example.org]
  queue: queue
  mailman3: {url: \"http://127.0.0.1:8001/3.1\", user: restadmin, password_file: mm.pass}
lists:
  - {address: test@lists.example.org, preset: mailman3, unsubscribe_url: \"https://lists.example.org/unsubscribe\"}
  - {address: sym@lists.example.org, preset: sympa, unsubscribe_url: \"https://lists.example.org/u?site=1\"}
  - {address: plain@lists.example.org, preset: mailman3}
  - address: members@lists.example.org
    expand: {members_file: m.txt, unsubscribe_url: \"https://lists.example.org/unsubscribe\"}
";

pub(crate) fn config_in(dir: &std::path::Path, text: &str) -> Result<Config, String> {
    std::fs::write(dir.join("k.key"), KEY).unwrap();
    std::fs::set_permissions(dir.join("k.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("mm.pass"), "secret\n").unwrap();
    let path = dir.join("listwarden.yaml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).map_err(|e| e.to_string())
}

fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let c = config_in(dir.path(), CONFIG).unwrap();
    (dir, c)
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

const MAILMAN_VERP: &str = "test-bounces+bob=example.net@lists.example.org";
const SYMPA_VERP: &str = "bounce+bob==a==example.net==sym@lists.example.org";

/// The candidate for `sender`, with these headers seen.
fn seen(config: &Config, sender: &str, headers: &[(&str, &str)]) -> Option<Candidate> {
    let mut c = candidate(config, &addr(sender))?;
    for (n, v) in headers {
        c.seen.header(n, v);
    }
    Some(c)
}

fn rewrite_for(config: &Config, c: &Candidate, rcpts: &[&str]) -> Option<Rewrite> {
    let first = rcpts.first().map(|r| addr(r));
    let keys = config.signing.as_ref().unwrap();
    rewrite(config, c, rcpts.len(), first.as_ref(), keys, TODAY)
}

/// The token in a written `List-Unsubscribe` value.
fn token_of(value: &str) -> String {
    let t = value.split("&t=").nth(1).unwrap();
    t.split('>').next().unwrap().to_string()
}

#[test]
fn a_mailman_copy_gets_one_click_and_keeps_its_mailto() {
    let (_d, config) = config();
    let c = seen(
        &config,
        MAILMAN_VERP,
        &[
            ("Subject", "hi"),
            ("List-Unsubscribe", "<mailto:test-leave@lists.example.org>"),
            ("list-unsubscribe-post", "List-Unsubscribe=One-Click"),
            ("Feedback-ID", "forged:x"),
            ("Feedback-ID", "forged:y"),
        ],
    )
    .expect("a candidate");
    assert_eq!(c.member, addr("bob@example.net"));
    let r = rewrite_for(&config, &c, &["bob@example.net"]).expect("rewritten");
    assert_eq!(
        r.delete,
        [
            ("List-Unsubscribe".to_string(), 1),
            ("list-unsubscribe-post".to_string(), 1),
            ("Feedback-ID".to_string(), 2),
            ("Feedback-ID".to_string(), 1),
        ]
    );
    let names: Vec<&str> = r.add.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID"]
    );
    let value = &r.add[0].1;
    assert!(
        value.starts_with(
            "<https://lists.example.org/unsubscribe?list=test&m=bob@example.net&t=lw-1"
        ),
        "{value}"
    );
    assert!(
        value.ends_with(">, <mailto:test-leave@lists.example.org>"),
        "{value}"
    );
    assert_eq!(r.add[1].1, "List-Unsubscribe=One-Click");
    assert_eq!(
        r.add[2].1,
        "test.lists.example.org:lists.example.org:listwarden"
    );
    // The token is the expander's, for this list and member.
    let keys = config.signing.as_ref().unwrap();
    let list = addr("test@lists.example.org");
    let member = addr("bob@example.net");
    assert!(unsub::verify_plain(&list, &member, &token_of(value), keys, TODAY).is_ok());
    assert!(
        unsub::verify_plain(
            &addr("sym@lists.example.org"),
            &member,
            &token_of(value),
            keys,
            TODAY
        )
        .is_err(),
        "bound to its list"
    );
}

#[test]
fn a_sympa_copy_gets_one_click_without_any_header_of_its_own() {
    let (_d, config) = config();
    let c = seen(&config, SYMPA_VERP, &[("Subject", "hi")]).expect("a candidate");
    let r = rewrite_for(&config, &c, &["Bob@Example.NET"]).expect("rewritten");
    assert!(r.delete.is_empty());
    let value = &r.add[0].1;
    assert!(
        value.starts_with("<https://lists.example.org/u?site=1&list=sym&m=bob@example.net&t=lw-"),
        "{value}"
    );
    assert!(value.ends_with('>') && !value.contains("mailto"), "{value}");
}

#[test]
fn copies_that_are_not_one_members_are_left_alone() {
    let (_d, config) = config();
    // (Unsigned copies never get here: tests/one_click.rs.)
    // The shared sender, no member in it.
    assert!(seen(&config, "test-bounces@lists.example.org", &[]).is_none());
    // A list without unsubscribe_url, and an expander list.
    assert!(
        seen(
            &config,
            "plain-bounces+bob=example.net@lists.example.org",
            &[]
        )
        .is_none()
    );
    assert!(
        seen(
            &config,
            "members-bounces+bob=example.net@lists.example.org",
            &[]
        )
        .is_none()
    );
    // Not a list at all.
    assert!(seen(&config, "bob+x=y@example.net", &[]).is_none());

    let c = seen(&config, MAILMAN_VERP, &[]).unwrap();
    assert!(rewrite_for(&config, &c, &["bob@example.net", "eve@example.net"]).is_none());
    assert!(rewrite_for(&config, &c, &["eve@example.net"]).is_none());
    assert!(rewrite_for(&config, &c, &[]).is_none());
    assert!(rewrite_for(&config, &c, &["bob@example.net"]).is_some());
}

#[test]
fn a_copy_with_many_such_headers_is_left_alone() {
    let (_d, config) = config();
    let many: Vec<(&str, &str)> = (0..9).map(|_| ("Feedback-ID", "x")).collect();
    let c = seen(&config, MAILMAN_VERP, &many).unwrap();
    assert!(rewrite_for(&config, &c, &["bob@example.net"]).is_none());
}

#[test]
fn only_well_formed_mailto_uris_are_kept() {
    assert_eq!(
        mailtos(
            "<https://x.example/u>, <MAILTO:a@b.example?subject=unsubscribe%20x>,<mailto:no-at>, \
             <mailto:a b@c>, <mailto:x@y\"z>, <mailto:>, (comment) <mailto:c@d.example>"
        ),
        [
            "MAILTO:a@b.example?subject=unsubscribe%20x",
            "mailto:c@d.example"
        ]
    );
    assert!(mailtos("<mailto:unclosed@x.example").is_empty());
    let long = format!("<mailto:{}@x.example>", "a".repeat(600));
    assert!(mailtos(&long).is_empty());
    // Bounded: only the start of a value is read, at most four kept.
    let many = "<mailto:a@x.example>,".repeat(1000);
    assert_eq!(mailtos(&many).len(), MAX_MAILTOS);
    let mut s = Seen::default();
    for i in 0..6 {
        s.header("List-Unsubscribe", &format!("<mailto:u{i}@x.example>"));
    }
    assert_eq!(s.mailtos.len(), MAX_MAILTOS);
    assert_eq!(s.total, 6);
    // Multibyte text at the scan limit does not split a character.
    let text = format!("{}é<mailto:a@x.example>", "x".repeat(MAX_SCAN - 1));
    assert!(mailtos(&text).is_empty());
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = "milter: {listen: inet:127.0.0.1:1}\nsigning: {keys: [{id: 1, file: k.key}], sign_with: 1}\n";
    let check = |text: &str, want: &str| {
        let e = config_in(dir.path(), &format!("{base}{text}")).expect_err(want);
        assert!(e.contains(want), "{e}\nwanted: {want}");
    };
    let mm = "lists:\n  - {address: test@lists.example.org, preset: mailman3, unsubscribe_url: \"https://l.example/u\"}\n";
    check(
        mm,
        ":4:74: lists[0].unsubscribe_url: needs unsubscribe_listen",
    );
    check(
        &format!("unsubscribe_listen: \"127.0.0.1:8081\"\n{mm}"),
        "lists[0].unsubscribe_url: needs the feedback: section",
    );
    check(
        &format!(
            "unsubscribe_listen: \"127.0.0.1:8081\"\nfeedback: {{addresses: [f@l.example], action: count_only}}\n{mm}"
        ),
        "lists[0].unsubscribe_url: needs feedback.mailman3",
    );
    check(
        "unsubscribe_listen: \"127.0.0.1:8081\"\nlists:\n  - {address: t@l.example, preset: sympa, unsubscribe_url: \"http://l.example/u\"}\n",
        "lists[0].unsubscribe_url: must start with https://",
    );
    check(
        "unsubscribe_listen: \"127.0.0.1:8081\"\nexpander: {state_dir: s, unsubscribe_listen: \"127.0.0.1:8082\"}\n",
        "expander.unsubscribe_listen: set only the top-level unsubscribe_listen",
    );
    check(
        "unsubscribe_listen: \"127.0.0.1:8081\"\nfeedback: {addresses: [f@l.example]}\nlists:\n  - {address: t@l.example, unsubscribe_url: \"https://l.example/u\"}\n",
        "lists[0].unsubscribe_url: is for Sympa or Mailman 3 lists",
    );
    // A Sympa list needs only feedback: (its command has a default).
    let ok = config_in(
        dir.path(),
        &format!("{base}unsubscribe_listen: \"127.0.0.1:8081\"\nfeedback: {{addresses: [f@l.example]}}\nlists:\n  - {{address: t@l.example, preset: sympa, unsubscribe_url: \"https://l.example/u\"}}\n"),
    )
    .unwrap();
    assert_eq!(
        ok.unsubscribe_listen,
        Some("127.0.0.1:8081".parse().unwrap())
    );
    // The older key alone still works.
    let old = config_in(
        dir.path(),
        &format!("{base}expander: {{state_dir: s, unsubscribe_listen: \"127.0.0.1:8082\"}}\n"),
    )
    .unwrap();
    assert_eq!(
        old.unsubscribe_listen,
        Some("127.0.0.1:8082".parse().unwrap())
    );
}
