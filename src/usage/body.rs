//! The response body wrapper that reads usage as frames go by, and the
//! handle that resolves to its report.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::extract::Extractor;
use super::sink::UsageSink;
use super::types::{BodyEnd, UsageReport};
use crate::account::AccountId;
use crate::body::{BoxError, RelayBody};
use crate::endpoint::Endpoint;
use crate::principal::KeyId;
use crate::request_id::RequestId;
use crate::sse::splice::{Edit, Splicer};
use crate::sse::{Event, SseScanner};

/// The largest JSON answer read for usage; a larger one is forwarded
/// without being read (and reported with no usage, incomplete).
const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// How the answer is read.
pub(super) enum Framing {
    /// An event stream, observed: frames pass untouched.
    Events(SseScanner),
    /// An event stream from which the relay's own usage chunk is taken out.
    Spliced(Splicer),
    /// A JSON document: the frames are kept (shared, not copied) to be
    /// parsed at the end.
    Document(Frames),
    /// Nothing to read (an error status, another content type).
    Opaque,
}

/// The frames of a JSON answer. Most come in one frame, kept without a
/// `Vec` (whose first push would allocate).
#[derive(Debug, Default)]
pub(super) struct Frames {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    len: usize,
}

impl Frames {
    fn push(&mut self, data: &Bytes) {
        self.len = self.len.saturating_add(data.len());
        if self.len > MAX_DOCUMENT {
            // Too large to read: forwarded without being kept.
            self.first = None;
            self.rest.clear();
        } else if self.first.is_none() {
            // A reference, not a copy.
            self.first = Some(data.clone());
        } else {
            self.rest.push(data.clone());
        }
    }

    /// The whole document, unless it grew past the limit.
    fn whole(&mut self) -> Option<Bytes> {
        if self.len > MAX_DOCUMENT {
            return None;
        }
        let first = self.first.take().unwrap_or_default();
        if self.rest.is_empty() {
            return Some(first);
        }
        let mut whole = BytesMut::with_capacity(self.len);
        whole.extend_from_slice(&first);
        self.rest
            .drain(..)
            .for_each(|f| whole.extend_from_slice(&f));
        Some(whole.freeze())
    }
}

/// What the report says besides what the body shows.
#[derive(Debug)]
pub(super) struct Meta {
    pub(super) request_id: Option<RequestId>,
    pub(super) account: Option<AccountId>,
    pub(super) key: Option<KeyId>,
    pub(super) client_model: Option<String>,
    pub(super) endpoint: Option<Endpoint>,
    pub(super) status: StatusCode,
    pub(super) stream: bool,
    pub(super) started: Instant,
}

/// What a body and its [`UsageHandle`]s share: one allocation per
/// response (a `watch` channel, a flag and the report's own `Arc` were
/// three).
#[derive(Debug, Default)]
struct Shared {
    discarded: AtomicBool,
    /// Set once, when the body ends: `None` when the attempt was discarded
    /// or its body dropped unread.
    resolution: OnceLock<Option<UsageReport>>,
    /// Wakes [`UsageHandle::report`] callers once `resolution` is set.
    resolved: Notify,
}

/// Resolves to the [`UsageReport`] of one response (response extension).
///
/// The usage layer puts one in every response it wraps. It resolves when
/// the body ends, errors, or is dropped after being read from.
///
/// A body dropped before it was ever polled reports nothing: that is an
/// attempt the relay discarded (a failover layer tried another account) or
/// a client that left before the first byte, and no tokens were seen.
/// Nothing goes to the sink and the handle resolves to `None`. A layer that
/// reads part of an attempt and then discards it (peeking at a stream's
/// first event) calls [`UsageHandle::discard`] so that attempt is not
/// counted either: usage is attributed once, to the attempt returned.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::BodyExt;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_llm_relay::usage::{UsageExtractLayer, UsageHandle};
/// use tower_llm_relay::{RelayBody, RelayError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let upstream = service_fn(|_: Request<Bytes>| async {
///     let body = RelayBody::full(r#"{"model":"claude-x","usage":{"input_tokens":3,"output_tokens":5}}"#);
///     Ok::<_, RelayError>(Response::builder().header("content-type", "application/json").body(body).unwrap())
/// });
/// let service = UsageExtractLayer::new().layer(upstream);
/// let req = Request::post("/v1/messages").body(Bytes::new()).unwrap();
/// let response = service.oneshot(req).await.unwrap();
/// let handle = response.extensions().get::<UsageHandle>().unwrap().clone();
/// response.into_body().collect().await.unwrap();
/// let report = handle.report().await.unwrap();
/// assert_eq!(report.usage.output_tokens, 5);
/// assert!(report.complete);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UsageHandle {
    shared: Arc<Shared>,
    logged: bool,
}

