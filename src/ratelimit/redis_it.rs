//! Integration tests against real Redis servers. All `#[ignore]`: run them with
//! `cargo test -- --ignored redis_it` on a machine with `redis-server`.
//!
//! - Tests that only read and write keys use the server at `LISTWARDEN_IT_REDIS`
//!   (e.g. `redis://127.0.0.1:26379/`), and fail if it is unset or unreachable.
//! - Tests that kill, pause or reconfigure a server start their own `redis-server` child on a
//!   free loopback port (binary from `LISTWARDEN_REDIS_SERVER`, else `redis-server` on PATH)
//!   and kill it by PID; they fail if it cannot be started.

use std::hash::{BuildHasher, RandomState};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::{BackendErrorKind, Decision, Quota, RedisConfig, RedisStore};

/// Every decision must come back within this, whatever Redis does (deadline 50 ms + slack).
const DECISION_BOUND: Duration = Duration::from_millis(200);

fn quota(count: u32, period: Duration, burst: u32) -> Quota {
    Quota::new(count, period, burst).unwrap_or_else(|e| panic!("{e}"))
}

/// A key no other run uses.
fn unique_key(name: &str) -> String {
    let salt = RandomState::new().hash_one(Instant::now());
    format!("it:{name}:{salt:016x}")
}

fn env_url() -> String {
    match std::env::var("LISTWARDEN_IT_REDIS") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("LISTWARDEN_IT_REDIS is not set (e.g. redis://127.0.0.1:26379/)"),
    }
}

fn store(url: &str, deadline: Duration) -> RedisStore {
    let config = RedisConfig {
        url: url.to_owned(),
        deadline,
        node_count: 2,
        ..RedisConfig::default()
    };
    RedisStore::new(config).unwrap_or_else(|e| panic!("{e}"))
}

async fn connected_store(url: &str, deadline: Duration) -> RedisStore {
    let store = store(url, deadline);
    assert!(
        store.wait_connected(Duration::from_secs(5)).await,
        "Redis at {url} is unreachable"
    );
    store
}

async fn admin(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("{e}"));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("admin connection to {url}: {e}"))
}

/// One decision, asserting it came back within [`DECISION_BOUND`].
async fn timed_check(store: &RedisStore, key: &str, quota: &Quota) -> Decision {
    let started = Instant::now();
    let decision = store
        .check(key, quota)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let elapsed = started.elapsed();
    assert!(elapsed < DECISION_BOUND, "decision took {elapsed:?}");
    decision
}

