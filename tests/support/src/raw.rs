//! A raw milter client: exact bytes out, every reply read with a bound.

use crate::frames::{self, Reply, parse_replies};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest wait for one reply; an honest reply takes milliseconds.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long "no reply" is waited for, where silence is the expected answer.
pub const SILENCE: Duration = Duration::from_millis(150);

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
    /// A new connection to a milter on a unix socket.
    pub async fn unix(path: &Path) -> RawConn {
        let (r, w) = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect to the milter socket")
            .into_split();
        RawConn {
            rd: Box::new(r),
            wr: Some(Box::new(w)),
            buf: Vec::new(),
        }
    }

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

    /// Negotiation and CONNECT from `ip` on a fresh connection. CONNECT
    /// is answered only when the milter did not ask for NOREPLY_CONNECT.
    pub async fn start_session(mut c: RawConn, ip: &str) -> RawConn {
        c.send(&frames::session_start(ip)).await;
        let neg = c.reply().await.expect("negotiation");
        assert_eq!(neg.cmd, b'O', "negotiation");
        if !noreply_connect(&neg) {
            assert_eq!(c.reply().await.map(|r| r.cmd), Ok(b'c'), "connect");
        }
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
/// Whether a negotiation reply asks Postfix not to wait for connect's
/// reply (SMFIP_NR_CONN in its protocol flags).
pub fn noreply_connect(neg: &Reply) -> bool {
    neg.payload
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .is_some_and(|b| u32::from_be_bytes(b) & NR_CONN != 0)
}

/// SMFIP_NR_CONN.
pub const NR_CONN: u32 = 0x1000;

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
