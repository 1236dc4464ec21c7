//! FAULTS.md X4: the real binary out of file descriptors. With its limit
//! at 64, a crowd of idle connections uses every descriptor; listwarden
//! must stay up, stop taking connections (Postfix then applies its
//! milter_default_action to the ones it cannot open), and serve normally
//! once descriptors are free again. (OOM under a cgroup limit is left to
//! systemd's MemoryMax and not tested here: TESTING.md.)

use indymilter_test::{Status, TestConnection};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Descriptors the child may hold.
const FD_LIMIT: u32 = 64;
/// Idle connections opened: well past the limit.
const CROWD: usize = 150;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x4_out_of_descriptors_it_stays_up_refuses_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (milter_port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("listwarden.yaml");
    std::fs::write(
        &config,
        format!(
            "milter:\n  listen: inet:127.0.0.1:{milter_port}\n  max_connections: 1000\n\
             metrics:\n  listen: 127.0.0.1:{metrics_port}\n\
             lists:\n  - address: members@lists.example.org\n"
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("bash")
        .args([
            "-c",
            &format!("ulimit -n {FD_LIMIT} && exec \"$0\" run --config \"$1\""),
            env!("CARGO_BIN_EXE_listwarden"),
        ])
        .arg(&config)
        .env("LISTWARDEN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let addr: SocketAddr = format!("127.0.0.1:{milter_port}").parse().unwrap();
    wait_until("milter port open", Duration::from_secs(20), || {
        TcpStream::connect(addr).is_ok()
    });
    assert!(forged_sender_is_rejected(addr).await, "works before the crowd");

    // The crowd: the kernel completes every handshake (listen backlog);
    // listwarden accepts until its descriptors run out.
    let crowd: Vec<TcpStream> = (0..CROWD)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let read_log = || {
        let mut s = String::new();
        let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    wait_until("EMFILE logged", Duration::from_secs(10), || {
        read_log().contains("Too many open files")
    });
    assert!(daemon.0.try_wait().unwrap().is_none(), "listwarden died");
    // A newcomer is not served while descriptors are out: Postfix would
    // time out connecting and apply milter_default_action (tempfail).
    let starved = tokio::time::timeout(Duration::from_secs(2), forged_sender_is_rejected(addr)).await;
    assert!(starved.is_err(), "a conversation was served with no descriptor free");

    // Descriptors free again: service resumes by itself.
    drop(crowd);
    let started = Instant::now();
    let mut recovered = false;
    while started.elapsed() < Duration::from_secs(15) {
        if let Ok(true) =
            tokio::time::timeout(Duration::from_secs(2), forged_sender_is_rejected(addr)).await
        {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "no recovery; log:\n{}", read_log());
    assert!(daemon.0.try_wait().unwrap().is_none(), "listwarden died");
    // It served the crowd's sessions and ended each one (no leak): after
    // a short settle, /metrics reports no connection but ours at most.
    let body = {
        let mut last = String::new();
        for _ in 0..40 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", metrics_port)) {
                use std::io::Write;
                let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
                last.clear();
                let _ = s.read_to_string(&mut last);
                if last.contains("listwarden_connections_active 0") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    };
    assert!(
        body.contains("listwarden_connections_active 0"),
        "connections still counted:\n{body}"
    );
}
