//! Every verdict path of the milter, over the real protocol
//! (indymilter-test plays Postfix).

use listwarden_test_support as support;

use indymilter_test::{Actions, MacroStage, ProtoOpts, Status, TestConnection};
use support::{CONFIG, Milter};

const STRANGER: [u8; 4] = [203, 0, 113, 7];

fn reply(status: &Status) -> String {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

async fn open(m: &Milter, ip: [u8; 4]) -> TestConnection {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    // Connect only records the client: Postfix does not wait for it.
    assert_eq!(
        conn.connect("client.example", (ip, 40000)).await.unwrap(),
        Status::Noreply
    );
    conn
}

#[tokio::test]
async fn negotiation_takes_only_what_it_needs() {
    let m = Milter::start_tcp(CONFIG).await;
    let conn = TestConnection::open(m.addr()).await.unwrap();
    assert_eq!(
        conn.negotiated_actions(),
        Actions::CHANGE_HEADER | Actions::ADD_HEADER
    );
    let opts = conn.negotiated_opts();
    for skipped in [
        ProtoOpts::NO_HELO,
        ProtoOpts::NO_DATA,
        ProtoOpts::NO_UNKNOWN,
    ] {
        assert!(
            opts.contains(skipped),
            "{skipped:?} not negotiated: {opts:?}"
        );
    }
    assert!(opts.contains(ProtoOpts::NOREPLY_HEADER));
    assert!(opts.contains(ProtoOpts::NOREPLY_CONNECT));
    let mail_macros = conn
        .requested_macros()
        .get(&MacroStage::Mail)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(mail_macros.contains("{auth_authen}") && mail_macros.contains('i'));
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn refuses_an_mta_without_the_actions_it_needs() {
    let m = Milter::start_tcp(CONFIG).await;
    let result = TestConnection::configure()
        .available_actions(Actions::ADD_HEADER)
        .open_tcp(m.addr())
        .await;
    assert!(result.is_err(), "negotiation must fail");
    m.stop().await;
}

#[tokio::test]
async fn forged_envelope_sender_is_rejected_at_mail() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    let status = conn.mail(["<members@lists.example.org>"]).await.unwrap();
    assert_eq!(
        reply(&status),
        "550 5.7.1 <members@lists.example.org> is a mailing list address of this site; only the list server may send as it"
    );
    assert_eq!(m.messages("reject", "forged_envelope_sender"), 1);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn forged_from_header_is_rejected_at_end_of_headers() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    assert_eq!(
        conn.mail(["<alice@example.net>"]).await.unwrap(),
        Status::Continue
    );
    conn.macros(MacroStage::Eoh, [("i", "4ABC123")])
        .await
        .unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    assert_eq!(
        conn.header("From", "Members <members@lists.example.org>")
            .await
            .unwrap(),
        Status::Noreply
    );
    assert_eq!(
        conn.header("Subject", "cheap pills").await.unwrap(),
        Status::Noreply
    );
    let status = conn.eoh().await.unwrap();
    assert!(
        reply(&status).starts_with("550 5.7.1 <members@lists.example.org>"),
        "{status:?}"
    );
    assert_eq!(m.messages("reject", "forged_from_header"), 1);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn several_authors_including_the_list_are_forged() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    conn.mail(["<alice@example.net>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "alice@example.net").await.unwrap();
    conn.header(
        "From",
        "\"Alice\" <alice@example.net>, members-owner@lists.example.org",
    )
    .await
    .unwrap();
    assert!(matches!(conn.eoh().await.unwrap(), Status::Reject { .. }));
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn ordinary_mail_is_accepted_after_the_headers() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    assert_eq!(
        conn.mail(["<alice@example.net>"]).await.unwrap(),
        Status::Continue
    );
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "Alice <alice@example.net>")
        .await
        .unwrap();
    // Accept at end of headers: Postfix sends neither body nor end of message.
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    assert_eq!(m.messages("accept", "clean"), 1);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn trusted_and_authenticated_clients_are_accepted_at_end_of_headers() {
    // Not at MAIL: their headers must be seen too, so that forged
    // X-Listwarden-* tags are removed whoever sent them.
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, [127, 0, 0, 1]).await;
    assert_eq!(
        conn.mail(["<members@lists.example.org>"]).await.unwrap(),
        Status::Continue
    );
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "members@lists.example.org")
        .await
        .unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    conn.close().await.unwrap();

    let mut conn = open(&m, STRANGER).await;
    conn.macros(MacroStage::Mail, [("{auth_authen}", "moderator")])
        .await
        .unwrap();
    assert_eq!(
        conn.mail(["<members@lists.example.org>"]).await.unwrap(),
        Status::Continue
    );
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "members@lists.example.org")
        .await
        .unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    conn.close().await.unwrap();
    assert_eq!(m.messages("accept", "trusted_client"), 2);
    m.stop().await;
}

