//! One real listwarden milter session driven by raw bytes.
//!
//! The session is the production one: `listwarden::milter::callbacks` run
//! by `indymilter::run` (which is what `listwarden::milter::run` does, minus
//! the socket; `run` takes only a TCP or unix listener). The listener here
//! hands out one prepared stream, so the same driver works over an
//! in-memory duplex (fast, for the fuzzer) and over a real socket pair (for
//! the stable replay test).
//!
//! The input's first two bytes choose how the rest is cut into writes, so
//! the fuzzer also explores frames split at arbitrary byte boundaries.

use crate::frames::{Reply, parse_replies};
use listwarden::Shared;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A listener that yields one stream, then nothing (pending for ever; the
/// milter is stopped through its shutdown future).
pub struct OneStream<S>(pub Option<S>);

impl<S> indymilter::Listener for OneStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = S;

    fn poll_accept(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<S>> {
        match self.0.take() {
            Some(s) => Poll::Ready(Ok(s)),
            None => Poll::Pending,
        }
    }
}

/// The config the fuzz target and the replay test run: small limits (so
/// the caps are reached), signing, trace mode, budgets, shield, an observed
/// list; `key` is the path of a key file. `max_keys` is small because the
/// memory store allocates its table up front and the fuzzer builds a fresh
/// one per input.
pub fn fuzz_config_yaml(key: &str) -> String {
    format!(
        "milter:\n  listen: inet:127.0.0.1:1\n  max_connections: 4\n\
         trusted_networks: [127.0.0.1/32]\n\
         limits:\n  max_recipients: 20\n  max_header_bytes: 4096\n  max_body_bytes: 8192\n\
         signing:\n  keys: [{{id: 1, file: {key}}}]\n  sign_with: 1\n  demo: true\n\
         trace:\n  received_by: [lists.example.org]\n  message_id_domains: [lists.example.org]\n\
         ratelimit:\n  max_keys: 1024\n  budgets:\n    network: {{rate: 5, per: 1h, burst: 5}}\n    list_invalid: {{rate: 3, per: 1h, burst: 3}}\n\
         shield:\n  trigger: 4\n  within: 10m\n  hold: 1h\n\
         lists:\n  - address: members@lists.example.org\n  - address: legacy@lists.example.org\n    bounces: trace\n\
         \x20 - address: quiet@lists.example.org\n    observe: true\n"
    )
}

/// How the input is cut into writes: `(plan, payload)`. Byte 0 is the
/// largest chunk (0 = everything in one write), byte 1 seeds the sizes.
pub fn split_plan(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let (max, seed, payload) = match data {
        [] => (0, 0, data),
        [m] => (*m, 0, &data[1..]),
        [m, s, rest @ ..] => (*m, *s, rest),
    };
    if max == 0 || payload.is_empty() {
        return (vec![payload.len()], payload);
    }
    let mut state = u32::from(seed) | 0x9e37_0000;
    let mut plan = Vec::new();
    let mut left = payload.len();
    while left > 0 {
        // xorshift32: cheap, deterministic, good enough to vary sizes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state as usize % usize::from(max)) + 1;
        let size = size.min(left);
        plan.push(size);
        left -= size;
    }
    (plan, payload)
}

/// indymilter settings for one connection that may last `bound`.
fn one_connection(bound: Duration) -> indymilter::Config {
    indymilter::Config {
        max_connections: 1,
        connection_timeout: bound,
        ..Default::default()
    }
}

/// What one session produced.
#[derive(Debug)]
pub struct Outcome {
    /// Complete reply frames, in order.
    pub replies: Vec<Reply>,
    /// Bytes of an incomplete reply frame at the end (must be 0).
    pub trailing: usize,
    /// Messages that hit listwarden's panic guard (`reason="internal_error"`).
    pub internal_errors: u64,
    /// `listwarden_connections_active` after the milter stopped.
    pub connections_after: i64,
}

/// The session did not end within the bound.
#[derive(Debug)]
pub struct Hang;

/// Writes `payload` in the chunks of `plan` to a real listwarden session
/// (over `client`/`server`, two ends of one stream), closes the write side,
/// reads every reply until the milter closes, then stops the milter.
/// `bound` limits the whole exchange.
pub async fn run_session<C, S>(
    shared: Arc<Shared>,
    client: C,
    server: S,
    plan: &[usize],
    payload: &[u8],
    bound: Duration,
) -> Result<Outcome, Hang>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = one_connection(bound);
    let milter = indymilter::run(
        OneStream(Some(server)),
        listwarden::milter::callbacks(shared.clone()),
        config,
        async {
            let _ = stop_rx.await;
        },
    );
    let client_side = async move {
        let (mut rd, mut wr) = tokio::io::split(client);
        let writer = async {
            let mut rest = payload;
            for &size in plan {
                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                rest = tail;
                if wr.write_all(chunk).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
                // Let the milter read this chunk on its own.
                tokio::task::yield_now().await;
            }
            let _ = wr.shutdown().await;
        };
        let reader = async {
            let mut buf = Vec::new();
            let _ = rd.read_to_end(&mut buf).await;
            buf
        };
        let ((), buf) = tokio::join!(writer, reader);
        let _ = stop_tx.send(());
        buf
    };
    let both = async { tokio::join!(milter, client_side) };
    let (_, buf) = tokio::time::timeout(bound, both).await.map_err(|_| Hang)?;
    Ok(outcome(&shared, &buf))
}

