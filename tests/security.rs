//! Regression tests for the holes an adversarial review found (TESTING.md,
//! "Security"): each drives the real milter through the raw client and
//! failed before its fix. The ones that depend on Postfix's own behaviour
//! run again through the real Postfix in integration/.

use listwarden_test_support as support;

use std::time::Duration;
use support::frames;
use support::{FAULTS_CONFIG, Milter, RawConn, is_550};

const STRANGER: &str = "203.0.113.7";

/// FAULTS_CONFIG plus an observe-mode list and a bounce-signing key.
fn config_with_observe_list() -> String {
    format!("{FAULTS_CONFIG}  - address: quiet@lists.example.org\n    observe: true\n")
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

/// FAULTS_CONFIG with a signing key (in `dir`), so unsigned bounces are refused.
fn config_with_signing(dir: &tempfile::TempDir) -> String {
    let key = dir.path().join("1.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    format!(
        "{FAULTS_CONFIG}signing:\n  keys: [{{id: 1, file: \"{}\"}}]\n  sign_with: 1\n",
        key.display()
    )
}

/// Item 1: the decision is taken on Postfix's reading of the address, not
/// on the raw argument, which an attacker can write so that a private
/// reading differs.
#[tokio::test]
async fn item1_postfix_reading_of_the_envelope_decides() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start(&config_with_signing(&dir)).await;
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
    let m = Milter::start(FAULTS_CONFIG).await;
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
    let m = Milter::start(FAULTS_CONFIG).await;
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
    let m = Milter::start(&config_with_observe_list()).await;
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
/// quadratically); past 32 the message is refused instead (listwarden
/// itself writes up to 21, which a second listwarden host must pass).
#[tokio::test]
async fn item9_many_forged_tags_refuse_the_message() {
    let m = Milter::start(FAULTS_CONFIG).await;
    for (copies, refused) in [(21, false), (32, false), (33, true), (4000, true)] {
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
    let yaml = FAULTS_CONFIG.replace(
        "  listen: inet:127.0.0.1:8890\n",
        "  listen: inet:127.0.0.1:8890\n  max_connections: 5\n  negotiate_timeout: 1s\n",
    );
    let m = Milter::start(&yaml).await;
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

/// Sends a whole message (headers unfolded from `raw`, then its body) from
/// `sender` to `rcpt`; returns the end-of-message actions and final reply.
async fn whole_message(
    c: &mut RawConn,
    sender: &str,
    rcpt: &str,
    raw: &[u8],
) -> (Vec<frames::Reply>, frames::Reply) {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        match (line.starts_with([' ', '\t']), headers.last_mut()) {
            (true, Some(last)) => last.1.push_str(&format!("\r\n{line}")),
            _ => {
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.to_string(), v.trim_start().to_string()));
            }
        }
    }
    let mut script = frames::mail(&[sender.as_bytes()]);
    script.extend(frames::rcpt(&[rcpt.as_bytes()]));
    for (n, v) in &headers {
        script.extend(frames::header(n.as_bytes(), v.as_bytes()));
    }
    script.extend(frames::eoh());
    let r = c.pipeline(&script, 3).await.unwrap();
    assert_eq!(r[2].cmd, b'c', "a report is read to its end: {r:?}");
    let mut script = frames::body(body.replace('\n', "\r\n").as_bytes());
    script.extend(frames::eom());
    c.send(&script).await;
    // The body reply (continue or skip), then the end of message.
    let _ = c.reply().await.unwrap();
    c.final_reply().await.unwrap()
}

