use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{BoxError, RelayBody};
use crate::endpoint::ApiFormat;
use crate::error::RelayError;

pin_project! {
    /// Response future of [`BodyLimit`](super::BodyLimit): reads the body,
    /// then calls the inner service.
    pub struct ResponseFuture<B, S>
    where
        B: Body,
        B::Error: Into<BoxError>,
        S: Service<Request<Bytes>>,
    {
        #[pin]
        state: State<B, S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B, S>
    where
        B: Body,
        B::Error: Into<BoxError>,
        S: Service<Request<Bytes>>,
    {
        Collecting {
            #[pin]
            collect: Collect<Limited<B>>,
            parts: Option<Parts>,
            inner: Option<S>,
            limit: usize,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Rejected {
            response: Option<Response<RelayBody>>,
        },
    }
}

impl<B, S> ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Bytes>>,
{
    pub(super) fn collecting(req: Request<B>, limit: usize, inner: S) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            state: State::Collecting {
                collect: Limited::new(body, limit).collect(),
                parts: Some(parts),
                inner: Some(inner),
                limit,
            },
        }
    }

    pub(super) fn rejected<T>(req: &Request<T>, error: RelayError) -> Self {
        Self {
            state: State::Rejected {
                response: Some(error.into_response(ApiFormat::of(req))),
            },
        }
    }
}

impl<B, S> Future for ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Output = Result<Response<RelayBody>, RelayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Collecting {
                    collect,
                    parts,
                    inner,
                    limit,
                } => {
                    let collected = ready!(collect.poll(cx));
                    let (Some(parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        return Poll::Ready(Err(RelayError::BodyRead(
                            "polled after completion".into(),
                        )));
                    };
                    let body = match collected {
                        Ok(collected) => collected.to_bytes(),
                        Err(e) => {
                            let format = ApiFormat::of(&Request::from_parts(parts, ()));
                            let error = if e.is::<LengthLimitError>() {
                                RelayError::BodyTooLarge { limit: *limit }
                            } else {
                                RelayError::BodyRead(e)
                            };
                            return Poll::Ready(Ok(error.into_response(format)));
                        }
                    };
                    let future = inner.call(Request::from_parts(parts, body));
                    state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return Poll::Ready(
                        response
                            .take()
                            .ok_or_else(|| RelayError::BodyRead("polled after completion".into())),
                    );
                }
            }
        }
    }
}
