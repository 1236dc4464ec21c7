//! The milter's socket: TCP or unix, with two fixes over a plain listener.
//!
//! * A transient `accept()` error (EMFILE, ENOBUFS, ...) would end
//!   `indymilter::run`; here it is logged and retried after a pause.
//! * Over TCP, every read re-arms TCP_QUICKACK. Postfix sends macro packets
//!   even for stages we do not take, then waits for their ACK before its
//!   next small write (Nagle); with the kernel's delayed ACK that stalls each
//!   message ~40 ms. Acknowledging at once removes the stall.
//! * A connection that has not negotiated within its deadline is closed:
//!   otherwise idle connections could hold every slot (indymilter's own
//!   timeout is per command, and generous for good reason).

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

pub struct MilterListener {
    inner: Inner,
    backoff: Backoff,
    /// Time a new connection has to send its option negotiation.
    negotiate_timeout: Duration,
}

enum Inner {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A pending pause after an accept error.
#[derive(Default)]
pub struct Backoff(Option<Pin<Box<Sleep>>>);

impl MilterListener {
    pub fn tcp(l: TcpListener) -> Self {
        Self::new(Inner::Tcp(l))
    }

    pub fn unix(l: UnixListener) -> Self {
        Self::new(Inner::Unix(l))
    }

    fn new(inner: Inner) -> Self {
        MilterListener {
            inner,
            backoff: Backoff::default(),
            negotiate_timeout: crate::config::defaults::DEFAULT_NEGOTIATE_TIMEOUT,
        }
    }

    /// Sets how long a new connection has to negotiate.
    pub(crate) fn set_negotiate_timeout(&mut self, timeout: Duration) {
        self.negotiate_timeout = timeout;
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
    pub(crate) const ENOMEM: i32 = 12;
    pub(crate) const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub(crate) const ENOBUFS: i32 = 105;
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
        let deadline = self.negotiate_timeout;
        let io = match &mut self.inner {
            Inner::Tcp(l) => ready!(poll_with_backoff(&mut self.backoff, cx, |cx| {
                TcpListener::poll_accept(l, cx).map_ok(|(s, _)| {
                    // Our replies are small and final: never hold them back.
                    let _ = s.set_nodelay(true);
                    Io::Tcp(s)
                })
            })),
            Inner::Unix(l) => ready!(poll_with_backoff(&mut self.backoff, cx, |cx| {
                UnixListener::poll_accept(l, cx).map_ok(|(s, _)| Io::Unix(s))
            })),
        }?;
        Poll::Ready(Ok(MilterStream {
            io,
            negotiate_by: Some(Box::pin(tokio::time::sleep(deadline))),
        }))
    }
}

pub struct MilterStream {
    io: Io,
    /// Until our first reply (to the option negotiation) is written.
    negotiate_by: Option<Pin<Box<Sleep>>>,
}

enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for MilterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.negotiate_by.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no option negotiation in time",
            )));
        }
        match &mut this.io {
            Io::Tcp(s) => {
                let before = buf.filled().len();
                let res = Pin::new(&mut *s).poll_read(cx, buf);
                if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    // The kernel clears QUICKACK on its own; re-arm it per read.
                    let _ = SockRef::from(&*s).set_tcp_quickack(true);
                }
                res
            }
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MilterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = match &mut this.io {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
        };
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            // The peer negotiated: from now on indymilter's timeout applies.
            this.negotiate_by = None;
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
