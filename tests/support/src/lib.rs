//! The test harness every integration test in `tests/` shares: a real
//! listwarden milter (`listwarden::milter::run`) on a unix socket or
//! loopback TCP ([`Milter`]), configs and keys for tests, and [`raw`], a
//! milter client that writes exact bytes (broken frames too) and reads
//! every reply with a bound, so a hang fails a test instead of stalling it.
//! Tests that want a well-behaved client use `indymilter-test` against
//! [`Milter::addr`].
//!
//! It is a crate of its own (a dev-dependency of the milter) so that every
//! helper is public API and the dead-code lint still sees the rest.

pub mod raw;

/// Milter frames, shared with the fuzz targets.
#[path = "../../../fuzz/src/frames.rs"]
pub mod frames;

use listwarden::Shared;
use listwarden::config::{Config, Socket};
use listwarden::milter::{Door, MilterListener};
pub use raw::{
    NoReply, REPLY_TIMEOUT, RawConn, SILENCE, finish_news_message_then_refused, has_code,
    hold_news_message, is_550, message_to_eoh, noreply_connect, text,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Two lists, one of them observed; the loopback trusted.
pub const CONFIG: &str = "\
milter:
  listen: inet:127.0.0.1:8890
trusted_networks: [127.0.0.1/32, \"::1/128\"]
lists:
  - address: members@lists.example.org
  - address: quiet@lists.example.org
    observe: true
";

/// One protected list, the loopback trusted, and a small rate-limit table
/// (the memory store allocates its table up front).
pub const FAULTS_CONFIG: &str = "\
milter:
  listen: inet:127.0.0.1:8890
trusted_networks: [127.0.0.1/32]
ratelimit:
  max_keys: 1024
lists:
  - address: members@lists.example.org
";

/// The example key shipped in config/keys/, for tests that sign.
pub const EXAMPLE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config/keys/EXAMPLE-PUBLIC-KEY.key"
);

/// A `signing:` block using the example key, as YAML lines.
pub fn signing_block() -> String {
    format!("signing:\n  keys: [{{id: 1, file: {EXAMPLE_KEY}}}]\n  sign_with: 1\n  demo: true\n")
}

/// Days since the Unix epoch, now.
pub fn today() -> u64 {
    listwarden::policy::day_of(listwarden::unix_now())
}

/// A listwarden milter on a private socket, stopped by [`Milter::stop`].
pub struct Milter {
    pub shared: Arc<Shared>,
    target: Target,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

fn parse(yaml: &str) -> Arc<Shared> {
    let config = Config::parse(yaml, Path::new("test.yaml")).expect("test config is valid");
    Shared::new(config)
}

impl Milter {
    /// On a unix socket in a temp dir.
    pub async fn start(yaml: &str) -> Milter {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("milter.sock");
        let listener = listwarden::daemon::bind(&Socket::Unix(path.clone()), 0o600)
            .await
            .expect("bind a unix socket");
        Milter::run(
            parse(yaml),
            listener,
            Target::Unix(path),
            Some(dir),
            Door::Any,
        )
    }

    /// On loopback TCP (the listener that re-arms TCP_QUICKACK).
    pub async fn start_tcp(yaml: &str) -> Milter {
        Milter::start_shared(parse(yaml)).await
    }

    /// On loopback TCP over prepared shared state (e.g. a manual clock).
    pub async fn start_shared(shared: Arc<Shared>) -> Milter {
        Milter::start_door(shared, Door::Any).await
    }

    /// On loopback TCP, as the socket `door` (`Door::ListServer`: the
    /// list server's socket, `milter.trusted_listen`).
    pub async fn start_door(shared: Arc<Shared>, door: Door) -> Milter {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = l.local_addr().expect("local addr");
        Milter::run(
            shared,
            MilterListener::tcp(l),
            Target::Tcp(addr),
            None,
            door,
        )
    }

    /// The same config parsed for one test (two milters side by side).
    pub fn shared(yaml: &str) -> Arc<Shared> {
        parse(yaml)
    }

    fn run(
        shared: Arc<Shared>,
        listener: MilterListener,
        target: Target,
        dir: Option<tempfile::TempDir>,
        door: Door,
    ) -> Milter {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(listwarden::milter::run_door(
            listener,
            shared.clone(),
            door,
            async {
                let _ = stopped.await;
            },
        ));
        Milter {
            shared,
            target,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The TCP address (milters started with `start_tcp`/`start_shared`).
    pub fn addr(&self) -> SocketAddr {
        match &self.target {
            Target::Tcp(a) => *a,
            Target::Unix(p) => panic!("a unix-socket milter ({}) has no TCP address", p.display()),
        }
    }

    /// A new raw connection, nothing sent yet.
    pub async fn open(&self) -> RawConn {
        match &self.target {
            Target::Unix(p) => RawConn::unix(p).await,
            Target::Tcp(a) => RawConn::tcp(*a).await,
        }
    }

    /// A raw connection past option negotiation and CONNECT from `ip`.
    pub async fn session(&self, ip: &str) -> RawConn {
        RawConn::start_session(self.open().await, ip).await
    }

    /// One sample of `listwarden_messages_total`.
    pub fn messages(&self, verdict: &str, reason: &str) -> u64 {
        self.shared
            .metrics
            .messages
            .with_label_values(&[verdict, reason])
            .get()
    }

    /// Messages that went through the panic guard.
    pub fn internal_errors(&self) -> u64 {
        self.messages("tempfail", "internal_error") + self.messages("accept", "internal_error")
    }

    pub fn connections(&self) -> i64 {
        self.shared.metrics.connections_active.get()
    }

    /// Waits (bounded) until `listwarden_connections_active` is `n`;
    /// sessions end asynchronously after their socket closes.
    pub async fn wait_connections(&self, n: i64) -> bool {
        let until = Instant::now() + REPLY_TIMEOUT;
        while Instant::now() < until {
            if self.connections() == n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.connections() == n
    }

    /// Checks the milter still serves a fresh connection correctly.
    pub async fn still_serves(&self) {
        let mut c = self.session("203.0.113.7").await;
        c.send(&frames::mail(&[b"<members@lists.example.org>"]))
            .await;
        let r = c.reply().await.expect("a reply to MAIL");
        assert!(is_550(&r), "fresh session after a fault: {r:?}");
        c.close().await;
    }

    /// Stops the milter and waits (bounded) for it to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let done = tokio::time::timeout(REPLY_TIMEOUT, t)
                .await
                .expect("milter stops");
            done.expect("milter task").expect("milter run");
        }
    }
}
