//! Bounces that reach a list are classified and tagged at end of message,
//! over the real protocol; forged tags are removed first.

use listwarden_test_support as support;

use indymilter_test::{EomAction, Status, TestConnection};
use listwarden::address::{Address, prvs};
use support::Milter;

fn config() -> String {
    let signing = support::signing_block();
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\n\
         {signing}\
         lists:\n  - address: members@lists.example.org\n  - address: open@lists.example.org\n    bounces: off\n"
    )
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/dsn/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Splits a fixture into headers and body the way Postfix hands them over.
fn split(raw: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.to_string(), v.trim_start().to_string()));
        }
    }
    (headers, body.replace('\n', "\r\n").into_bytes())
}

async fn send_bounce(
    m: &Milter,
    rcpt: &str,
    raw: &[u8],
    extra: &[(&str, &str)],
) -> (indymilter_test::EomActions, Status) {
    let (headers, body) = split(raw);
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("mx.example", ([198, 51, 100, 7], 25000))
        .await
        .unwrap();
    conn.mail(["<>"]).await.unwrap();
    assert_eq!(conn.rcpt([rcpt]).await.unwrap(), Status::Continue);
    for (n, v) in headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra.iter().copied())
    {
        conn.header(n, v).await.unwrap();
    }
    assert_eq!(conn.eoh().await.unwrap(), Status::Continue);
    assert_eq!(conn.body(body).await.unwrap(), Status::Continue);
    let result = conn.eom().await.unwrap();
    conn.close().await.unwrap();
    result
}

fn tags(actions: &indymilter_test::EomActions) -> Vec<String> {
    actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::AddHeader { name, value }
                if name.to_str().unwrap() == "X-Listwarden-Bounce" =>
            {
                Some(value.to_string_lossy().into_owned())
            }
            _ => None,
        })
        .collect()
}

fn signed(m: &Milter) -> String {
    let ring = m.shared.config.load().signing.clone().unwrap();
    let today = support::today();
    format!(
        "<{}>",
        prvs::sign(
            &Address::parse("members-bounces@lists.example.org").unwrap(),
            &ring,
            today
        )
    )
}

#[tokio::test]
async fn yahoo_ts01_is_tagged_as_a_complaint_deferral_and_forged_tags_go() {
    let m = Milter::start_tcp(&config()).await;
    let rcpt = signed(&m);
    let (actions, status) = send_bounce(
        &m,
        &rcpt,
        &fixture("yahoo_ts01_delay.eml"),
        &[("X-Listwarden-Bounce", "class=hard; forged")],
    )
    .await;
    assert_eq!(status, Status::Continue);
    assert!(
        actions.has_delete_header("X-Listwarden-Bounce", 1),
        "the forged tag is removed"
    );
    let tags = tags(&actions);
    assert_eq!(tags.len(), 1, "{tags:?}");
    for want in [
        "class=deferral",
        "reason=complaint",
        "provider=yahoo",
        "list=members",
        "signature=valid",
    ] {
        assert!(tags[0].contains(want), "{want} missing in {}", tags[0]);
    }
    let classified = m.shared.metrics.bounces_classified.with_label_values(&[
        "members",
        "deferral",
        "complaint",
        "yahoo",
        "us",
    ]);
    assert_eq!(classified.get(), 1);
    m.stop().await;
}

#[tokio::test]
async fn every_recipient_group_gets_its_tag_and_other_mail_one_too() {
    let m = Milter::start_tcp(&config()).await;
    let (actions, _) = send_bounce(
        &m,
        "<open-bounces@lists.example.org>",
        &fixture("postfix_dsn.eml"),
        &[],
    )
    .await;
    let tags = tags(&actions);
    assert!(
        !tags.is_empty()
            && tags
                .iter()
                .all(|t| t.contains("list=open") && t.contains("signature=unchecked")),
        "{tags:?}"
    );
    assert!(tags.iter().any(|t| t.contains("class=hard")), "{tags:?}");

    let (actions, _) = send_bounce(
        &m,
        "<open-bounces@lists.example.org>",
        b"Subject: x\r\n\r\ngarbage\r\n",
        &[],
    )
    .await;
    assert_eq!(
        self::tags(&actions),
        ["class=not_a_bounce; list=open; signature=unchecked"]
    );
    m.stop().await;
}

