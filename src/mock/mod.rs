//! A mock upstream: a real HTTP server on 127.0.0.1 that answers like
//! Anthropic (`/v1/messages`, `/v1/messages/count_tokens`) and OpenAI
//! (`/v1/chat/completions`, `/v1/responses`), streams or not, and
//! misbehaves on request ([`Fault`], [`FaultPlan`], per credential).
//!
//! It records every request and the exact bytes it sent back, so a test
//! can compare what a client received with what the upstream sent. It is
//! for tests, demos and benchmarks; enable the `mock` feature.
//!
//! # Examples
//!
//! ```
//! use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mock = MockUpstream::start().await.unwrap();
//! mock.set_faults("sk-flaky", FaultPlan::Always(Fault::Status { status: 529, retry_after: None }));
//! assert!(mock.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(mock.request_count(), 0);
//! # }
//! ```

mod answers;
mod body;
mod fault;
mod proxy;

pub use fault::{Fault, FaultPlan};
pub use proxy::{MockProxy, ProxyKind};

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use answers::{error_body, overloaded_event, Answer, Family};
use body::ChannelBody;
use fault::PlanState;

type MockBody = UnsyncBoxBody<Bytes, io::Error>;

/// The largest request body the mock reads.
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// One request the mock received, and what it answered.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The method.
    pub method: Method,
    /// The path and query, e.g. `/v1/messages?beta=true`.
    pub path_and_query: String,
    /// Every header received.
    pub headers: HeaderMap,
    /// The body received.
    pub body: Bytes,
    /// The credential sent (`x-api-key`, or a Bearer token).
    pub credential: Option<String>,
    /// The answer's status (0 when none was sent: a reset or a hang).
    pub status: u16,
    /// Exactly the body bytes sent back so far.
    pub response_body: Bytes,
}

struct Record {
    request: ReceivedRequest,
    sent: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Behaviour {
    stream_deltas: usize,
    event_interval: Duration,
    first_byte_delay: Duration,
}

struct Shared {
    behaviour: Behaviour,
    records: Mutex<Vec<Record>>,
    plans: Mutex<HashMap<String, PlanState>>,
    default_plan: Mutex<PlanState>,
    next_id: AtomicU64,
    open_streams: AtomicUsize,
    completed_streams: AtomicUsize,
    cancelled_streams: AtomicUsize,
    // OAuth refreshes served, and refresh tokens already spent (rotation).
    token_refreshes: AtomicUsize,
    spent_refresh_tokens: Mutex<std::collections::HashSet<String>>,
    // Per credential: requests being answered now, and the most at once.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    // Dropped with the mock: every waiting task sees its `changed()` end.
    stopped: watch::Receiver<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds a [`MockUpstream`] with non-default pacing.
#[derive(Debug, Clone)]
pub struct MockUpstreamBuilder {
    behaviour: Behaviour,
    bind: SocketAddr,
}

impl MockUpstreamBuilder {
    /// Text delta events per stream (default 5).
    pub fn stream_deltas(mut self, n: usize) -> Self {
        self.behaviour.stream_deltas = n;
        self
    }

    /// The delay between stream events (default none).
    pub fn event_interval(mut self, interval: Duration) -> Self {
        self.behaviour.event_interval = interval;
        self
    }

    /// The delay before any answer (default none).
    pub fn first_byte_delay(mut self, delay: Duration) -> Self {
        self.behaviour.first_byte_delay = delay;
        self
    }

    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Binds and starts serving.
    pub async fn start(self) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            behaviour: self.behaviour,
            records: Mutex::new(Vec::new()),
            plans: Mutex::new(HashMap::new()),
            default_plan: Mutex::new(PlanState::new(FaultPlan::Never)),
            next_id: AtomicU64::new(1),
            open_streams: AtomicUsize::new(0),
            completed_streams: AtomicUsize::new(0),
            cancelled_streams: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
            token_refreshes: AtomicUsize::new(0),
            spent_refresh_tokens: Mutex::new(std::collections::HashSet::new()),
            stopped,
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(MockUpstream {
            addr,
            shared,
            _stop: stop,
        })
    }
}

/// A running mock upstream; dropping it stops the server and every
/// connection.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Starts a mock with default behaviour on a free loopback port.
    pub async fn start() -> io::Result<MockUpstream> {
        Self::builder().start().await
    }

    /// A builder for a mock with other pacing.
    pub fn builder() -> MockUpstreamBuilder {
        MockUpstreamBuilder {
            behaviour: Behaviour {
                stream_deltas: 5,
                event_interval: Duration::ZERO,
                first_byte_delay: Duration::ZERO,
            },
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its origin, e.g. `http://127.0.0.1:40123` (no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.records)
            .iter()
            .map(|r| ReceivedRequest {
                response_body: Bytes::copy_from_slice(&r.sent),
                ..r.request.clone()
            })
            .collect()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.records).len()
    }

    /// Misbehave for requests carrying `credential` per `plan`.
    pub fn set_faults(&self, credential: &str, plan: FaultPlan) {
        lock(&self.shared.plans).insert(credential.to_owned(), PlanState::new(plan));
    }

