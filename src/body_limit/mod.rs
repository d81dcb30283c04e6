//! Buffers the request body into [`Bytes`], refusing bodies past a limit.
//!
//! Every later layer sees a `Request<Bytes>`: a buffered body is what lets
//! failover replay a request on another account. A body past the limit is
//! answered with 413 in the API's format before it is read to the end; a
//! `content-length` past the limit is refused before reading anything.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::body_limit::BodyLimitLayer;
//! use tower_llm_relay::{RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let inner = service_fn(|req: Request<Bytes>| async move {
//!     Ok::<_, RelayError>(Response::new(RelayBody::full(req.into_body())))
//! });
//! let service = BodyLimitLayer::new(8).layer(inner);
//!
//! let small = Request::new(Full::new(Bytes::from_static(b"tiny")));
//! assert_eq!(service.clone().oneshot(small).await.unwrap().status(), StatusCode::OK);
//!
//! let large = Request::new(Full::new(Bytes::from_static(b"far too large")));
//! assert_eq!(service.oneshot(large).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
//! # }
//! ```

mod future;

pub use future::ResponseFuture;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{BoxError, RelayBody};
use crate::error::RelayError;

/// The default limit: 32 MiB, room for long conversations with images.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Applies [`BodyLimit`]: see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    limit: usize,
}

impl BodyLimitLayer {
    /// Buffers bodies of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl Default for BodyLimitLayer {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit::new(inner, self.limit)
    }
}

/// Middleware that buffers and limits request bodies; see the module docs.
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> BodyLimit<S> {
    /// Wraps `inner`, buffering bodies of at most `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }

    /// A layer for this middleware.
    pub fn layer(limit: usize) -> BodyLimitLayer {
        BodyLimitLayer::new(limit)
    }

    inner_accessors!();
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = ResponseFuture<B, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service handles this request; a fresh clone takes its
        // place for the next one (tower's usual hand-over).
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.limit as u64) {
            return ResponseFuture::rejected(&req, RelayError::BodyTooLarge { limit: self.limit });
        }
        ResponseFuture::collecting(req, self.limit, inner)
    }
}
