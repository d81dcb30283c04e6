//! A mock LLM upstream: a real HTTP server on 127.0.0.1 that answers like
//! Anthropic (`/v1/messages`, `/v1/messages/count_tokens`) and OpenAI
//! (`/v1/chat/completions`, `/v1/responses`, `/v1/models`), streamed or
//! not, and misbehaves on demand per credential ([`Fault`], [`FaultPlan`]).
//!
//! It records every request and exactly the bytes it sent back, so a test
//! can compare what its client got with what the upstream sent. It speaks
//! HTTP/1.1 and h2c, with keep-alive. Dropping the [`MockUpstream`] stops
//! the server and closes its connections.
//!
//! The mock does not authenticate: it records the credential of each
//! request (`x-api-key`, or `Authorization: Bearer`; for Bedrock the SigV4
//! access key id) and uses it to pick the request's [`FaultPlan`].
//!
//! It also answers like AWS Bedrock (`/model/{id}/invoke` and
//! `/model/{id}/invoke-with-response-stream`, event-stream frames with
//! CRCs), and there it does check the SigV4 signature, against
//! [`AWS_TEST_SECRET_ACCESS_KEY`].
//!
//! Besides the LLM endpoints it serves an OAuth token endpoint
//! ([`TOKEN_PATH`], with rotating refresh tokens), counts requests in
//! flight per credential, and [`MockProxy`] offers HTTP `CONNECT` and
//! SOCKS5 egress proxies that count their tunnels.
//!
//! # Examples
//!
//! ```
//! use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mock = MockUpstream::start().await?;
//! mock.set_faults("sk-flaky", FaultPlan::Sequence(vec![Fault::Status { status: 529, retry_after: Some(2) }]));
//!
//! // Any HTTP client works; a raw HTTP/1.1 request keeps this short.
//! let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
//! let mut tcp = tokio::net::TcpStream::connect(mock.addr()).await?;
//! let request = format!(
//!     "POST /v1/messages HTTP/1.1\r\nhost: {}\r\nx-api-key: sk-flaky\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
//!     mock.addr(),
//!     body.len(),
//! );
//! tcp.write_all(request.as_bytes()).await?;
//! let mut answer = String::new();
//! tcp.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 529"));
//! assert!(answer.contains(r#""type":"overloaded_error""#));
//!
//! let seen = mock.received();
//! assert_eq!(seen[0].path_and_query, "/v1/messages");
//! assert_eq!(seen[0].credential.as_deref(), Some("sk-flaky"));
//! assert_eq!(seen[0].status, 529);
//! assert!(answer.ends_with(std::str::from_utf8(&seen[0].response_body).unwrap()));
//! # Ok(())
//! # }
//! ```

mod answer;
mod anthropic;
mod bedrock;
mod body;
mod fault;
mod handler;
mod oauth;
mod openai;
mod proxy;
mod server;
mod state;

pub use fault::{Fault, FaultPlan};
pub use proxy::{MockProxy, ProxyKind};

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use state::{lock, Pacing, Shared};

/// The path of the mock's OAuth token endpoint (`refresh_token` grant,
/// JSON body; each refresh token works once).
pub const TOKEN_PATH: &str = "/v1/oauth/token";

/// The credential name whose [`FaultPlan`] applies to the token endpoint
/// (`mock.set_faults(TOKEN_FAULTS, plan)`); the default plan does not.
pub const TOKEN_FAULTS: &str = "oauth-token";

/// The secret access key the mock's Bedrock endpoint
/// (`/model/{id}/invoke[-with-response-stream]`) checks SigV4 signatures
/// with, whatever the access key id. Requests signed with another secret
/// get a 403 `InvalidSignatureException`.
///
/// # Examples
///
/// ```
/// use secrecy::SecretString;
/// use tower_llm_relay::mock::AWS_TEST_SECRET_ACCESS_KEY;
/// use tower_llm_relay::Credentials;
///
/// let credentials = Credentials::Bedrock {
///     region: "us-east-1".into(),
///     access_key_id: SecretString::from("AKIDMOCK"),
///     secret_access_key: SecretString::from(AWS_TEST_SECRET_ACCESS_KEY),
///     session_token: None,
/// };
/// ```
pub const AWS_TEST_SECRET_ACCESS_KEY: &str = "mock/Bedrock+Secret/Key0000000000EXAMPLE";

/// One request the mock received, and what it answered.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The request method.
    pub method: Method,
    /// The path and query, e.g. `/v1/messages?beta=true`.
    pub path_and_query: String,
    /// Every request header.
    pub headers: HeaderMap,
    /// The request body (empty when it was over the 32 MiB limit, which
    /// is answered 413).
    pub body: Bytes,
    /// The credential: `x-api-key`, else an `Authorization: Bearer` token;
    /// on Bedrock paths the SigV4 access key id.
    pub credential: Option<String>,
    /// Exactly the response body bytes sent so far: all of them once the
    /// client has seen the body's end, the part before a cut after a cut.
    pub response_body: Bytes,
    /// The response status; 0 while none was sent (or never will be: a
    /// reset or a hang).
    pub status: u16,
}

/// Configures a [`MockUpstream`] before it starts.
#[derive(Debug, Clone)]
pub struct MockUpstreamBuilder {
    pacing: Pacing,
    bind: SocketAddr,
    recording: bool,
}

impl MockUpstreamBuilder {
    /// Text delta events per streamed answer (default 5); non-stream
    /// answers carry the same text.
    pub fn stream_deltas(mut self, n: usize) -> Self {
        self.pacing.stream_deltas = n;
        self
    }

