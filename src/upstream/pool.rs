//! HTTP/1.1 connections to plain-HTTP upstreams, driven by the request
//! that holds them.
//!
//! hyper-util's pooled client runs every connection in a task of its own:
//! the request goes to that task over a channel, the response head comes
//! back over another, and each body chunk crosses from that task to the
//! reader's, with a wake-up each way, plus a spawned task per request that
//! watches for the connection to become idle again. Here the request's own
//! task polls the connection while it waits for the head and while it
//! reads the body, so none of those hand-offs happen, and the body is
//! decoded as fast as the reader takes it. A connection goes back to the
//! pool when its response body has ended, and sits there unpolled; taking
//! it out polls it once, which finds a connection the upstream closed or
//! that was left mid-message, and such a connection is dropped.
//!
//! Measured with wrk at concurrency 256 on 2 cores, non-stream: the
//! proxy's CPU per request 62–65 → 54 µs; a forwarder prototype on this
//! design against `examples/bare_forward` (hyper-util's client) 24–25 →
//! 18–20 µs, 35–37k → 41–46k requests/s.
//!
//! HTTPS upstreams stay on hyper-util's client: it negotiates HTTP/2 by
//! ALPN, and a multiplexed connection needs a task of its own.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Parts};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::UpstreamConfig;
use crate::error::UpstreamErrorKind;
use crate::BoxError;

type Driver = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One HTTP/1.1 connection: the handle requests are sent through, and the
/// state machine that reads and writes its socket when polled.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    driver: Driver,
}

impl Conn {
    /// Polls the connection once; `true` when it has ended (closed by
    /// either side, or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.driver).poll(cx).is_ready()
    }

    /// Whether an idle connection can take a request: polling it reads
    /// the upstream's close, if one came.
    fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !self.drive(&mut cx) && !self.send.is_closed()
    }
}

/// A pooled connection and when it went idle.
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The idle connections to one upstream, oldest first.
struct Host {
    /// The `Host` header its requests carry.
    header: HeaderValue,
    idle: VecDeque<Idle>,
}

struct Inner {
    config: UpstreamConfig,
    hosts: Mutex<Hosts>,
}

struct Hosts {
    /// By `host:port` in lowercase (see [`host_key`]).
    by_authority: HashMap<Box<str>, Host>,
    /// Whether a task closes expired connections; it runs while there are
    /// idle connections, and a `put` starts it again.
    reaping: bool,
}

/// Keep-alive HTTP/1.1 connections per upstream `host:port`.
#[derive(Clone)]
pub(super) struct Pool {
    inner: Arc<Inner>,
}

/// Why a request could not be sent; the kind says whether it reached the
/// upstream.
pub(super) type SendError = (UpstreamErrorKind, BoxError);

