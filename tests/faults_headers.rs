//! Faults H1–H6 (TESTING.md, Faults): envelopes and headers built to slip a list
//! address past the forged-sender check, to break the parser, or to get
//! attacker text into what listwarden writes. Through the raw client and
//! the real milter; parser-only rows call `mailboxes_in_header` directly.

use listwarden_test_support as support;
#[allow(dead_code)]
#[path = "../fuzz/src/milter.rs"]
mod harness;

use listwarden::address::{Address, mailboxes_in_header, prvs};
use std::time::{Duration, Instant};
use support::frames::{self, Reply};
use support::{FAULTS_CONFIG, Milter, RawConn, is_550, message_to_eoh, text};

const STRANGER: &str = "203.0.113.7";

/// One header: name and value, as raw bytes.
type Header<'a> = (&'a [u8], &'a [u8]);
const LIST_KEY: &str = "members@lists.example.org";

/// Sends one message up to end of headers; returns the EOH reply.
async fn eoh_reply(c: &mut RawConn, sender: &str, headers: &[Header<'_>]) -> Reply {
    c.send(&message_to_eoh(sender, "<bob@example.com>", headers))
        .await;
    let mail = c.reply().await.unwrap();
    assert_eq!(mail.cmd, b'c', "MAIL {sender}: {mail:?}");
    assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'), "RCPT");
    c.reply().await.unwrap()
}

/// The verdict at end of headers for `headers` from a stranger, on a
/// fresh connection: "reject", "accept", "continue" (the message waits
/// for its end, e.g. to remove a forged tag) or the reply itself.
async fn verdict(m: &Milter, headers: &[Header<'_>]) -> String {
    let mut c = m.session(STRANGER).await;
    let r = eoh_reply(&mut c, "<alice@example.net>", headers).await;
    c.close().await;
    match r.cmd {
        b'a' => "accept".into(),
        b'c' => "continue".into(),
        _ if is_550(&r) => "reject".into(),
        _ => format!("{r:?}"),
    }
}

// ---------------------------------------------------------------- H1

#[tokio::test]
async fn h1_every_from_header_and_every_mailbox_counts() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let from = |v: &'static str| (&b"From"[..], v.as_bytes());
    let cases: Vec<(&str, Vec<Header>, &str)> = vec![
        (
            "list in the second From:",
            vec![from("alice@example.net"), from("members@lists.example.org")],
            "reject",
        ),
        (
            "list in the first From:",
            vec![from("members@lists.example.org"), from("alice@example.net")],
            "reject",
        ),
        (
            "group",
            vec![from(
                "Team: a@b.example, Members <members@lists.example.org>;",
            )],
            "reject",
        ),
        (
            "several mailboxes",
            vec![from("alice@example.net, members@lists.example.org")],
            "reject",
        ),
        (
            "encoded-word name",
            vec![from("=?utf-8?q?Members?= <members@lists.example.org>")],
            "reject",
        ),
        (
            "comment around it",
            vec![from("members@lists.example.org (the list)")],
            "reject",
        ),
        ("case", vec![from("MEMBERS@Lists.Example.ORG")], "reject"),
        (
            "quoted local part",
            vec![from("\"members\"@lists.example.org")],
            "reject",
        ),
        (
            "+detail",
            vec![from("members+x@lists.example.org")],
            "reject",
        ),
        (
            "role address",
            vec![from("members-owner@lists.example.org")],
            "reject",
        ),
        (
            "trailing dot",
            vec![from("members@lists.example.org.")],
            "reject",
        ),
        (
            "unclosed angle",
            vec![from("Members <members@lists.example.org")],
            "reject",
        ),
        (
            "lowercase name",
            vec![(b"fRoM", b"members@lists.example.org")],
            "reject",
        ),
        (
            "only in a comment",
            vec![from("alice@example.net (not members@lists.example.org)")],
            "accept",
        ),
        (
            "only as a display name",
            vec![from("\"members@lists.example.org\" <alice@example.net>")],
            "accept",
        ),
        (
            "other header",
            vec![
                (b"Reply-To", b"members@lists.example.org"),
                from("alice@example.net"),
            ],
            "accept",
        ),
    ];
    for (what, headers, want) in &cases {
        let first = verdict(&m, headers).await;
        assert_eq!(first, *want, "{what}");
        // Deterministic: the same input gives the same verdict.
        assert_eq!(verdict(&m, headers).await, first, "{what}, again");
    }
    assert_eq!(m.internal_errors(), 0);
    m.stop().await;
}

/// FINDINGS.md F1 (fixed in 1e7dfcb): the From: check saw only the first
/// 100 mailboxes of a header, so the list address as the 101st author was
/// never seen: "first wins", which H1 forbids.
#[tokio::test]
async fn h1_the_list_after_a_hundred_other_mailboxes_is_still_found() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let mut value: Vec<String> = (0..100).map(|i| format!("a{i}@example.net")).collect();
    value.push("members@lists.example.org".into());
    let value = value.join(", ");
    assert!(value.len() < 4096, "well inside every size limit");
    let got = verdict(&m, &[(b"From", value.as_bytes())]).await;
    assert_eq!(got, "reject", "the 101st mailbox of From: is the list");
    m.stop().await;
}

