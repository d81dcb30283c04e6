//! Turns a [`RelayError`] from the layers inside into a response in the
//! API's own format: the outer edge of the relay, where errors stop being
//! errors.
//!
//! The format (Anthropic or OpenAI) is taken from the request before it is
//! passed on, so the answer matches what the client speaks. Server-side
//! errors are logged with their cause chain; the client sees only the
//! error's safe message.
//!
//! # Examples
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::error_response::ErrorResponseLayer;
//! use tower_llm_relay::{RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let inner = service_fn(|_: Request<()>| async {
//!     Err::<Response<RelayBody>, _>(RelayError::NotFound)
//! });
//! let service = ErrorResponseLayer::new().layer(inner);
//! let request = Request::builder().uri("/v1/chat/completions").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::RelayBody;
use crate::endpoint::ApiFormat;
use crate::error::RelayError;

/// Applies [`ErrorResponse`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer;

impl ErrorResponseLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner)
    }
}

/// Middleware that answers errors in the API's format; see the module docs.
#[derive(Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    // A readiness error of the inner service, answered by the next `call`.
    not_ready: Option<RelayError>,
}

impl<S: Clone> Clone for ErrorResponse<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S> ErrorResponse<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            not_ready: None,
        }
    }

    /// A layer for this middleware.
    pub fn layer() -> ErrorResponseLayer {
        ErrorResponseLayer
    }

    inner_accessors!();
}

impl<S, ReqBody> Service<Request<ReqBody>> for ErrorResponse<S>
where
    S: Service<Request<ReqBody>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // This service never fails: a readiness error of the inner service
        // becomes the answer to the next request.
        if self.not_ready.is_none() {
            if let Err(e) = ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(e);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let format = ApiFormat::of(&req);
        let state = match self.not_ready.take() {
            Some(error) => State::Failed { error: Some(error) },
            None => State::Called {
                inner: self.inner.call(req),
            },
        };
        ResponseFuture { state, format }
    }
}

pin_project! {
    /// Response future of [`ErrorResponse`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        format: ApiFormat,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] inner: F },
        Failed { error: Option<RelayError> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RelayBody>, RelayError>>,
{
    type Output = Result<Response<RelayBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Called { inner } => ready!(inner.poll(cx)),
            StateProj::Failed { error } => Err(error.take().unwrap_or(RelayError::NotFound)),
        };
        match result {
            Ok(response) => Poll::Ready(Ok(response)),
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "request failed");
                } else {
                    tracing::debug!(error = %error, "request refused");
                }
                {
                    // Counted by the trace layer with every other answer.
                    Poll::Ready(Ok(error.into_response(*this.format)))
                }
            }
        }
    }
}