/// Items 13-18: anyone can send a feedback report to a list address; only
/// one to a validly signed address may move the complaint rate that the
/// alerts read. Unsigned ones are counted as `complaint_unsigned`.
#[tokio::test]
async fn item13_unsigned_reports_do_not_move_the_complaint_rate() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start(&config_with_signing(&dir)).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    m.shared.rates.lock().unwrap().sent("members", now());
    let rate = || {
        let rates = m.shared.rates.lock().unwrap().rates(now());
        rates
            .iter()
            .find(|(l, _)| l == "members")
            .map_or(0.0, |r| r.1)
    };
    let arf = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dsn/arf_abuse.eml"
    ))
    .unwrap();
    // Summed over the exposition text, as Prometheus would read it.
    let classified = |class: &str| -> u64 {
        let want = format!("class=\"{class}\"");
        m.shared
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("listwarden_bounces_classified_total{") && l.contains(&want))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // Unsigned: to the posting address, from an ordinary sender.
    let mut c = m.session(STRANGER).await;
    whole_message(
        &mut c,
        "<fbl@feedback.example.net>",
        "<members@lists.example.org>",
        &arf,
    )
    .await;
    c.close().await;
    assert_eq!(rate(), 0.0, "an unsigned report moved the complaint rate");
    assert_eq!(classified("complaint_unsigned"), 1);
    assert_eq!(classified("complaint"), 0);
    // Signed: to the list's signed bounce address.
    let signed = {
        let cfg = m.shared.config.load();
        let ring = cfg.signing.as_ref().unwrap();
        let plain =
            listwarden::address::Address::parse("members-bounces@lists.example.org").unwrap();
        let today = now() / 86_400;
        listwarden::address::prvs::sign(&plain, ring, today)
    };
    let mut c = m.session(STRANGER).await;
    whole_message(
        &mut c,
        "<fbl@feedback.example.net>",
        &format!("<{signed}>"),
        &arf,
    )
    .await;
    c.close().await;
    assert!(rate() > 0.0, "a signed report must count");
    assert_eq!(classified("complaint"), 1);
    // The same report again (its copy to the same signed address): classified
    // again, but the rate counts one complaint per signed address and
    // original message.
    let once = rate();
    let mut c = m.session(STRANGER).await;
    whole_message(
        &mut c,
        "<fbl@feedback.example.net>",
        &format!("<{signed}>"),
        &arf,
    )
    .await;
    c.close().await;
    assert_eq!(classified("complaint"), 2);
    assert_eq!(rate(), once, "the same copy reported twice counted twice");
    // Another original under the same signed address: its Message-ID is
    // the sender's text, so it counts nothing more.
    let other = String::from_utf8(arf.clone()).unwrap().replace(
        "<20250319055831.8c9d@lists.example.org>",
        "<another-post@lists.example.org>",
    );
    {
        let mut c = m.session(STRANGER).await;
        whole_message(
            &mut c,
            "<fbl@feedback.example.net>",
            &format!("<{signed}>"),
            other.as_bytes(),
        )
        .await;
        c.close().await;
        assert_eq!(rate(), once, "another original");
    }
    m.stop().await;
}

/// A valid prvs address for `plain` today, and one with its hash changed.
fn signed_and_forged(m: &Milter, plain: &str) -> (String, String) {
    let cfg = m.shared.config.load();
    let ring = cfg.signing.as_ref().unwrap();
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let plain = listwarden::address::Address::parse(plain).unwrap();
    let good = listwarden::address::prvs::sign(&plain, ring, today).to_string();
    // prvs=KDDDHHHHHH=...: change the last hash digit.
    let mut forged = good.clone().into_bytes();
    forged[14] = if forged[14] == b'0' { b'1' } else { b'0' };
    (good, String::from_utf8(forged).unwrap())
}

/// The RCPT reply for a bounce from `ip` to `rcpt`, on a fresh session.
async fn bounce_rcpt(m: &Milter, ip: &str, rcpt: &str) -> frames::Reply {
    let mut c = m.session(ip).await;
    let mut script = frames::mail(&[b"<>"]);
    script.extend(frames::rcpt(&[format!("<{rcpt}>").as_bytes()]));
    let r = c.pipeline(&script, 2).await.unwrap();
    c.close().await;
    r[1].clone()
}

/// Item 5: a wrong guess at a signature answered 550 even over budget,
/// while a right one answered 451, so budgets did not hide success. Once
/// a client's budget is spent, both answer 451.
#[tokio::test]
async fn item5_budgets_hide_the_signature_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with_signing(&dir).replace(
        "  max_keys: 1024\n",
        "  max_keys: 1024\n  budgets:\n    network: {rate: 1, per: 1h, burst: 3}\n",
    );
    let m = Milter::start(&yaml).await;
    let (good, forged) = signed_and_forged(&m, "members-bounces@lists.example.org");
    for _ in 0..3 {
        let r = bounce_rcpt(&m, "198.51.100.9", &forged).await;
        assert!(is_550(&r), "within budget, a forged tag is refused: {r:?}");
    }
    let wrong = bounce_rcpt(&m, "198.51.100.10", &forged).await;
    let right = bounce_rcpt(&m, "198.51.100.11", &good).await;
    assert!(wrong.decision().starts_with("y:451"), "{wrong:?}");
    assert_eq!(
        wrong.decision(),
        right.decision(),
        "over budget, guesses look alike"
    );
    // Another network still gets its answer.
    assert_eq!(bounce_rcpt(&m, "192.0.2.77", &good).await.cmd, b'c');
    m.stop().await;
}