    /// Misbehave per `plan` for credentials without a plan of their own.
    pub fn set_default_faults(&self, plan: FaultPlan) {
        *lock(&self.shared.default_plan) = PlanState::new(plan);
    }

    /// Streams whose client went away before their end.
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// Streams sent to their end.
    pub fn completed_streams(&self) -> usize {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }

    /// Streams in progress.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// OAuth token refreshes served at `/v1/oauth/token`.
    pub fn token_refreshes(&self) -> usize {
        self.shared.token_refreshes.load(Ordering::SeqCst)
    }

    /// Requests with `credential` being answered now (a stream counts
    /// until it ends).
    pub fn in_flight(&self, credential: &str) -> usize {
        lock(&self.shared.in_flight)
            .get(credential)
            .map_or(0, |c| c.0)
    }

    /// The most requests with `credential` ever answered at once.
    pub fn peak_in_flight(&self, credential: &str) -> usize {
        lock(&self.shared.in_flight)
            .get(credential)
            .map_or(0, |c| c.1)
    }
}

/// Counts a request in flight for its credential until dropped.
struct InFlight {
    shared: Arc<Shared>,
    credential: String,
}

impl InFlight {
    fn start(shared: &Arc<Shared>, credential: Option<&str>) -> Self {
        let credential = credential.unwrap_or_default().to_owned();
        let mut counts = lock(&shared.in_flight);
        let entry = counts.entry(credential.clone()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
        drop(counts);
        Self {
            shared: shared.clone(),
            credential,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.shared.in_flight).get_mut(&self.credential) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stopped = shared.stopped.clone();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut stopped = shared.stopped.clone();
            let service = service_fn(move |req| handle(shared.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// The OAuth token endpoint's path.
pub const TOKEN_PATH: &str = "/v1/oauth/token";

/// Fault plans under this name apply to the token endpoint.
pub const TOKEN_FAULTS: &str = "oauth-token";

/// The `refresh_token` grant: new tokens each time; a refresh token works
/// once (rotation), as Anthropic's does.
fn token_endpoint(shared: &Arc<Shared>, body: &Bytes) -> Response<MockBody> {
    let refused = |code: &str| {
        let body = serde_json::json!({"error": code, "error_description": "refused by the mock"});
        json_response(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()))
    };
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(refresh_token) = request["refresh_token"].as_str() else {
        return refused("invalid_request");
    };
    if request["grant_type"] != "refresh_token" {
        return refused("unsupported_grant_type");
    }
    let fault = lock(&shared.plans)
        .get_mut(TOKEN_FAULTS)
        .and_then(PlanState::next_fault);
    if fault.is_some() || !lock(&shared.spent_refresh_tokens).insert(refresh_token.to_owned()) {
        return refused("invalid_grant");
    }
    let n = shared.token_refreshes.fetch_add(1, Ordering::SeqCst) + 1;
    let answer = serde_json::json!({
        "access_token": format!("sk-ant-oat-refreshed-{n}"),
        "refresh_token": format!("sk-ant-ort-refreshed-{n}"),
        "expires_in": 3600,
        "token_type": "Bearer",
    });
    json_response(StatusCode::OK, Bytes::from(answer.to_string()))
}

/// The error that makes hyper drop a connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock connection reset")
    }
}

impl std::error::Error for Reset {}

fn credential_of(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.to_owned());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    auth.strip_prefix("Bearer ").map(str::to_owned)
}

fn full(bytes: Bytes) -> MockBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl Shared {
    fn next_fault(&self, credential: Option<&str>) -> Option<Fault> {
        if let Some(credential) = credential {
            if let Some(plan) = lock(&self.plans).get_mut(credential) {
                return plan.next_fault();
            }
        }
        lock(&self.default_plan).next_fault()
    }

    fn record_status(&self, index: usize, status: StatusCode) {
        if let Some(record) = lock(&self.records).get_mut(index) {
            record.request.status = status.as_u16();
        }
    }

    fn record_sent(&self, index: usize, bytes: &[u8]) {
        if let Some(record) = lock(&self.records).get_mut(index) {
            record.sent.extend_from_slice(bytes);
        }
    }

    async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.changed().await;
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<MockBody>, Reset> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Reset),
    };
    let credential = credential_of(&parts.headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let index = {
        let mut records = lock(&shared.records);
        records.push(Record {
            request: ReceivedRequest {
                method: parts.method.clone(),
                path_and_query,
                headers: parts.headers.clone(),
                body: body.clone(),
                credential: credential.clone(),
                status: 0,
                response_body: Bytes::new(),
            },
            sent: Vec::new(),
        });
        records.len() - 1
    };
    if parts.method == Method::POST && parts.uri.path() == TOKEN_PATH {
        let response = token_endpoint(&shared, &body);
        shared.record_status(index, response.status());
        return Ok(response);
    }
    let in_flight = InFlight::start(&shared, credential.as_deref());
    let fault = shared.next_fault(credential.as_deref());
    match fault {
        Some(Fault::Hang) => {
            shared.stopped().await;
            return Err(Reset);
        }
        Some(Fault::ConnectionReset) => return Err(Reset),
        _ => {}
    }
    if !shared.behaviour.first_byte_delay.is_zero() {
        tokio::time::sleep(shared.behaviour.first_byte_delay).await;
    }
    let response = answer(
        &shared,
        index,
        &parts.method,
        parts.uri.path(),
        &body,
        fault,
        in_flight,
    );
    shared.record_status(index, response.status());
    Ok(response)
}

