//! Routes a request to its [`Endpoint`] and parses its body into a
//! [`ParsedRequest`].
//!
//! A path the relay does not serve is a 404, a method other than `POST` a
//! 405, an invalid body a 400 `invalid_request_error`, and a model the
//! caller's [`Principal`] may not use a 403 — each in the API's format and
//! before anything goes upstream. On success the request carries the
//! [`Endpoint`] and the [`ParsedRequest`] as extensions.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::parse::ParseRequestLayer;
//! use tower_llm_relay::{ParsedRequest, RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let inner = service_fn(|req: Request<Bytes>| async move {
//!     let model = req.extensions().get::<ParsedRequest>().unwrap().model().to_owned();
//!     Ok::<_, RelayError>(Response::new(RelayBody::full(model)))
//! });
//! let service = ParseRequestLayer::new().layer(inner);
//! let post = |body: &'static str| {
//!     Request::post("/v1/messages").body(Bytes::from_static(body.as_bytes())).unwrap()
//! };
//! let ok = post(r#"{"model":"claude-sonnet-4-5","messages":[]}"#);
//! assert_eq!(service.clone().oneshot(ok).await.unwrap().status(), StatusCode::OK);
//! let no_model = post(r#"{"messages":[]}"#);
//! assert_eq!(service.oneshot(no_model).await.unwrap().status(), StatusCode::BAD_REQUEST);
//! # }
//! ```

mod parsed;

pub use parsed::ParsedRequest;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::RelayBody;
use crate::endpoint::{ApiFormat, Endpoint};
use crate::error::RelayError;
use crate::future::RejectOr;
use crate::principal::Principal;

/// Applies [`ParseRequest`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseRequestLayer;

impl ParseRequestLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ParseRequestLayer {
    type Service = ParseRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ParseRequest::new(inner)
    }
}

/// Middleware that routes and parses requests; see the module docs.
#[derive(Debug, Clone)]
pub struct ParseRequest<S> {
    inner: S,
}

impl<S> ParseRequest<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer for this middleware.
    pub fn layer() -> ParseRequestLayer {
        ParseRequestLayer
    }

    inner_accessors!();
}

/// Routes and parses `req`, checking the model against its principal.
fn parse(req: &Request<Bytes>) -> Result<(Endpoint, ParsedRequest), RelayError> {
    let endpoint = Endpoint::from_path(req.uri().path()).ok_or(RelayError::NotFound)?;
    if req.method() != Method::POST {
        return Err(RelayError::MethodNotAllowed);
    }
    let parsed = ParsedRequest::parse(endpoint, req.body())?;
    if let Some(principal) = req.extensions().get::<Principal>() {
        if !principal.may_use(parsed.model()) {
            return Err(RelayError::ModelNotAllowed(parsed.model().to_owned()));
        }
    }
    Ok((endpoint, parsed))
}

impl<S> Service<Request<Bytes>> for ParseRequest<S>
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
        match parse(&req) {
            Ok((endpoint, parsed)) => {
                crate::trace::record_on_current_span("model", parsed.model());
                req.extensions_mut().insert(endpoint);
                req.extensions_mut().insert(parsed);
                RejectOr::inner(self.inner.call(req))
            }
            Err(error) => RejectOr::respond(error.into_response(ApiFormat::of(&req))),
        }
    }
}
