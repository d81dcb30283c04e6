//! Sends the request to the selected account over a pooled HTTP client.
//!
//! Direct accounts on plain `http://` upstreams (local gateways, sidecars,
//! the mock) go through an HTTP/1.1 pool whose connections are driven by
//! the request's own task (see `pool.rs`: no hand-offs between tasks).
//! Direct HTTPS accounts share one hyper-util client with rustls (HTTP/1.1,
//! and HTTP/2 where the upstream offers it by ALPN); each egress proxy
//! (`CONNECT` tunnel or SOCKS5) gets a client of its own. The request must
//! already be addressed and signed (see
//! [`credentials`](crate::credentials)). The response body streams through
//! frame by frame, never copied or merged; frames that are already
//! decodable are handed on together, so a server writes a burst of SSE
//! events to its client at once, while an event that arrives alone goes
//! out within a few scheduler turns. Dropping the body (a client gone)
//! closes the upstream connection, which cancels the upstream request.
//!
//! Connection failures, a missing response head after the first-byte
//! timeout, and resets are [`RelayError::Upstream`] errors; an upstream's
//! HTTP error status is a normal response.
//!
//! Hop-by-hop headers, `set-cookie` and the upstream's organization ids are
//! removed from the response: they describe the relay's connection and
//! account, not the client's.
//!
//! # Examples
//!
//! ```no_run
//! use bytes::Bytes;
//! use http::Request;
//! use secrecy::SecretString;
//! use std::sync::Arc;
//! use tower::ServiceExt;
//! use tower_llm_relay::upstream::Upstream;
//! use tower_llm_relay::{Account, Credentials, Platform, SelectedAccount};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let account = Account::builder("a1", Platform::Anthropic, Credentials::ApiKey(SecretString::from("k"))).build();
//! let mut req = Request::post("https://api.anthropic.com/v1/messages").body(Bytes::from("{}")).unwrap();
//! req.extensions_mut().insert(SelectedAccount(Arc::new(account)));
//! let response = Upstream::new().oneshot(req).await;
//! # }
//! ```

mod client;
mod coalesce;
mod future;
mod pool;

pub use future::ResponseFuture;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Version};
use http_body_util::Full;
use tower_service::Service;

use crate::account::{AccountId, SelectedAccount};
use crate::error::{RelayError, UpstreamError, UpstreamErrorKind};
use crate::parse::ParsedRequest;

use client::Clients;

/// Timeouts and pool sizes of the upstream client.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_llm_relay::upstream::{Upstream, UpstreamConfig};
///
/// let upstream = Upstream::with_config(UpstreamConfig {
///     connect_timeout: Duration::from_secs(5),
///     ..UpstreamConfig::default()
/// });
/// ```
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The longest a TCP connect may take (default 10 s).
    pub connect_timeout: Duration,
    /// The longest to wait for the response head of a stream request
    /// (default 60 s): streams answer headers at once.
    pub stream_first_byte_timeout: Duration,
    /// The longest to wait for the response head of a non-stream request
    /// (default 600 s): the head comes only once the whole answer is ready.
    pub first_byte_timeout: Duration,
    /// How long an idle pooled connection is kept (default 90 s).
    pub pool_idle_timeout: Duration,
    /// The most idle connections kept per upstream host (default 256).
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            stream_first_byte_timeout: Duration::from_secs(60),
            first_byte_timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// The innermost service: calls the upstream; see the module docs.
#[derive(Clone)]
pub struct Upstream {
    clients: Arc<Clients>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.clients.config)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client with the default [`UpstreamConfig`].
    pub fn new() -> Self {
        Self::with_config(UpstreamConfig::default())
    }

    /// A client with `config`.
    pub fn with_config(config: UpstreamConfig) -> Self {
        // rustls needs a process-wide crypto provider; installing one twice
        // is harmless (the second is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            clients: Arc::new(Clients::new(config)),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &UpstreamConfig {
        &self.clients.config
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Service<Request<Bytes>> for Upstream {
    type Response = http::Response<crate::RelayBody>;
    type Error = RelayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        // The pool grows on demand; readiness is per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let selected = req.extensions().get::<SelectedAccount>().cloned();
        let account = selected
            .as_ref()
            .map_or_else(|| AccountId::from("-"), |a| a.id().clone());
        let proxy = selected.as_ref().and_then(|a| a.proxy());
        let stream = req
            .extensions()
            .get::<ParsedRequest>()
            .is_some_and(ParsedRequest::is_stream);
        let config = &self.clients.config;
        let timeout = if stream {
            config.stream_first_byte_timeout
        } else {
            config.first_byte_timeout
        };
        let (mut parts, body) = req.into_parts();
        // The client negotiates HTTP/2 itself; a client's HTTP/2 request
        // must not force it on an HTTP/1.1-only upstream.
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, Full::new(body));
        let future = match proxy {
            None if req.uri().scheme() == Some(&Scheme::HTTP) => {
                let pool = self.clients.pool.clone();
                let future = Box::pin(async move { pool.send(req).await });
                return ResponseFuture::pooled(future, timeout, account);
            }
            None => self.clients.direct.request(req),
            Some(proxy) => match self.clients.proxied(proxy) {
                Ok(client) => client.request(req),
                Err(e) => {
                    return ResponseFuture::failed(UpstreamError::new(
                        UpstreamErrorKind::Request,
                        account,
                        Some(e.into()),
                    ))
                }
            },
        };
        ResponseFuture::new(future, timeout, account)
    }
}
