//! Micro-benchmarks of listwarden's hot paths: the policy decision at MAIL
//! and RCPT, BATV sign and verify, DSN parse + classify, and the GCRA
//! rate-limit decision (memory store; Redis when LISTWARDEN_BENCH_REDIS
//! names a server, e.g. redis://127.0.0.1:6379/).
//!
//! Short measurement times keep the suite well under two minutes:
//! `cargo bench --bench micro`.

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use listwarden::address::{Address, prvs};
use listwarden::config::Config;
use listwarden::dsn;
use listwarden::policy::{self, Client, Facts, Stage};
use listwarden::ratelimit::{MemoryStore, Quota, RedisConfig, RedisStore};
use std::time::Duration;

fn shipped_config() -> Config {
    let path = listwarden_benches::repo_root().join("config/listwarden.yaml");
    match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn today() -> u64 {
    policy::day_of(listwarden::unix_now())
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn bench_policy(c: &mut Criterion) {
    let config = shipped_config();
    let ring = config.signing.clone().expect("shipped config signs");
    let today = today();
    let stranger = Client {
        ip: Some("203.0.113.7".parse().unwrap()),
        authenticated_as: None,
    };
    let trusted = Client {
        ip: Some("127.0.0.1".parse().unwrap()),
        authenticated_as: None,
    };
    let alice = addr("alice@example.net");
    let list = addr("members@lists.example.org");
    let bounces = addr("members-bounces@lists.example.org");
    let signed = prvs::sign(&bounces, &ring, today);
    let bob = addr("bob@example.com");

    let mut g = c.benchmark_group("policy::decide");
    let mail = |client: &Client, sender: Option<&Address>| {
        let mut f = Facts::new(Stage::Mail, client, today);
        f.sender = sender;
        policy::decide(black_box(&f), &config)
    };
    g.bench_function("mail/ordinary-stranger", |b| {
        b.iter(|| mail(&stranger, Some(&alice)))
    });
    g.bench_function("mail/forged-list-sender", |b| {
        b.iter(|| mail(&stranger, Some(&list)))
    });
    g.bench_function("mail/trusted-list-post", |b| {
        b.iter(|| mail(&trusted, Some(&bounces)))
    });
    g.bench_function("mail/null-sender", |b| b.iter(|| mail(&stranger, None)));
    let rcpt = |recipient: &Address| {
        let mut f = Facts::new(Stage::Rcpt, &stranger, today);
        f.recipient = Some(recipient);
        policy::decide(black_box(&f), &config)
    };
    g.bench_function("rcpt/bounce-signed-valid", |b| b.iter(|| rcpt(&signed)));
    g.bench_function("rcpt/bounce-unsigned", |b| b.iter(|| rcpt(&bounces)));
    g.bench_function("rcpt/bounce-to-stranger", |b| b.iter(|| rcpt(&bob)));
    let from = [list.clone()];
    g.bench_function("eoh/forged-from-header", |b| {
        b.iter(|| {
            let mut f = Facts::new(Stage::EndOfHeaders, &stranger, today);
            f.sender = Some(&alice);
            f.from = &from;
            policy::decide(black_box(&f), &config)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("prvs");
    g.bench_function("sign", |b| {
        b.iter(|| prvs::sign(black_box(&bounces), &ring, today))
    });
    g.bench_function("verify/valid", |b| {
        b.iter(|| prvs::verify(black_box(&signed), &ring, today))
    });
    g.bench_function("verify/unsigned", |b| {
        b.iter(|| prvs::verify(black_box(&bounces), &ring, today))
    });
    g.bench_function("address/parse", |b| {
        b.iter(|| {
            Address::parse(black_box(
                "prvs=1234abcdef=members-bounces@lists.example.org",
            ))
        })
    });
    g.finish();
}

fn bench_dsn(c: &mut Criterion) {
    let config = shipped_config();
    let limits = dsn::Limits::default();
    let mut g = c.benchmark_group("dsn::parse+classify");
    for name in ["yahoo_ts01_delay", "postfix_dsn", "arf_abuse", "exim_plain"] {
        let raw = listwarden_benches::dsn_fixture(name).expect("fixture");
        g.bench_with_input(BenchmarkId::from_parameter(name), &raw, |b, raw| {
            b.iter(|| {
                let report = dsn::parse(black_box(raw), &limits);
                dsn::classify(&report, &config.rules)
            })
        });
    }
    g.finish();
}

fn bench_ratelimit(c: &mut Criterion) {
    let quota = Quota::new(60, Duration::from_secs(60), 120).expect("quota");
    let mut g = c.benchmark_group("ratelimit");
    let store = MemoryStore::new(1_000_000);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("net:10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let mut i = 0usize;
    g.bench_function("memory/check-10k-keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            store.check(black_box(&keys[i]), &quota)
        })
    });
    g.bench_function("memory/check-one-key", |b| {
        b.iter(|| store.check(black_box("net:192.0.2.0/24"), &quota))
    });
    g.bench_function("gcra::decide (pure)", |b| {
        b.iter(|| listwarden::ratelimit::decide(black_box(Some(1_000_000)), 2_000_000, &quota))
    });
    if let Ok(url) = std::env::var("LISTWARDEN_BENCH_REDIS") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let store = rt.block_on(async {
            RedisStore::new(RedisConfig {
                url,
                prefix: format!("lwbench{}:", std::process::id()),
                ..RedisConfig::default()
            })
        });
        match store {
            Ok(store) => {
                // Let it connect (the first calls would fall back).
                rt.block_on(async {
                    for _ in 0..50 {
                        let _ = store.check("warm", &quota).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                let mut i = 0usize;
                g.bench_function("redis/check-10k-keys", |b| {
                    b.iter(|| {
                        i = (i + 1) % keys.len();
                        rt.block_on(store.check(black_box(&keys[i]), &quota))
                    })
                });
                println!(
                    "redis store: fallback active at the end: {}, backend errors: {}",
                    store.fallback_active(),
                    store.stats().errors_total()
                );
            }
            Err(e) => eprintln!("LISTWARDEN_BENCH_REDIS set but the store failed: {e}"),
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(30);
    targets = bench_policy, bench_dsn, bench_ratelimit
}
criterion_main!(benches);