impl Pool {
    pub(super) fn new(config: UpstreamConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                hosts: Mutex::new(Hosts {
                    by_authority: HashMap::new(),
                    reaping: false,
                }),
            }),
        }
    }

    /// Sends `req` (an absolute `http://` URI) on a pooled connection, or
    /// a new one, and waits for the response head.
    ///
    /// A pooled connection that turns out closed before the request was
    /// written is set aside and the request goes on another: the upstream
    /// never saw it.
    pub(super) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, SendError> {
        let (mut parts, body) = req.into_parts();
        let Some(authority) = parts.uri.authority().cloned() else {
            return Err((UpstreamErrorKind::Request, "the URI has no host".into()));
        };
        let mut origin_form = Parts::default();
        origin_form.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = Uri::from_parts(origin_form).unwrap_or_else(|_| Uri::from_static("/"));
        let (host, mut pooled) = self.take(&authority)?;
        parts.headers.insert(header::HOST, host);
        let mut req = Request::from_parts(parts, body);
        loop {
            // A connection is boxed once, when made: it moves between the
            // pool, this future and the response body on every request,
            // and at hundreds of bytes those moves were copies.
            let (mut conn, reused) = match pooled.take() {
                Some(conn) => (conn, true),
                // Boxed too: connecting is rare, and its state would
                // otherwise take room in every request's future.
                None => (Box::pin(self.connect(&authority)).await?, false),
            };
            let mut sending = std::pin::pin!(conn.send.try_send_request(req));
            let mut ended = false;
            let sent = poll_fn(|cx| {
                // The connection writes the request and reads the answer
                // only when polled; it stays pending while it is open, and
                // once it has ended it is not polled again.
                if !ended {
                    ended = conn.drive(cx);
                }
                sending.as_mut().poll(cx)
            })
            .await;
            match sent {
                Ok(response) => {
                    // An ended connection has already handed the body all
                    // it will get.
                    let lease = (!ended).then(|| Lease {
                        conn,
                        pool: Arc::downgrade(&self.inner),
                        authority: authority.clone(),
                    });
                    return Ok(response.map(|body| PooledBody::new(body, lease)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        pooled = self.take(&authority)?.1;
                    }
                    _ => return Err((UpstreamErrorKind::Io, e.into_error().into())),
                },
            }
        }
    }

    /// The `Host` header for `authority`, and its newest usable idle
    /// connection, if any.
    fn take(&self, authority: &Authority) -> Result<(HeaderValue, Option<Box<Conn>>), SendError> {
        let mut stale = Vec::new();
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = host_key(authority);
        let host = match hosts.by_authority.get_mut(&*key) {
            Some(host) => host,
            None => {
                // Without any `user:password@`: that is not for the upstream's eyes.
                let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
                let header = HeaderValue::from_str(host_and_port)
                    .map_err(|e| (UpstreamErrorKind::Request, BoxError::from(e)))?;
                hosts.by_authority.entry(key.into()).or_insert(Host {
                    header,
                    idle: VecDeque::new(),
                })
            }
        };
        let header = host.header.clone();
        let idle_timeout = self.inner.config.pool_idle_timeout;
        let mut found = None;
        while let Some(mut idle) = host.idle.pop_back() {
            if idle.since.elapsed() < idle_timeout && idle.conn.is_usable() {
                found = Some(idle.conn);
                break;
            }
            stale.push(idle);
        }
        drop(hosts);
        // Closing sockets is done outside the lock.
        drop(stale);
        Ok((header, found))
    }

    async fn connect(&self, authority: &Authority) -> Result<Box<Conn>, SendError> {
        let connect_error = |e: BoxError| (UpstreamErrorKind::Connect, e);
        let host = authority.host();
        // `Authority::host` keeps an IPv6 address's brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            self.inner.config.connect_timeout,
            TcpStream::connect((host, port)),
        )
        .await
        .map_err(|elapsed| connect_error(elapsed.into()))?
        .map_err(|e| connect_error(e.into()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.into()))?;
        // As hyper-util's connector: dead peers are noticed on idle sockets.
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (send, driver) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(e.into()))?;
        Ok(Box::new(Conn { send, driver }))
    }
}

/// The pool's key for `authority`: its text in lowercase, borrowed when it
/// is already. `Authority` itself hashes byte by byte to fold case, several
/// hundred instructions per lookup, where a string hashes in one write.
fn host_key(authority: &Authority) -> Cow<'_, str> {
    let text = authority.as_str();
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

impl Inner {
    /// Puts a connection whose last response has ended back, newest last;
    /// past the idle cap, the oldest is closed.
    fn put(self: &Arc<Self>, authority: Authority, conn: Box<Conn>) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if !hosts.reaping {
            hosts.reaping = spawn_reaper(Arc::downgrade(self));
        }
        let Some(host) = hosts.by_authority.get_mut(&*host_key(&authority)) else {
            return;
        };
        host.idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        let over = host
            .idle
            .len()
            .saturating_sub(self.config.pool_max_idle_per_host);
        let closed: Vec<Idle> = host.idle.drain(..over).collect();
        drop(hosts);
        drop(closed);
    }

    /// Closes the connections idle for longer than the idle timeout or
    /// closed by their upstream; `false` once none is left, and the reaper
    /// stops.
    fn reap(&self) -> bool {
        let mut closed = Vec::new();
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        for host in hosts.by_authority.values_mut() {
            let idle = std::mem::take(&mut host.idle);
            for mut entry in idle {
                if entry.since.elapsed() < self.config.pool_idle_timeout && entry.conn.is_usable() {
                    host.idle.push_back(entry);
                } else {
                    closed.push(entry);
                }
            }
        }
        hosts.reaping = hosts
            .by_authority
            .values()
            .any(|host| !host.idle.is_empty());
        let reaping = hosts.reaping;
        drop(hosts);
        drop(closed);
        reaping
    }
}