#[tokio::test]
async fn observe_mode_counts_but_lets_the_message_through() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    assert_eq!(
        conn.mail(["<quiet@lists.example.org>"]).await.unwrap(),
        Status::Continue
    );
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "quiet@lists.example.org")
        .await
        .unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    // Counted once, as what would have happened.
    assert_eq!(m.messages("observe_reject", "forged_envelope_sender"), 1);
    assert_eq!(m.messages("accept", "clean"), 0);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn inbound_listwarden_headers_are_removed_highest_index_first() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    conn.mail(["<>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "MAILER-DAEMON@mx.example.net")
        .await
        .unwrap();
    conn.header("X-Listwarden-Bounce", "class=hard forged")
        .await
        .unwrap();
    conn.header("Subject", "Undelivered Mail").await.unwrap();
    conn.header("x-listwarden-bounce", "class=hard again")
        .await
        .unwrap();
    conn.header("X-Listwarden-Other", "x").await.unwrap();
    // Not accepted yet: the forged tags must go at end of message.
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(
        actions.has_delete_header("X-Listwarden-Bounce", 2),
        "same name in any case: one count"
    );
    assert!(actions.has_delete_header("X-Listwarden-Bounce", 1));
    assert!(actions.has_delete_header("X-Listwarden-Other", 1));
    let order: Vec<_> = actions.actions.iter().map(|a| format!("{a:?}")).collect();
    assert_eq!(order.len(), 3);
    assert!(
        order[0].contains("index: 2"),
        "highest index first: {order:?}"
    );
    assert_eq!(m.shared.metrics.spoofed_headers_removed.get(), 3);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn state_resets_between_messages_and_after_abort() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    // Message 1: forged From, aborted before end of headers.
    conn.mail(["<alice@example.net>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "members@lists.example.org")
        .await
        .unwrap();
    conn.abort().await.unwrap();
    // Message 2 on the same connection must not inherit message 1's From.
    conn.mail(["<bob@example.net>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "bob@example.net").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    // Message 3 after a rejection at MAIL.
    assert!(matches!(
        conn.mail(["<members@lists.example.org>"]).await.unwrap(),
        Status::Reject { .. }
    ));
    conn.mail(["<carol@example.net>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "carol@example.net").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    conn.close().await.unwrap();
    assert_eq!(m.shared.metrics.connections_active.get(), 0);
    m.stop().await;
}

#[tokio::test]
async fn connections_gauge_follows_open_sessions() {
    let m = Milter::start_tcp(CONFIG).await;
    let a = open(&m, STRANGER).await;
    let b = open(&m, STRANGER).await;
    assert_eq!(m.shared.metrics.connections_active.get(), 2);
    a.close().await.unwrap();
    b.close().await.unwrap();
    // The session ends asynchronously after the close command.
    for _ in 0..100 {
        if m.shared.metrics.connections_active.get() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(m.shared.metrics.connections_active.get(), 0);
    m.stop().await;
}

#[tokio::test]
async fn non_utf8_and_odd_input_does_not_break_the_session() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    conn.mail([std::ffi::CString::new(&b"<\xff\xfe@lists.example.org>"[..]).unwrap()])
        .await
        .unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header(
        "From",
        std::ffi::CString::new(&b"\xc3\x28 <members@lists.example.org"[..]).unwrap(),
    )
    .await
    .unwrap();
    // The broken From: still reveals the list address.
    assert!(matches!(conn.eoh().await.unwrap(), Status::Reject { .. }));
    conn.mail(["<x@y>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "x".repeat(200_000)).await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn works_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.sock");
    let config =
        listwarden::config::Config::parse(support::CONFIG, std::path::Path::new("t.yaml")).unwrap();
    let shared = listwarden::Shared::new(config);
    let listener = listwarden::daemon::bind(&listwarden::config::Socket::Unix(path.clone()), 0o660)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listwarden::milter::run(listener, shared, async {
        let _ = rx.await;
    }));
    let mut conn = TestConnection::configure().open_unix(&path).await.unwrap();
    conn.connect("client.example", (STRANGER, 40000))
        .await
        .unwrap();
    assert!(matches!(
        conn.mail(["<members@lists.example.org>"]).await.unwrap(),
        Status::Reject { .. }
    ));
    conn.close().await.unwrap();
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn stale_socket_is_replaced_but_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milter.sock");
    let socket = listwarden::config::Socket::Unix(path.clone());
    drop(listwarden::daemon::bind(&socket, 0o660).await.unwrap());
    assert!(path.exists(), "a stale socket is left behind");
    drop(
        listwarden::daemon::bind(&socket, 0o660)
            .await
            .expect("stale socket replaced"),
    );
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let err = listwarden::daemon::bind(&listwarden::config::Socket::Unix(file.clone()), 0o660)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn a_post_to_a_list_moves_its_inbound_counter_and_timestamp() {
    let m = Milter::start_tcp(CONFIG).await;
    let mut conn = open(&m, STRANGER).await;
    assert_eq!(
        conn.mail(["<someone@example.net>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<members@lists.example.org>"]).await.unwrap(),
        Status::Continue
    );
    conn.header("From", "someone@example.net").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    let metrics = &m.shared.metrics;
    assert_eq!(
        metrics.list_inbound.with_label_values(&["members"]).get(),
        1
    );
    assert!(
        metrics
            .list_inbound_last
            .with_label_values(&["members"])
            .get()
            > 1.7e9
    );
    conn.close().await.unwrap();
    m.stop().await;
}

/// Connect only records the client, so it is answered without a reply
/// where the MTA offers that (one round trip less per SMTP session), and
/// as before where it does not. Either way the address it carries decides
/// trust exactly as before: the same verdicts.
#[tokio::test]
async fn connect_needs_no_reply_and_still_decides_trust() {
    let m = Milter::start_tcp(CONFIG).await;
    for offered in [true, false] {
        let mut opts = ProtoOpts::all();
        if !offered {
            opts.remove(ProtoOpts::NOREPLY_CONNECT);
        }
        for (ip, trusted) in [([127, 0, 0, 1], true), (STRANGER, false)] {
            let mut conn = TestConnection::configure()
                .available_opts(opts)
                .open_tcp(m.addr())
                .await
                .unwrap();
            assert_eq!(
                conn.negotiated_opts().contains(ProtoOpts::NOREPLY_CONNECT),
                offered
            );
            let connected = conn.connect("client.example", (ip, 40000)).await.unwrap();
            let expected = if offered {
                Status::Noreply
            } else {
                Status::Continue
            };
            assert_eq!(connected, expected);
            let mail = conn.mail(["<members@lists.example.org>"]).await.unwrap();
            if trusted {
                assert_eq!(mail, Status::Continue, "{offered}");
            } else {
                assert!(
                    reply(&mail).starts_with("550 5.7.1 <members@lists.example.org>"),
                    "{offered}: {mail:?}"
                );
            }
            conn.close().await.unwrap();
        }
    }
    m.stop().await;
}
