//! Shared test support: a mock upstream, the relay served in-process on
//! 127.0.0.1, and a plain HTTP client, so each test reads as its scenario.

#![allow(dead_code, unreachable_pub)]

pub mod fuzz;
pub mod proxy_process;
pub mod redis_server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tower_llm_relay::config::Config;
use tower_llm_relay::mock::MockUpstream;
use tower_llm_relay::state::{MemoryStore, StateStore};
use tower_llm_relay::usage::{ChannelSink, UsageReceiver};
use tower_llm_relay::RelayBuilder;

/// The client key every harness accepts.
pub const CLIENT_KEY: &str = "sk-relay-test";

/// A relay served on 127.0.0.1 in front of a mock upstream.
pub struct Harness {
    pub mock: MockUpstream,
    pub addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The config of a relay in front of `mock`: the test client key plus
/// `extra`, where `{base}` stands for the mock's URL.
pub fn config_for(mock: &MockUpstream, extra: &str) -> Config {
    let toml = format!(
        "[[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"test\"\n{}",
        extra.replace("{base}", &mock.base_url())
    );
    Config::from_toml(&toml, "test.toml", |_| None).expect("test config is valid")
}

/// The TOML of one account pointing at `base_url`.
pub fn account(id: &str, platform: &str, kind: &str, credential: &str, base_url: &str) -> String {
    let secret_field = match kind {
        "api_key" => "api_key",
        _ => "access_token",
    };
    format!(
        "[[accounts]]\nid = \"{id}\"\nplatform = \"{platform}\"\ntype = \"{kind}\"\n{secret_field} = \"{credential}\"\nbase_url = \"{base_url}\"\n"
    )
}

impl Harness {
    /// A mock, and a relay whose config is `extra` (accounts etc., where
    /// `{base}` stands for the mock's URL) plus the test client key.
    pub async fn start(extra: &str) -> Harness {
        let mock = MockUpstream::start().await.expect("mock upstream starts");
        Self::with_mock(mock, extra).await
    }

    /// As [`Harness::start`], with a mock built by the caller.
    pub async fn with_mock(mock: MockUpstream, extra: &str) -> Harness {
        let builder = config_for(&mock, extra).relay_builder();
        Self::serve(mock, builder).await
    }

    /// A mock, and a relay whose whole config is `toml` (no test key is
    /// added), where `{base}` stands for the mock's URL.
    pub async fn with_toml(toml: &str) -> Harness {
        let mock = MockUpstream::start().await.expect("mock upstream starts");
        let toml = toml.replace("{base}", &mock.base_url());
        let config = Config::from_toml(&toml, "test.toml", |_| None).expect("test config is valid");
        Self::serve(mock, config.relay_builder()).await
    }

    /// As [`Harness::with_mock`], with usage reports sent to the returned
    /// receiver.
    pub async fn with_usage(mock: MockUpstream, extra: &str) -> (Harness, UsageReceiver) {
        let (sink, reports) = ChannelSink::new(64);
        let builder = config_for(&mock, extra).relay_builder().usage_sink(sink);
        (Self::serve(mock, builder).await, reports)
    }

    /// As [`Harness::with_mock`], also returning the relay's state store
    /// so a test can look at slots and cooldowns.
    pub async fn with_store(mock: MockUpstream, extra: &str) -> (Harness, MemoryStore) {
        let store = MemoryStore::new();
        let h = Self::with_state(mock, extra, Arc::new(store.clone())).await;
        (h, store)
    }

    /// As [`Harness::with_mock`], with the relay's state in `store`.
    pub async fn with_state(
        mock: MockUpstream,
        extra: &str,
        store: Arc<dyn StateStore>,
    ) -> Harness {
        let builder = config_for(&mock, extra).relay_builder().state(store);
        Self::serve(mock, builder).await
    }

    /// A mock and a relay built by `builder`.
    pub async fn serve(mock: MockUpstream, builder: RelayBuilder) -> Harness {
        let relay = builder.build::<axum::body::Body>();
        let app = axum::Router::new().fallback_service(relay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Harness { mock, addr, server }
    }

    /// The relay's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A POST to `path` with the client key in `x-api-key`.
    pub fn post(&self, path: &str) -> http::request::Builder {
        Request::post(self.url(path))
            .header("x-api-key", CLIENT_KEY)
            .header("content-type", "application/json")
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        send(req).await
    }

    /// POSTs `body` to `path` with the client key, reading the whole answer.
    pub async fn call(&self, path: &str, body: &str) -> Answer {
        let req = self
            .post(path)
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request builds");
        send(req).await
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The account that served it (`x-relay-account`).
    pub fn served_by(&self) -> &str {
        self.headers["x-relay-account"]
            .to_str()
            .expect("ascii account id")
    }
}

/// A client for 127.0.0.1.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req`, returning the head and the streaming body.
pub async fn open(req: Request<Full<Bytes>>) -> Response<Incoming> {
    tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answer within 20 s")
        .expect("request succeeds")
}

/// Sends `req` and reads the whole answer.
pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let response = open(req).await;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("body within 20 s")
        .expect("body reads")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A Messages request body.
pub fn messages_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}],
    })
    .to_string()
}

/// The TOML of Anthropic API-key accounts `ids`, each with credential
/// `sk-ant-<id>` and `concurrency`, at the mock (`{base}`).
pub fn accounts(ids: &[&str], concurrency: u32) -> String {
    let mut toml = String::new();
    for id in ids {
        toml += &account(
            id,
            "anthropic",
            "api_key",
            &format!("sk-ant-{id}"),
            "{base}",
        );
        toml += &format!("concurrency = {concurrency}\n");
    }
    toml
}

/// A session id the session hash takes as it is: uuid-shaped (36
/// characters of lowercase hex and dashes), distinct for each `n`.
pub fn session_id(n: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        n >> 48,
        n & 0xffff_ffff_ffff
    )
}

/// A Messages request body of `session` (see [`session_id`]), named in
/// `metadata.user_id` as Claude Code does.
pub fn session_body(session: &str, stream: bool) -> String {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "stream": stream,
        "max_tokens": 16,
        "metadata": {"user_id": format!("user_test_account__session_{session}")},
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
}

/// A Chat Completions request body.
pub fn chat_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}],
    })
    .to_string()
}

/// Polls `check` until it holds or 5 s pass.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Polls the async `check` until it holds or `within` passes.
pub async fn eventually_async<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
