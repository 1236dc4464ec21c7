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
    let shared = Shared::new(Config::parse(yaml, Path::new("t.yaml")).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(MilterListener::tcp(l), shared.clone(), async {
        let _ = rx.await;
    }));
    (addr, shared, tx)
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
    assert_eq!(
        shared
            .metrics
            .messages
            .with_label_values(&["tempfail", "internal_error"])
            .get(),
        1
    );
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