/// Calls `check` until `done` holds or `within` passes, each call bounded; true if it held.
async fn check_until(
    store: &RedisStore,
    key: &str,
    quota: &Quota,
    within: Duration,
    done: impl Fn(&RedisStore) -> bool,
) -> bool {
    let give_up = Instant::now() + within;
    while Instant::now() < give_up {
        timed_check(store, key, quota).await;
        if done(store) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A private `redis-server` child on a loopback port, killed by PID on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Further `redis-server` arguments (a Cluster node's).
    extra: Vec<String>,
}

impl RedisServer {
    fn start() -> Self {
        Self::start_with(Vec::new())
    }

    fn start_with(extra: Vec<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut server = Self {
            port,
            child: None,
            extra,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    fn restart(&mut self) {
        let binary =
            std::env::var("LISTWARDEN_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let port = self.port.to_string();
        let child = Command::new(&binary)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--enable-debug-command", "local"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < give_up,
                "{binary} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to this server's PID.
    fn signal(&self, name: &str) {
        let Some(child) = &self.child else {
            panic!("server not running")
        };
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{name}: {e}"));
        assert!(status.success(), "kill -{name} failed");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
async fn basic_allow_deny_refill_and_ttl() {
    let url = env_url();
    let store = connected_store(&url, Duration::from_millis(50)).await;
    let key = unique_key("basic");
    let q = quota(10, Duration::from_secs(1), 2);
    assert!(timed_check(&store, &key, &q).await.allowed);
    assert!(timed_check(&store, &key, &q).await.allowed);
    let denied = timed_check(&store, &key, &q).await;
    assert!(!denied.allowed);
    assert!(
        denied.retry_after > Duration::ZERO && denied.retry_after <= Duration::from_millis(100)
    );
    tokio::time::sleep(denied.retry_after).await;
    assert!(timed_check(&store, &key, &q).await.allowed);

    // The key lives only until its TAT: at most T·burst from now.
    let mut admin = admin(&url).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("lw:{{{key}}}"))
        .query_async(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ttl > 0 && ttl <= 200, "PTTL {ttl}");

    let stats = store.stats();
    assert_eq!(stats.errors_total(), 0);
    assert_eq!(stats.fallback_decisions, 0);
    assert_eq!(stats.backend_decisions, 4);
    assert!(!store.fallback_active());
}

/// Fault R7: two MX hosts (two stores, two connection managers) on one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
async fn two_hosts_hammering_one_key_admit_exactly_the_burst() {
    const TASKS_PER_HOST: usize = 32;
    const CALLS_PER_TASK: usize = 40;
    const BURST: u32 = 100;
    let url = env_url();
    // A generous deadline: this test is about atomicity, not timeouts, and a timed-out call
    // would be decided by the fallback and muddy the count.
    let hosts = [
        connected_store(&url, Duration::from_secs(2)).await,
        connected_store(&url, Duration::from_secs(2)).await,
    ];
    let key = Arc::new(unique_key("hammer"));
    // One per hour: no refill during the test, so exactly BURST may pass.
    let q = quota(1, Duration::from_secs(3600), BURST);
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for host in &hosts {
        for _ in 0..TASKS_PER_HOST {
            let (host, key, admitted) = (host.clone(), key.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..CALLS_PER_TASK {
                    if host.check(&key, &q).await.is_ok_and(|d| d.allowed) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    for host in &hosts {
        assert_eq!(host.stats().fallback_decisions, 0, "a call fell back");
    }
    assert_eq!(admitted.load(Ordering::Relaxed), BURST as usize);
}

/// Fault R4: two hosts whose clocks disagree by 10 minutes, one of which
/// then jumps back an hour, share one budget exactly: decisions use the
/// server's TIME, never the host's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis at LISTWARDEN_IT_REDIS"]
async fn skewed_and_jumping_host_clocks_do_not_change_the_budget() {
    use super::ManualClock;
    const BURST: u32 = 20;
    let url = env_url();
    let config = RedisConfig {
        url: url.clone(),
        deadline: Duration::from_secs(2),
        node_count: 2,
        ..RedisConfig::default()
    };
    let hour = 3_600_000_000_000;
    let ahead = Arc::new(ManualClock::new(hour + 300_000_000_000)); // +5 min
    let behind = Arc::new(ManualClock::new(hour - 300_000_000_000)); // -5 min
    let hosts = [
        RedisStore::with_clock(config.clone(), ahead.clone()).unwrap_or_else(|e| panic!("{e}")),
        RedisStore::with_clock(config, behind.clone()).unwrap_or_else(|e| panic!("{e}")),
    ];
    for host in &hosts {
        assert!(host.wait_connected(Duration::from_secs(5)).await);
    }
    let key = unique_key("skew");
    // One per hour: no refill during the test.
    let q = quota(1, Duration::from_secs(3600), BURST);
    let mut admitted = 0;
    for i in 0..4 * BURST {
        if i == 2 * BURST {
            // A wall-clock jump back on one host, forward on the other.
            behind.set(0);
            ahead.advance(Duration::from_secs(3600));
        }
        let host = &hosts[(i % 2) as usize];
        if host.check(&key, &q).await.is_ok_and(|d| d.allowed) {
            admitted += 1;
        }
    }
    for host in &hosts {
        assert_eq!(host.stats().fallback_decisions, 0, "a call fell back");
    }
    assert_eq!(admitted, BURST);
}

/// Fault R1: Redis down at start, killed mid-stream, restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own redis-server"]
async fn down_at_start_killed_and_restarted() {
    let mut server = RedisServer::start();
    server.kill();
    let store = store(&server.url(), Duration::from_millis(50));
    let key = unique_key("restart");
    let q = quota(100, Duration::from_secs(1), 50);

    // Down at start: local decisions at once.
    assert!(timed_check(&store, &key, &q).await.allowed);
    assert!(store.fallback_active());

    server.restart();
    assert!(store.wait_connected(Duration::from_secs(10)).await);
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(5), |s| !s
            .fallback_active())
        .await,
        "did not switch to Redis after it came up"
    );
    let via_redis = store.stats().backend_decisions;
    assert!(via_redis > 0);

    // Killed mid-stream: every decision stays within the bound and the breaker opens.
    server.kill();
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(3), |s| s
            .fallback_active())
        .await,
        "fallback did not activate"
    );
    let errors = store.stats();
    assert!(
        errors.errors(BackendErrorKind::Connection) + errors.errors(BackendErrorKind::Timeout) >= 3
    );
    for _ in 0..50 {
        timed_check(&store, &key, &q).await;
    }

    // Restarted: the same store recovers by itself.
    server.restart();
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(40), |s| !s
            .fallback_active())
        .await,
        "did not recover after restart"
    );
    assert!(store.stats().backend_decisions > via_redis);
}

/// Fault R2: a slow server (`DEBUG SLEEP`) costs the deadline, then opens the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own redis-server"]
async fn debug_sleep_times_out_and_opens_breaker() {
    let server = RedisServer::start();
    let url = server.url();
    let store = connected_store(&url, Duration::from_millis(50)).await;
    let key = unique_key("sleep");
    let q = quota(1000, Duration::from_secs(1), 1000);
    assert!(timed_check(&store, &key, &q).await.allowed);

    let mut sleeper = admin(&url).await;
    let sleeping = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.5")
            .query_async::<()>(&mut sleeper)
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        check_until(&store, &key, &q, Duration::from_millis(400), |s| s
            .fallback_active())
        .await,
        "breaker did not open while Redis slept"
    );
    assert!(store.stats().errors(BackendErrorKind::Timeout) >= 3);
    sleeping
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("DEBUG SLEEP: {e}"));
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(5), |s| !s
            .fallback_active())
        .await,
        "did not recover after the sleep"
    );
}

/// Fault R2: a frozen server (SIGSTOP) behaves like a blackholed link: connections stay
/// open, nothing answers, new connections complete the handshake in the kernel and then hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own redis-server"]
async fn frozen_server_is_bounded_and_recovers() {
    let server = RedisServer::start();
    let store = connected_store(&server.url(), Duration::from_millis(50)).await;
    let key = unique_key("frozen");
    let q = quota(1000, Duration::from_secs(1), 1000);
    assert!(timed_check(&store, &key, &q).await.allowed);
    server.signal("STOP");
    let opened = check_until(&store, &key, &q, Duration::from_secs(2), |s| {
        s.fallback_active()
    })
    .await;
    // Stay frozen past a failed probe (1 s cool-down, then 2 s) with calls bounded throughout.
    let frozen_until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < frozen_until {
        timed_check(&store, &key, &q).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal("CONT");
    assert!(opened, "breaker did not open while the server was frozen");
    assert!(store.stats().errors(BackendErrorKind::Timeout) >= 3);
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(10), |s| !s
            .fallback_active())
        .await,
        "did not recover after the server resumed"
    );
}