/// FINDINGS.md F2 (fixed in 1e7dfcb): From: values past
/// `limits.max_header_bytes` (65536 by default) were skipped whole, so the
/// list address in a 70 KB From: (Postfix passes up to 102400 bytes a
/// header), or in a small From: after a large one, was never seen.
#[tokio::test]
async fn h1_the_list_in_an_oversized_or_late_from_header_is_still_found() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let filler: String = (0..4700).map(|i| format!("a{i}@x.example, ")).collect();
    assert!(
        filler.len() > 65_536 && filler.len() < 102_400,
        "{}",
        filler.len()
    );
    let big = format!("members@lists.example.org, {filler}alice@example.net");
    let first = "x".repeat(65_520);
    let cases: [(&str, Vec<Header>); 2] = [
        ("one 70 KB From:", vec![(b"From", big.as_bytes())]),
        (
            "a 64 KB From: then the list",
            vec![
                (b"From", first.as_bytes()),
                (b"From", b"members@lists.example.org"),
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, headers) in &cases {
        let got = verdict(&m, headers).await;
        // Refusing the message (tempfail) would also be safe; accepting is not.
        if got == "accept" {
            wrong.push(*what);
        }
    }
    assert!(wrong.is_empty(), "forged From: accepted: {wrong:?}");
    m.stop().await;
}

// ---------------------------------------------------------------- H2

#[tokio::test]
async fn h2_huge_and_numerous_headers_stay_bounded() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let started = Instant::now();
    let big = vec![b'y'; 100 * 1024];
    assert_eq!(
        verdict(&m, &[(b"X-Big", &big), (b"From", b"alice@example.net")]).await,
        "accept"
    );
    assert_eq!(
        verdict(&m, &[(b"From", &big)]).await,
        "accept",
        "100 KB From: without an address"
    );
    // 10,000 headers on one message.
    let mut c = m.session(STRANGER).await;
    let mut script = frames::mail(&[b"<alice@example.net>"]);
    script.extend(frames::rcpt(&[b"<bob@example.com>"]));
    for i in 0..10_000 {
        script.extend(frames::header(b"X-Filler", format!("value {i}").as_bytes()));
    }
    script.extend(frames::header(b"From", b"members@lists.example.org"));
    script.extend(frames::eoh());
    let r = c.pipeline(&script, 3).await.unwrap();
    assert!(is_550(&r[2]), "{r:?}");
    c.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    m.stop().await;
}

