//! The one response body type that every layer of the relay produces.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use pin_project_lite::pin_project;

/// A boxed, type-erased error, as tower and hyper use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of every relay service.
///
/// One concrete type lets layers stack without nesting generic body wrappers,
/// and lets a rejection (a JSON error) and an upstream stream share a
/// response type. Frames pass through untouched: boxing costs one allocation
/// per response, not per frame.
///
/// # Examples
///
/// ```
/// use http_body_util::BodyExt;
/// use tower_llm_relay::RelayBody;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let body = RelayBody::full("hello");
/// let bytes = body.collect().await.unwrap().to_bytes();
/// assert_eq!(&bytes[..], b"hello");
/// # }
/// ```
pub struct RelayBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
}

impl RelayBody {
    /// Wraps any body whose frames are [`Bytes`].
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: body.map_err(Into::into).boxed_unsync(),
        }
    }

    /// A body of one frame.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::new(Full::new(bytes.into()))
    }

    /// A body with no data.
    pub fn empty() -> Self {
        Self::new(Empty::<Bytes>::new())
    }

    /// A body that yields these frames (or errors) in order, one per poll:
    /// an upstream's answer as it arrived, for tests and mock services.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::BodyExt;
    /// use tower_llm_relay::RelayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut body = RelayBody::from_frames([Ok(Bytes::from("a")), Ok(Bytes::from("b"))]);
    /// let first = body.frame().await.unwrap().unwrap();
    /// assert_eq!(first.into_data().unwrap(), "a");
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "b");
    /// # }
    /// ```
    pub fn from_frames(frames: impl IntoIterator<Item = Result<Bytes, BoxError>>) -> Self {
        Self::new(FrameList(frames.into_iter().collect()))
    }
}

/// The body of [`RelayBody::from_frames`].
struct FrameList(std::collections::VecDeque<Result<Bytes, BoxError>>);

impl Body for FrameList {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for RelayBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for RelayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBody").finish_non_exhaustive()
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A body that holds a value — a concurrency slot, a permit — until the
    /// body ends, fails, or is dropped (the client went away), so a stream
    /// keeps what it holds for exactly as long as it runs. It wraps a
    /// [`RelayBody`] unless told otherwise: a server may wrap its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use http_body_util::BodyExt;
    /// use tower_llm_relay::{HoldUntilEnd, RelayBody};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let held = Arc::new(());
    /// let body = HoldUntilEnd::new(RelayBody::full("data"), held.clone());
    /// assert_eq!(Arc::strong_count(&held), 2);
    /// body.collect().await.unwrap();
    /// assert_eq!(Arc::strong_count(&held), 1);
    /// # }
    /// ```
    pub struct HoldUntilEnd<T, B = RelayBody> {
        #[pin]
        inner: B,
        held: Option<T>,
    }
}

impl<T, B> HoldUntilEnd<T, B> {
    /// Holds `held` for the life of `inner`.
    pub fn new(inner: B, held: T) -> Self {
        Self {
            inner,
            held: Some(held),
        }
    }
}

impl<T, B: Body> Body for HoldUntilEnd<T, B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Let go as soon as the stream is over, not when the server
            // gets round to dropping the body.
            this.held.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