    /// The delay between two events of a stream (default none).
    pub fn event_interval(mut self, interval: Duration) -> Self {
        self.pacing.event_interval = interval;
        self
    }

    /// The delay before each answer's status line (default none).
    pub fn first_byte_delay(mut self, delay: Duration) -> Self {
        self.pacing.first_byte_delay = delay;
        self
    }

    /// Whether every request and the bytes sent back are kept for
    /// [`MockUpstream::received`] (default yes). A load benchmark turns
    /// this off, so the mock's memory and its lock stay out of the figures;
    /// then `received()` is empty and `request_count()` is 0.
    pub fn record_requests(mut self, record: bool) -> Self {
        self.pacing.record = record;
        self
    }

    /// Whether each streamed event is preceded by an SSE comment line
    /// `: sent_unix_ns=N` (in the same frame) giving the wall-clock time,
    /// in nanoseconds since the Unix epoch, at which the frame left the
    /// mock (default no). A client on the same machine subtracts it from
    /// the event's arrival time to get the event's one-way delay. SSE
    /// readers ignore comment lines.
    pub fn stamp_events(mut self, stamp: bool) -> Self {
        self.pacing.stamp_events = stamp;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Whether requests are recorded for [`MockUpstream::received`]
    /// (default on). A long-running mock turns it off so its memory stays
    /// flat; [`MockUpstream::received`] is then always empty.
    pub fn recording(mut self, on: bool) -> Self {
        self.recording = on;
        self
    }

    /// Binds and starts serving in the background; needs a Tokio runtime.
    pub async fn start(self) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shut_down) = watch::channel(());
        let shared = Arc::new(Shared::new(self.pacing, self.recording, shut_down));
        let accept_task = tokio::spawn(server::accept_loop(listener, shared.clone()));
        Ok(MockUpstream {
            addr,
            shared,
            accept_task,
            _shutdown: shutdown,
        })
    }
}

/// A running mock upstream. Dropping it stops accepting, closes every
/// connection and ends hanging requests.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
    // Never sent on: dropping it is the shutdown signal.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl MockUpstream {
    /// Starts a mock with default behaviour on a free 127.0.0.1 port.
    pub async fn start() -> io::Result<MockUpstream> {
        Self::builder().start().await
    }

    /// A builder, for other pacing or another address.
    pub fn builder() -> MockUpstreamBuilder {
        MockUpstreamBuilder {
            pacing: Pacing {
                stream_deltas: 5,
                event_interval: Duration::ZERO,
                first_byte_delay: Duration::ZERO,
                record: true,
                stamp_events: false,
            },
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            recording: true,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its origin, e.g. `http://127.0.0.1:40123` (no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        state::snapshot(&lock(&self.shared.records))
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.records).len()
    }

    /// Requests carrying `credential` misbehave per `plan` from now on
    /// (a new plan starts from its beginning).
    pub fn set_faults(&self, credential: &str, plan: FaultPlan) {
        self.shared.set_plan(credential, plan);
    }

    /// Requests without a plan of their own (including those without a
    /// credential) misbehave per `plan` from now on.
    pub fn set_default_faults(&self, plan: FaultPlan) {
        self.shared.set_default_plan(plan);
    }

    /// Streams whose client went away before the stream's end.
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// Streams sent to their end (a cut stream is neither completed nor
    /// cancelled).
    pub fn completed_streams(&self) -> usize {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }

    /// Streamed answers in progress now.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// Client connections open now (each is served by its own task).
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Successful OAuth refreshes served at [`TOKEN_PATH`].
    pub fn token_refreshes(&self) -> usize {
        self.shared.token_refreshes.load(Ordering::SeqCst)
    }

    /// Requests with `credential` being answered now; a request counts
    /// from its arrival until its response body is done.
    pub fn in_flight(&self, credential: &str) -> usize {
        lock(&self.shared.in_flight)
            .get(credential)
            .map_or(0, |(now, _)| *now)
    }

    /// The most requests with `credential` ever answered at once.
    pub fn peak_in_flight(&self, credential: &str) -> usize {
        lock(&self.shared.in_flight)
            .get(credential)
            .map_or(0, |(_, peak)| *peak)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends one streamed Messages request and reads the whole answer.
    async fn stream_answer(mock: &MockUpstream) -> io::Result<String> {
        let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
        let mut tcp = tokio::net::TcpStream::connect(mock.addr()).await?;
        let request = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len(),
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn stamped_events_carry_their_send_time_in_a_comment() -> io::Result<()> {
        let mock = MockUpstream::builder()
            .stream_deltas(3)
            .stamp_events(true)
            .start()
            .await?;
        let answer = stream_answer(&mock).await?;
        let stamps = answer.matches("\n: sent_unix_ns=").count();
        let events = answer.matches("\nevent: ").count();
        // message_start, block start, ping, 3 deltas, block stop, delta, stop.
        assert_eq!(events, 9);
        assert_eq!(stamps, events);
        Ok(())
    }

    #[tokio::test]
    async fn unrecorded_mock_answers_and_keeps_nothing() -> io::Result<()> {
        let mock = MockUpstream::builder()
            .record_requests(false)
            .start()
            .await?;
        let answer = stream_answer(&mock).await?;
        assert!(answer.starts_with("HTTP/1.1 200"));
        assert!(!answer.contains("sent_unix_ns"));
        assert_eq!(mock.request_count(), 0);
        assert!(mock.received().is_empty());
        Ok(())
    }
}
