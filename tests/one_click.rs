//! One-click unsubscribe for lists run by Sympa or Mailman 3: a list
//! manager's per-member copy gets listwarden's `List-Unsubscribe` over the
//! real milter protocol, and a POST of its URL queues exactly one feedback
//! job (the worker carries it out through the list manager).

use listwarden_test_support as support;

use indymilter_test::{EomAction, EomActions, Status, TestConnection};
use listwarden::Shared;
use listwarden::address::Address;
use listwarden::config::Config;
use listwarden::metrics::spawn_unsubscribe_http;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use support::Milter;

/// A Mailman 3 list with one-click, the same without, and an expander
/// list; the queue and Mailman's password in `dir`.
fn config(dir: &Path) -> String {
    let pass = dir.join("mm.pass");
    std::fs::write(&pass, "secret\n").unwrap();
    let signing = support::signing_block();
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\n\
         trusted_networks: [127.0.0.1/32]\n\
         {signing}\
         unsubscribe_listen: \"127.0.0.1:0\"\n\
         expander: {{state_dir: {state}}}\n\
         feedback:\n  addresses: [fbl@lists.example.org]\n  queue: {queue}\n  \
         mailman3: {{url: \"http://127.0.0.1:1/3.1\", user: restadmin, password_file: {pass}}}\n\
         lists:\n\
         \x20 - {{address: test@lists.example.org, preset: mailman3, unsubscribe_url: \"https://lists.example.org/unsubscribe\"}}\n\
         \x20 - {{address: other@lists.example.org, preset: mailman3, unsubscribe_url: \"https://lists.example.org/unsubscribe\"}}\n\
         \x20 - {{address: plain@lists.example.org, preset: mailman3}}\n\
         \x20 - address: members@lists.example.org\n    \
         expand: {{members_file: {members}, unsubscribe_url: \"https://lists.example.org/unsubscribe\"}}\n",
        state = dir.join("state").display(),
        queue = dir.join("queue").display(),
        pass = pass.display(),
        members = dir.join("members.txt").display(),
    )
}

/// Sends one list-manager copy from the trusted client; the end of
/// message actions and status.
async fn send(
    m: &Milter,
    sender: &str,
    rcpts: &[&str],
    headers: &[(&str, &str)],
) -> (EomActions, Status) {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("localhost", ([127, 0, 0, 1], 40000))
        .await
        .unwrap();
    assert_eq!(
        conn.mail([format!("<{sender}>")]).await.unwrap(),
        Status::Continue
    );
    for r in rcpts {
        assert_eq!(
            conn.rcpt([format!("<{r}>")]).await.unwrap(),
            Status::Continue
        );
    }
    for (n, v) in headers {
        conn.header(*n, *v).await.unwrap();
    }
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    conn.body("hello\r\n").await.unwrap();
    let out = conn.eom().await.unwrap();
    conn.close().await.unwrap();
    out
}

fn added(actions: &EomActions) -> Vec<(String, String)> {
    actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::AddHeader { name, value } => Some((
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )),
            _ => None,
        })
        .collect()
}

fn deleted(actions: &EomActions) -> Vec<(String, i32)> {
    actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index } => {
                Some((name.to_string_lossy().into_owned(), *index))
            }
            _ => None,
        })
        .collect()
}

fn signs(actions: &EomActions) -> bool {
    actions
        .actions
        .iter()
        .any(|a| matches!(a, EomAction::ChangeSender { .. }))
}

const MAILMAN_HEADERS: &[(&str, &str)] = &[
    ("From", "alice@example.com"),
    ("List-Id", "<test.lists.example.org>"),
    (
        "List-Unsubscribe",
        "<https://lists.example.org/mailman3/lists/test.lists.example.org>,\r\n <mailto:test-leave@lists.example.org>",
    ),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
];