#[tokio::test]
async fn h2_odd_header_names_and_bare_cr_lf() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let cases: [(&[Header], &str); 7] = [
        // Bytes >= 0x80 in names, some of them across our prefix boundary.
        (
            &[
                (b"X-Listwarden\xc3\xa9-x", b"1"),
                (b"From", b"alice@example.net"),
            ],
            "accept",
        ),
        // Our prefix then junk: a forged tag, kept for removal at the end.
        (
            &[
                (b"X-Listwarden-\xff", b"1"),
                (b"From", b"alice@example.net"),
            ],
            "continue",
        ),
        (
            &[
                (b"\xff\xfe\xfd", b"members@lists.example.org"),
                (b"From", b"alice@example.net"),
            ],
            "accept",
        ),
        // Bare CR and bare LF inside the value.
        (
            &[(b"From", b"alice@example.net\rmembers@lists.example.org")],
            "reject",
        ),
        (
            &[(b"From", b"alice@example.net\nmembers@lists.example.org")],
            "reject",
        ),
        (
            &[(b"From", b"Alice\r\n <members@lists.example.org>")],
            "reject",
        ),
        (&[(b"From", b"\r\r\n\n")], "accept"),
    ];
    for (headers, want) in cases {
        assert_eq!(verdict(&m, headers).await, want, "{headers:?}");
    }
    assert_eq!(m.internal_errors(), 0);
    m.stop().await;
}

#[test]
fn h2_a_header_line_without_a_colon_still_yields_its_address() {
    // Postfix never passes such a line as a header; the From: parser must
    // still not lose an address in whatever text it is given.
    let keys = |v: &str| {
        mailboxes_in_header(v)
            .iter()
            .map(Address::key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("From members@lists.example.org"), [LIST_KEY]);
    assert_eq!(keys("From: members@lists.example.org"), [LIST_KEY]);
    assert!(keys("no address here at all").is_empty());
}

// ---------------------------------------------------------------- H3

#[tokio::test]
async fn h3_folds_truncated_at_the_end_do_not_panic() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let cases: [(&[Header], &str); 4] = [
        (&[(b"From", b"members@lists.example.org,\r\n\t")], "reject"),
        (
            &[(b"Received", b"\n\t"), (b"From", b"alice@example.net")],
            "accept",
        ),
        (&[(b"From", b"\r\n\t")], "accept"),
        (&[(b"From", b"Alice <alice@example.net>,\r\n ")], "accept"),
    ];
    for (headers, want) in cases {
        assert_eq!(verdict(&m, headers).await, want, "{headers:?}");
    }
    assert_eq!(m.internal_errors(), 0);
    m.stop().await;
}

// ---------------------------------------------------------------- H4

/// Sends a bounce-shaped message with `headers`, then end of message;
/// returns the end-of-message actions and the final reply (or no actions
/// and the end-of-headers reply, if that was final).
async fn through_eom(m: &Milter, headers: &[(Vec<u8>, Vec<u8>)]) -> (Vec<Reply>, Reply) {
    let mut c = m.session(STRANGER).await;
    let mut script = frames::mail(&[b"<>"]);
    script.extend(frames::rcpt(&[b"<bob@example.com>"]));
    for (n, v) in headers {
        script.extend(frames::header(n, v));
    }
    script.extend(frames::eoh());
    let r = c.pipeline(&script, 3).await.unwrap();
    if r[2].cmd != b'c' {
        // Decided at end of headers (e.g. refused): no end of message.
        c.close().await;
        return (Vec::new(), r[2].clone());
    }
    c.send(&frames::eom()).await;
    let out = c.final_reply().await.unwrap();
    c.close().await;
    out
}

/// (name, index) of each change-header action, in order.
fn deletions(actions: &[Reply]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter(|a| a.cmd == b'm')
        .map(|a| {
            let index = u32::from_be_bytes(a.payload[..4].try_into().unwrap());
            let name = String::from_utf8_lossy(a.strings()[0]).into_owned();
            (name, index)
        })
        .collect()
}

