//! Authenticates the client key and attaches its [`Principal`].
//!
//! The key comes from `x-api-key` or `Authorization: Bearer` (when both are
//! sent, `x-api-key` wins). It is compared with every configured key, in
//! constant time and without stopping at a match (see [`ClientKeys`]), so an
//! unknown key costs the same as a known one. On success both headers are
//! removed, so no later layer
//! can forward the client's credential upstream; otherwise the answer is 401
//! in the API's format.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use secrecy::SecretString;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::auth::AuthLayer;
//! use tower_llm_relay::{ClientKeys, Principal, RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut keys = ClientKeys::new();
//! keys.insert(SecretString::from("sk-relay-alice"), Principal::new("alice"));
//! let inner = service_fn(|req: Request<Bytes>| async move {
//!     let who = req.extensions().get::<Principal>().unwrap().id().to_string();
//!     assert!(req.headers().get("x-api-key").is_none());
//!     Ok::<_, RelayError>(Response::new(RelayBody::full(who)))
//! });
//! let service = AuthLayer::new(Arc::new(keys)).layer(inner);
//!
//! let ok = Request::builder().header("x-api-key", "sk-relay-alice").body(Bytes::new()).unwrap();
//! assert_eq!(service.clone().oneshot(ok).await.unwrap().status(), StatusCode::OK);
//!
//! let bad = Request::builder().header("authorization", "Bearer nope").body(Bytes::new()).unwrap();
//! assert_eq!(service.oneshot(bad).await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::RelayBody;
use crate::endpoint::ApiFormat;
use crate::error::RelayError;
use crate::future::RejectOr;
use crate::principal::{ClientKeys, Principal};

/// The header Anthropic clients send their key in.
pub const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// Applies [`Auth`]: see the module docs.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: Arc<ClientKeys>,
}

impl AuthLayer {
    /// Accepts these keys.
    pub fn new(keys: Arc<ClientKeys>) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::new(inner, self.keys.clone())
    }
}

/// Middleware that authenticates client keys; see the module docs.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    keys: Arc<ClientKeys>,
}

impl<S> Auth<S> {
    /// Wraps `inner`, accepting `keys`.
    pub fn new(inner: S, keys: Arc<ClientKeys>) -> Self {
        Self { inner, keys }
    }

    /// A layer for this middleware.
    pub fn layer(keys: Arc<ClientKeys>) -> AuthLayer {
        AuthLayer::new(keys)
    }

    inner_accessors!();

    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, RelayError> {
        let presented = presented_key(headers).ok_or(RelayError::MissingApiKey)?;
        let key = presented.map_err(|()| RelayError::InvalidApiKey)?;
        self.keys
            .find(key)
            .cloned()
            .ok_or(RelayError::InvalidApiKey)
    }
}

/// The key a client presented: `None` when it sent none, `Err` when the
/// header is not text.
fn presented_key(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    if let Some(value) = headers.get(X_API_KEY) {
        return Some(value.to_str().map(str::trim).map_err(drop));
    }
    let value = headers.get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .map_err(drop)
            .and_then(|v| bearer_token(v).ok_or(())),
    )
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S> Service<Request<Bytes>> for Auth<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = RejectOr<S::Future, RelayError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        match self.authenticate(req.headers()) {
            Ok(principal) => {
                req.headers_mut().remove(X_API_KEY);
                req.headers_mut().remove(header::AUTHORIZATION);
                crate::trace::record_on_current_span("key", principal.id().as_str());
                req.extensions_mut().insert(principal);
                RejectOr::inner(self.inner.call(req))
            }
            Err(error) => RejectOr::respond(error.into_response(ApiFormat::of(&req))),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn x_api_key_wins_over_bearer() {
        let h = headers(&[("x-api-key", "k1"), ("authorization", "Bearer k2")]);
        assert_eq!(presented_key(&h), Some(Ok("k1")));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_invalid() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer k2")])),
            Some(Ok("k2"))
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            Some(Err(()))
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }
}