#[tokio::test]
async fn a_member_copy_gets_one_click_and_the_verdict_stays() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start_tcp(&config(dir.path())).await;
    let (actions, status) = send(
        &m,
        "test-bounces+bob=example.net@lists.example.org",
        &["bob@example.net"],
        MAILMAN_HEADERS,
    )
    .await;
    assert_eq!(status, Status::Continue);
    assert!(signs(&actions), "still signed");
    assert_eq!(
        deleted(&actions),
        [
            ("List-Unsubscribe".to_string(), 1),
            ("List-Unsubscribe-Post".to_string(), 1)
        ]
    );
    let added = added(&actions);
    assert_eq!(added.len(), 3, "{added:?}");
    assert_eq!(added[0].0, "List-Unsubscribe");
    assert!(
        added[0].1.starts_with(
            "<https://lists.example.org/unsubscribe?list=test&m=bob@example.net&t=lw-1"
        ),
        "{added:?}"
    );
    assert!(
        added[0]
            .1
            .ends_with(">, <mailto:test-leave@lists.example.org>"),
        "only the mailto is kept: {added:?}"
    );
    assert_eq!(
        added[1],
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string()
        )
    );
    assert_eq!(
        added[2],
        (
            "Feedback-ID".to_string(),
            "test.lists.example.org:lists.example.org:listwarden".to_string()
        )
    );
    m.stop().await;
}

#[tokio::test]
async fn other_copies_are_untouched_and_signed_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start_tcp(&config(dir.path())).await;
    let cases: [(&str, &[&str]); 4] = [
        // Two recipients, and a recipient that is not the VERP's member.
        (
            "test-bounces+bob=example.net@lists.example.org",
            &["bob@example.net", "eve@example.net"],
        ),
        (
            "test-bounces+bob=example.net@lists.example.org",
            &["eve@example.net"],
        ),
        // The shared sender; a list without unsubscribe_url.
        ("test-bounces@lists.example.org", &["bob@example.net"]),
        (
            "plain-bounces+bob=example.net@lists.example.org",
            &["bob@example.net"],
        ),
    ];
    for (sender, rcpts) in cases {
        let (actions, status) = send(&m, sender, rcpts, MAILMAN_HEADERS).await;
        assert_eq!(status, Status::Continue, "{sender} {rcpts:?}");
        assert!(signs(&actions), "{sender} {rcpts:?}");
        assert!(added(&actions).is_empty(), "{sender} {rcpts:?}");
        assert!(deleted(&actions).is_empty(), "{sender} {rcpts:?}");
    }
    // A SASL client that only the default lets send as the list: its
    // member-naming sender is not signed, so no one-click either.
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("x.example", ([203, 0, 113, 7], 40000))
        .await
        .unwrap();
    conn.macros(
        indymilter_test::MacroStage::Mail,
        [("{auth_authen}", "mallory")],
    )
    .await
    .unwrap();
    assert_eq!(
        conn.mail(["<test-bounces+bob=example.net@lists.example.org>"])
            .await
            .unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<bob@example.net>"]).await.unwrap(),
        Status::Continue
    );
    for (n, v) in MAILMAN_HEADERS {
        conn.header(*n, *v).await.unwrap();
    }
    // Accepted at end of headers: nothing is left to change at the end.
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    conn.close().await.unwrap();
    // An untrusted client may not send as the list at all.
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("x.example", ([203, 0, 113, 7], 40000))
        .await
        .unwrap();
    let status = conn
        .mail(["<test-bounces+bob=example.net@lists.example.org>"])
        .await
        .unwrap();
    assert!(matches!(status, Status::Reject { .. }), "{status:?}");
    conn.close().await.unwrap();
    m.stop().await;
}

fn shared(dir: &Path) -> std::sync::Arc<Shared> {
    Shared::new(Config::parse(&config(dir), Path::new("t.yaml")).unwrap())
}