/// Fault R3: `SCRIPT FLUSH` is invisible to callers (EVALSHA reloads on NOSCRIPT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own redis-server"]
async fn script_flush_is_reloaded() {
    let server = RedisServer::start();
    let url = server.url();
    let store = connected_store(&url, Duration::from_millis(50)).await;
    let key = unique_key("flush");
    let q = quota(1, Duration::from_secs(3600), 2);
    assert!(timed_check(&store, &key, &q).await.allowed);
    let mut admin = admin(&url).await;
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(timed_check(&store, &key, &q).await.allowed);
    assert!(!timed_check(&store, &key, &q).await.allowed);
    let stats = store.stats();
    assert_eq!(stats.errors_total(), 0);
    assert_eq!(stats.fallback_decisions, 0);
}

/// Fault R3: out of memory with `noeviction` is treated as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own redis-server"]
async fn out_of_memory_falls_back_and_recovers() {
    let server = RedisServer::start();
    let url = server.url();
    let store = connected_store(&url, Duration::from_millis(50)).await;
    let q = quota(1000, Duration::from_secs(1), 1000);
    let mut admin = admin(&url).await;
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CONFIG SET {name}: {e}"));
    }
    // Every call takes the allowing path, which writes, and writes are what OOM refuses.
    assert!(
        check_until(&store, "oom", &q, Duration::from_secs(2), |s| s
            .fallback_active())
        .await,
        "OOM did not activate the fallback"
    );
    assert!(store.stats().errors(BackendErrorKind::OutOfMemory) >= 3);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async::<()>(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        check_until(&store, "oom", &q, Duration::from_secs(5), |s| !s
            .fallback_active())
        .await,
        "did not recover after maxmemory was lifted"
    );
}

