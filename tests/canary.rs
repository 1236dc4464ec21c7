//! The canary probe over the real milter protocol: a valid probe to the canary address
//! is recorded at its first sighting (the MX leg, passed on with its token header) and
//! recorded and discarded at its second (the list server); a replay, a forged token, or
//! a probe with another recipient beside it is ordinary mail, its header removed.

use listwarden_test_support as support;

use indymilter_test::{Status, TestConnection};
use support::{Milter, signing_block};

const STRANGER: [u8; 4] = [203, 0, 113, 7];
const MX: [u8; 4] = [127, 0, 0, 1];
const CANARY: &str = "canary@lists.example.org";

fn config(dir: &std::path::Path) -> String {
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\ntrusted_networks: [127.0.0.1/32]\n{}\
         lists:\n  - address: members@lists.example.org\n\
         canary:\n  address: {CANARY}\n  sender: probe@ops.example.net\n  smtp: 127.0.0.1:25\n  dir: {}\n",
        signing_block(),
        dir.display()
    )
}

fn token(m: &Milter, id: &str) -> String {
    let config = m.shared.config.load();
    let ring = config.signing.as_ref().unwrap();
    listwarden_core::canary::sign(ring, CANARY, id, listwarden::canary::now_ms())
}

fn last_seen(m: &Milter, leg: &str) -> f64 {
    m.shared
        .metrics
        .canary_last_seen
        .with_label_values(&[leg])
        .get()
}

/// Sends one message up to end of headers; returns the connection and the EOH status.
async fn send(m: &Milter, ip: [u8; 4], rcpts: &[&str], canary: &str) -> (TestConnection, Status) {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    // Connect is answered without a reply (SMFIP_NR_CONN).
    assert_eq!(
        conn.connect("client.example", (ip, 40000)).await.unwrap(),
        Status::Noreply
    );
    assert_eq!(
        conn.mail(["<probe@ops.example.net>"]).await.unwrap(),
        Status::Continue
    );
    for r in rcpts {
        assert_eq!(
            conn.rcpt([format!("<{r}>")]).await.unwrap(),
            Status::Continue
        );
    }
    conn.header("From", "<probe@ops.example.net>")
        .await
        .unwrap();
    conn.header("X-Listwarden-Canary", canary).await.unwrap();
    conn.header("Subject", "listwarden canary").await.unwrap();
    let status = conn.eoh().await.unwrap();
    (conn, status)
}

/// Finishes the message; true when its canary header was deleted.
async fn finish(mut conn: TestConnection) -> bool {
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let deleted = actions.has_delete_header("X-Listwarden-Canary", 1);
    conn.close().await.unwrap();
    deleted
}

#[tokio::test]
async fn a_valid_probe_is_passed_on_at_the_mx_then_discarded_at_the_list_server() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start_tcp(&config(dir.path())).await;
    let id = "0123456789abcdef";
    let t = token(&m, id);

    // First hop: from the internet to the MX. Recorded, passed on, token kept.
    let (conn, status) = send(&m, STRANGER, &[CANARY], &t).await;
    assert_eq!(status, Status::Continue);
    assert!(
        !finish(conn).await,
        "the MX leg must keep the token for the next hop"
    );
    assert!(dir.path().join(format!("{id}.mx")).exists());
    assert!(!dir.path().join(format!("{id}.list")).exists());
    assert!(last_seen(&m, "mx") > 1.7e9);
    assert_eq!(last_seen(&m, "list"), 0.0);

    // Second hop: the MX relays it to the list server's smtpd. Recorded, discarded.
    let (conn, status) = send(&m, MX, &[CANARY], &t).await;
    assert_eq!(status, Status::Discard);
    conn.close().await.unwrap();
    assert!(dir.path().join(format!("{id}.list")).exists());
    assert!(last_seen(&m, "list") >= last_seen(&m, "mx"));

    // A replay of the same token: ordinary mail, header removed, nothing discarded.
    let list_before = last_seen(&m, "list");
    let (conn, status) = send(&m, STRANGER, &[CANARY], &t).await;
    assert_eq!(status, Status::Continue);
    assert!(
        finish(conn).await,
        "a replayed token is removed like any forged one"
    );
    assert_eq!(last_seen(&m, "list"), list_before);
    m.stop().await;
}

#[tokio::test]
async fn a_forged_probe_is_ordinary_mail() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start_tcp(&config(dir.path())).await;
    let id = "fedcba9876543210";
    // Signed with a key that is not ours.
    let other = listwarden::address::KeyRing::new(
        vec![listwarden::address::Key::new(1, b"an outsider's secret, 16+ bytes").unwrap()],
        1,
        7,
    )
    .unwrap();
    let forged = listwarden_core::canary::sign(&other, CANARY, id, listwarden::canary::now_ms());
    for ip in [STRANGER, MX, STRANGER] {
        let (conn, status) = send(&m, ip, &[CANARY], &forged).await;
        assert_eq!(
            status,
            Status::Continue,
            "a forged probe is never discarded"
        );
        assert!(finish(conn).await, "its header is removed");
    }
    // A made-up token, and a valid one on a message with another recipient beside
    // the canary (a discard would drop that recipient's copy too).
    let valid = token(&m, id);
    let (conn, status) = send(&m, STRANGER, &[CANARY], "1 0123 17 00").await;
    assert_eq!(status, Status::Continue);
    assert!(finish(conn).await);
    for _ in 0..3 {
        let (conn, status) = send(&m, STRANGER, &[CANARY, "bob@example.com"], &valid).await;
        assert_eq!(status, Status::Continue);
        assert!(finish(conn).await);
    }
    assert_eq!(
        std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing recorded"
    );
    assert_eq!(last_seen(&m, "mx"), 0.0);
    assert_eq!(last_seen(&m, "list"), 0.0);
    m.stop().await;
}