fn post(addr: std::net::SocketAddr, query: &str) -> String {
    let body = "List-Unsubscribe=One-Click";
    let text = format!(
        "POST /unsubscribe?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn jobs(queue: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let Ok(entries) = std::fs::read_dir(queue) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect()
}

fn token(shared: &Shared, list: &str, member: &str) -> String {
    token_on(shared, list, member, support::today())
}

/// A token minted on day `day`.
fn token_on(shared: &Shared, list: &str, member: &str, day: u64) -> String {
    let config = shared.config.load();
    let keys = config.signing.as_ref().unwrap();
    listwarden_expand::unsubscribe::unsubscribe_token(
        &Address::parse(list).unwrap(),
        &Address::parse(member).unwrap(),
        0,
        keys,
        day,
    )
    .unwrap()
}

/// The one-click listener on a free loopback port.
fn endpoint(shared: &std::sync::Arc<Shared>) -> std::net::SocketAddr {
    spawn_unsubscribe_http(
        "127.0.0.1:0".parse().unwrap(),
        listwarden::daemon::unsubscribe_handler(shared),
    )
    .unwrap()
}

#[test]
fn a_good_token_queues_exactly_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let addr = endpoint(&shared);
    let t = token(&shared, "test@lists.example.org", "bob@example.net");
    let query = format!("list=test&m=bob%40example.net&t={t}");
    let answer = post(addr, &query);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A retry (the provider's, or the member's second click) is fine and
    // makes no second job.
    assert!(post(addr, &query).starts_with("HTTP/1.1 200"));
    let queued = jobs(&dir.path().join("queue"));
    assert_eq!(queued.len(), 1, "{queued:?}");
    let job = &queued[0].1;
    assert_eq!(job["list"], "test");
    assert_eq!(job["member"], "bob@example.net");
    assert_eq!(job["action"], "unsubscribe");
}

#[test]
fn bad_and_foreign_tokens_queue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let addr = endpoint(&shared);
    let good = token(&shared, "test@lists.example.org", "bob@example.net");
    let mut broken = good.clone().into_bytes();
    let last = broken.len() - 1;
    broken[last] = if broken[last] == b'a' { b'b' } else { b'a' };
    let broken = String::from_utf8(broken).unwrap();
    let other = token(&shared, "other@lists.example.org", "bob@example.net");
    // The expander list's token for the same member (its own role).
    let expander = token(&shared, "members@lists.example.org", "bob@example.net");
    // review2 M1: a list manager keeps no subscription numbers, so its
    // tokens end by age: 60 days is still good, 61 is not.
    let days = u64::from(listwarden_expand::unsubscribe::PLAIN_TOKEN_DAYS);
    let aged = |d| {
        token_on(
            &shared,
            "test@lists.example.org",
            "bob@example.net",
            support::today() - d,
        )
    };
    let (young, old) = (aged(days), aged(days + 1));
    for (query, status) in [
        (format!("list=test&m=bob%40example.net&t={old}"), "403"),
        (format!("list=test&m=bob%40example.net&t={broken}"), "403"),
        (format!("list=test&m=bob%40example.net&t={other}"), "403"),
        (format!("list=test&m=bob%40example.net&t={expander}"), "403"),
        (format!("list=test&m=eve%40example.net&t={good}"), "403"),
        (
            "list=test&m=bob%40example.net&t=nonsense".to_string(),
            "403",
        ),
        // A list without one-click: as unknown as a list that does not exist.
        (format!("list=plain&m=bob%40example.net&t={good}"), "403"),
        (format!("list=nosuch&m=bob%40example.net&t={good}"), "403"),
        // This list's token at the expander list.
        (format!("list=members&m=bob%40example.net&t={good}"), "403"),
        ("list=test&m=bob%40example.net".to_string(), "400"),
    ] {
        let answer = post(addr, &query);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{query}: {answer}"
        );
        assert!(!answer.contains("test@"), "no detail: {answer}");
    }
    assert!(jobs(&dir.path().join("queue")).is_empty());
    let answer = post(addr, &format!("list=test&m=bob%40example.net&t={young}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(jobs(&dir.path().join("queue")).len(), 1);
}

#[test]
fn a_queue_that_cannot_be_written_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    // The queue's place is taken by a file.
    std::fs::write(dir.path().join("queue"), "not a directory").unwrap();
    let addr = endpoint(&shared);
    let t = token(&shared, "test@lists.example.org", "bob@example.net");
    let answer = post(addr, &format!("list=test&m=bob%40example.net&t={t}"));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}
