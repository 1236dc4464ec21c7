//! Flood control over the real protocol: bounce budgets per network, per
//! list and per signed address answer 451 at RCPT (nothing is lost, the
//! sender retries), and the shield makes a list under attack strict.

use listwarden_test_support as support;

use indymilter_test::{Status, TestConnection};
use listwarden::Shared;
use listwarden::address::{Address, prvs};
use listwarden::config::Config;
use listwarden::ratelimit::ManualClock;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::Milter;

fn config(budgets: &str, shield: &str) -> String {
    let signing = support::signing_block();
    format!(
        "milter:\n  listen: inet:127.0.0.1:8890\n\
         trusted_networks: [127.0.0.1/32]\n\
         {signing}\
         trace:\n  received_by: [lists.example.org]\n\
         ratelimit:\n  budgets:\n{budgets}\
         shield:\n{shield}\
         lists:\n  - address: members@lists.example.org\n  - address: legacy@lists.example.org\n    bounces: either\n"
    )
}

const NO_SHIELD: &str = "  enabled: false\n";

fn signed(m: &Milter, local: &str) -> String {
    let ring = m.shared.config.load().signing.clone().unwrap();
    let plain = Address::parse(&format!("{local}@lists.example.org")).unwrap();
    format!("<{}>", prvs::sign(&plain, &ring, support::today()))
}

/// One bounce from `ip` to `rcpt`; the reply to RCPT.
async fn bounce(m: &Milter, ip: [u8; 4], rcpt: &str) -> Status {
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("mx.example", (ip, 25000)).await.unwrap();
    conn.mail(["<>"]).await.unwrap();
    let status = conn.rcpt([rcpt]).await.unwrap();
    conn.close().await.unwrap();
    status
}

fn is_451(s: &Status) -> bool {
    matches!(s, Status::Tempfail { message: Some(m) } if m.to_str().unwrap().starts_with("451 4.7.1 "))
}

fn decisions(m: &Milter, budget: &str, result: &str) -> u64 {
    m.shared
        .metrics
        .ratelimit_decisions
        .with_label_values(&[budget, result])
        .get()
}

