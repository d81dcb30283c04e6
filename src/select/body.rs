use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{BoxError, RelayBody};
use crate::state::SlotGuard;

pin_project! {
    /// A response body that holds its account's concurrency slot until the
    /// body ends, fails, or is dropped (the client went away).
    pub struct SlotBody {
        #[pin]
        inner: RelayBody,
        slot: Option<SlotGuard>,
    }
}

impl SlotBody {
    /// Holds `slot` for the life of `inner`.
    pub fn new(inner: RelayBody, slot: SlotGuard) -> Self {
        Self {
            inner,
            slot: Some(slot),
        }
    }
}

impl Body for SlotBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // Released as soon as the stream is over, not when the server
            // gets round to dropping the body.
            this.slot.take();
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
