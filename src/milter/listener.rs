//! The milter's socket: TCP or unix, with two fixes over a plain listener.
//!
//! * A transient `accept()` error (EMFILE, ENOBUFS, ...) would end
//!   `indymilter::run`; here it is logged and retried after a pause.
//! * Over TCP, every read re-arms TCP_QUICKACK. Postfix sends macro packets
//!   even for stages we do not take, then waits for their ACK before its
//!   next small write (Nagle); with the kernel's delayed ACK that stalls each
//!   message ~40 ms. Acknowledging at once removes the stall.

use indymilter::Listener;
use socket2::SockRef;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Sleep;

/// Pause after a transient accept error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub enum MilterListener {
    Tcp(TcpListener, Backoff),
    Unix(UnixListener, Backoff),
}

/// A pending pause after an accept error.
#[derive(Default)]
pub struct Backoff(Option<Pin<Box<Sleep>>>);

impl MilterListener {
    pub fn tcp(l: TcpListener) -> Self {
        MilterListener::Tcp(l, Backoff::default())
    }

    pub fn unix(l: UnixListener) -> Self {
        MilterListener::Unix(l, Backoff::default())
    }
}

fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM)
    )
}

/// The few errno values we retry on (Linux numbering).
mod libc_errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

fn poll_with_backoff<S>(
    backoff: &mut Backoff,
    cx: &mut Context<'_>,
    mut accept: impl FnMut(&mut Context<'_>) -> Poll<io::Result<S>>,
) -> Poll<io::Result<S>> {
    loop {
        if let Some(sleep) = backoff.0.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            backoff.0 = None;
        }
        match ready!(accept(cx)) {
            Ok(s) => return Poll::Ready(Ok(s)),
            Err(e) if is_transient(&e) => {
                tracing::warn!("accept failed, retrying in {ACCEPT_BACKOFF:?}: {e}");
                backoff.0 = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

impl Listener for MilterListener {
    type Io = MilterStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<MilterStream>> {
        match self {
            MilterListener::Tcp(l, backoff) => poll_with_backoff(backoff, cx, |cx| {
                TcpListener::poll_accept(l, cx).map_ok(|(s, _)| {
                    // Our replies are small and final: never hold them back.
                    let _ = s.set_nodelay(true);
                    MilterStream::Tcp(s)
                })
            }),
            MilterListener::Unix(l, backoff) => poll_with_backoff(backoff, cx, |cx| {
                UnixListener::poll_accept(l, cx).map_ok(|(s, _)| MilterStream::Unix(s))
            }),
        }
    }
}

pub enum MilterStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for MilterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MilterStream::Tcp(s) => {
                let before = buf.filled().len();
                let res = Pin::new(&mut *s).poll_read(cx, buf);
                if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    // The kernel clears QUICKACK on its own; re-arm it per read.
                    let _ = SockRef::from(&*s).set_tcp_quickack(true);
                }
                res
            }
            MilterStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MilterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MilterStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            MilterStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MilterStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            MilterStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MilterStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            MilterStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
