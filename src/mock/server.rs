//! Accepting connections and serving each in its own task.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::handler::handle;
use super::state::{ConnectionTally, Shared};

/// Accepts until the task is aborted (when the mock is dropped).
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // Small SSE frames should leave at once, not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_connection(tcp, shared.clone()));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::debug!(%error, "mock upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 or h2c on one connection until it ends or the mock is
/// dropped (then the connection is simply closed).
async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>) {
    let _tally = ConnectionTally::open(&shared);
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableStream {
        tcp,
        reset: reset.clone(),
    });
    let for_service = shared.clone();
    let service = service_fn(move |request| handle(for_service.clone(), reset.clone(), request));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "mock upstream: connection ended with an error");
            }
        }
        () = shared.shut_down() => {}
    }
}

/// A TCP stream that closes with a reset (RST, no FIN) once `reset` is
/// set, so a client sees "connection reset", not a polite close.
struct ResettableStream {
    tcp: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ResettableStream {
    fn resetting(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.resetting() {
            // Zero linger makes close() send RST and drop unsent data.
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.resetting() {
            // A FIN now would let the client see a clean close first.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