/// Fault R3: a primary demoted to a replica answers `READONLY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts its own redis-server"]
async fn readonly_replica_falls_back_and_recovers() {
    let server = RedisServer::start();
    let url = server.url();
    let store = connected_store(&url, Duration::from_millis(50)).await;
    let key = unique_key("readonly");
    let q = quota(1000, Duration::from_secs(1), 1000);
    assert!(timed_check(&store, &key, &q).await.allowed);
    let mut admin = admin(&url).await;
    // Replica of a port nobody listens on: stays a read-only replica.
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg("1")
        .query_async::<()>(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(2), |s| s
            .fallback_active())
        .await,
        "READONLY did not activate the fallback"
    );
    assert!(store.stats().errors(BackendErrorKind::ReadOnly) >= 3);
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async::<()>(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        check_until(&store, &key, &q, Duration::from_secs(5), |s| !s
            .fallback_active())
        .await,
        "did not recover after promotion"
    );
}

/// Three Cluster primaries on private ports (`redis-cli --cluster create`), killed on drop.
struct RedisCluster {
    nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let nodes: Vec<RedisServer> = (0..3)
            .map(|n| {
                let conf = dir.path().join(format!("nodes-{n}.conf"));
                RedisServer::start_with(vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    "--dir".into(),
                    dir.path().display().to_string(),
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(status.success(), "redis-cli --cluster create failed");
        let give_up = Instant::now() + Duration::from_secs(10);
        for node in &nodes {
            loop {
                let out = Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap_or_else(|e| panic!("redis-cli: {e}"));
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < give_up, "cluster not ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes, _dir: dir }
    }

    fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }
}

/// Scripts run (`EVALSHA` + `EVAL` calls in `INFO commandstats`) over these servers.
async fn scripts_run(urls: &[String]) -> u64 {
    let mut total = 0;
    for url in urls {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut admin(url).await)
            .await
            .unwrap_or_else(|e| panic!("INFO commandstats: {e}"));
        for line in info.lines() {
            let calls = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(":calls="))
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
            };
            total += calls("cmdstat_evalsha")
                .or(calls("cmdstat_eval"))
                .unwrap_or(0);
        }
    }
    total
}

/// The budgets of decision `n` (a network, a list, an address), under `salt`.
fn decision_keys(salt: &str, n: u64) -> [String; 3] {
    let mix = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    [
        format!("it:net:{salt}:{}", mix % 3),
        format!("it:list:{salt}:{}", (mix >> 8) % 2),
        format!("it:addr:{salt}:{}", (mix >> 16) % 5),
    ]
}

/// Quotas whose interval (≥ 1 min) dwarfs the test's run time, so that the real clock of
/// Redis and the frozen clock of the memory store decide alike.
fn decision_quotas() -> [Quota; 3] {
    [
        quota(60, Duration::from_secs(3600), 90),
        quota(30, Duration::from_secs(3600), 80),
        quota(10, Duration::from_secs(3600), 25),
    ]
}

/// The same decisions, `retry_after` aside by the real time Redis saw pass (seconds here).
fn assert_same(redis: &[Decision], memory: &[Decision], what: &str) {
    let allowed = |ds: &[Decision]| ds.iter().map(|d| d.allowed).collect::<Vec<_>>();
    assert_eq!(allowed(redis), allowed(memory), "{what}");
    for (r, m) in redis.iter().zip(memory) {
        assert!(r.retry_after <= m.retry_after, "{what}: {r:?} vs {m:?}");
        assert!(
            m.retry_after - r.retry_after < Duration::from_secs(10),
            "{what}: {r:?} vs {m:?}"
        );
    }
}

