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
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut server = Self { port, child: None };
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
