//! Faults B1–B6 (TESTING.md, Faults) through the milter. The signature rules
//! themselves (every single-character mutation, case, expiry wrap, key
//! rotation, 10^4-character tags) are unit and property tests in
//! crates/core/src/address/prvs.rs and crates/core/src/address/verp.rs; budgets for harvested
//! addresses (B5) are in tests/flood.rs. Here: what reaches Postfix.

use listwarden_test_support as support;

use listwarden::address::{Address, prvs};
use std::time::{Duration, Instant};
use support::frames::{self, Reply};
use support::{Milter, has_code, is_550};

fn config() -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\nratelimit:\n  max_keys: 1024\n\
         signing:\n  keys: [{{id: 1, file: {key}}}]\n  sign_with: 1\n  demo: true\n\
         lists:\n  - address: members@lists.example.org\n"
    )
}

fn signed(m: &Milter, days_ago: u64) -> String {
    let ring = m.shared.config.load().signing.clone().unwrap();
    let today = listwarden::policy::day_of(listwarden::unix_now());
    let plain = Address::parse("members-bounces@lists.example.org").unwrap();
    prvs::sign(&plain, &ring, today - days_ago).to_string()
}

/// RCPT replies for one null-sender message to `rcpts`.
async fn rcpt_replies(m: &Milter, rcpts: &[String]) -> Vec<Reply> {
    let mut c = m.session("198.51.100.9").await;
    c.send(&frames::mail(&[b"<>"])).await;
    assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'));
    let mut out = Vec::new();
    for r in rcpts {
        c.send(&frames::rcpt(&[format!("<{r}>").as_bytes()])).await;
        out.push(c.reply().await.unwrap());
    }
    c.close().await;
    out
}

/// The pattern of packaging/postfix/listwarden-prvs.regexp, which maps a
/// tagged address to the plain one in Postfix (regexp tables match
/// case-insensitively by default).
fn postfix_map() -> regex::Regex {
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/postfix/listwarden-prvs.regexp"
    ))
    .unwrap();
    let line = file
        .lines()
        .find(|l| l.starts_with('/'))
        .expect("a pattern line");
    let pattern = line.split('/').nth(1).unwrap();
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn b1_b2_b3_tags_at_rcpt_exact_case_folded_mutated_expired_huge() {
    let m = Milter::start(&config()).await;
    let good = signed(&m, 0);
    let mut mutated = good.clone().into_bytes();
    mutated[10] = if mutated[10] == b'0' { b'1' } else { b'0' };
    let mutated = String::from_utf8(mutated).unwrap();
    // Valid: passes at RCPT. Refused: 550 at RCPT. Malformed: not a tag at
    // all, so not a list address to listwarden (continue) and not mapped
    // to the list by Postfix either (which then refuses the unknown user).
    // Unreadable: too long to read as an address, but naming a protected
    // domain: fails closed (451), since Postfix might read the list in it.
    enum Want {
        Valid,
        Refused,
        Malformed,
        Unreadable,
    }
    let cases = [
        (good.clone(), Want::Valid),
        (good.to_uppercase(), Want::Valid),
        (mutated, Want::Refused),
        (signed(&m, 30), Want::Refused),
        (format!("{}{}", &good[..12], &good[15..]), Want::Malformed),
        (
            format!(
                "prvs=1{}=members-bounces@lists.example.org",
                "a".repeat(10_000)
            ),
            Want::Unreadable,
        ),
        (good.replacen('=', "=x", 1), Want::Malformed),
    ];
    let map = postfix_map();
    let started = Instant::now();
    for (rcpt, want) in &cases {
        let r = rcpt_replies(&m, std::slice::from_ref(rcpt)).await;
        match want {
            Want::Valid => {
                assert_eq!(r[0].cmd, b'c', "{rcpt:.80}: {r:?}");
                assert!(map.is_match(rcpt), "Postfix maps {rcpt}");
            }
            Want::Refused => assert!(is_550(&r[0]), "{rcpt:.80}: {r:?}"),
            Want::Malformed => {
                assert_eq!(r[0].cmd, b'c', "{rcpt:.80}: {r:?}");
                assert!(!map.is_match(rcpt), "Postfix must not map {rcpt:.80}");
            }
            Want::Unreadable => {
                assert!(r[0].decision().starts_with("y:451"), "{rcpt:.80}: {r:?}");
                assert!(!map.is_match(rcpt), "Postfix must not map {rcpt:.80}");
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    m.stop().await;
}

#[tokio::test]
async fn b6_a_null_sender_message_with_several_recipients_is_judged_per_recipient() {
    let m = Milter::start(&config()).await;
    let rcpts = [
        signed(&m, 0),
        "members-bounces@lists.example.org".to_string(),
        "someone@example.com".to_string(),
        signed(&m, 0).replacen("prvs=1", "prvs=2", 1),
    ];
    let r = rcpt_replies(&m, &rcpts).await;
    let shown: Vec<u8> = r.iter().map(|r| r.cmd).collect();
    assert_eq!(r[0].cmd, b'c', "valid signed: {shown:?}");
    assert!(is_550(&r[1]), "unsigned bounce to the list: {r:?}");
    assert_eq!(r[2].cmd, b'c', "not a list address");
    assert!(
        is_550(&r[3]) || has_code(&r[3], "451"),
        "unknown key: {r:?}"
    );
    // Never a discard: it would drop the message for every recipient.
    assert!(!shown.contains(&b'd'));
    m.stop().await;
}
