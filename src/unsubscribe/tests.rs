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

/// review2 L5: a poster's many Feedback-ID / List-Unsubscribe(-Post)
/// headers passed on by the list manager do not switch the rewrite off:
/// every one goes and ours are added.
#[test]
fn a_copy_with_many_such_headers_loses_them_all() {
    let (_d, config) = config();
    let mut many: Vec<(&str, &str)> = (0..200).map(|_| ("Feedback-ID", "poster:x")).collect();
    many.extend((0..20).map(|_| ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")));
    many.push(("List-Unsubscribe", "<mailto:test-leave@lists.example.org>"));
    let c = seen(&config, MAILMAN_VERP, &many).unwrap();
    let r = rewrite_for(&config, &c, &["bob@example.net"]).expect("rewritten");
    assert_eq!(r.delete.len(), 221);
    assert_eq!(r.delete.first(), Some(&("Feedback-ID".to_string(), 200)));
    assert!(
        r.delete
            .contains(&("List-Unsubscribe-Post".to_string(), 20))
    );
    assert_eq!(
        r.add[2].1,
        "test.lists.example.org:lists.example.org:listwarden"
    );
    // Only past `limits.max_header_bytes` of them is the copy left alone.
    let dir = tempfile::tempdir().unwrap();
    let small = config_in(
        dir.path(),
        &format!("limits: {{max_header_bytes: 1000}}\n{CONFIG}"),
    )
    .unwrap();
    let c = seen(&small, MAILMAN_VERP, &many).unwrap();
    assert!(rewrite_for(&small, &c, &["bob@example.net"]).is_none());
}

/// review2 H1: Sympa's shared sender for a list listwarden does not know
/// falls back (for signing) to the first list on the domain; it must not
/// get that list's token.
#[test]
fn a_sympa_copy_of_an_unknown_list_gets_nothing() {
    let (_d, config) = config();
    for sender in [
        "bounce+bob==a==example.net==other@lists.example.org",
        "bounce+bob==a==example.net@lists.example.org",
        "bounce+bob==a==example.net==other==sym@lists.example.org",
        "bounce+bob==a==example.net==test@lists.example.org",
    ] {
        assert!(seen(&config, sender, &[]).is_none(), "{sender}");
    }
    // Its own list, also with a tracking suffix, and any case.
    for sender in [
        SYMPA_VERP,
        "bounce+bob==a==example.net==sym==w@lists.example.org",
        "bounce+bob==a==example.net==SYM@lists.example.org",
    ] {
        let c = seen(&config, sender, &[]).expect(sender);
        assert_eq!(c.list, "sym");
    }
}

#[test]
fn only_well_formed_mailto_uris_are_kept() {
    assert_eq!(
        mailtos(
            "<https://x.example/u>, <MAILTO:a@X.example?subject=unsubscribe%20x>,<mailto:no-at>, \
             <mailto:a b@c>, <mailto:x@y\"z>, <mailto:>, (comment) <mailto:c@x.example>",
            "x.example"
        ),
        [
            "MAILTO:a@X.example?subject=unsubscribe%20x",
            "mailto:c@x.example"
        ]
    );
    assert!(mailtos("<mailto:unclosed@x.example", "x.example").is_empty());
    let long = format!("<mailto:{}@x.example>", "a".repeat(600));
    assert!(mailtos(&long, "x.example").is_empty());
    // Bounded: only the start of a value is read, at most four kept.
    let many = "<mailto:a@x.example>,".repeat(1000);
    assert_eq!(mailtos(&many, "x.example").len(), MAX_MAILTOS);
    let mut s = Seen {
        domain: "x.example".into(),
        ..Seen::default()
    };
    for i in 0..6 {
        s.header("List-Unsubscribe", &format!("<mailto:u{i}@x.example>"));
    }
    assert_eq!(s.mailtos.len(), MAX_MAILTOS);
    assert_eq!(s.total, 6);
    // Multibyte text at the scan limit does not split a character.
    let text = format!("{}é<mailto:a@x.example>", "x".repeat(MAX_SCAN - 1));
    assert!(mailtos(&text, "x.example").is_empty());
}

/// review2 L6: only mailto URIs to one address on the list's own domain
/// are kept, so a poster's own List-Unsubscribe passed on by the list
/// manager is never promoted into the header written.
#[test]
fn only_mailto_uris_on_the_lists_domain_are_kept() {
    let (_d, config) = config();
    let c = seen(
        &config,
        MAILMAN_VERP,
        &[
            (
                "List-Unsubscribe",
                "<mailto:attacker@evil.example>, <mailto:x@lists.example.org.evil.example>",
            ),
            (
                "List-Unsubscribe",
                "<mailto:a%40evil.example@lists.example.org>, \
                 <mailto:a@evil.example%2Cb@lists.example.org>, \
                 <mailto:test-leave@lists.example.org?cc=attacker@evil.example>, \
                 <mailto:test-leave@lists.example.org?subject=leave&body=x>",
            ),
        ],
    )
    .unwrap();
    let r = rewrite_for(&config, &c, &["bob@example.net"]).expect("rewritten");
    let value = &r.add[0].1;
    assert!(
        value.ends_with(">, <mailto:test-leave@lists.example.org?subject=leave&body=x>"),
        "{value}"
    );
    assert!(!value.contains("evil"), "{value}");
    assert_eq!(r.delete.len(), 2);
}

/// review2 M2: a reload that turns one-click on while no listener runs
/// (it starts only at launch) leaves the lists without it until a restart.
#[test]
fn a_reload_cannot_turn_one_click_on_without_a_listener() {
    let dir = tempfile::tempdir().unwrap();
    let before = CONFIG
        .replace("unsubscribe_listen: \"127.0.0.1:8081\"\n", "")
        .replace(
            ", unsubscribe_url: \"https://lists.example.org/unsubscribe\"}",
            "}",
        )
        .replace(
            ", unsubscribe_url: \"https://lists.example.org/u?site=1\"}",
            "}",
        )
        .replace(
            ", unsubscribe_url: \"https://lists.example.org/unsubscribe\"}",
            "}",
        );
    let current = config_in(dir.path(), &before).unwrap();
    assert!(current.unsubscribe_listen.is_none());
    config_in(dir.path(), CONFIG).unwrap();
    let r = crate::config::reload::reload(&dir.path().join("listwarden.yaml"), &current).unwrap();
    assert!(r.config.unsubscribe_listen.is_none());
    assert!(r.config.lists.iter().all(|l| l.unsubscribe_url.is_none()));
    assert!(
        r.kept.iter().any(|k| k.contains(
            "unsubscribe_url of test@lists.example.org, sym@lists.example.org not used until a restart"
        )),
        "{:?}",
        r.kept
    );
    assert!(candidate(&r.config, &addr(MAILMAN_VERP)).is_none());
    // With the listener running, the same reload keeps one-click.
    let running = config_in(dir.path(), CONFIG).unwrap();
    let r = crate::config::reload::reload(&dir.path().join("listwarden.yaml"), &running).unwrap();
    assert!(candidate(&r.config, &addr(MAILMAN_VERP)).is_some());
}

/// review2 H2: a list's name is its local part; where lists are found by
/// name, two of the same name are refused, naming both.
#[test]
fn lists_found_by_name_must_have_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    let base = "milter: {listen: inet:127.0.0.1:1}\nsigning: {keys: [{id: 1, file: k.key}], sign_with: 1}\nunsubscribe_listen: \"127.0.0.1:8081\"\nexpander: {state_dir: state}\n";
    let fb = "feedback:\n  addresses: [fbl@a.example]\n  mailman3: {url: \"http://127.0.0.1:8001/3.1\", user: u, password_file: mm.pass}\n";
    let mm_a = "  - {address: announce@a.example, preset: mailman3, unsubscribe_url: \"https://a.example/u\"}\n";
    let mm_b = "  - {address: Announce@b.example, preset: mailman3, unsubscribe_url: \"https://b.example/u\"}\n";
    let check = |text: &str, want: &str| {
        let e = config_in(dir.path(), &format!("{base}{text}")).expect_err(want);
        assert!(e.contains(want), "{e}\nwanted: {want}");
    };
    // Two Mailman lists with one-click.
    check(
        &format!("{fb}lists:\n{mm_a}{mm_b}"),
        ":10:15: lists[1].address: list name `Announce` is also that of `announce@a.example` (lists[0])",
    );
    // An expander list and a Mailman list with one-click (the endpoint
    // would send the expander's requests to the Mailman list).
    check(
        &format!(
            "{fb}lists:\n  - address: announce@c.example\n    expand: {{members_file: m.txt, unsubscribe_url: \"https://c.example/u\"}}\n{mm_b}"
        ),
        "lists[1].address: list name `Announce` is also that of `announce@c.example` (lists[0])",
    );
    // With feedback: every list's name counts (jobs name their list).
    check(
        &format!(
            "{fb}lists:\n  - {{address: news@a.example, preset: sympa}}\n  - {{address: news@b.example, preset: sympa}}\n"
        ),
        "lists[1].address: list name `news` is also that of `news@a.example` (lists[0])",
    );
    // Without any of those, the same name on two domains is fine.
    config_in(
        dir.path(),
        "milter: {listen: inet:127.0.0.1:1}\nlists:\n  - address: news@a.example\n  - address: news@b.example\n",
    )
    .unwrap();
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

/// review2 L8: bad POSTs cost at most REFUSALS_LOGGED log lines per client
/// per minute; the rest are summed up once, and memory stays bounded.
#[test]
fn refusal_lines_are_bounded_per_client() {
    let mut log = RefusalLog::default();
    let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    let logged = (0..100).filter(|_| log.admit(a, 7).0).count();
    assert_eq!(logged, REFUSALS_LOGGED as usize);
    assert!(log.admit(b, 7).0, "another client still gets its lines");
    // The next minute: the suppressed count once, then lines again.
    assert_eq!(log.admit(a, 8), (true, 95));
    assert_eq!(log.admit(a, 8), (true, 0));
    // A flood from many addresses tracks at most REFUSAL_CLIENTS of them.
    for i in 0..5000u32 {
        log.admit(std::net::IpAddr::from(i.to_be_bytes()), 9);
    }
    assert_eq!(log.logged.len(), REFUSAL_CLIENTS);
    assert_eq!(log.admit(a, 10), (true, 5000 - REFUSAL_CLIENTS as u64));
}

/// A member removed who joins again and clicks again is heard (a new
/// job), once a retried POST's window is over; the retried POST is not.
#[test]
fn a_member_who_joined_again_can_leave_again() {
    let (dir, config) = config();
    let keys = config.signing.as_ref().unwrap();
    let list = addr("test@lists.example.org");
    let member = addr("bob@example.net");
    let token = unsub::unsubscribe_token(&list, &member, 0, keys, TODAY).unwrap();
    let query = format!("list=test&m=bob@example.net&t={token}");
    let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let body = b"List-Unsubscribe=One-Click";
    let q = crate::feedback::queue::Queue::new(&config.feedback.as_ref().unwrap().queue);
    assert_eq!(one_click(&config, &query, body, ip, TODAY).unwrap().0, 200);
    let done = |q: &crate::feedback::queue::Queue| {
        for (p, _) in q.pending().unwrap() {
            q.done(&p).unwrap();
        }
    };
    done(&q);
    assert_eq!(one_click(&config, &query, body, ip, TODAY).unwrap().0, 200);
    assert_eq!(q.len(), 0, "a retried POST is no second job");
    let records: Vec<_> = std::fs::read_dir(config.feedback.as_ref().unwrap().queue.join("done"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let old = std::time::SystemTime::now()
        - crate::feedback::queue::REQUEST_REPEAT_AFTER
        - std::time::Duration::from_secs(60);
    for r in records {
        std::fs::File::options()
            .append(true)
            .open(r)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    assert_eq!(one_click(&config, &query, body, ip, TODAY).unwrap().0, 200);
    assert_eq!(q.len(), 1, "the member joined again and asks again");
    drop(dir);
}
