//! The idle limits hyper leaves to the server: a new connection that sends
//! nothing (or a few bytes of the HTTP/2 preface, then nothing), a request
//! body that stops arriving, and an HTTP/2 connection with no request in
//! progress. Without them each such client holds one of the
//! `max_connections` slots for as long as it likes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, sleep_until, Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// hyper-util tells HTTP/1 from HTTP/2 by these first bytes, with no timer
/// while it waits for them; hyper's own head timer starts only after.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// === impl FirstBytes ===

/// A client connection whose protocol must be known within a deadline:
/// reads fail with `TimedOut` while the bytes so far are still a prefix of
/// the HTTP/2 preface when it passes.
pub(crate) struct FirstBytes<I> {
    io: I,
    /// `None` once the protocol is known.
    deadline: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl<I> FirstBytes<I> {
    pub(crate) fn new(io: I, within: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(sleep(within))),
            read: 0,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = this.deadline.as_mut() {
            let fresh = &buf.filled()[before..];
            let at = this.read;
            let n = fresh.len().min(H2_PREFACE.len() - at);
            this.read += fresh.len();
            if this.read >= H2_PREFACE.len() || fresh[..n] != H2_PREFACE[at..at + n] {
                // Decided: hyper's header timer or HTTP/2 pings take over.
                this.deadline = None;
            } else if polled.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the idle timeout",
                )));
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// === impl IdleBody ===

/// A request body that fails when no data arrives for `idle`; the relay
/// then answers 400 and hyper closes the connection.
pub(crate) struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs from the last frame.
    armed: bool,
}

impl<B> IdleBody<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.idle;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if !this.armed {
            timer.as_mut().reset(deadline);
            this.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(format!(
            "no request body data for {:?}",
            this.idle
        )
        .into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Activity ===

/// A connection's requests in progress, and since when it has had none:
/// hyper closes an idle HTTP/1 connection by its head timer, but keeps an
/// HTTP/2 connection whose client answers pings open forever, holding one
/// of the `max_connections` slots.
pub(crate) struct Activity {
    open: AtomicUsize,
    /// Milliseconds from `start` to the end of the last request.
    idle_since_ms: AtomicU64,
    start: Instant,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// How long the connection has had no request in progress; `None`
    /// while it has one.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.start.elapsed().saturating_sub(since))
    }

    /// Counts a request in progress until the returned value is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InProgress {
        self.open.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }
}

/// One request in progress, until its response body ends or is dropped.
pub(crate) struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let now = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}