/// Every idle timeout (at least each second), closes what has expired,
/// while idle connections are left and the pool lives; `false` without a
/// runtime to run on (then expired connections are closed when they are
/// next taken).
fn spawn_reaper(pool: Weak<Inner>) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let every = match pool.upgrade() {
        Some(inner) => inner.config.pool_idle_timeout.max(Duration::from_secs(1)),
        None => return false,
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(inner) if inner.reap() => {}
                _ => return,
            }
        }
    });
    true
}

/// A connection on loan to one response.
struct Lease {
    conn: Box<Conn>,
    pool: Weak<Inner>,
    authority: Authority,
}

impl Lease {
    fn give_back(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.authority, self.conn);
        }
    }
}

/// A response body read from a pooled connection, which it drives while
/// it is read. Once it has ended the connection returns to the pool;
/// dropped before its end, it closes the connection, which cancels the
/// upstream request.
pub(super) struct PooledBody {
    incoming: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn new(incoming: Incoming, lease: Option<Lease>) -> Self {
        let mut body = Self { incoming, lease };
        if body.incoming.is_end_stream() {
            // No body to read (204, HEAD, `content-length: 0`): a server
            // never polls it, so the connection goes back now.
            body.end();
        }
        body
    }

    fn end(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // Asking for a frame tells the connection the reader wants one;
        // polling the connection then decodes it from what was read.
        for _ in 0..2 {
            match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if this.incoming.is_end_stream() {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.lease = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => {}
            }
            match this.lease.as_mut() {
                // An ended connection has told the body how it ended.
                Some(lease) => {
                    if lease.conn.drive(cx) {
                        this.lease = None;
                    }
                }
                None => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("leased", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test upstream does after reading a request.
    #[derive(Clone, Copy)]
    enum Reply {
        /// `200` with a two-byte body; the connection stays open.
        Ok,
        /// `200`, then the socket closed without a word.
        OkThenHangUp,
        /// `204`: a response without a body.
        NoContent,
        /// A chunked head and one chunk, then nothing until the relay
        /// closes the connection.
        StartStream,
    }

    /// A real HTTP/1.1 upstream on loopback that counts its connections
    /// and keeps the request heads it read.
    struct TestUpstream {
        authority: String,
        accepted: Arc<AtomicUsize>,
        /// Connections whose peer (the pool) closed them.
        closed_by_peer: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    impl TestUpstream {
        async fn start(reply: Reply) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let authority = listener.local_addr().expect("address").to_string();
            let accepted = Arc::new(AtomicUsize::new(0));
            let closed_by_peer = Arc::new(AtomicUsize::new(0));
            let heads = Arc::new(Mutex::new(Vec::new()));
            let (a, c, h) = (accepted.clone(), closed_by_peer.clone(), heads.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    a.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, reply, c.clone(), h.clone()));
                }
            });
            Self {
                authority,
                accepted,
                closed_by_peer,
                heads,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }

        fn request(&self, path: &str) -> Request<Full<Bytes>> {
            Request::post(format!("http://{}{path}", self.authority))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("request")
        }
    }

    async fn serve(
        mut stream: TcpStream,
        reply: Reply,
        closed_by_peer: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    ) {
        let mut buf = Vec::new();
        loop {
            let Some(head) = read_request(&mut stream, &mut buf).await else {
                closed_by_peer.fetch_add(1, Ordering::SeqCst);
                return;
            };
            heads.lock().expect("heads").push(head);
            let answer: &[u8] = match reply {
                Reply::Ok | Reply::OkThenHangUp => {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                }
                Reply::NoContent => b"HTTP/1.1 204 No Content\r\n\r\n",
                Reply::StartStream => {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
                }
            };
            if stream.write_all(answer).await.is_err() {
                return;
            }
            if matches!(reply, Reply::OkThenHangUp) {
                return;
            }
        }
    }

    /// The next request's head (its body read and dropped), or `None` when
    /// the peer closed the connection.
    async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    read_more(stream, buf).await?;
                }
                buf.drain(..end + 4 + length);
                return Some(head);
            }
            read_more(stream, buf).await?;
        }
    }

    async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    async fn body_of(response: Response<PooledBody>) -> Bytes {
        response
            .into_body()
            .collect()
            .await
            .expect("a whole body")
            .to_bytes()
    }

    /// Lets the upstream's tasks run (they read the close of a socket).
    async fn settle(until: impl Fn() -> bool) {
        for _ in 0..200 {
            if until() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection_in_origin_form_with_a_host() {
        let upstream = TestUpstream::start(Reply::Ok).await;
        let pool = Pool::new(UpstreamConfig::default());
        for _ in 0..3 {
            let response = pool
                .send(upstream.request("/v1/messages?beta=true"))
                .await
                .expect("an answer");
            assert_eq!(body_of(response).await, "ok");
        }
        assert_eq!(upstream.accepted(), 1);
        let heads = upstream.heads.lock().expect("heads").clone();
        assert_eq!(heads.len(), 3);
        for head in heads {
            assert!(
                head.starts_with("POST /v1/messages?beta=true HTTP/1.1\r\n"),
                "{head}"
            );
            let host = format!("host: {}", upstream.authority);
            assert!(head.lines().any(|line| line == host), "{head}");
        }
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
        let upstream = TestUpstream::start(Reply::OkThenHangUp).await;
        let pool = Pool::new(UpstreamConfig::default());
        for n in 1..=3 {
            let response = pool.send(upstream.request("/")).await.expect("an answer");
            assert_eq!(body_of(response).await, "ok");
            // The hang-up reaches the relay's socket before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(upstream.accepted(), n);
        }
    }

    #[tokio::test]
    async fn a_response_without_a_body_gives_its_connection_back_at_once() {
        let upstream = TestUpstream::start(Reply::NoContent).await;
        let pool = Pool::new(UpstreamConfig::default());
        for _ in 0..3 {
            let response = pool.send(upstream.request("/")).await.expect("an answer");
            assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
            // Held, never polled, as a server holds a body it knows is empty.
            std::mem::forget(response);
        }
        assert_eq!(upstream.accepted(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let upstream = TestUpstream::start(Reply::StartStream).await;
        let pool = Pool::new(UpstreamConfig::default());
        let response = pool.send(upstream.request("/")).await.expect("an answer");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(first.into_data().expect("data"), "first");
        drop(body);
        let closed = &upstream.closed_by_peer;
        settle(|| closed.load(Ordering::SeqCst) == 1).await;
        assert_eq!(
            closed.load(Ordering::SeqCst),
            1,
            "the upstream saw the close"
        );
        // The next request cannot have been given the cut connection.
        let response = pool.send(upstream.request("/")).await.expect("an answer");
        drop(response);
        assert_eq!(upstream.accepted(), 2);
    }

    #[tokio::test]
    async fn idle_connections_past_the_cap_are_closed() {
        let upstream = TestUpstream::start(Reply::Ok).await;
        let pool = Pool::new(UpstreamConfig {
            pool_max_idle_per_host: 1,
            ..UpstreamConfig::default()
        });
        // Two at once need two connections.
        let (a, b) = tokio::join!(
            pool.send(upstream.request("/")),
            pool.send(upstream.request("/"))
        );
        let (a, b) = (a.expect("an answer"), b.expect("an answer"));
        assert_eq!(upstream.accepted(), 2);
        body_of(a).await;
        body_of(b).await;
        let closed = &upstream.closed_by_peer;
        settle(|| closed.load(Ordering::SeqCst) == 1).await;
        assert_eq!(closed.load(Ordering::SeqCst), 1, "one closed, one kept");
        let response = pool.send(upstream.request("/")).await.expect("an answer");
        body_of(response).await;
        assert_eq!(upstream.accepted(), 2, "the kept one was used");
    }

    #[tokio::test]
    async fn an_expired_connection_is_closed_not_used() {
        let upstream = TestUpstream::start(Reply::Ok).await;
        let pool = Pool::new(UpstreamConfig {
            pool_idle_timeout: Duration::from_millis(30),
            ..UpstreamConfig::default()
        });
        let response = pool.send(upstream.request("/")).await.expect("an answer");
        body_of(response).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let response = pool.send(upstream.request("/")).await.expect("an answer");
        body_of(response).await;
        assert_eq!(upstream.accepted(), 2);
        let closed = &upstream.closed_by_peer;
        settle(|| closed.load(Ordering::SeqCst) == 1).await;
        assert_eq!(closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener.local_addr().expect("address");
        drop(listener);
        let pool = Pool::new(UpstreamConfig::default());
        let req = Request::post(format!("http://{authority}/"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let error = pool.send(req).await.expect_err("nothing listens");
        assert_eq!(error.0, UpstreamErrorKind::Connect);
    }
}
