//! Faults (TESTING.md) against the real binary, as a separate process: X4 (out of
//! file descriptors) and C2 (a valid reload by SIGHUP under 1,000
//! in-flight sessions). OOM under a cgroup limit is left to systemd's
//! MemoryMax and not tested here (TESTING.md).

use listwarden_test_support as support;

use indymilter_test::{Status, TestConnection};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{RawConn, finish_news_message_then_refused, hold_news_message};

const LISTS: &str = "lists:\n  - address: members@lists.example.org\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn yaml(milter: SocketAddr, metrics_port: u16, extra: &str, lists: &str) -> String {
    format!(
        "milter:\n  listen: inet:{milter}\n{extra}metrics:\n  listen: 127.0.0.1:{metrics_port}\n{lists}"
    )
}

/// `listwarden run` in a temp dir, with its descriptors limited; killed
/// when dropped, however the test ends.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    milter: SocketAddr,
    metrics_port: u16,
}

impl Daemon {
    /// `extra` is appended to the `milter:` section, `lists` after it.
    fn start(fd_limit: u32, extra: &str, lists: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let milter: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_port = free_port();
        let config = dir.path().join("listwarden.yaml");
        std::fs::write(&config, yaml(milter, metrics_port, extra, lists)).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new("bash")
            .args([
                "-c",
                &format!("ulimit -n {fd_limit} && exec \"$0\" run --config \"$1\""),
                env!("CARGO_BIN_EXE_listwarden"),
            ])
            .arg(&config)
            .env("LISTWARDEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            dir,
            milter,
            metrics_port,
        };
        wait_until("milter port open", Duration::from_secs(20), || {
            TcpStream::connect(milter).is_ok()
        });
        assert!(d.alive());
        d
    }

    /// Writes a new config (same ports).
    fn rewrite(&self, extra: &str, lists: &str) {
        let text = yaml(self.milter, self.metrics_port, extra, lists);
        std::fs::write(self.config(), text).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("listwarden.yaml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.log_path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The /metrics text, or "" while the endpoint cannot answer.
    fn metrics(&self) -> String {
        let mut body = String::new();
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics_port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut body);
        }
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A full milter conversation: a stranger sending as the list is refused.
async fn forged_sender_is_rejected(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TestConnection::open(addr).await else {
        return false;
    };
    if conn
        .connect("c.example", ([203, 0, 113, 7], 4000))
        .await
        .is_err()
    {
        return false;
    }
    let status = conn.mail(["<members@lists.example.org>"]).await;
    let _ = conn.close().await;
    matches!(status, Ok(Status::Reject { .. }))
}

// ---------------------------------------------------------------- X4

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x4_out_of_descriptors_it_stays_up_refuses_and_recovers() {
    // 64 descriptors, 150 idle connections: well past the limit.
    let mut d = Daemon::start(64, "  max_connections: 1000\n", LISTS);
    assert!(
        forged_sender_is_rejected(d.milter).await,
        "works before the crowd"
    );

    // The kernel completes every handshake (listen backlog); listwarden
    // accepts until its descriptors run out.
    let crowd: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(d.milter).unwrap())
        .collect();
    wait_until("EMFILE logged", Duration::from_secs(10), || {
        d.log().contains("Too many open files")
    });
    assert!(d.alive(), "listwarden died");
    // A newcomer is not served while descriptors are out: Postfix would
    // time out connecting and apply milter_default_action (tempfail).
    let starved =
        tokio::time::timeout(Duration::from_secs(2), forged_sender_is_rejected(d.milter)).await;
    assert!(starved.is_err(), "served with no descriptor free");

    // Descriptors free again: service resumes by itself.
    drop(crowd);
    let started = Instant::now();
    let mut recovered = false;
    while !recovered && started.elapsed() < Duration::from_secs(15) {
        recovered = matches!(
            tokio::time::timeout(Duration::from_secs(2), forged_sender_is_rejected(d.milter)).await,
            Ok(true)
        );
    }
    assert!(recovered, "no recovery; log:\n{}", d.log());
    assert!(d.alive(), "listwarden died");
    // Every session of the crowd was ended (none leaked).
    wait_until("connections back to 0", Duration::from_secs(5), || {
        d.metrics().contains("listwarden_connections_active 0")
    });
}

// ---------------------------------------------------------------- C2

/// 1,000 sessions hold a message past MAIL with a From: that only the new
/// config protects; a valid config is written and SIGHUP sent. The swap
/// is immediate (no drain wait), the messages in flight finish on the old
/// config, and their next messages get the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_sighup_under_a_thousand_inflight_sessions_swaps_at_once() {
    const SESSIONS: usize = 1000;
    let extra = "  max_connections: 1200\n";
    let mut d = Daemon::start(4096, extra, LISTS);
    let mut inflight: Vec<RawConn> = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let c = RawConn::start_session(RawConn::tcp(d.milter).await, "203.0.113.7").await;
        let c = hold_news_message(c).await;
        inflight.push(c);
    }
    assert!(
        d.metrics()
            .contains(&format!("listwarden_connections_active {SESSIONS}"))
    );

    let news = format!("{LISTS}  - address: news@lists.example.org\n");
    d.rewrite(extra, &news);
    let started = Instant::now();
    let pid = d.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until("reload counted", Duration::from_secs(2), || {
        d.metrics()
            .contains("listwarden_config_reloads_total{result=\"success\"} 1")
    });
    let swap = started.elapsed();

    // In flight: the old config (news@ is nobody), then the new one.
    for c in inflight {
        finish_news_message_then_refused(c).await;
    }
    assert!(d.alive());
    eprintln!("SIGHUP to reload counted with {SESSIONS} sessions in flight: {swap:?}");
    assert!(swap < Duration::from_secs(1), "{swap:?}");
}