/// Item 5: a valid tag on an address no list mail leaves from (the posting
/// address, a role people write to) is not a bounce address: refused.
#[tokio::test]
async fn item5_prvs_is_accepted_only_where_a_list_sends_from() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start(&config_with_signing(&dir)).await;
    for plain in [
        "members@lists.example.org",
        "members-owner@lists.example.org",
    ] {
        let (good, _) = signed_and_forged(&m, plain);
        let r = bounce_rcpt(&m, "198.51.100.9", &good).await;
        assert!(is_550(&r), "{good}: {r:?}");
    }
    let (good, _) = signed_and_forged(&m, "members-bounces@lists.example.org");
    assert_eq!(bounce_rcpt(&m, "198.51.100.9", &good).await.cmd, b'c');
    m.stop().await;
}

/// Item 11: the shield counts distinct source networks, and trace failures
/// count toward it. Before, 500 invalid recipients from one IP raised it.
#[tokio::test]
async fn item11_one_client_cannot_raise_the_shield() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}shield: {{trigger: 3, within: 10m, hold: 1h}}\n",
        config_with_signing(&dir)
    );
    let m = Milter::start(&yaml).await;
    let shield_up = || {
        m.shared
            .metrics
            .render()
            .lines()
            .any(|l| l.starts_with("listwarden_shield_active{list=\"members\"} 1"))
    };
    for _ in 0..20 {
        bounce_rcpt(&m, "198.51.100.9", "members-bounces@lists.example.org").await;
    }
    assert!(!shield_up(), "one network raised the shield");
    for net in ["192.0.2.1", "203.0.113.1", "198.18.0.1", "198.19.0.1"] {
        bounce_rcpt(&m, net, "members-bounces@lists.example.org").await;
    }
    assert!(shield_up(), "four networks should raise it");
    m.stop().await;
}

/// Item 7: Sympa's `LIST-owner@` takes bounces (Sympa scores whatever
/// bounce arrives there) and people's mail alike. A report to it from a
/// non-null sender gets the bounce checks once its Content-Type shows a
/// report; a person's mail to the owners still passes.
#[tokio::test]
async fn item7_a_report_to_sympas_owner_address_is_checked_as_a_bounce() {
    let dir = tempfile::tempdir().unwrap();
    // The Sympa list goes under `lists:`, beside members@.
    let yaml = config_with_signing(&dir).replace(
        "  - address: members@lists.example.org\n",
        "  - address: members@lists.example.org\n  - address: sym@lists.example.org\n    preset: sympa\n",
    );
    let m = Milter::start(&yaml).await;
    let report: &[(&[u8], &[u8])] = &[
        (
            b"From",
            b"Mail Delivery Subsystem <bounce-handler@evil.example>",
        ),
        (
            b"Content-Type",
            b"multipart/report; report-type=delivery-status; boundary=\"b\"",
        ),
    ];
    let person: &[(&[u8], &[u8])] = &[
        (b"From", b"Alice <alice@example.net>"),
        (b"Content-Type", b"text/plain; charset=utf-8"),
    ];
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh(
            "<bounce-handler@evil.example>",
            "<sym-owner@lists.example.org>",
            report,
        )
        .await;
    assert_eq!(r[1].cmd, b'c', "RCPT cannot know yet: {r:?}");
    assert!(is_550(&r[2]), "an unsigned report to -owner: {r:?}");
    c.close().await;
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh(
            "<alice@example.net>",
            "<sym-owner@lists.example.org>",
            person,
        )
        .await;
    assert_eq!(r[2].cmd, b'a', "a person writing to the owners: {r:?}");
    c.close().await;
    let (good, _) = signed_and_forged(&m, "sym-owner@lists.example.org");
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh(
            "<bounce-handler@evil.example>",
            &format!("<{good}>"),
            report,
        )
        .await;
    assert_eq!(
        r[2].cmd, b'c',
        "a signed report goes on to be tagged: {r:?}"
    );
    c.close().await;
    m.stop().await;
}

