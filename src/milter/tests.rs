//! Internal errors over the real protocol: a panic in a handler becomes a
//! tempfail (or accept, per `on_error`) for that message only.

use super::*;
use crate::config::Config;
use indymilter_test::{Status as TestStatus, TestConnection};
use std::path::Path;

async fn start(
    yaml: &str,
) -> (
    std::net::SocketAddr,
    Arc<Shared>,
    tokio::sync::oneshot::Sender<()>,
) {
    start_door(yaml, Door::Any).await
}

async fn start_door(
    yaml: &str,
    door: Door,
) -> (
    std::net::SocketAddr,
    Arc<Shared>,
    tokio::sync::oneshot::Sender<()>,
) {
    let shared = Shared::new(Config::parse(yaml, Path::new("t.yaml")).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run_door(
        MilterListener::tcp(l),
        shared.clone(),
        door,
        async {
            let _ = rx.await;
        },
    ));
    (addr, shared, tx)
}

fn internal_errors(shared: &Shared) -> u64 {
    shared
        .metrics
        .messages
        .with_label_values(&["tempfail", "internal_error"])
        .get()
}

const BASE: &str =
    "milter:\n  listen: inet:127.0.0.1:1\nlists:\n  - address: members@lists.example.org\n";

#[tokio::test]
async fn a_panic_tempfails_the_message_and_the_session_goes_on() {
    let (addr, shared, _stop) = start(BASE).await;
    let mut conn = TestConnection::open(addr).await.unwrap();
    conn.connect("c.example", ([203, 0, 113, 7], 4000))
        .await
        .unwrap();
    let status = conn
        .mail(["<listwarden-fault-panic@example.net>"])
        .await
        .unwrap();
    let TestStatus::Tempfail { message: Some(m) } = status else {
        panic!("expected tempfail, got {status:?}")
    };
    assert_eq!(
        m.to_str().unwrap(),
        "451 4.3.0 listwarden: temporary local problem, please try again later"
    );
    assert_eq!(internal_errors(&shared), 1);
    // The same connection still works for the next message.
    assert!(matches!(
        conn.mail(["<members@lists.example.org>"]).await.unwrap(),
        TestStatus::Reject { .. }
    ));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn on_error_accept_fails_open() {
    let (addr, _shared, _stop) = start(&format!("{BASE}on_error: accept\n")).await;
    let mut conn = TestConnection::open(addr).await.unwrap();
    conn.connect("c.example", ([203, 0, 113, 7], 4000))
        .await
        .unwrap();
    assert_eq!(
        conn.mail(["<listwarden-fault-panic@example.net>"])
            .await
            .unwrap(),
        TestStatus::Accept
    );
    conn.close().await.unwrap();
}

/// A panic planned for each later stage (`fault::Fault`) tempfails that
/// message at that stage; the connection then carries a clean message.
#[tokio::test]
async fn a_panic_at_any_stage_tempfails_only_that_message() {
    let (addr, shared, _stop) = start(BASE).await;
    let mut conn = TestConnection::open(addr).await.unwrap();
    conn.connect("c.example", ([203, 0, 113, 7], 4000))
        .await
        .unwrap();
    let is_tempfail = |s: &TestStatus| matches!(s, TestStatus::Tempfail { .. });
    for stage in ["rcpt", "header", "eoh", "eom"] {
        let sender = format!("<listwarden-fault-panic-{stage}@example.net>");
        assert_eq!(
            conn.mail([sender.as_str()]).await.unwrap(),
            TestStatus::Continue
        );
        let status = conn.rcpt(["<members@lists.example.org>"]).await.unwrap();
        if stage == "rcpt" {
            assert!(is_tempfail(&status), "{stage}: {status:?}");
            conn.abort().await.unwrap();
            continue;
        }
        assert_eq!(status, TestStatus::Continue, "{stage}");
        // A feedback report to the list: the one message kind an outside
        // sender makes go through every stage up to end of message.
        conn.header("From", "<reporter@example.net>").await.unwrap();
        conn.header(
            "Content-Type",
            "multipart/report; report-type=feedback-report; boundary=b",
        )
        .await
        .unwrap();
        let status = conn.eoh().await.unwrap();
        if matches!(stage, "header" | "eoh") {
            assert!(is_tempfail(&status), "{stage}: {status:?}");
            conn.abort().await.unwrap();
            continue;
        }
        assert_eq!(status, TestStatus::Continue, "{stage}");
        conn.body("--b--\r\n").await.unwrap();
        let (_, status) = conn.eom().await.unwrap();
        assert!(is_tempfail(&status), "{stage}: {status:?}");
    }
    assert_eq!(internal_errors(&shared), 4);
    // The next message on the same connection is decided normally.
    assert!(matches!(
        conn.mail(["<members@lists.example.org>"]).await.unwrap(),
        TestStatus::Reject { .. }
    ));
    conn.close().await.unwrap();
}

/// A planned pause holds the reply; the decision is the same afterwards.
#[tokio::test]
async fn a_planned_pause_holds_the_reply() {
    let (addr, _shared, _stop) = start(BASE).await;
    let mut conn = TestConnection::open(addr).await.unwrap();
    conn.connect("c.example", ([203, 0, 113, 7], 4000))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let status = conn
        .mail(["<listwarden-fault-sleep-mail-1@example.net>"])
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(status, TestStatus::Continue);
    conn.close().await.unwrap();
}

/// On the list server's socket an internal error at MAIL or RCPT cannot
/// be answered there: the same answer comes at end of message, for the
/// whole message, and nothing of it is skipped.
#[tokio::test]
async fn on_the_trusted_socket_an_internal_error_is_answered_at_end_of_message() {
    let trusted = "trusted_networks: [127.0.0.1/32]\n";
    for (extra, want) in [("", "451 4.3.0"), ("on_error: accept\n", "accept")] {
        let yaml = format!("{BASE}{trusted}{extra}");
        let (plain, _s1, _stop1) = start(&yaml).await;
        let (list, shared, _stop2) = start_door(&yaml, Door::ListServer).await;
        for stage in ["mail", "rcpt"] {
            let sender = format!("<listwarden-fault-panic-{stage}@example.net>");
            // The other socket answers at the stage itself.
            let mut conn = TestConnection::open(plain).await.unwrap();
            conn.connect("c", ([127, 0, 0, 1], 1)).await.unwrap();
            let mut status = conn.mail([sender.as_str()]).await.unwrap();
            if stage == "rcpt" {
                status = conn.rcpt(["<bob@example.com>"]).await.unwrap();
            }
            assert!(shows(&status, want), "{extra}{stage}: {status:?}");
            conn.close().await.unwrap();

            let mut conn = TestConnection::open(list).await.unwrap();
            conn.connect("c", ([127, 0, 0, 1], 1)).await.unwrap();
            assert_eq!(
                conn.mail([sender.as_str()]).await.unwrap(),
                TestStatus::Noreply
            );
            for r in ["<bob@example.com>", "<carol@example.com>"] {
                assert_eq!(conn.rcpt([r]).await.unwrap(), TestStatus::Noreply);
            }
            conn.header("From", "alice@example.net").await.unwrap();
            assert_eq!(conn.eoh().await.unwrap(), TestStatus::Continue);
            conn.body("hi\r\n").await.unwrap();
            let (actions, status) = conn.eom().await.unwrap();
            assert!(shows(&status, want), "{extra}{stage}: {status:?}");
            assert!(actions.actions.is_empty());
            conn.close().await.unwrap();
        }
        if extra.is_empty() {
            assert_eq!(internal_errors(&shared), 2);
        }
    }
}

fn shows(status: &TestStatus, want: &str) -> bool {
    match status {
        TestStatus::Tempfail { message: Some(m) } => m.to_string_lossy().starts_with(want),
        TestStatus::Accept => want == "accept",
        _ => false,
    }
}
