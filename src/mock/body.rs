//! The mock's response body: whole, or paced event by event, recording
//! every frame as it goes out.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::state::{InFlight, Recorder, StreamEnd, StreamTally};

/// How long a cut waits after its last frame, so the transport has written
/// that frame out before the connection breaks (else the client could lose
/// events that were "sent").
const PAUSE_BEFORE_CUT: Duration = Duration::from_millis(20);

/// How a paced body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// A clean end of the body.
    Clean,
    /// A body error, which makes the server break the connection (HTTP/1)
    /// or reset the stream (HTTP/2).
    Cut,
}

enum Source {
    Whole(Option<Bytes>),
    Paced {
        events: VecDeque<Bytes>,
        interval: Duration,
        ending: Ending,
        delay: Option<Pin<Box<Sleep>>>,
        paused_for_cut: bool,
        finished: bool,
    },
}

/// A response body that records what it hands to the server, so
/// `received()` shows exactly what went out by the time the client sees it.
pub(super) struct MockBody {
    source: Source,
    recorder: Option<Recorder>,
    tally: Option<StreamTally>,
    // Held so the request counts as in flight until its body is done.
    in_flight: Option<InFlight>,
    // Paced frames go out behind a `: sent_unix_ns=N` comment line.
    stamp: bool,
}

impl std::fmt::Debug for MockBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBody").finish_non_exhaustive()
    }
}

impl MockBody {
    /// A whole body, sent at once.
    pub(super) fn whole(bytes: Bytes) -> Self {
        Self {
            source: Source::Whole(Some(bytes)),
            recorder: None,
            tally: None,
            in_flight: None,
            stamp: false,
        }
    }

    /// A body sent frame by frame with `interval` between frames.
    pub(super) fn paced(frames: Vec<Bytes>, interval: Duration, ending: Ending) -> Self {
        Self {
            source: Source::Paced {
                events: frames.into(),
                interval,
                ending,
                delay: None,
                paused_for_cut: false,
                finished: false,
            },
            recorder: None,
            tally: None,
            in_flight: None,
            stamp: false,
        }
    }

    pub(super) fn recorded_by(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub(super) fn counted_as_stream(mut self, tally: StreamTally) -> Self {
        self.tally = Some(tally);
        self
    }

    pub(super) fn in_flight(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    pub(super) fn stamped(mut self, stamp: bool) -> Self {
        self.stamp = stamp;
        self
    }

    fn send(&self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(recorder) = &self.recorder {
            recorder.sent(&bytes);
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn end(&mut self, how: StreamEnd) {
        if let Some(tally) = &mut self.tally {
            tally.end(how);
        }
        self.in_flight = None;
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match &mut this.source {
            Source::Whole(bytes) => match bytes.take() {
                Some(bytes) => this.send(bytes),
                None => {
                    this.end(StreamEnd::Completed);
                    Poll::Ready(None)
                }
            },
            Source::Paced {
                events,
                interval,
                ending,
                delay,
                paused_for_cut,
                finished,
            } => {
                if *finished {
                    return Poll::Ready(None);
                }
                if let Some(sleep) = delay {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *delay = None;
                }
                if let Some(event) = events.pop_front() {
                    if !events.is_empty() && !interval.is_zero() {
                        *delay = Some(Box::pin(tokio::time::sleep(*interval)));
                    }
                    let event = if this.stamp { stamp(&event) } else { event };
                    return this.send(event);
                }
                match ending {
                    Ending::Clean => {
                        *finished = true;
                        this.end(StreamEnd::Completed);
                        Poll::Ready(None)
                    }
                    Ending::Cut if !*paused_for_cut => {
                        *paused_for_cut = true;
                        let mut sleep = Box::pin(tokio::time::sleep(PAUSE_BEFORE_CUT));
                        // Registers the waker; a zero-length pause is not
                        // wanted, so this is Pending.
                        let _ = sleep.as_mut().poll(cx);
                        *delay = Some(sleep);
                        Poll::Pending
                    }
                    Ending::Cut => {
                        *finished = true;
                        this.end(StreamEnd::Cut);
                        Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "answer cut off by the mock upstream",
                        ))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Whole(bytes) => bytes.is_none(),
            Source::Paced { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Whole(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Source::Whole(None) => SizeHint::with_exact(0),
            Source::Paced { .. } => SizeHint::default(),
        }
    }
}

/// `event` behind a comment line with the wall-clock time now.
fn stamp(event: &[u8]) -> Bytes {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut stamped = format!(": sent_unix_ns={nanos}\n").into_bytes();
    stamped.extend_from_slice(event);
    Bytes::from(stamped)
}