impl UsageHandle {
    /// Whether the report goes to a sink that logs it
    /// ([`UsageSink::logs_each_report`]).
    pub fn logged(&self) -> bool {
        self.logged
    }

    /// Waits for the report; `None` when the response reports nothing (see
    /// the type's docs).
    pub async fn report(&self) -> Option<UsageReport> {
        loop {
            let resolved = self.shared.resolved.notified();
            let mut resolved = std::pin::pin!(resolved);
            // Registered before the check, so a resolution after it wakes
            // this waiter.
            resolved.as_mut().enable();
            if let Some(resolution) = self.shared.resolution.get() {
                return resolution.clone();
            }
            resolved.await;
        }
    }

    /// The report, if the body has already ended.
    pub fn get(&self) -> Option<UsageReport> {
        self.shared.resolution.get().cloned().flatten()
    }

    /// Marks the response as a discarded attempt: when its body ends, no
    /// report is made and the handle resolves to `None`.
    pub fn discard(&self) {
        self.shared.discarded.store(true, Ordering::Relaxed);
    }
}

/// Makes the report once: on end of stream, on error, or on drop.
struct Tracker {
    meta: Meta,
    extractor: Extractor,
    sink: Arc<dyn UsageSink>,
    shared: Arc<Shared>,
    polled: bool,
}

impl Tracker {
    fn finish(self, end: BodyEnd) {
        if !self.polled || self.shared.discarded.load(Ordering::Relaxed) {
            self.shared.resolve(None);
            return;
        }
        let x = self.extractor;
        let report = UsageReport {
            request_id: self.meta.request_id,
            account: self.meta.account,
            key: self.meta.key,
            client_model: self.meta.client_model,
            served_model: x.served_model,
            endpoint: self.meta.endpoint,
            stream: self.meta.stream,
            status: self.meta.status,
            usage: x.usage,
            first_token: x.first_token,
            duration: self.meta.started.elapsed(),
            complete: end == BodyEnd::Finished && x.terminal,
            end,
            response_id: x.response_id,
        };
        self.sink.record(&report);
        self.shared.resolve(Some(report));
    }
}

impl Shared {
    fn resolve(&self, resolution: Option<UsageReport>) {
        // A tracker finishes once: the guard takes it to do so.
        let _ = self.resolution.set(resolution);
        self.resolved.notify_waiters();
    }
}

/// Holds the [`Tracker`] until the report is made; dropping it unfired
/// means the client went away.
struct Guard(Option<Tracker>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tracker) = self.0.take() {
            tracker.finish(BodyEnd::ClientGone);
        }
    }
}

pin_project! {
    /// A response body that reads usage from the frames it forwards.
    ///
    /// Frames pass untouched (the same `Bytes`, the same boundaries),
    /// except in one case: a chat stream for which the relay asked for
    /// usage itself, whose usage-only chunk is taken out.
    pub(super) struct UsageBody {
        #[pin]
        inner: RelayBody,
        framing: Framing,
        guard: Guard,
    }
}

impl UsageBody {
    /// Wraps `inner`; returns the body and the handle to its report.
    pub(super) fn new(
        inner: RelayBody,
        framing: Framing,
        meta: Meta,
        extractor: Extractor,
        sink: Arc<dyn UsageSink>,
    ) -> (Self, UsageHandle) {
        let shared = Arc::new(Shared::default());
        let logged = sink.logs_each_report();
        let tracker = Tracker {
            meta,
            extractor,
            sink,
            shared: shared.clone(),
            polled: false,
        };
        let body = Self {
            inner,
            framing,
            guard: Guard(Some(tracker)),
        };
        let handle = UsageHandle { shared, logged };
        (body, handle)
    }
}

