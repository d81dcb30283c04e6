//! Lets only known-safe client headers through to the upstream.
//!
//! The allow-lists follow the relays we reproduce (seed 002): content
//! negotiation, the SDKs' `x-stainless-*` telemetry, `user-agent`, and the
//! API's own version and beta headers. Everything else is dropped, and a
//! fixed deny-list is dropped even when allowed by hand: hop-by-hop headers
//! (`connection`, `transfer-encoding`, …), `host` and `content-length`
//! (the client library sets its own), client credentials (`authorization`,
//! `x-api-key`, `proxy-authorization`), `cookie`, and `forwarded` /
//! `x-forwarded-*` / `x-real-ip`, which would reveal the client's network.
//!
//! The list in force depends on the selected account's platform (Anthropic
//! or OpenAI); with no [`SelectedAccount`], on the request's format.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::header_whitelist::HeaderWhitelistLayer;
//! use tower_llm_relay::{RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let inner = service_fn(|req: Request<Bytes>| async move {
//!     assert!(req.headers().contains_key("anthropic-version"));
//!     assert!(!req.headers().contains_key("cookie"));
//!     assert!(!req.headers().contains_key("x-forwarded-for"));
//!     Ok::<_, RelayError>(Response::new(RelayBody::empty()))
//! });
//! let service = HeaderWhitelistLayer::new().layer(inner);
//! let req = Request::post("/v1/messages")
//!     .header("anthropic-version", "2023-06-01")
//!     .header("cookie", "session=1")
//!     .header("x-forwarded-for", "10.0.0.1")
//!     .body(Bytes::new())
//!     .unwrap();
//! service.oneshot(req).await.unwrap();
//! # }
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{Platform, SelectedAccount};
use crate::endpoint::ApiFormat;

/// Headers that every SDK sends and both platforms accept.
const COMMON: [&str; 14] = [
    "accept",
    "accept-language",
    "content-type",
    "user-agent",
    "sec-fetch-mode",
    "x-stainless-retry-count",
    "x-stainless-timeout",
    "x-stainless-lang",
    "x-stainless-package-version",
    "x-stainless-os",
    "x-stainless-arch",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-helper-method",
];

/// Anthropic's own headers (seed 002).
const ANTHROPIC: [&str; 4] = [
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-app",
];

/// OpenAI's own request headers. `openai-organization` and
/// `openai-project` are left out: they belong to the upstream account.
const OPENAI: [&str; 1] = ["openai-beta"];

/// Never forwarded, whatever the allow-list says.
const DENIED: [&str; 17] = [
    "authorization",
    "x-api-key",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-real-ip",
    "via",
    "x-relay-request-id",
];

/// Applies [`HeaderWhitelist`]: see the module docs.
#[derive(Debug, Clone)]
pub struct HeaderWhitelistLayer {
    lists: Arc<Lists>,
}

#[derive(Debug, Clone)]
struct Lists {
    anthropic: HashSet<HeaderName>,
    openai: HashSet<HeaderName>,
}

impl HeaderWhitelistLayer {
    /// The default allow-lists.
    pub fn new() -> Self {
        let names = |extra: &[&'static str]| {
            COMMON
                .iter()
                .chain(extra)
                .map(|n| HeaderName::from_static(n))
                .collect()
        };
        Self {
            lists: Arc::new(Lists {
                anthropic: names(&ANTHROPIC),
                openai: names(&OPENAI),
            }),
        }
    }

    /// Also allows `name` for `platform`'s accounts. Names on the
    /// deny-list stay denied.
    pub fn allow(mut self, platform: Platform, name: HeaderName) -> Self {
        let lists = Arc::make_mut(&mut self.lists);
        match platform {
            Platform::Anthropic => lists.anthropic.insert(name),
            Platform::OpenAi => lists.openai.insert(name),
        };
        self
    }
}

impl Default for HeaderWhitelistLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for HeaderWhitelistLayer {
    type Service = HeaderWhitelist<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderWhitelist {
            inner,
            lists: self.lists.clone(),
        }
    }
}

/// Middleware that filters request headers; see the module docs.
#[derive(Debug, Clone)]
pub struct HeaderWhitelist<S> {
    inner: S,
    lists: Arc<Lists>,
}

impl<S> HeaderWhitelist<S> {
    /// Wraps `inner` with the default allow-lists.
    pub fn new(inner: S) -> Self {
        HeaderWhitelistLayer::new().layer(inner)
    }

    /// A layer for this middleware.
    pub fn layer() -> HeaderWhitelistLayer {
        HeaderWhitelistLayer::new()
    }

    inner_accessors!();
}

/// Keeps only the allowed headers of `headers`, in place: the refused
/// names are removed (all their values), the rest keep their order. A
/// request usually has none to refuse, so nothing is allocated or moved.
fn retain_allowed(headers: &mut HeaderMap, allowed: &HashSet<HeaderName>) {
    let refused: Vec<HeaderName> = headers
        .keys()
        .filter(|name| !allowed.contains(*name) || is_denied(name))
        .cloned()
        .collect();
    for name in refused {
        headers.remove(name);
    }
}

fn is_denied(name: &HeaderName) -> bool {
    let name = name.as_str();
    DENIED.contains(&name) || name.starts_with("x-forwarded-")
}

impl<S> Service<Request<Bytes>> for HeaderWhitelist<S>
where
    S: Service<Request<Bytes>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let platform = match req.extensions().get::<SelectedAccount>() {
            Some(account) => account.platform(),
            None => match ApiFormat::of(&req) {
                ApiFormat::Anthropic => Platform::Anthropic,
                ApiFormat::OpenAi => Platform::OpenAi,
            },
        };
        let allowed = match platform {
            Platform::Anthropic => &self.lists.anthropic,
            Platform::OpenAi => &self.lists.openai,
        };
        retain_allowed(req.headers_mut(), allowed);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn multi_valued_allowed_headers_keep_every_value() {
        let mut headers = HeaderMap::new();
        headers.append("anthropic-beta", HeaderValue::from_static("a"));
        headers.append("anthropic-beta", HeaderValue::from_static("b"));
        headers.append("cookie", HeaderValue::from_static("c"));
        let layer = HeaderWhitelistLayer::new();
        retain_allowed(&mut headers, &layer.lists.anthropic);
        let betas: Vec<_> = headers.get_all("anthropic-beta").iter().collect();
        assert_eq!(betas, ["a", "b"]);
        assert!(!headers.contains_key("cookie"));
    }

    #[test]
    fn denied_headers_stay_denied_when_allowed_by_hand() {
        let layer = HeaderWhitelistLayer::new()
            .allow(Platform::Anthropic, HeaderName::from_static("cookie"))
            .allow(
                Platform::Anthropic,
                HeaderName::from_static("x-forwarded-host"),
            )
            .allow(Platform::Anthropic, HeaderName::from_static("x-custom"));
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("c"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("h"));
        headers.insert("x-custom", HeaderValue::from_static("ok"));
        retain_allowed(&mut headers, &layer.lists.anthropic);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-custom"], "ok");
    }

    #[test]
    fn openai_list_drops_anthropic_headers() {
        let layer = HeaderWhitelistLayer::new();
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-beta", HeaderValue::from_static("x"));
        headers.insert("openai-beta", HeaderValue::from_static("assistants=v2"));
        retain_allowed(&mut headers, &layer.lists.openai);
        assert!(!headers.contains_key("anthropic-beta"));
        assert!(headers.contains_key("openai-beta"));
    }
}