#[tokio::test]
async fn h4_forged_tags_are_removed_highest_index_first_per_name() {
    // Also covered by milter_protocol::inbound_listwarden_headers_are_removed_highest_index_first;
    // here with three names interleaved and several of each.
    let m = Milter::start(FAULTS_CONFIG).await;
    let mut headers = Vec::new();
    for i in 0..5 {
        headers.push((
            b"X-Listwarden-Bounce".to_vec(),
            format!("forged {i}").into_bytes(),
        ));
        headers.push((b"Subject".to_vec(), b"s".to_vec()));
        headers.push((
            if i % 2 == 0 {
                b"x-listwarden-bounce".to_vec()
            } else {
                b"X-LISTWARDEN-BOUNCE".to_vec()
            },
            b"x".to_vec(),
        ));
        headers.push((b"X-Listwarden-Other".to_vec(), b"y".to_vec()));
    }
    let (actions, last) = through_eom(&m, &headers).await;
    assert_eq!(last.cmd, b'c');
    let dels = deletions(&actions);
    assert_eq!(dels.len(), 15);
    // Postfix numbers headers of one name (case-insensitively) from 1; a
    // deletion must never shift the index of one still to come.
    let mut last_seen: std::collections::HashMap<String, u32> = Default::default();
    for (name, index) in &dels {
        let key = name.to_ascii_lowercase();
        if let Some(prev) = last_seen.insert(key, *index) {
            assert!(*index < prev, "not highest first: {dels:?}");
        }
    }
    assert_eq!(last_seen["x-listwarden-bounce"], 1);
    assert_eq!(last_seen["x-listwarden-other"], 1);
    assert_eq!(m.shared.metrics.spoofed_headers_removed.get(), 15);
    m.stop().await;
}

/// A refusal (tempfail or reject) of the whole message.
fn is_refusal(r: &Reply) -> bool {
    matches!(r.cmd, b't' | b'r') || (r.cmd == b'y' && !r.payload.starts_with(b"2"))
}

/// FINDINGS.md F3 (fixed in 1e7dfcb): only the first 1000 inbound
/// X-Listwarden-* headers were remembered; the 1001st stayed in the
/// message, so a sender could still forge a tag. 1001 short headers are
/// ~35 KB, well within what Postfix passes. Also many distinct names.
/// Safe: every one removed, or the message refused.
#[tokio::test]
async fn h4_a_thousand_and_one_forged_tags_are_all_removed_or_the_message_refused() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let same_name: Vec<(Vec<u8>, Vec<u8>)> = (0..1001)
        .map(|i| {
            (
                b"X-Listwarden-Bounce".to_vec(),
                format!("class=hard; forged {i}").into_bytes(),
            )
        })
        .collect();
    let (actions, last) = through_eom(&m, &same_name).await;
    if !is_refusal(&last) {
        let dels = deletions(&actions);
        assert_eq!(
            dels.len(),
            1001,
            "every forged tag must go (first deletion {:?})",
            dels.first()
        );
        assert_eq!(dels.first().map(|d| d.1), Some(1001));
    }
    let distinct: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("X-Listwarden-N{i}").into_bytes(),
                b"forged".to_vec(),
            )
        })
        .collect();
    let (actions, last) = through_eom(&m, &distinct).await;
    if !is_refusal(&last) {
        assert_eq!(
            deletions(&actions).len(),
            300,
            "every distinct name must go"
        );
    }
    m.stop().await;
}

// ---------------------------------------------------------------- H5

fn key_path() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    )
    .to_string()
}