/// Review 2: the report check on Sympa's `-owner@` read Content-Type only
/// from the headers kept within `max_header_bytes` (64 KB), and only in
/// one spelling. A padding header before it, or a Content-Type folded or
/// with a comment (`multipart/ report`, `multipart/(x)report`, read as
/// multipart/report by MIME parsers), let an unsigned report through.
#[tokio::test]
async fn review2_a_report_to_sympas_owner_cannot_hide_its_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with_signing(&dir).replace(
        "  - address: members@lists.example.org\n",
        "  - address: members@lists.example.org\n  - address: sym@lists.example.org\n    preset: sympa\n",
    );
    let m = Milter::start(&yaml).await;
    // Headers that fill the 64 KB kept before Content-Type comes.
    let pad = vec![b'x'; 1024];
    let mut padded: Vec<(&[u8], &[u8])> = vec![(
        b"From",
        b"Mail Delivery Subsystem <bounce-handler@evil.example>",
    )];
    padded.extend(std::iter::repeat_n((&b"Received"[..], &pad[..]), 70));
    // And small ones for what room is left.
    padded.extend(std::iter::repeat_n((&b"X-A"[..], &b"x"[..]), 1024));
    padded.push((
        b"Content-Type",
        b"multipart/report; report-type=delivery-status; boundary=\"b\"",
    ));
    let padded = &padded[..];
    let folded: &[(&[u8], &[u8])] = &[
        (b"From", b"bounce-handler@evil.example"),
        (
            b"Content-Type",
            b"Multipart/\r\n Report; report-type=delivery-status; boundary=\"b\"",
        ),
    ];
    let commented: &[(&[u8], &[u8])] = &[
        (b"From", b"bounce-handler@evil.example"),
        (
            b"Content-Type",
            b"multipart/(x)report; report-type=delivery-status; boundary=\"b\"",
        ),
    ];
    for (what, headers) in [
        ("padded", padded),
        ("folded", folded),
        ("commented", commented),
    ] {
        let mut c = m.session(STRANGER).await;
        let r = c
            .send_to_eoh(
                "<bounce-handler@evil.example>",
                "<sym-owner@lists.example.org>",
                headers,
            )
            .await;
        assert!(is_550(&r[2]), "{what}: an unsigned report to -owner: {r:?}");
        c.close().await;
    }
    m.stop().await;
}

/// Review 2: a bounce to two trace-mode lists was decided on the last
/// recipient's list only: an observe-mode list's bounce address named
/// after an enforced one carried a bounce that fails the trace through
/// to both. The strictest list decides.
#[tokio::test]
async fn review2_an_observed_list_cannot_carry_a_failed_trace_to_an_enforced_one() {
    let yaml = format!(
        "{FAULTS_CONFIG}  - address: legacy@lists.example.org\n    bounces: trace\n  \
         - address: quiet@lists.example.org\n    bounces: trace\n    observe: true\n\
         trace:\n  received_by: [lists.example.org]\n"
    );
    let m = Milter::start(&yaml).await;
    for rcpts in [
        [
            "<legacy-bounces@lists.example.org>",
            "<quiet-bounces@lists.example.org>",
        ],
        [
            "<quiet-bounces@lists.example.org>",
            "<legacy-bounces@lists.example.org>",
        ],
    ] {
        let mut c = m.session(STRANGER).await;
        let mut script = frames::mail(&[b"<>"]);
        for r in rcpts {
            script.extend(frames::rcpt(&[r.as_bytes()]));
        }
        script.extend(frames::header(b"From", b"MAILER-DAEMON@mx.evil.example"));
        script.extend(frames::header(b"Subject", b"Undelivered Mail"));
        script.extend(frames::eoh());
        let r = c.pipeline(&script, 4).await.unwrap();
        assert!(r.iter().all(|r| r.cmd == b'c'), "{rcpts:?}: {r:?}");
        let mut script = frames::body(
            b"Received: by mx.spammer.example\r\nMessage-ID: <x@spammer.example>\r\n\r\nspam\r\n",
        );
        script.extend(frames::eom());
        c.send(&script).await;
        let body = c.reply().await.unwrap();
        let (actions, last) = c.final_reply().await.unwrap();
        assert!(
            is_550(&last),
            "{rcpts:?}: a failed trace to legacy@: {body:?} {actions:?} {last:?}"
        );
        c.close().await;
    }
    m.stop().await;
}

