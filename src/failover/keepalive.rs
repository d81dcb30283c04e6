//! SSE keep-alive while a streaming request waits for its first event.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::body::{BoxError, RelayBody};
use crate::endpoint::ApiFormat;
use crate::error::RelayError;

use super::body::stream_error_event;
use super::ResponseFuture;

/// An SSE comment: clients ignore it, and it is never an event, which
/// would reset their idle watchdogs.
const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// Answers `run` at once if it is ready within `every`; otherwise sends
/// the 200 stream head now and `: keepalive` comments every `every` until
/// `run` has a first event, then its stream. Failover stays possible
/// meanwhile; if every attempt fails, the stream ends with an SSE error
/// event.
pub(super) async fn with_keepalive(
    mut run: ResponseFuture,
    every: Duration,
    format: ApiFormat,
) -> Result<Response<RelayBody>, RelayError> {
    tokio::select! {
        result = &mut run => return result,
        () = tokio::time::sleep(every) => {}
    }
    let mut ticks = tokio::time::interval_at(Instant::now(), every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let body = KeepaliveBody {
        state: State::Waiting(run),
        ticks,
        format,
    };
    let mut response = Response::new(RelayBody::new(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

enum State {
    Waiting(ResponseFuture),
    Streaming(RelayBody),
    Done,
}

struct KeepaliveBody {
    state: State,
    ticks: Interval,
    format: ApiFormat,
}

impl Body for KeepaliveBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Streaming(body) => return Pin::new(body).poll_frame(cx),
                State::Waiting(run) => {
                    if let Poll::Ready(result) = run.as_mut().poll(cx) {
                        match result {
                            Ok(response) if response.status().is_success() => {
                                this.state = State::Streaming(response.into_body());
                                continue;
                            }
                            // The head is gone: report in band.
                            _ => {
                                this.state = State::Done;
                                let event = stream_error_event(this.format);
                                return Poll::Ready(Some(Ok(Frame::data(event))));
                            }
                        }
                    }
                    ready!(this.ticks.poll_tick(cx));
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEPALIVE)))));
                }
            }
        }
    }
}