fn answer(
    shared: &Arc<Shared>,
    index: usize,
    method: &Method,
    path: &str,
    body: &Bytes,
    fault: Option<Fault>,
    in_flight: InFlight,
) -> Response<MockBody> {
    let family = Family::of(path);
    let error = |status: u16, message: &str| {
        let body = error_body(family, status, message);
        shared.record_sent(index, &body);
        json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
    };
    if method == Method::GET && path == "/v1/models" {
        let list = serde_json::json!({
            "object": "list",
            "data": [{"id": "mock-model", "object": "model", "type": "model"}],
        });
        let bytes = Bytes::from(list.to_string());
        shared.record_sent(index, &bytes);
        return json_response(StatusCode::OK, bytes);
    }
    let known = [
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/chat/completions",
        "/v1/responses",
    ];
    if method != Method::POST || !known.contains(&path) {
        return error(404, "no such endpoint on the mock");
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error(400, "the body is not JSON");
    };
    let Some(model) = request["model"].as_str() else {
        return error(400, "model: field required");
    };
    let needs = if path == "/v1/responses" {
        "input"
    } else {
        "messages"
    };
    if request.get(needs).is_none() {
        return error(400, &format!("{needs}: field required"));
    }
    match &fault {
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let mut response = error(*status, "the mock was told to fail");
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            return response;
        }
        Some(Fault::BadRequest { message }) => return error(400, message),
        _ => {}
    }
    let stream =
        request["stream"].as_bool().unwrap_or(false) && path != "/v1/messages/count_tokens";
    let answer = Answer {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        model,
        input_tokens: (body.len() as u64 / 4).max(1),
        deltas: shared.behaviour.stream_deltas,
    };
    let previous = request["previous_response_id"].as_str();
    if !stream {
        if fault == Some(Fault::SseErrorFirst) {
            return error(529, "Overloaded");
        }
        let bytes = match path {
            "/v1/messages" => answer.anthropic_json(),
            "/v1/messages/count_tokens" => answer.count_tokens_json(),
            "/v1/chat/completions" => answer.chat_json(),
            _ => answer.responses_json(previous),
        };
        if let Some(Fault::MidStreamCut { .. }) = fault {
            return cut_json(shared, index, bytes);
        }
        shared.record_sent(index, &bytes);
        return json_response(StatusCode::OK, bytes);
    }
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let mut events = match path {
        "/v1/messages" => answer.anthropic_events(),
        "/v1/chat/completions" => answer.chat_chunks(include_usage),
        _ => answer.responses_events(previous),
    };
    let mut interval = shared.behaviour.event_interval;
    let mut cut = false;
    match fault {
        Some(Fault::SseErrorFirst) => events = vec![overloaded_event()],
        Some(Fault::MidStreamCut { after_events }) => {
            events.truncate(after_events);
            cut = true;
        }
        Some(Fault::SlowStream { interval: slow }) => interval = slow,
        _ => {}
    }
    stream_response(shared.clone(), index, events, interval, cut, in_flight)
}

/// A JSON answer whose connection breaks half way.
fn cut_json(shared: &Arc<Shared>, index: usize, bytes: Bytes) -> Response<MockBody> {
    let (tx, body) = ChannelBody::new();
    let half = bytes.slice(..bytes.len() / 2);
    shared.record_sent(index, &half);
    tokio::spawn(async move {
        if tx.send(Ok(half)).await.is_ok() {
            let _ = tx.send(Err(io::Error::other("mock cut"))).await;
        }
    });
    let mut response = Response::new(body.boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    response
}

/// A paced SSE answer fed by its own task.
fn stream_response(
    shared: Arc<Shared>,
    index: usize,
    events: Vec<Bytes>,
    interval: Duration,
    cut: bool,
    in_flight: InFlight,
) -> Response<MockBody> {
    let (tx, body) = ChannelBody::new();
    shared.open_streams.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        // The stream is in flight until its task ends.
        let _in_flight = in_flight;
        let mut cancelled = false;
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = tx.closed() => { cancelled = true; break; }
                }
            }
            shared.record_sent(index, &event);
            if tx.send(Ok(event)).await.is_err() {
                cancelled = true;
                break;
            }
        }
        if cancelled {
            shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
        } else if cut {
            let _ = tx.send(Err(io::Error::other("mock cut"))).await;
        } else {
            shared.completed_streams.fetch_add(1, Ordering::SeqCst);
        }
        shared.open_streams.fetch_sub(1, Ordering::SeqCst);
    });
    let mut response = Response::new(body.boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
