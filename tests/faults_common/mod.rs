//! A raw milter client for the fault tests: it writes exact bytes (broken
//! frames too) to a real listwarden milter (`listwarden::milter::run` on a
//! unix socket or loopback TCP) and reads the replies back, every read
//! bounded by a timeout so a hang fails the test instead of stalling it.
//!
//! Frames are built by `fuzz/src/frames.rs`, shared with the fuzz targets.
#![allow(dead_code)]

#[path = "../../fuzz/src/frames.rs"]
pub mod frames;

use frames::{Reply, parse_replies};
use listwarden::Shared;
use listwarden::config::{Config, Socket};
use listwarden::milter::MilterListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest wait for one reply; an honest reply takes milliseconds.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long "no reply" is waited for, where silence is the expected answer.
pub const SILENCE: Duration = Duration::from_millis(150);

/// A config with one protected list, the loopback trusted, and a small
/// rate-limit table (the memory store allocates its table up front).
pub const CONFIG: &str = "\
milter:
  listen: inet:127.0.0.1:8890
trusted_networks: [127.0.0.1/32]
ratelimit:
  max_keys: 1024
lists:
  - address: members@lists.example.org
";

/// A listwarden milter on a private socket.
pub struct RawMilter {
    pub shared: Arc<Shared>,
    target: Target,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl RawMilter {
    /// Starts `listwarden::milter::run` on a unix socket in a temp dir.
    pub async fn start(yaml: &str) -> RawMilter {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("milter.sock");
        let listener = listwarden::daemon::bind(&Socket::Unix(path.clone()), 0o600)
            .await
            .unwrap();
        RawMilter::start_on(yaml, listener, Target::Unix(path), dir)
    }

    /// The same on loopback TCP (the listener that re-arms TCP_QUICKACK).
    pub async fn start_tcp(yaml: &str) -> RawMilter {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        RawMilter::start_on(yaml, MilterListener::tcp(l), Target::Tcp(addr), dir)
    }

    fn start_on(
        yaml: &str,
        listener: MilterListener,
        target: Target,
        dir: tempfile::TempDir,
    ) -> RawMilter {
        let config = Config::parse(yaml, Path::new("faults.yaml")).expect("test config is valid");
        let shared = Shared::new(config);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(listwarden::milter::run(listener, shared.clone(), async {
            let _ = stopped.await;
        }));
        RawMilter {
            shared,
            target,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A new connection, nothing sent yet.
    pub async fn open(&self) -> RawConn {
        let (rd, wr): (
            Box<dyn AsyncRead + Unpin + Send>,
            Box<dyn AsyncWrite + Unpin + Send>,
        ) = match &self.target {
            Target::Unix(p) => {
                let (r, w) = tokio::net::UnixStream::connect(p)
                    .await
                    .unwrap()
                    .into_split();
                (Box::new(r), Box::new(w))
            }
            Target::Tcp(a) => return RawConn::tcp(*a).await,
        };
        RawConn {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
        }
    }

    /// A connection past option negotiation and CONNECT from `ip`.
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

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(REPLY_TIMEOUT, t)
                .await
                .expect("milter stops");
        }
    }
}

/// Why no reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    /// The milter closed the connection.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

/// One raw connection to the milter.
pub struct RawConn {
    rd: Box<dyn AsyncRead + Unpin + Send>,
    wr: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    buf: Vec<u8>,
}

impl RawConn {
    /// A new TCP connection to a milter at `addr` (another process).
    pub async fn tcp(addr: std::net::SocketAddr) -> RawConn {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        RawConn {
            rd: Box::new(r),
            wr: Some(Box::new(w)),
            buf: Vec::new(),
        }
    }

