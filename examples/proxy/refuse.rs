//! The answer to a connection past `max_connections`: its first request
//! gets "overloaded, retry shortly" in its API's format (Anthropic 529,
//! OpenAI 503, with `retry-after`), then the connection closes. A client
//! learns why it was turned away and when to come back, instead of seeing
//! a connection reset it may take for a network fault.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tower_llm_relay::{ApiFormat, RelayError};

/// How long a refused connection may take to send its request and read
/// the answer.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Refusals answered at once; past this (a connection flood) the
/// connections are closed unanswered, so refusing costs bounded memory.
const MAX_ANSWERING: usize = 256;

/// When a refused client should try again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Answers connections the proxy has no room for.
pub(crate) struct Refusals {
    answering: Arc<Semaphore>,
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl Refusals {
    pub(crate) fn new() -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(REFUSAL_TIME);
        builder.http2().max_concurrent_streams(1);
        Self {
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            builder: Arc::new(builder),
        }
    }

    /// Answers `stream`'s first request with the refusal, or closes it at
    /// once when too many refusals are already being answered.
    pub(crate) fn refuse(&self, stream: TcpStream) {
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        let builder = self.builder.clone();
        tokio::spawn(async move {
            let service = service_fn(|req: http::Request<Incoming>| async move {
                let format = ApiFormat::for_path(req.uri().path());
                let refusal = RelayError::Overloaded {
                    retry_after: Some(RETRY_AFTER),
                };
                Ok::<_, Infallible>(refusal.into_response(format))
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            // HTTP/1 closes after the answer; HTTP/2 when the time is up.
            let _ = tokio::time::timeout(REFUSAL_TIME, connection).await;
            drop(permit);
        });
    }
}
