//! Regression tests for the holes an adversarial review found (TESTING.md,
//! "Security"): each drives the real milter through the raw client and
//! failed before its fix. The ones that depend on Postfix's own behaviour
//! run again through the real Postfix in integration/.

mod faults_common;

use faults_common::frames;
use faults_common::{CONFIG, RawConn, RawMilter, is_550};
use std::time::Duration;

const STRANGER: &str = "203.0.113.7";

/// CONFIG plus an observe-mode list and a bounce-signing key.
fn config_with_observe_list() -> String {
    format!("{CONFIG}  - address: quiet@lists.example.org\n    observe: true\n")
}

/// (name, index) of each header deletion among end-of-message actions.
fn deletions(actions: &[frames::Reply]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter(|a| a.cmd == b'm')
        .map(|a| {
            let index = u32::from_be_bytes(a.payload[..4].try_into().unwrap());
            (String::from_utf8_lossy(a.strings()[0]).into_owned(), index)
        })
        .collect()
}

/// Sends MAIL and RCPT with Postfix's macros for them, as Postfix 3.7 sends
/// them (seen in integration/: `{mail_addr}` and `{rcpt_addr}` hold its own
/// reading, comments, spaces and source routes removed). Returns the
/// MAIL and RCPT replies.
async fn envelope_with_macros(
    c: &mut RawConn,
    mail: (&str, &str),
    rcpt: (&str, &str),
) -> Vec<frames::Reply> {
    let mut script = frames::macros(b'M', &[(b"{mail_addr}", mail.1.as_bytes())]);
    script.extend(frames::mail(&[mail.0.as_bytes()]));
    let mut replies = c.pipeline(&script, 1).await.unwrap();
    if replies[0].cmd == b'c' {
        let mut script = frames::macros(b'R', &[(b"{rcpt_addr}", rcpt.1.as_bytes())]);
        script.extend(frames::rcpt(&[rcpt.0.as_bytes()]));
        replies.extend(c.pipeline(&script, 1).await.unwrap());
    }
    replies
}

/// CONFIG with a signing key (in `dir`), so unsigned bounces are refused.
fn config_with_signing(dir: &tempfile::TempDir) -> String {
    let key = dir.path().join("1.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    format!(
        "{CONFIG}signing:\n  keys: [{{id: 1, file: \"{}\"}}]\n  sign_with: 1\n",
        key.display()
    )
}

/// Item 1: the decision is taken on Postfix's reading of the address, not
/// on the raw argument, which an attacker can write so that a private
/// reading differs.
#[tokio::test]
async fn item1_postfix_reading_of_the_envelope_decides() {
    let dir = tempfile::tempdir().unwrap();
    let m = RawMilter::start(&config_with_signing(&dir)).await;
    // The raw text reads as nothing listwarden knows; Postfix reads the
    // list address and would deliver to it.
    let mut c = m.session(STRANGER).await;
    let r = envelope_with_macros(
        &mut c,
        (
            "<members(x)@lists.example.org>",
            "members@lists.example.org",
        ),
        ("<bob@example.com>", "bob@example.com"),
    )
    .await;
    assert!(is_550(&r[0]), "MAIL: {r:?}");
    c.close().await;
    let mut c = m.session(STRANGER).await;
    let r = envelope_with_macros(
        &mut c,
        ("<>", ""),
        (
            "<members-bounces @lists.example.org>",
            "members-bounces@lists.example.org",
        ),
    )
    .await;
    assert_eq!(r[0].cmd, b'c', "MAIL <>: {r:?}");
    assert!(is_550(&r[1]), "RCPT: {r:?}");
    c.close().await;
    m.stop().await;
}

/// Item 1: without macros, an argument listwarden cannot read is never the
/// null sender, and one that names a protected domain fails closed (451).
#[tokio::test]
async fn item1_unreadable_addresses_fail_closed() {
    let m = RawMilter::start(CONFIG).await;
    let mut c = m.session(STRANGER).await;
    let r = c
        .pipeline(&frames::mail(&[b"<members\"@lists.example.org>"]), 1)
        .await
        .unwrap();
    assert!(r[0].decision().starts_with("y:451"), "{r:?}");
    c.close().await;
    let mut c = m.session(STRANGER).await;
    let mut script = frames::mail(&[b"<>"]);
    script.extend(frames::rcpt(&[b"<members-bounces\"@lists.example.org>"]));
    let r = c.pipeline(&script, 2).await.unwrap();
    assert!(r[1].decision().starts_with("y:451"), "{r:?}");
    c.close().await;
    // Unreadable, but of no protected domain: not a list's business, and
    // not the null sender either (no bounce checks on its recipients).
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh(
            "<alice\"@example.net>",
            "<bob@example.com>",
            &[(b"Subject", b"x")],
        )
        .await;
    assert_eq!(r[0].cmd, b'c', "{r:?}");
    assert_eq!(r[2].cmd, b'a', "{r:?}");
    c.close().await;
    m.stop().await;
}