    /// Negotiation and CONNECT from `ip` on a fresh connection.
    pub async fn start_session(mut c: RawConn, ip: &str) -> RawConn {
        c.send(&frames::session_start(ip)).await;
        assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'O'), "negotiation");
        assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'), "connect");
        c
    }

    /// Writes bytes; a write error (the milter closed) is ignored, the
    /// next read reports it.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Some(wr) = self.wr.as_mut()
            && (wr.write_all(bytes).await.is_err() || wr.flush().await.is_err())
        {
            self.wr = None;
        }
    }

    /// The next reply frame, waiting at most [`REPLY_TIMEOUT`].
    pub async fn reply(&mut self) -> Result<Reply, NoReply> {
        self.reply_within(REPLY_TIMEOUT).await
    }

    pub async fn reply_within(&mut self, limit: Duration) -> Result<Reply, NoReply> {
        read_reply(&mut self.rd, &mut self.buf, limit).await
    }

    /// Writes `bytes` while reading `count` replies (a client that
    /// pipelines, as a fast non-Postfix client would).
    pub async fn pipeline(&mut self, bytes: &[u8], count: usize) -> Result<Vec<Reply>, NoReply> {
        let Some(wr) = self.wr.as_mut() else {
            return Err(NoReply::Closed);
        };
        let (rd, buf) = (&mut self.rd, &mut self.buf);
        let writer = async {
            let _ = wr.write_all(bytes).await;
            let _ = wr.flush().await;
        };
        let reader = async {
            let mut out = Vec::with_capacity(count);
            while out.len() < count {
                out.push(read_reply(rd, buf, REPLY_TIMEOUT).await?);
            }
            Ok(out)
        };
        let ((), out) = tokio::join!(writer, reader);
        out
    }

    /// One message up to end of headers ([`message_to_eoh`]): the
    /// replies to MAIL, RCPT and end of headers.
    pub async fn send_to_eoh(
        &mut self,
        sender: &str,
        rcpt: &str,
        headers: &[(&[u8], &[u8])],
    ) -> Vec<Reply> {
        self.pipeline(&message_to_eoh(sender, rcpt, headers), 3)
            .await
            .unwrap()
    }

    /// Replies up to and including the next final one (a verdict or
    /// continue): end-of-message actions come before it.
    pub async fn final_reply(&mut self) -> Result<(Vec<Reply>, Reply), NoReply> {
        let mut actions = Vec::new();
        loop {
            let r = self.reply().await?;
            if r.is_final() {
                return Ok((actions, r));
            }
            actions.push(r);
        }
    }

    /// True when nothing arrives for [`SILENCE`] (and the socket is open).
    pub async fn is_silent(&mut self) -> bool {
        self.reply_within(SILENCE).await == Err(NoReply::Timeout)
    }

    /// True when the milter closes the connection within the timeout
    /// (replies sent before the close are skipped).
    pub async fn closes(&mut self) -> bool {
        loop {
            match self.reply().await {
                Ok(_) => continue,
                Err(e) => return e == NoReply::Closed,
            }
        }
    }

    /// Half-closes: the milter reads EOF, we can still read.
    pub async fn shutdown_write(&mut self) {
        if let Some(mut wr) = self.wr.take() {
            let _ = wr.shutdown().await;
        }
    }

    /// Sends QUIT and drops the connection.
    pub async fn close(mut self) {
        self.send(&frames::quit()).await;
        self.shutdown_write().await;
    }

    /// Everything the milter sends until it closes (after our half-close).
    pub async fn drain(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Ok(r) = self.reply().await {
            out.push(r);
        }
        out
    }
}

/// Reads one reply frame from `rd`, keeping surplus bytes in `buf`.
async fn read_reply(
    rd: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<Reply, NoReply> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let (replies, _) = parse_replies(buf);
        if let Some(first) = replies.into_iter().next() {
            buf.drain(..5 + first.payload.len());
            return Ok(first);
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, rd.read(&mut chunk)).await {
            Err(_) => return Err(NoReply::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(NoReply::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A `y` reply (a custom SMTP reply) with a 550.
pub fn is_550(r: &Reply) -> bool {
    r.cmd == b'y' && r.payload.starts_with(b"550 ")
}

/// A `y` reply starting with `code`.
pub fn has_code(r: &Reply, code: &str) -> bool {
    r.cmd == b'y' && r.payload.starts_with(code.as_bytes())
}

/// The SMTP text of a `y` reply.
pub fn text(r: &Reply) -> String {
    String::from_utf8_lossy(r.payload.strip_suffix(&[0]).unwrap_or(&r.payload)).into_owned()
}

/// Builds the frames of one inbound message up to end of headers.
pub fn message_to_eoh(sender: &str, rcpt: &str, headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = frames::mail(&[sender.as_bytes()]);
    out.extend(frames::rcpt(&[rcpt.as_bytes()]));
    for (n, v) in headers {
        out.extend(frames::header(n, v));
    }
    out.extend(frames::eoh());
    out
}

/// C2: a session that holds a message past MAIL with a `From:` that only
/// the reloaded config protects (news@lists.example.org).
pub async fn hold_news_message(mut c: RawConn) -> RawConn {
    c.send(&frames::mail(&[b"<alice@example.net>"])).await;
    c.send(&frames::rcpt(&[b"<bob@example.com>"])).await;
    c.send(&frames::header(b"From", b"news@lists.example.org"))
        .await;
    assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'));
    assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'));
    c
}

/// C2, after the reload: the held message ends on the old config
/// (accepted), the next one on the same connection gets the new one (550).
pub async fn finish_news_message_then_refused(mut c: RawConn) {
    c.send(&frames::eoh()).await;
    assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'a'));
    let r = c
        .send_to_eoh(
            "<alice@example.net>",
            "<bob@example.com>",
            &[(b"From", b"news@lists.example.org")],
        )
        .await;
    assert!(is_550(&r[2]), "{r:?}");
    c.close().await;
}
