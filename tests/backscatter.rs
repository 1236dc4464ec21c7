//! Backscatter defence over the real protocol: outbound list mail gets a
//! signed envelope sender; bounces to list addresses must carry a valid
//! signature (checked at RCPT) or, in trace mode, show our mail.

use listwarden_test_support as support;

use indymilter_test::{Actions, MacroStage, Status, TestConnection};
use listwarden::address::{Address, KeyRing, prvs};
use support::Milter;

fn config() -> String {
    let signing = support::signing_block();
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\n\
         trusted_networks: [127.0.0.1/32]\n\
         {signing}\
         trace:\n  received_by: [lists.example.org]\n\
         lists:\n  - address: members@lists.example.org\n  - address: legacy@lists.example.org\n    bounces: trace\n"
    )
}

fn ring(m: &Milter) -> KeyRing {
    m.shared.config.load().signing.clone().unwrap()
}

async fn open(m: &Milter, ip: [u8; 4]) -> TestConnection {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("client.example", (ip, 40000)).await.unwrap();
    conn
}

fn bounces(m: &Milter, list: &str, verdict: &str) -> u64 {
    m.shared
        .metrics
        .bounces
        .with_label_values(&[list, verdict])
        .get()
}

#[tokio::test]
async fn negotiation_requires_the_actions_signing_needs() {
    let m = Milter::start_tcp(&config()).await;
    let conn = TestConnection::open(m.addr()).await.unwrap();
    assert!(
        conn.negotiated_actions()
            .contains(Actions::CHANGE_SENDER | Actions::ADD_RCPT | Actions::DELETE_RCPT)
    );
    conn.close().await.unwrap();
    let refused = TestConnection::configure()
        .available_actions(Actions::CHANGE_HEADER)
        .open_tcp(m.addr())
        .await;
    assert!(
        refused.is_err(),
        "an MTA that cannot change the sender is refused"
    );
    m.stop().await;
}

