use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{header, HeaderName, Response};
use hyper_util::client::legacy;
use pin_project_lite::pin_project;
use tokio::time::Timeout;

use super::coalesce::Coalesce;
use super::pool::{PooledBody, SendError};
use crate::account::AccountId;
use crate::body::RelayBody;
use crate::error::{RelayError, UpstreamError, UpstreamErrorKind};

/// Response headers that belong to the upstream hop or account.
const DROPPED_RESPONSE_HEADERS: [HeaderName; 10] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::SET_COOKIE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("anthropic-organization-id"),
    HeaderName::from_static("openai-organization"),
];

pin_project! {
    /// Response future of [`Upstream`](super::Upstream).
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

/// A request on its way through the [`pool`](super::pool).
pub(super) type PooledFuture =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody>, SendError>> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State {
        Waiting {
            #[pin]
            future: Timeout<legacy::ResponseFuture>,
            account: AccountId,
        },
        Pooled {
            #[pin]
            future: Timeout<PooledFuture>,
            account: AccountId,
        },
        Failed {
            error: Option<UpstreamError>,
        },
    }
}

impl ResponseFuture {
    pub(super) fn new(
        future: legacy::ResponseFuture,
        timeout: Duration,
        account: AccountId,
    ) -> Self {
        Self {
            state: State::Waiting {
                future: tokio::time::timeout(timeout, future),
                account,
            },
        }
    }

    pub(super) fn pooled(future: PooledFuture, timeout: Duration, account: AccountId) -> Self {
        Self {
            state: State::Pooled {
                future: tokio::time::timeout(timeout, future),
                account,
            },
        }
    }

    pub(super) fn failed(error: UpstreamError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<RelayBody>, RelayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Waiting { future, account } => {
                let answer = match ready!(future.poll(cx)) {
                    Ok(Ok(response)) => {
                        Ok(answer(response, |body| RelayBody::new(Coalesce::new(body))))
                    }
                    Ok(Err(e)) if e.is_connect() => Err((UpstreamErrorKind::Connect, e.into())),
                    Ok(Err(e)) => Err((UpstreamErrorKind::Io, e.into())),
                    Err(elapsed) => Err((UpstreamErrorKind::Timeout, elapsed.into())),
                };
                Poll::Ready(answer.map_err(|failure| failed(failure, account)))
            }
            StateProj::Pooled { future, account } => {
                let answer = match ready!(future.poll(cx)) {
                    Ok(Ok(response)) => Ok(answer(response, |body| {
                        RelayBody::new(Coalesce::in_task(body))
                    })),
                    Ok(Err(failure)) => Err(failure),
                    Err(elapsed) => Err((UpstreamErrorKind::Timeout, elapsed.into())),
                };
                Poll::Ready(answer.map_err(|failure| failed(failure, account)))
            }
            StateProj::Failed { error } => Poll::Ready(match error.take() {
                Some(e) => Err(e.into()),
                None => Err(RelayError::NotFound),
            }),
        }
    }
}

/// The upstream's answer without the headers of its hop and account.
fn answer<B>(response: Response<B>, body: impl FnOnce(B) -> RelayBody) -> Response<RelayBody> {
    let (mut parts, inner) = response.into_parts();
    // The answer's few names against the list: ten lookups by hash cost
    // more, and an answer usually has none of them.
    let dropped: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| DROPPED_RESPONSE_HEADERS.contains(name))
        .cloned()
        .collect();
    for name in dropped {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, body(inner))
}

fn failed((kind, source): SendError, account: &AccountId) -> RelayError {
    UpstreamError::new(kind, account.clone(), Some(source)).into()
}