/// Item 2: a trusted client (the list server, local sendmail, SASL) is no
/// longer accepted at MAIL, so its headers are seen and a forged tag in
/// them is removed like any other.
#[tokio::test]
async fn item2_tags_from_trusted_clients_are_removed() {
    let m = RawMilter::start(CONFIG).await;
    let mut c = m.session("127.0.0.1").await;
    let r = c
        .send_to_eoh(
            "<root@example.net>",
            "<members-bounces@lists.example.org>",
            &[(
                b"X-Listwarden-Bounce",
                b"class=hard; recipient=victim@example.net; signature=valid",
            )],
        )
        .await;
    assert_eq!(r[0].cmd, b'c', "MAIL must not accept: {r:?}");
    assert_eq!(r[2].cmd, b'c', "end of headers waits for the removal");
    c.send(&frames::eom()).await;
    let (actions, last) = c.final_reply().await.unwrap();
    assert_eq!(last.cmd, b'c');
    assert_eq!(deletions(&actions), [("X-Listwarden-Bounce".into(), 1)]);
    // Without a tag, trusted mail is accepted at end of headers.
    let r = c
        .send_to_eoh(
            "<root@example.net>",
            "<bob@example.com>",
            &[(b"Subject", b"x")],
        )
        .await;
    assert_eq!(r[2].cmd, b'a', "{r:?}");
    c.close().await;
    m.stop().await;
}

/// Item 3: a `From:` naming a list in observe mode used to accept the
/// message at end of headers, so its forged tags survived.
#[tokio::test]
async fn item3_observe_mode_keeps_tag_hygiene() {
    let m = RawMilter::start(&config_with_observe_list()).await;
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh(
            "<alice@example.net>",
            "<members-owner@lists.example.org>",
            &[
                (b"From", b"quiet@lists.example.org"),
                (b"X-Listwarden-Bounce", b"signature=valid; class=complaint"),
            ],
        )
        .await;
    assert_eq!(
        r[2].cmd, b'c',
        "observed, but the tag is still to go: {r:?}"
    );
    c.send(&frames::eom()).await;
    let (actions, last) = c.final_reply().await.unwrap();
    assert_eq!(last.cmd, b'c');
    assert_eq!(deletions(&actions).len(), 1);
    c.close().await;
    assert_eq!(m.messages("observe_reject", "forged_from_header"), 1);
    m.stop().await;
}

/// Item 9: thousands of copies of a forged header used to become thousands
/// of delete actions (Postfix's cleanup slows down faster than
/// quadratically); past 16 the message is refused instead.
#[tokio::test]
async fn item9_many_forged_tags_refuse_the_message() {
    let m = RawMilter::start(CONFIG).await;
    for (copies, refused) in [(16, false), (17, true), (4000, true)] {
        let mut c = m.session(STRANGER).await;
        let mut script = frames::mail(&[b"<alice@example.net>"]);
        script.extend(frames::rcpt(&[b"<bob@example.com>"]));
        for i in 0..copies {
            script.extend(frames::header(
                b"X-Listwarden-Bounce",
                format!("forged {i}").as_bytes(),
            ));
        }
        script.extend(frames::eoh());
        let r = c.pipeline(&script, 3).await.unwrap();
        if refused {
            assert!(is_550(&r[2]), "{copies} copies: {r:?}");
        } else {
            assert_eq!(r[2].cmd, b'c', "{copies} copies: {r:?}");
            c.send(&frames::eom()).await;
            let (actions, _) = c.final_reply().await.unwrap();
            assert_eq!(deletions(&actions).len(), copies);
        }
        c.close().await;
    }
    assert_eq!(m.messages("reject", "forged_tags"), 2);
    m.stop().await;
}

/// Item 8: connections that never negotiate used to hold a slot for two
/// hours (indymilter's default); now they are closed after
/// `milter.negotiate_timeout`, and mail flows again.
#[tokio::test]
async fn item8_idle_connections_cannot_hold_every_slot() {
    let yaml = CONFIG.replace(
        "  listen: inet:127.0.0.1:8890\n",
        "  listen: inet:127.0.0.1:8890\n  max_connections: 5\n  negotiate_timeout: 1s\n",
    );
    let m = RawMilter::start(&yaml).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(m.open().await);
    }
    for c in &mut idle {
        assert!(c.closes().await, "an idle connection was not closed");
    }
    // A real session after the crowd: served at once.
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh("<alice@example.net>", "<bob@example.com>", &[])
        .await;
    assert_eq!(r[2].cmd, b'a');
    c.close().await;
    // A negotiated session is not cut by the negotiation deadline.
    let mut c = m.session(STRANGER).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c
        .send_to_eoh("<alice@example.net>", "<bob@example.com>", &[])
        .await;
    assert_eq!(r[2].cmd, b'a');
    c.close().await;
    m.stop().await;
}