#[tokio::test]
async fn network_budget_exact_at_burst_then_451_other_networks_unaffected() {
    let m = Milter::start_tcp(&config(
        "    network: {rate: 1, per: 1h, burst: 3}\n",
        NO_SHIELD,
    ))
    .await;
    let rcpt = signed(&m, "members-bounces");
    for i in 0..3 {
        // Different hosts of one /24 share the budget.
        assert_eq!(
            bounce(&m, [198, 51, 100, 10 + i], &rcpt).await,
            Status::Continue,
            "bounce {i}"
        );
    }
    let over = bounce(&m, [198, 51, 100, 99], &rcpt).await;
    assert!(is_451(&over), "{over:?}");
    assert_eq!(
        bounce(&m, [203, 0, 113, 5], &rcpt).await,
        Status::Continue,
        "another network"
    );
    assert_eq!(decisions(&m, "network", "denied"), 1);
    assert_eq!(m.messages("tempfail", "rate_limited"), 1);
    // Ordinary mail from the flooding network is not limited.
    let mut conn = TestConnection::open(m.addr()).await.unwrap();
    conn.connect("mx.example", ([198, 51, 100, 10], 25000))
        .await
        .unwrap();
    conn.mail(["<alice@example.net>"]).await.unwrap();
    assert_eq!(
        conn.rcpt(["<bob@example.com>"]).await.unwrap(),
        Status::Continue
    );
    conn.close().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn a_harvested_signed_address_cannot_carry_a_flood() {
    let m = Milter::start_tcp(&config(
        "    address: {rate: 1, per: 1d, burst: 2}\n",
        NO_SHIELD,
    ))
    .await;
    let rcpt = signed(&m, "members-bounces");
    for i in 0..2 {
        assert_eq!(bounce(&m, [10, 0, i, 1], &rcpt).await, Status::Continue);
    }
    assert!(is_451(&bounce(&m, [10, 0, 9, 1], &rcpt).await));
    m.stop().await;
}

#[tokio::test]
async fn list_budget_counts_valid_and_invalid_apart() {
    let budgets = "    network: {rate: 0, per: 1m}\n    list_valid: {rate: 1, per: 1h, burst: 2}\n    list_invalid: {rate: 1, per: 1h, burst: 1}\n";
    let m = Milter::start_tcp(&config(budgets, NO_SHIELD)).await;
    let good = signed(&m, "legacy-bounces");
    // `either` mode: unsigned bounces await their trace, and use the invalid budget.
    assert_eq!(
        bounce(&m, [10, 1, 0, 1], "<legacy-bounces@lists.example.org>").await,
        Status::Continue
    );
    assert!(is_451(
        &bounce(&m, [10, 2, 0, 1], "<legacy-bounces@lists.example.org>").await
    ));
    // Valid bounces have their own budget.
    assert_eq!(bounce(&m, [10, 3, 0, 1], &good).await, Status::Continue);
    assert_eq!(bounce(&m, [10, 4, 0, 1], &good).await, Status::Continue);
    assert!(is_451(&bounce(&m, [10, 5, 0, 1], &good).await));
    m.stop().await;
}

/// Over budget, a bounce with a wrong signature gets the same 451 as one
/// with a right signature: a client guessing signatures learns nothing once
/// its budget is spent (it used to get 550 for a wrong guess and 451 for a
/// right one). Plain backscatter (no tag) stays a final 550 over budget:
/// a 451 would make innocent MTAs retry it.
#[tokio::test]
async fn over_budget_wrong_signatures_get_451_like_right_ones() {
    let m = Milter::start_tcp(&config(
        "    network: {rate: 1, per: 1h, burst: 1}\n",
        NO_SHIELD,
    ))
    .await;
    let good = signed(&m, "members-bounces");
    let mut forged = good.clone().into_bytes();
    // "<prvs=KDDDHHHHHH=...": change the last hash digit.
    forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let s = bounce(&m, [198, 51, 100, 1], &forged).await;
    assert!(matches!(s, Status::Reject { .. }), "within budget: {s:?}");
    let s = bounce(&m, [198, 51, 100, 1], &forged).await;
    assert!(is_451(&s), "over budget, wrong: {s:?}");
    assert!(
        is_451(&bounce(&m, [198, 51, 100, 1], &good).await),
        "over budget, right"
    );
    for _ in 0..2 {
        let s = bounce(&m, [198, 51, 100, 1], "<members-bounces@lists.example.org>").await;
        assert!(
            matches!(s, Status::Reject { .. }),
            "unsigned stays 550: {s:?}"
        );
    }
    m.stop().await;
}

#[tokio::test]
async fn observe_mode_counts_the_limit_but_lets_bounces_in() {
    let yaml = config("    network: {rate: 1, per: 1h, burst: 1}\n", NO_SHIELD)
        .replace("trusted_networks", "observe: true\ntrusted_networks");
    let m = Milter::start_tcp(&yaml).await;
    let rcpt = signed(&m, "members-bounces");
    for _ in 0..3 {
        assert_eq!(bounce(&m, [198, 51, 100, 1], &rcpt).await, Status::Continue);
    }
    assert_eq!(m.messages("observe_tempfail", "rate_limited"), 2);
    m.stop().await;
}

#[tokio::test]
async fn the_shield_rises_under_attack_and_falls_after_the_hold() {
    let yaml = config(
        "    network: {rate: 0, per: 1m}\n    list_invalid: {rate: 0, per: 1m}\n",
        "  trigger: 3\n  within: 10m\n  hold: 1h\n",
    );
    let cfg = Config::parse(&yaml, Path::new("t.yaml")).unwrap();
    let clock = ManualClock::new(1_000_000_000);
    let m = Milter::start_shared(Shared::with_clock(cfg, Arc::new(clock.clone()))).await;
    let legacy = "<legacy-bounces@lists.example.org>";
    // `either` list: unsigned bounces may pass on their trace.
    assert_eq!(bounce(&m, [10, 0, 0, 1], legacy).await, Status::Continue);
    // A storm of forged bounces to the other list's signed-only address
    // from many networks (each is invalid; the 4th source crosses the
    // trigger of 3; one source alone never does).
    for n in 0..4 {
        bounce(&m, [10, n, 0, 1], "<members-bounces@lists.example.org>").await;
    }
    let active = |list: &str| {
        m.shared
            .metrics
            .shield_active
            .with_label_values(&[list])
            .get()
    };
    assert_eq!(active("members"), 1);
    assert_eq!(active("legacy"), 0, "only the attacked list is shielded");
    // Now attack the `either` list with invalid tags: it goes strict.
    for n in 0..4 {
        bounce(
            &m,
            [10, n, 0, 1],
            "<prvs=1000aaaaaa=legacy-bounces@lists.example.org>",
        )
        .await;
    }
    assert_eq!(active("legacy"), 1);
    // An unsigned bounce its trace would have decided is deferred, not
    // refused: a genuine one is retried once the shield drops.
    let s = bounce(&m, [10, 0, 0, 1], legacy).await;
    assert!(is_451(&s), "{s:?}");
    assert_eq!(m.messages("tempfail", "shielded"), 1);
    // Valid signed bounces still get in while shielded.
    assert_eq!(
        bounce(&m, [10, 0, 0, 1], &signed(&m, "legacy-bounces")).await,
        Status::Continue
    );
    // After the hold, the list is back to its own mode.
    clock.advance(Duration::from_secs(3601));
    assert_eq!(bounce(&m, [10, 0, 0, 1], legacy).await, Status::Continue);
    assert_eq!(active("legacy"), 0);
    m.stop().await;
}

/// Two listwarden instances (two MX hosts) share one budget through a real
/// Redis: together they admit exactly the burst.
#[tokio::test]
#[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
async fn two_instances_share_one_budget_through_redis() {
    let url = std::env::var("LISTWARDEN_IT_REDIS").expect("LISTWARDEN_IT_REDIS is not set");
    let salt = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let yaml = config("    network: {rate: 1, per: 1h, burst: 10}\n", NO_SHIELD).replace(
        "ratelimit:\n",
        &format!("ratelimit:\n  state: {url}\n  redis_prefix: \"it-{salt}:\"\n  redis_deadline_ms: 2000\n  node_count: 2\n"),
    );
    let a = Milter::start_tcp(&yaml).await;
    let b = Milter::start_tcp(&yaml).await;
    for m in [&a, &b] {
        let listwarden::ratelimit::Store::Redis(store) = &m.shared.store else {
            panic!("not a Redis store")
        };
        assert!(
            store.wait_connected(Duration::from_secs(5)).await,
            "Redis at {url} is unreachable"
        );
    }
    let rcpt = signed(&a, "members-bounces");
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let (addr, rcpt) = (if i % 2 == 0 { a.addr() } else { b.addr() }, rcpt.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = TestConnection::open(addr).await.unwrap();
            conn.connect("mx.example", ([198, 51, 100, i], 25000))
                .await
                .unwrap();
            conn.mail(["<>"]).await.unwrap();
            let status = conn.rcpt([rcpt.as_str()]).await.unwrap();
            conn.close().await.unwrap();
            status == Status::Continue
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 10, "one shared budget of burst 10");
    for m in [&a, &b] {
        assert!(!m.shared.store.fallback_active());
    }
    a.stop().await;
    b.stop().await;
}