impl fmt::Debug for UsageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageBody")
            .field("reported", &self.guard.0.is_none())
            .finish_non_exhaustive()
    }
}

/// Reads one forwarded data frame.
fn observe(framing: &mut Framing, tracker: &mut Tracker, data: &Bytes) {
    match framing {
        Framing::Events(scanner) => scanner.feed(data, |event| {
            tracker.extractor.on_event(event);
        }),
        Framing::Document(frames) => frames.push(data),
        Framing::Spliced(_) | Framing::Opaque => {}
    }
}

/// Reads what can only be read at a clean end.
fn observe_end(framing: &mut Framing, tracker: &mut Tracker) {
    match framing {
        Framing::Events(scanner) => scanner.finish(|event| {
            tracker.extractor.on_event(event);
        }),
        Framing::Document(frames) => {
            if let Some(whole) = frames.whole() {
                tracker.extractor.on_document(&whole);
            }
        }
        Framing::Spliced(_) | Framing::Opaque => {}
    }
}

impl Body for UsageBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(tracker) = this.guard.0.as_mut() {
            tracker.polled = true;
        }
        let polled = match &mut *this.framing {
            Framing::Spliced(splicer) => {
                let mut tracker = this.guard.0.as_mut();
                let mut decide = |event: &Event<'_>, _: &[u8]| {
                    let strip = tracker
                        .as_deref_mut()
                        .is_some_and(|t| t.extractor.on_event(event));
                    if strip {
                        Edit::Drop
                    } else {
                        Edit::Keep
                    }
                };
                splicer.poll_frame(this.inner.as_mut(), cx, &mut decide)
            }
            framing => {
                let polled = this.inner.as_mut().poll_frame(cx);
                if let (Poll::Ready(Some(Ok(frame))), Some(tracker)) =
                    (&polled, this.guard.0.as_mut())
                {
                    if let Some(data) = frame.data_ref() {
                        observe(framing, tracker, data);
                    }
                }
                polled
            }
        };
        let end = match &polled {
            Poll::Pending => None,
            Poll::Ready(None) => Some(BodyEnd::Finished),
            Poll::Ready(Some(Err(_))) => Some(BodyEnd::UpstreamError),
            // Hyper stops polling a body that says it has ended, so the
            // end is noted as soon as the inner body says so.
            Poll::Ready(Some(Ok(_))) => match this.framing {
                Framing::Spliced(_) => None,
                _ => this.inner.is_end_stream().then_some(BodyEnd::Finished),
            },
        };
        if let Some(end) = end {
            if let Some(mut tracker) = this.guard.0.take() {
                if end == BodyEnd::Finished {
                    observe_end(this.framing, &mut tracker);
                }
                tracker.finish(end);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Until the report is made, say "not yet": an empty body is then
        // polled once, and its end seen.
        self.guard.0.is_none()
            && match &self.framing {
                Framing::Spliced(splicer) => splicer.is_end_stream(),
                _ => self.inner.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.framing {
            // Taking a chunk out changes the length.
            Framing::Spliced(_) => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod frames_tests {
    use super::*;

    #[test]
    fn one_frame_is_the_document_more_are_joined_and_too_much_is_dropped() {
        let one = Bytes::from_static(br#"{"usage":{}}"#);
        let mut frames = Frames::default();
        frames.push(&one);
        let whole = frames.whole().unwrap();
        assert_eq!(whole.as_ptr(), one.as_ptr(), "not copied");

        let mut frames = Frames::default();
        for part in [&b"{\"us"[..], b"age\":", b"{}}"] {
            frames.push(&Bytes::copy_from_slice(part));
        }
        assert_eq!(frames.whole().unwrap(), &br#"{"usage":{}}"#[..]);

        // Half the limit and a byte, twice: past it, nothing is kept.
        let half = Bytes::from(vec![b' '; MAX_DOCUMENT / 2 + 1]);
        let mut frames = Frames::default();
        frames.push(&half);
        frames.push(&half);
        assert!(frames.first.is_none() && frames.rest.is_empty());
        assert!(frames.whole().is_none());
    }
}