/// Review 2: a report to several Sympa `-owner@` addresses was checked
/// against the first one only: an observe-mode list's owner named first
/// carried an unsigned report to an enforced list's owner.
#[tokio::test]
async fn review2_a_report_is_checked_for_every_owner_address() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with_signing(&dir).replace(
        "  - address: members@lists.example.org\n",
        "  - address: members@lists.example.org\n  - address: sym@lists.example.org\n    preset: sympa\n  \
         - address: quiet@lists.example.org\n    preset: sympa\n    observe: true\n",
    );
    let m = Milter::start(&yaml).await;
    let mut c = m.session(STRANGER).await;
    let mut script = frames::mail(&[b"<bounce-handler@evil.example>"]);
    script.extend(frames::rcpt(&[b"<quiet-owner@lists.example.org>"]));
    script.extend(frames::rcpt(&[b"<sym-owner@lists.example.org>"]));
    script.extend(frames::header(b"From", b"bounce-handler@evil.example"));
    script.extend(frames::header(
        b"Content-Type",
        b"multipart/report; report-type=delivery-status; boundary=\"b\"",
    ));
    script.extend(frames::eoh());
    let r = c.pipeline(&script, 4).await.unwrap();
    assert!(is_550(&r[3]), "an unsigned report to sym-owner@: {r:?}");
    c.close().await;
    m.stop().await;
}

/// Review 2: the packaged `listwarden-prvs.regexp` strips one prvs tag,
/// and Postfix applies virtual aliases recursively, so
/// `prvs=T=prvs=T=members-bounces@` reaches `members-bounces@`. listwarden
/// stripped one tag only, found no list address, and let it through
/// unchecked. Every tag is stripped now; the outer one must be valid.
#[tokio::test]
async fn review2_nested_prvs_tags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start(&config_with_signing(&dir)).await;
    let (good, forged) = signed_and_forged(&m, "members-bounces@lists.example.org");
    let good_local = good.split('@').next().unwrap();
    for rcpt in [
        format!("prvs=1234abcdef={forged}"),
        format!("prvs=1234abcdef={good}"),
        format!("prvs=1234abcdef=prvs=1234abcdef={good}"),
        format!(
            "{}@lists.example.org",
            "prvs=1234abcdef=".repeat(20) + good_local
        ),
    ] {
        let r = bounce_rcpt(&m, STRANGER, &rcpt).await;
        assert!(is_550(&r), "{rcpt}: {r:?}");
    }
    m.stop().await;
}

/// Review 2: only the first 64 protected `From:` mailboxes were kept, so
/// 64 copies of an observe-mode list's address hid an enforced list's
/// address after them: the strictest list must still win.
#[tokio::test]
async fn review2_many_observed_from_addresses_cannot_hide_an_enforced_one() {
    let m = Milter::start(&config_with_observe_list()).await;
    let mut from = vec!["quiet@lists.example.org"; 64].join(", ");
    from.push_str(", members@lists.example.org");
    let headers: &[(&[u8], &[u8])] = &[(b"From", from.as_bytes())];
    let mut c = m.session(STRANGER).await;
    let r = c
        .send_to_eoh("<someone@example.net>", "<bob@example.com>", headers)
        .await;
    assert!(is_550(&r[2]), "{r:?}");
    c.close().await;
    m.stop().await;
}

/// Review 2: any SASL-authenticated client skipped every bounce check, so
/// any account holder (not only the list server) could send unsigned
/// bounces that Mailman or Sympa act on. Only the list server's own
/// networks (the non_smtpd path, where a refused RCPT would stick in the
/// queue) skip them; an authenticated client may still post as a list.
#[tokio::test]
async fn review2_sasl_clients_get_the_bounce_checks() {
    let dir = tempfile::tempdir().unwrap();
    let m = Milter::start(&config_with_signing(&dir)).await;
    let mut c = m.session(STRANGER).await;
    let mut script = frames::macros(b'M', &[(b"{auth_authen}", b"alice")]);
    script.extend(frames::mail(&[b"<>"]));
    script.extend(frames::rcpt(&[b"<members-bounces@lists.example.org>"]));
    let r = c.pipeline(&script, 2).await.unwrap();
    assert!(
        is_550(&r[1]),
        "an unsigned bounce from a SASL client: {r:?}"
    );
    c.close().await;
    m.stop().await;
}
