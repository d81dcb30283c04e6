use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{LengthLimitError, Limited};
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
            collect: ReadWhole<Limited<B>>,
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
                collect: ReadWhole::new(Limited::new(body, limit)),
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
                        Ok(body) => body,
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

pin_project! {
    /// Reads a body whole, trailers dropped: a body of one data frame (a
    /// small request, read with its head) is that frame as it came; more
    /// are joined. `http_body_util`'s `Collect` queues every frame in a
    /// `VecDeque` first, one more allocation per request.
    struct ReadWhole<B> {
        #[pin]
        body: B,
        first: Option<Bytes>,
        joined: Option<BytesMut>,
    }
}

impl<B> ReadWhole<B> {
    fn new(body: B) -> Self {
        Self {
            body,
            first: None,
            joined: None,
        }
    }
}

impl<B: Body> Future for ReadWhole<B> {
    type Output = Result<Bytes, B::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(frame) = ready!(this.body.as_mut().poll_frame(cx)) else {
                let whole = match (this.joined.take(), this.first.take()) {
                    (Some(joined), _) => joined.freeze(),
                    (None, Some(first)) => first,
                    (None, None) => Bytes::new(),
                };
                return Poll::Ready(Ok(whole));
            };
            let Ok(mut data) = frame?.into_data() else {
                continue;
            };
            if !data.has_remaining() {
                continue;
            }
            // No copy when the data is `Bytes` (as hyper's are).
            let data = data.copy_to_bytes(data.remaining());
            if let Some(joined) = this.joined.as_mut() {
                joined.extend_from_slice(&data);
            } else if let Some(first) = this.first.take() {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                *this.joined = Some(joined);
            } else {
                *this.first = Some(data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// `parts` as data frames, then empty trailers.
    async fn read(parts: &[Bytes]) -> Bytes {
        let body = RelayBody::from_frames(parts.iter().cloned().map(Ok))
            .with_trailers(async { Some(Ok(http::HeaderMap::new())) });
        ReadWhole::new(body).await.unwrap()
    }

    #[tokio::test]
    async fn one_frame_is_kept_as_it_came_and_more_are_joined() {
        let only = Bytes::from_static(b"{\"model\":\"m\"}");
        let read_only = read(std::slice::from_ref(&only)).await;
        assert_eq!(read_only, only);
        assert_eq!(read_only.as_ptr(), only.as_ptr(), "not copied");

        let parts = ["{\"mo", "", "del\":", "\"m\"}"];
        let frames: Vec<_> = parts.iter().map(|p| Bytes::from(*p)).collect();
        assert_eq!(read(&frames).await, parts.concat());
        assert_eq!(read(&[]).await, Bytes::new());
    }
}