#[tokio::test]
async fn a_feedback_report_from_an_ordinary_sender_is_tagged_as_a_complaint() {
    let m = Milter::start_tcp(&config()).await;
    let ring = m.shared.config.load().signing.clone().unwrap();
    let verp = listwarden::address::verp::sign_verp(
        &Address::parse("members-bounces@lists.example.org").unwrap(),
        &Address::parse("bob@example.net").unwrap(),
        &ring,
        support::today(),
    )
    .unwrap();
    let (headers, body) = split(&fixture("arf_abuse.eml"));
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("fbl.example", ([198, 51, 100, 8], 25000))
        .await
        .unwrap();
    conn.mail(["<feedback@fbl.example.net>"]).await.unwrap();
    assert_eq!(
        conn.rcpt([format!("<{verp}>")]).await.unwrap(),
        Status::Continue
    );
    for (n, v) in &headers {
        conn.header(n.as_str(), v.as_str()).await.unwrap();
    }
    assert_eq!(
        conn.eoh().await.unwrap(),
        Status::Continue,
        "a report is read to the end"
    );
    conn.body(body).await.unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let tags = tags(&actions);
    assert_eq!(tags.len(), 1, "{tags:?}");
    for want in [
        "class=complaint",
        "reason=feedback",
        "feedback_type=abuse",
        "list=members",
        "signature=valid",
    ] {
        assert!(tags[0].contains(want), "{want} missing in {}", tags[0]);
    }
    conn.close().await.unwrap();
    m.stop().await;
}

/// A storm: the third member at Gmail failing with the same rule within
/// the window (trigger 3 here) raises an incident; from then on those
/// bounces are `fault=us; incident=1` and the gauge is 1.
#[tokio::test]
async fn a_bounce_storm_at_one_provider_is_marked_as_ours() {
    let config = format!(
        "{}classification:\n  incident:\n    trigger: 3\n    within: 10m\n",
        config()
    );
    let m = Milter::start_tcp(&config).await;
    // Each member's bounce comes back to its own signed VERP address
    // (`members-bounces+LOCAL=DOMAIN@`, as Mailman sends), the one address
    // of a bounce its sender cannot choose.
    let ring = m.shared.config.load().signing.clone().unwrap();
    let rcpt_of = |member: &str| {
        let (local, domain) = member.split_once('@').unwrap();
        let verp = format!("members-bounces+{local}={domain}@lists.example.org");
        format!(
            "<{}>",
            prvs::sign(&Address::parse(&verp).unwrap(), &ring, support::today())
        )
    };
    let dsn = |member: &str| {
        format!(
            "From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nFailed.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; {member}\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; gmail-smtp-in.l.google.com\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist. - gsmtp\n\n--b--\n"
        )
    };
    let mut got = Vec::new();
    for member in [
        "a@gmail.com",
        "b@gmail.com",
        "a@gmail.com",
        "c@gmail.com",
        "d@gmail.com",
    ] {
        let (actions, _) = send_bounce(&m, &rcpt_of(member), dsn(member).as_bytes(), &[]).await;
        let t = tags(&actions);
        assert_eq!(t.len(), 1, "{t:?}");
        got.push(t[0].clone());
    }
    for (i, t) in got.iter().enumerate() {
        assert!(t.contains("provider=gmail; rule=text-unknown-user;"), "{t}");
        // The same member twice is one member: c is the third.
        if i < 3 {
            assert!(t.ends_with("; fault=them"), "{i}: {t}");
        } else {
            assert!(t.ends_with("; fault=us; incident=1"), "{i}: {t}");
        }
    }
    let gauge = m
        .shared
        .metrics
        .bounce_incident
        .with_label_values(&["gmail", "text-unknown-user"]);
    assert_eq!(gauge.get(), 1);
    let text = m.shared.metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("listwarden_bounces_classified_total{")
                && l.contains("fault=\"us\"")
                && l.contains("reason=\"unknown_user\"")),
        "{text}"
    );
    m.stop().await;
}

/// The failed addresses in a bounce's body are its sender's text: bounces
/// that all come back to one signed address (a member's own, or one leaked
/// copy) never make a storm, whatever addresses they name, and neither does
/// one bounce that names many.
#[tokio::test]
async fn a_storm_cannot_be_staged_with_addresses_the_sender_writes() {
    let config = format!(
        "{}classification:\n  incident:\n    trigger: 3\n    within: 10m\n",
        config()
    );
    let m = Milter::start_tcp(&config).await;
    let rcpt = signed(&m);
    let group = |member: &str| {
        format!(
            "Final-Recipient: rfc822; {member}\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; gmail-smtp-in.l.google.com\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist. - gsmtp\n\n"
        )
    };
    let dsn = |groups: String| {
        format!(
            "From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nFailed.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n{groups}--b--\n"
        )
    };
    // One bounce naming ten members, then one per member, all to one address.
    let many: String = (0..10).map(|i| group(&format!("m{i}@gmail.com"))).collect();
    let mut all = Vec::new();
    let (actions, _) = send_bounce(&m, &rcpt, dsn(many).as_bytes(), &[]).await;
    all.extend(tags(&actions));
    for i in 10..15 {
        let (actions, _) = send_bounce(
            &m,
            &rcpt,
            dsn(group(&format!("m{i}@gmail.com"))).as_bytes(),
            &[],
        )
        .await;
        all.extend(tags(&actions));
    }
    assert!(all.len() >= 15, "{all:?}");
    for t in &all {
        assert!(t.ends_with("; fault=them"), "{t}");
    }
    let gauge = m
        .shared
        .metrics
        .bounce_incident
        .with_label_values(&["gmail", "text-unknown-user"]);
    assert_eq!(gauge.get(), 0);
    m.stop().await;
}
