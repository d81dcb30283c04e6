//! The response future shared by layers that adjust a response on its way out.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

/// Something done once to a successful response as it leaves a layer
/// (add a header, wrap the body).
pub trait ResponseHook<B> {
    /// Adjusts the response.
    fn apply(self, response: Response<B>) -> Response<B>;
}

pin_project! {
    /// Resolves the inner future, then applies a [`ResponseHook`] to an
    /// `Ok` response. Errors pass through untouched.
    pub struct OnResponse<F, H> {
        #[pin]
        inner: F,
        hook: Option<H>,
    }
}

impl<F, H> OnResponse<F, H> {
    /// Wraps `inner`, applying `hook` to its response.
    pub fn new(inner: F, hook: H) -> Self {
        Self {
            inner,
            hook: Some(hook),
        }
    }
}

impl<F, H, B, E> Future for OnResponse<F, H>
where
    F: Future<Output = Result<Response<B>, E>>,
    H: ResponseHook<B>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        // `take` keeps the hook one-shot even if polled after completion.
        Poll::Ready(Ok(match this.hook.take() {
            Some(hook) => hook.apply(response),
            None => response,
        }))
    }
}

pin_project! {
    /// The future of a layer that either answers at once (a rejection, or
    /// a response made locally) or passes the request on.
    pub struct RejectOr<F, E> {
        #[pin]
        state: RejectOrState<F, E>,
    }
}

pin_project! {
    #[project = RejectOrProj]
    enum RejectOrState<F, E> {
        Ready { result: Option<Result<Response<crate::RelayBody>, E>> },
        Inner { #[pin] future: F },
    }
}

impl<F, E> RejectOr<F, E> {
    /// Answers with `response`, without calling the inner service.
    pub fn respond(response: Response<crate::RelayBody>) -> Self {
        Self::ready(Ok(response))
    }

    /// Answers with `result`, without calling the inner service.
    pub fn ready(result: Result<Response<crate::RelayBody>, E>) -> Self {
        Self {
            state: RejectOrState::Ready {
                result: Some(result),
            },
        }
    }

    /// Waits for the inner service's `future`.
    pub fn inner(future: F) -> Self {
        Self {
            state: RejectOrState::Inner { future },
        }
    }
}

impl<F, E> Future for RejectOr<F, E>
where
    F: Future<Output = Result<Response<crate::RelayBody>, E>>,
{
    type Output = Result<Response<crate::RelayBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RejectOrProj::Inner { future } => future.poll(cx),
            RejectOrProj::Ready { result } => match result.take() {
                Some(result) => Poll::Ready(result),
                // Polled after completion: a caller bug; never resolve twice.
                None => Poll::Pending,
            },
        }
    }
}
