//! Property tests: arbitrary bytes and arbitrary mutations of the fixtures never
//! panic, and everything kept stays within the limits.

use std::fs;
use std::path::Path;
use std::sync::LazyLock;

use listwarden::dsn::{Limits, MAX_RECEIVED_HEADERS, Report, ReportKind, RuleSet, UnparsedReason};
use proptest::prelude::*;

static RULES: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::builtin().expect("built-in rules"));

static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsn");
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files.iter().map(|p| fs::read(p).expect("read")).collect()
});

fn check_bounds(report: &Report, limits: &Limits) {
    let field =
        |s: &Option<String>| assert!(s.as_ref().is_none_or(|s| s.len() <= limits.max_field_len));
    assert!(report.recipients.len() <= limits.max_recipients);
    assert_eq!(
        report.unparsed_reason.is_some(),
        report.kind == ReportKind::Unparsed
    );
    field(&report.reporting_mta);
    field(&report.arrival_date);
    for r in &report.recipients {
        assert!(!r.recipient.is_empty() && r.recipient.len() <= limits.max_field_len);
        for f in [
            &r.original_recipient,
            &r.status,
            &r.remote_mta,
            &r.diagnostic,
            &r.last_attempt_date,
            &r.will_retry_until,
        ] {
            field(f);
        }
    }
    if let Some(f) = &report.feedback {
        assert!(f.original_rcpt_to.len() <= limits.max_recipients);
        assert!(f.reported_domain.len() <= limits.max_recipients);
        for v in [
            &f.feedback_type,
            &f.user_agent,
            &f.version,
            &f.original_mail_from,
            &f.source_ip,
            &f.arrival_date,
        ] {
            field(v);
        }
    }
    if let Some(o) = &report.original {
        assert!(o.received.len() <= MAX_RECEIVED_HEADERS);
        assert!(o.received.iter().all(|r| r.len() <= limits.max_field_len));
        for v in [&o.message_id, &o.from, &o.to, &o.subject] {
            field(v);
        }
    }
    let cls = listwarden::dsn::classify(report, &RULES);
    match report.kind {
        ReportKind::Dsn | ReportKind::PlainBounce => assert_eq!(cls.len(), report.recipients.len()),
        ReportKind::Feedback => assert_eq!(cls.len(), 1),
        ReportKind::Unparsed | ReportKind::NotABounce => assert!(cls.is_empty()),
    }
    for c in &cls {
        if c.action == Some(listwarden::dsn::DsnAction::Delayed) {
            assert!(!matches!(
                c.class,
                listwarden::dsn::Class::Hard | listwarden::dsn::Class::Soft
            ));
        }
    }
    let lines = listwarden::dsn::json_lines("p", report, &cls);
    assert_eq!(lines.len(), cls.len().max(1));
    // mail-parser's debug assertions fire on some mutated inputs (see
    // tests/limits.rs `mail_parser_debug_assertion_is_contained`); that is
    // caught and reported as ParserPanic, which is all that can be asked.
    if report.unparsed_reason == Some(UnparsedReason::ParserPanic) {
        assert!(report.recipients.is_empty() && report.original.is_none());
    }
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0usize..20_000, 0usize..6, 0usize..8, 0usize..300).prop_map(
        |(max_bytes, max_depth, max_recipients, max_field_len)| Limits {
            max_bytes,
            max_depth,
            max_recipients,
            max_field_len,
        },
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens = prop::sample::select(vec![
        b"\n".to_vec(),
        b"\r\n".to_vec(),
        b"\n\t".to_vec(),
        b"--".to_vec(),
        b":".to_vec(),
        b"\n\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"z\"\n".to_vec(),
        b"Content-Type: message/rfc822\n\n".to_vec(),
        b"Content-Transfer-Encoding: base64\n".to_vec(),
        b"Final-Recipient: rfc822; ".to_vec(),
        b"Action: delayed\n".to_vec(),
        b"=?utf-8?b?".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"<>@;(".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![tokens, prop::collection::vec(any::<u8>(), 0..64)]
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 0usize..512).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..2048).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len().max(1);
    match m {
        Mutation::Flip(i, b) => {
            if let Some(x) = data.get_mut(i % len) {
                *x ^= b;
            }
        }
        Mutation::Insert(i, v) => {
            let at = (i % len).min(data.len());
            data.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = (i % len).min(data.len());
            let end = (at + n).min(data.len());
            data.drain(at..end);
        }
        Mutation::Truncate(i) => data.truncate(i % len),
        Mutation::Duplicate(i, n) => {
            let at = (i % len).min(data.len());
            let end = (at + n).min(data.len());
            let copy: Vec<u8> = data.get(at..end).unwrap_or_default().to_vec();
            data.splice(at..at, copy);
        }
    }
}

proptest! {
    // PROPTEST_CASES=N overrides the default of 2000 for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let limits = Limits::default();
        check_bounds(&listwarden::dsn::parse(&data, &limits), &limits);
        listwarden::dsn::fuzz_parse_classify(&data);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut data = pick.get(&FIXTURES).clone();
        for m in &mutations {
            apply(&mut data, m);
        }
        let limits = Limits::default();
        check_bounds(&listwarden::dsn::parse(&data, &limits), &limits);
    }

    #[test]
    fn fixtures_under_small_limits_stay_bounded(
        pick in any::<prop::sample::Index>(),
        limits in small_limits(),
    ) {
        let data = pick.get(&FIXTURES);
        check_bounds(&listwarden::dsn::parse(data, &limits), &limits);
    }
}