#[tokio::test]
async fn h5_attacker_text_never_becomes_a_header_line_or_a_bad_reply() {
    let m = Milter::start(&harness::fuzz_config_yaml(&key_path())).await;
    let ring = m.shared.config.load().signing.clone().unwrap();
    let today = listwarden::policy::day_of(listwarden::unix_now());
    let list_bounce = Address::parse("members-bounces@lists.example.org").unwrap();
    let rcpt = format!("<{}>", prvs::sign(&list_bounce, &ring, today));
    let evil = format!(
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n\
         Final-Recipient: rfc822; bob@yahoo.com\r\n X-Injected: 1\rX-Bare-CR: 1\nX-Bare-LF: 1 {}\r\n\
         Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 %s%n\r\n\tX-Folded: 1\r\n\r\n--b--\r\n",
        "z".repeat(5000)
    );
    let mut c = m.session("198.51.100.7").await;
    let mut script = frames::mail(&[b"<>"]);
    script.extend(frames::rcpt(&[rcpt.as_bytes()]));
    script.extend(frames::header(b"From", b"MAILER-DAEMON@mx.example"));
    script.extend(frames::header(
        b"Content-Type",
        b"multipart/report; report-type=delivery-status; boundary=\"b\"",
    ));
    script.extend(frames::header(
        b"X-Listwarden-Bounce",
        b"forged\r\nX-Evil: 1",
    ));
    script.extend(frames::eoh());
    script.extend(frames::body(evil.as_bytes()));
    script.extend(frames::eom());
    let mut replies = c.pipeline(&script, 4).await.unwrap();
    assert_eq!(
        replies.iter().map(|r| r.cmd).collect::<Vec<_>>(),
        b"cccc",
        "{replies:?}"
    );
    let (actions, last) = c.final_reply().await.unwrap();
    assert_eq!(last.cmd, b'c');
    let added: Vec<&Reply> = actions.iter().filter(|a| a.cmd == b'h').collect();
    assert!(!added.is_empty(), "a tag is added: {actions:?}");
    for a in &added {
        let parts = a.strings();
        // The tags, and the one To: of a signed bounce (the plain address).
        if parts[0] == b"To" {
            assert_eq!(parts[1], b"members-bounces@lists.example.org");
            continue;
        }
        assert_eq!(parts[0], b"X-Listwarden-Bounce");
        assert!(parts[1].len() < 2000, "bounded: {}", parts[1].len());
    }
    replies.extend(actions);
    // No CR/LF in any added or changed header, sender or recipient.
    harness::check_replies(&replies).unwrap();
    c.close().await;

    // A reply that quotes the sender: printable, `%` doubled.
    let mut c = m.session(STRANGER).await;
    c.send(&frames::mail(&[b"<members+100%_off@lists.example.org>"]))
        .await;
    let r = c.reply().await.unwrap();
    assert!(is_550(&r), "{r:?}");
    assert!(text(&r).contains("100%%_off"), "{}", text(&r));
    harness::check_replies(&[r]).unwrap();
    c.close().await;
    m.stop().await;
}

// ---------------------------------------------------------------- H6

#[tokio::test]
async fn h6_envelope_forms_canonicalise_to_the_list_or_not() {
    let m = Milter::start(FAULTS_CONFIG).await;
    let cases: [(&[u8], bool); 12] = [
        (b"<members@lists.example.org>", true),
        (b"<MEMBERS@LISTS.EXAMPLE.ORG>", true),
        (b"<members@lists.example.org.>", true),
        (b"<\"members\"@lists.example.org>", true),
        (
            b"<@relay.example,@other.example:members@lists.example.org>",
            true,
        ),
        (b"  <members@lists.example.org>  ", true),
        (b"members@lists.example.org", true),
        (b"<members-request@lists.example.org>", true),
        (b"<>", false),
        (b"<members@lists.ex\xc3\xa4mple.org>", false),
        (b"<m\xc3\xabmbers@lists.example.org>", false),
        (b"<members@lists.example.org.evil.example>", false),
    ];
    for (sender, protected) in cases {
        let mut c = m.session(STRANGER).await;
        c.send(&frames::mail(&[sender, b"SMTPUTF8", b"BODY=8BITMIME"]))
            .await;
        let r = c.reply().await.unwrap();
        assert_eq!(
            is_550(&r),
            protected,
            "{}: {r:?}",
            String::from_utf8_lossy(sender)
        );
        if !protected {
            assert_eq!(r.cmd, b'c');
        }
        c.close().await;
    }
    assert_eq!(m.internal_errors(), 0);
    m.stop().await;
}
