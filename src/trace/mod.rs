//! One `tracing` span per request, and one log line when its answer head
//! leaves.
//!
//! The span `request` carries the request id, method and path; inner
//! layers fill in what they learn (`key` name, `model`, a `session`
//! prefix), and the closing event adds status, account, attempts and
//! latency. It never holds a credential, and never message content.
//!
//! That event is at `INFO`, except for answers whose usage report goes to
//! a sink that logs it ([`UsageHandle::logged`]): the usage line, written
//! when the body ends, already says how the request went, so the head line
//! is at `DEBUG` and a request costs one `INFO` line, not two.
//!
//! # Examples
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::trace::RequestTraceLayer;
//! use tower_llm_relay::RelayBody;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let inner = service_fn(|_: Request<()>| async {
//!     // Inner layers record what they learn on the current span.
//!     tracing::Span::current().record("model", "claude-sonnet-4-5");
//!     Ok::<_, std::convert::Infallible>(Response::new(RelayBody::empty()))
//! });
//! let response = RequestTraceLayer::new().layer(inner).oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use tracing::field::Empty;
use tracing::Span;

use crate::account::ServedBy;
use crate::request_id::RequestId;
use crate::usage::UsageHandle;

/// Records `value` as the field `name` of the current span, as
/// `Span::current().record(name, value)` does, without taking a handle on
/// the span: the handle's clone and drop are two more trips through the
/// subscriber's span registry (and a dispatcher reference count) for each
/// of the three fields recorded per request.
pub(crate) fn record_on_current_span(name: &str, value: &str) {
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let (Some(id), Some(metadata)) = (current.id(), current.metadata()) else {
            return;
        };
        let fields = metadata.fields();
        if let Some(field) = fields.field(name) {
            let values = [(&field, Some(&value as &dyn tracing::Value))];
            dispatch.record(id, &tracing::span::Record::new(&fields.value_set(&values)));
        }
    });
}

/// Applies [`RequestTrace`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTraceLayer;

impl RequestTraceLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RequestTraceLayer {
    type Service = RequestTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTrace { inner }
    }
}

/// Middleware that traces requests; see the module docs.
#[derive(Debug, Clone)]
pub struct RequestTrace<S> {
    inner: S,
}

impl<S> RequestTrace<S> {
    /// A layer for this middleware.
    pub fn layer() -> RequestTraceLayer {
        RequestTraceLayer
    }

    inner_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .map_or("", RequestId::as_str);
        let span = tracing::info_span!(
            "request",
            id = %id,
            method = %req.method(),
            path = req.uri().path(),
            key = Empty,
            model = Empty,
            session = Empty,
        );
        // Entered while the inner layers run their synchronous part, so
        // they can record on it; the future is polled inside it too.
        let inner = span.in_scope(|| self.inner.call(req));
        ResponseFuture {
            inner,
            span,
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// Response future of [`RequestTrace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        started: Instant,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let account = response
                .extensions()
                .get::<ServedBy>()
                .map_or("", |s| s.0.as_str());
            let attempts = response
                .headers()
                .get("x-relay-attempts")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0");
            let status = response.status();
            // Counted here, where every answer passes, also those that a
            // layer answers itself (a refused key, a bad body).
            if status.is_client_error() || status.is_server_error() {
                metrics::counter!("relay_errors_total", "status" => crate::stats::status_label(status))
                    .increment(1);
            }
            let head_ms = this.started.elapsed().as_millis() as u64;
            let usage_logged = response
                .extensions()
                .get::<UsageHandle>()
                .is_some_and(UsageHandle::logged);
            if usage_logged {
                tracing::debug!(status = status.as_u16(), account = %account, attempts, head_ms, "answered");
            } else {
                tracing::info!(status = status.as_u16(), account = %account, attempts, head_ms, "answered");
            }
        }
        Poll::Ready(result)
    }
}