/// An in-memory stream that hands the milter its input in the chunks of a
/// plan (one chunk per read at most, so every cut is seen), then end of
/// file, and keeps what the milter writes. Cheaper per input than a duplex
/// with a writer task: no task switch per chunk, which is what the fuzzer
/// spent most of its time on.
pub struct ScriptedStream {
    input: Vec<u8>,
    plan: Vec<usize>,
    /// Index into `plan` and offset into `input`.
    chunk: usize,
    pos: usize,
    /// Bytes of the current chunk already read.
    taken: usize,
    output: Arc<Mutex<Vec<u8>>>,
    /// Fires when the milter drops the stream (the connection has ended).
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AsyncRead for ScriptedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(&size) = this.plan.get(this.chunk) else {
            return Poll::Ready(Ok(()));
        };
        let left_in_chunk = size.saturating_sub(this.taken);
        let end = (this.pos + left_in_chunk.min(buf.remaining())).min(this.input.len());
        buf.put_slice(&this.input[this.pos..end]);
        this.taken += end - this.pos;
        this.pos = end;
        if this.taken >= size || this.pos >= this.input.len() {
            this.chunk += 1;
            this.taken = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.output.lock() {
            Ok(mut out) => out.extend_from_slice(buf),
            Err(_) => return Poll::Ready(Err(io::Error::other("output lock poisoned"))),
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for ScriptedStream {
    fn drop(&mut self) {
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

/// Like [`run_session`], over a [`ScriptedStream`]: the fuzzer's fast path.
/// The milter reads `payload` cut as `plan` says, then end of file.
pub async fn run_scripted(
    shared: Arc<Shared>,
    plan: &[usize],
    payload: &[u8],
    bound: Duration,
) -> Result<Outcome, Hang> {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let output = Arc::new(Mutex::new(Vec::new()));
    let stream = ScriptedStream {
        input: payload.to_vec(),
        plan: plan.to_vec(),
        chunk: 0,
        pos: 0,
        taken: 0,
        output: output.clone(),
        closed: Some(closed_tx),
    };
    let config = one_connection(bound);
    let milter = indymilter::run(
        OneStream(Some(stream)),
        listwarden::milter::callbacks(shared.clone()),
        config,
        async {
            let _ = closed_rx.await;
        },
    );
    tokio::time::timeout(bound, milter)
        .await
        .map_err(|_| Hang)?
        .map_err(|_| Hang)?;
    let buf = std::mem::take(&mut *output.lock().map_err(|_| Hang)?);
    Ok(outcome(&shared, &buf))
}

/// Reads the replies and the counters after a session.
fn outcome(shared: &Shared, buf: &[u8]) -> Outcome {
    let (replies, trailing) = parse_replies(buf);
    let m = &shared.metrics.messages;
    let internal_errors = m.with_label_values(&["tempfail", "internal_error"]).get()
        + m.with_label_values(&["accept", "internal_error"]).get();
    Outcome {
        trailing: trailing.len(),
        replies,
        internal_errors,
        connections_after: shared.metrics.connections_active.get(),
    }
}

/// Checks what the milter sent: every reply well formed, every SMTP reply
/// code printable and `%`-safe, no CR/LF in anything we add to a message.
/// Returns the first problem found.
pub fn check_replies(replies: &[Reply]) -> Result<(), String> {
    for r in replies {
        match r.cmd {
            b'y' => check_reply_code(&r.payload)?,
            b'h' | b'm' | b'i' | b'e' | b'+' | b'-' | b'q' => {
                for part in r.strings() {
                    if part.iter().any(|b| *b == b'\r' || *b == b'\n') {
                        return Err(format!(
                            "{} action carries CR/LF: {:?}",
                            r.cmd as char,
                            String::from_utf8_lossy(part)
                        ));
                    }
                }
            }
            b'O' | b'a' | b'c' | b'r' | b't' | b's' | b'd' | b'p' => {}
            other => return Err(format!("unknown reply command {other:#04x}")),
        }
    }
    Ok(())
}

/// `DDD D.D.D text\0`: code and status of one class, printable ASCII,
/// every `%` doubled (Postfix reads a single `%` as a format character).
fn check_reply_code(payload: &[u8]) -> Result<(), String> {
    let text = payload.strip_suffix(&[0]).ok_or("reply code without NUL")?;
    let shown = || String::from_utf8_lossy(text).into_owned();
    if text.len() > 1000 || !text.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Err(format!(
            "reply text not printable ASCII or too long: {}",
            shown()
        ));
    }
    let class = text.first().copied();
    let status_class = text.get(4).copied();
    if !matches!(class, Some(b'4' | b'5')) || class != status_class {
        return Err(format!("reply code and status disagree: {}", shown()));
    }
    let mut run = 0;
    for &b in text.iter().chain(std::iter::once(&b' ')) {
        if b == b'%' {
            run += 1;
        } else {
            if run % 2 == 1 {
                return Err(format!("single % in reply: {}", shown()));
            }
            run = 0;
        }
    }
    Ok(())
}