/// Multi-budget decisions: the Redis store decides exactly as the memory store, in one round
/// trip each; before (one `check` per budget until a denial) it took one per budget charged.
async fn multi_budget_decisions(url: &str, script_servers: &[String], mode: &str) {
    const DECISIONS: u64 = 300;
    let store = connected_store(url, Duration::from_millis(200)).await;
    let memory = super::MemoryStore::with_clock(10_000, Arc::new(super::ManualClock::new(1)));
    let salt = unique_key(mode);
    let quotas = decision_quotas();
    let mut denied_at = [0usize; 4];
    let before = store.stats();
    let scripts_before = scripts_run(script_servers).await;
    let mut took_all = Duration::ZERO;
    for n in 0..DECISIONS {
        let keys = decision_keys(&salt, n);
        let budgets: Vec<(&str, Quota)> = keys.iter().map(String::as_str).zip(quotas).collect();
        let refunds = store.stats().refunds;
        let started = Instant::now();
        let got = store.check_all(&budgets).await;
        took_all += started.elapsed();
        assert_same(
            &got,
            &memory.check_all(&budgets),
            &format!("decision {n} ({mode})"),
        );
        denied_at[got.iter().position(|d| !d.allowed).unwrap_or(3)] += 1;
        if store.stats().refunds > refunds {
            // Cluster: let the background refund land before the next decision compares.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = store.stats();
    let scripts = scripts_run(script_servers).await - scripts_before;
    assert_eq!(
        after.fallback_decisions, before.fallback_decisions,
        "no fallback"
    );
    assert!(denied_at.iter().all(|&n| n > 0), "{denied_at:?}");
    let round_trips = after.round_trips - before.round_trips;
    assert_eq!(
        round_trips, DECISIONS,
        "one round trip per decision ({mode})"
    );
    let refunds = after.refunds - before.refunds;

    // Before: one call per budget until a denial, on fresh keys.
    let salt = unique_key(mode);
    let memory = super::MemoryStore::with_clock(10_000, Arc::new(super::ManualClock::new(1)));
    let before_seq = store.stats();
    let scripts_before = scripts_run(script_servers).await;
    let started = Instant::now();
    for n in 0..DECISIONS {
        let keys = decision_keys(&salt, n);
        let budgets: Vec<(&str, Quota)> = keys.iter().map(String::as_str).zip(quotas).collect();
        let mut got = Vec::new();
        for (key, q) in &budgets {
            let d = timed_check(&store, key, q).await;
            got.push(d);
            if !d.allowed {
                break;
            }
        }
        assert_same(
            &got,
            &memory.check_all(&budgets),
            &format!("sequential decision {n} ({mode})"),
        );
    }
    let took_seq = started.elapsed();
    let seq_round_trips = store.stats().round_trips - before_seq.round_trips;
    let seq_scripts = scripts_run(script_servers).await - scripts_before;
    eprintln!(
        "round trips per decision ({mode}, {DECISIONS} decisions of 3 budgets, first denial at \
         [net, list, addr, none] = {denied_at:?}): before {:.2} ({seq_scripts} scripts, \
         {:.3} ms/decision), after {:.2} ({scripts} scripts, {refunds} refunds, \
         {:.3} ms/decision)",
        seq_round_trips as f64 / DECISIONS as f64,
        took_seq.as_secs_f64() * 1e3 / DECISIONS as f64,
        round_trips as f64 / DECISIONS as f64,
        took_all.as_secs_f64() * 1e3 / DECISIONS as f64,
    );
    assert_eq!(
        seq_scripts, seq_round_trips,
        "sequential: one script per round trip"
    );
    if mode == "node" {
        assert_eq!(scripts, DECISIONS, "one script per decision on one node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts redis-server"]
async fn multi_budget_decisions_one_node() {
    let server = RedisServer::start();
    multi_budget_decisions(&server.url(), &[server.url()], "node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts three redis-server Cluster nodes and redis-cli"]
async fn multi_budget_decisions_cluster() {
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.nodes.iter().map(RedisServer::url).collect();
    multi_budget_decisions(&cluster.url(), &urls, "cluster").await;
}
