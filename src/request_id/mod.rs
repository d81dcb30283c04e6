//! Gives every request an id, and every response the `x-relay-request-id`
//! header.
//!
//! The id is made here, never taken from the client, so logs can trust it.
//! It is put in the request extensions as a [`RequestId`] for later layers.
//!
//! # Examples
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::request_id::{RequestId, RequestIdLayer};
//! use tower_llm_relay::RelayBody;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let service = RequestIdLayer::new().layer(service_fn(|req: Request<()>| async move {
//!     assert!(req.extensions().get::<RequestId>().is_some());
//!     Ok::<_, std::convert::Infallible>(Response::new(RelayBody::empty()))
//! }));
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert!(response.headers()["x-relay-request-id"].to_str().unwrap().starts_with("req_"));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::{OnResponse, ResponseHook};

/// The response header that carries the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-relay-request-id");

/// A request's id (request extension): `req_` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self::of_number(rand::random())
    }

    /// `req_` and `n` in 32 hex digits.
    fn of_number(n: u128) -> Self {
        let mut text = *b"req_00000000000000000000000000000000";
        crate::hex::encode(&n.to_be_bytes(), &mut text[4..]);
        // Only ASCII was written: never the default.
        Self(std::str::from_utf8(&text).unwrap_or_default().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Applies [`SetRequestId`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl RequestIdLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// Middleware that assigns request ids; see the module docs.
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S> SetRequestId<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer for this middleware.
    pub fn layer() -> RequestIdLayer {
        RequestIdLayer
    }

    inner_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetRequestId<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = OnResponse<S::Future, HeaderHook>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let id = RequestId::generate();
        let value = HeaderValue::from_str(id.as_str()).ok();
        req.extensions_mut().insert(id);
        OnResponse::new(self.inner.call(req), HeaderHook(value))
    }
}

/// Puts the request id on the response.
#[derive(Debug)]
pub struct HeaderHook(Option<HeaderValue>);

impl<B> ResponseHook<B> for HeaderHook {
    fn apply(self, mut response: Response<B>) -> Response<B> {
        if let Some(value) = self.0 {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_req_and_32_hex_digits() {
        for n in [0, 1, 0xdead_beef, u128::MAX, u128::MAX / 3, 1 << 127] {
            assert_eq!(RequestId::of_number(n).as_str(), format!("req_{n:032x}"));
        }
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