#[tokio::test]
async fn outbound_list_mail_gets_a_signed_sender() {
    let m = Milter::start_tcp(&config()).await;
    let mut conn = open(&m, [127, 0, 0, 1]).await;
    assert_eq!(
        conn.mail(["<members-bounces@lists.example.org>"])
            .await
            .unwrap(),
        Status::Continue
    );
    for rcpt in ["<alice@example.net>", "<bob@example.com>"] {
        assert_eq!(conn.rcpt([rcpt]).await.unwrap(), Status::Continue);
    }
    conn.header("From", "carol@example.org").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let signed = actions
        .actions
        .iter()
        .find_map(|a| match a {
            indymilter_test::EomAction::ChangeSender { mail, .. } => {
                Some(mail.to_string_lossy().into_owned())
            }
            _ => None,
        })
        .expect("a change of sender");
    let signed = listwarden::address::parse_path(&signed).unwrap().unwrap();
    assert!(signed.local.starts_with("prvs=1"), "{signed}");
    assert!(matches!(
        prvs::verify(&signed, &ring(&m), support::today()),
        prvs::PrvsResult::Valid { .. }
    ));
    assert_eq!(
        m.shared
            .metrics
            .signed
            .with_label_values(&["members"])
            .get(),
        1
    );
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn signed_bounce_is_accepted_and_delivered_to_the_plain_address() {
    let m = Milter::start_tcp(&config()).await;
    let plain = Address::parse("members-bounces@lists.example.org").unwrap();
    let tagged = prvs::sign(&plain, &ring(&m), support::today());
    let mut conn = open(&m, [198, 51, 100, 9]).await;
    conn.mail(["<>"]).await.unwrap();
    assert_eq!(
        conn.rcpt([format!("<{tagged}>")]).await.unwrap(),
        Status::Continue
    );
    conn.header("From", "MAILER-DAEMON@mx.example.net")
        .await
        .unwrap();
    // The reporting MTA names the signed address in To: too (upper-cased
    // here); the list manager must see the plain one there as well. The
    // sender may also name anyone it likes: a victim's VERP address, which
    // Mailman would score (it reads the member from To:, Delivered-To:,
    // Envelope-To: and Apparently-To:).
    let shouted = tagged.to_string().to_ascii_uppercase();
    conn.header("To", format!("Bounces <{shouted}>").as_str())
        .await
        .unwrap();
    conn.header("to", "members-bounces+victim=example.com@lists.example.org")
        .await
        .unwrap();
    conn.header(
        "Delivered-To",
        "members-bounces+victim=example.com@lists.example.org",
    )
    .await
    .unwrap();
    conn.header(
        "Envelope-To",
        "members-bounces+victim=example.com@lists.example.org",
    )
    .await
    .unwrap();
    assert_eq!(
        conn.eoh().await.unwrap(),
        Status::Continue,
        "the recipient is rewritten at end of message"
    );
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(actions.has_delete_recipient(format!("<{tagged}>").as_str()));
    assert!(actions.has_add_recipient("<members-bounces@lists.example.org>", None::<&str>));
    // Every recipient header goes; one To: names what the signature vouches for.
    for (name, index) in [
        ("To", 2),
        ("To", 1),
        ("Delivered-To", 1),
        ("Envelope-To", 1),
    ] {
        assert!(actions.has_delete_header(name, index), "{name} {index}");
    }
    assert!(actions.has_add_header("To", "members-bounces@lists.example.org"));
    assert_eq!(bounces(&m, "members", "valid"), 1);
    conn.close().await.unwrap();
    m.stop().await;
}

/// Each recipient header of a signed bounce is one removal at end of
/// message; a bounce with very many is not a real DSN and waits (451).
#[tokio::test]
async fn a_signed_bounce_with_very_many_recipient_headers_is_deferred() {
    let m = Milter::start_tcp(&config()).await;
    let plain = Address::parse("members-bounces@lists.example.org").unwrap();
    let tagged = prvs::sign(&plain, &ring(&m), support::today());
    let mut conn = open(&m, [198, 51, 100, 9]).await;
    conn.mail(["<>"]).await.unwrap();
    conn.rcpt([format!("<{tagged}>")]).await.unwrap();
    for i in 0..17 {
        conn.header("Delivered-To", format!("m{i}@example.com").as_str())
            .await
            .unwrap();
    }
    assert!(matches!(
        conn.eoh().await.unwrap(),
        Status::Tempfail { message: Some(m) } if m.to_str().unwrap().starts_with("451 4.7.1 ")
    ));
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn forged_backscatter_is_refused_at_rcpt() {
    let m = Milter::start_tcp(&config()).await;
    let plain = Address::parse("members-bounces@lists.example.org").unwrap();
    let expired = prvs::sign(&plain, &ring(&m), support::today() - 20);
    let mut conn = open(&m, [198, 51, 100, 9]).await;
    conn.mail(["<>"]).await.unwrap();
    for (rcpt, verdict) in [
        (
            "<members-bounces@lists.example.org>".to_string(),
            "unsigned",
        ),
        (
            "<prvs=1000abcdef=members-bounces@lists.example.org>".to_string(),
            "invalid",
        ),
        (format!("<{expired}>"), "expired"),
    ] {
        let status = conn.rcpt([rcpt.as_str()]).await.unwrap();
        let Status::Reject { message: Some(msg) } = &status else {
            panic!("{rcpt}: {status:?}")
        };
        assert!(msg.to_str().unwrap().starts_with("550 5.7.1 <"), "{msg:?}");
        assert_eq!(bounces(&m, "members", verdict), 1, "{rcpt}");
    }
    // Another recipient of the same transaction is unaffected.
    assert_eq!(
        conn.rcpt(["<postmaster@lists.example.org>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    m.stop().await;
}

/// A bounce whose returned message shows (or lacks) our Received: header.
fn dsn(received_by: &str) -> String {
    format!(
        "This is a MIME-encapsulated message.\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\
         --b\r\nContent-Type: message/rfc822\r\n\r\nReceived: from localhost (localhost [127.0.0.1])\r\n\
         \tby {received_by} (Postfix) with ESMTP id 4ABC\r\nFrom: x@example.net\r\nSubject: hello\r\n\r\nbody\r\n--b--\r\n"
    )
}

async fn trace_bounce(m: &Milter, body: &str) -> Status {
    let mut conn = open(m, [198, 51, 100, 9]).await;
    conn.mail(["<>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<legacy-bounces@lists.example.org>"])
            .await
            .unwrap(),
        Status::Continue
    );
    conn.header("From", "MAILER-DAEMON@mx.example.net")
        .await
        .unwrap();
    conn.macros(MacroStage::Eom, [("i", "4QUEUE")])
        .await
        .unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body(body.to_string()).await.unwrap(), Status::Continue);
    let (_, status) = conn.eom().await.unwrap();
    conn.close().await.unwrap();
    status
}

#[tokio::test]
async fn trace_mode_checks_the_returned_message() {
    let m = Milter::start_tcp(&config()).await;
    assert_eq!(
        trace_bounce(&m, &dsn("lists.example.org")).await,
        Status::Continue
    );
    assert_eq!(bounces(&m, "legacy", "trace_ok"), 1);
    let status = trace_bounce(&m, &dsn("mx.spammer.example")).await;
    assert!(matches!(status, Status::Reject { .. }), "{status:?}");
    assert_eq!(bounces(&m, "legacy", "trace_fail"), 1);
    m.stop().await;
}

#[tokio::test]
async fn the_body_is_skipped_when_no_trace_is_needed() {
    let m = Milter::start_tcp(&config()).await;
    let mut conn = open(&m, [198, 51, 100, 9]).await;
    conn.mail(["<alice@example.net>"]).await.unwrap();
    conn.rcpt(["<bob@example.com>"]).await.unwrap();
    conn.header("From", "alice@example.net").await.unwrap();
    conn.header("X-Listwarden-Bounce", "forged").await.unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body("x".repeat(1000)).await.unwrap(), Status::Skip);
    let (actions, _) = conn.eom().await.unwrap();
    assert!(actions.has_delete_header("X-Listwarden-Bounce", 1));
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn the_expanders_signed_verp_sender_is_not_signed_again() {
    let m = Milter::start_tcp(&config()).await;
    let verp = listwarden::address::verp::sign_verp(
        &Address::parse("members-bounces@lists.example.org").unwrap(),
        &Address::parse("bob@example.net").unwrap(),
        &ring(&m),
        support::today(),
    )
    .unwrap();
    let mut conn = open(&m, [127, 0, 0, 1]).await;
    // Not accepted at MAIL (its headers must be seen for tag hygiene), but
    // nothing is left to do at end of headers: no signing.
    assert_eq!(
        conn.mail([format!("<{verp}>")]).await.unwrap(),
        Status::Continue
    );
    conn.rcpt(["<bob@example.net>"]).await.unwrap();
    conn.header("From", "members@lists.example.org")
        .await
        .unwrap();
    assert_eq!(conn.eoh().await.unwrap(), Status::Accept);
    conn.close().await.unwrap();
    m.stop().await;
}
