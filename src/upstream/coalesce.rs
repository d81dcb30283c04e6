//! Hands the server every upstream frame that is already decodable at once,
//! so that the client gets one write per burst, not one per SSE event.
//!
//! hyper's HTTP/1 client moves a response body from its connection task to
//! the reader through a channel that holds a single chunk: the connection
//! task decodes one chunk per turn, even when the whole stream already sits
//! in its read buffer. A server polling that body gets one frame, then
//! `Pending`, and flushes on `Pending`: a 12-event stream cost the proxy 13
//! `writev` calls and the client 13 reads. This body instead gives the
//! connection task a few turns before it reports `Pending`, holding the
//! frames that arrive meanwhile, and then yields them joined into one
//! frame, which the server writes out at once (and which every layer above
//! handles once, not once per event). When nothing more is decodable (a paced
//! stream whose next event is still on the wire) the held frames go out
//! after those turns: a delay of a few scheduler turns, no timer.
//!
//! Measured with the load benchmark's streams (12 events, wrk at
//! concurrency 32, 2 cores): proxy CPU per stream 118–131 → 66–89 µs,
//! requests/s +40–70%.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How many turns the connection task gets to decode the next chunk before
/// the held frames go out. hyper's HTTP/1 client needs two (one to learn
/// the reader wants more, one to decode and send it); more only adds delay
/// when nothing is coming.
const TURNS: u8 = 2;

/// The most frames or bytes held back: past either they go out at once,
/// which bounds both the delay and the memory a fast upstream can pile up.
const MAX_HELD_FRAMES: usize = 32;
const MAX_HELD_BYTES: usize = 64 * 1024;

pin_project! {
    /// A body that yields, without `Pending` in between, every frame its
    /// inner body can produce within a few scheduler turns.
    pub(super) struct Coalesce<B: Body> {
        #[pin]
        inner: B,
        held: VecDeque<Frame<Bytes>>,
        held_bytes: usize,
        // The inner body's error, yielded after the frames before it.
        error: Option<B::Error>,
        turns: u8,
        max_turns: u8,
        releasing: bool,
        inner_done: bool,
    }
}

impl<B: Body> Coalesce<B> {
    /// Over a body fed by another task (hyper-util's client).
    pub(super) fn new(inner: B) -> Self {
        Self::with_turns(inner, TURNS)
    }

    /// Over a body decoded in the polling task itself (the
    /// [`pool`](super::pool)'s): its `Pending` already means nothing more
    /// is decodable, so the held frames go out at once.
    pub(super) fn in_task(inner: B) -> Self {
        Self::with_turns(inner, 0)
    }

    fn with_turns(inner: B, max_turns: u8) -> Self {
        Self {
            inner,
            held: VecDeque::new(),
            held_bytes: 0,
            error: None,
            turns: 0,
            max_turns,
            releasing: false,
            inner_done: false,
        }
    }
}

impl<B> Body for Coalesce<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            if *this.releasing {
                if let Some(frame) = take_joined(this.held) {
                    *this.held_bytes -= frame.data_ref().map_or(0, Buf::remaining);
                    return Poll::Ready(Some(Ok(frame)));
                }
                *this.releasing = false;
                if let Some(error) = this.error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                if *this.inner_done {
                    return Poll::Ready(None);
                }
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *this.held_bytes += frame.data_ref().map_or(0, Buf::remaining);
                    this.held.push_back(frame);
                    *this.turns = 0;
                    if this.inner.is_end_stream() {
                        // A body with a known length ends at its last byte,
                        // without waiting for hyper's task to close it.
                        *this.inner_done = true;
                        *this.releasing = true;
                    } else if this.held.len() >= MAX_HELD_FRAMES
                        || *this.held_bytes >= MAX_HELD_BYTES
                    {
                        *this.releasing = true;
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    *this.error = Some(error);
                    *this.inner_done = true;
                    *this.releasing = true;
                }
                Poll::Ready(None) => {
                    *this.inner_done = true;
                    *this.releasing = true;
                }
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending if *this.turns < *this.max_turns => {
                    // Let the tasks that feed the inner body run first: a
                    // task that wakes itself goes to the back of the queue.
                    *this.turns += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    *this.turns = 0;
                    *this.releasing = true;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.error.is_none()
            && (self.inner_done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.inner_done {
            return SizeHint::with_exact(self.held_bytes as u64);
        }
        let inner = self.inner.size_hint();
        let held = self.held_bytes as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

/// The first held frame, joined with the data frames right after it into
/// one: every layer above (usage, model names, failover) and the server's
/// chunked encoder then handle one frame per burst rather than one per SSE
/// event, for the price of copying the burst once.
fn take_joined(held: &mut VecDeque<Frame<Bytes>>) -> Option<Frame<Bytes>> {
    let first = held.pop_front()?;
    let run = held.iter().take_while(|frame| frame.is_data()).count();
    if run == 0 || !first.is_data() {
        return Some(first);
    }
    let len: usize = std::iter::once(&first)
        .chain(held.iter().take(run))
        .filter_map(Frame::data_ref)
        .map(Bytes::len)
        .sum();
    let mut joined = BytesMut::with_capacity(len);
    for frame in std::iter::once(first).chain(held.drain(..run)) {
        if let Some(data) = frame.data_ref() {
            joined.extend_from_slice(data);
        }
    }
    Some(Frame::data(joined.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed by a channel from another task, like hyper's client body.
    struct Channel(mpsc::Receiver<Result<Bytes, &'static str>>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            self.0
                .poll_recv(cx)
                .map(|item| item.map(|result| result.map(Frame::data)))
        }
    }

    /// Polls like hyper's server: frames until `Pending`, then one "write"
    /// of whatever it got. Returns the frames of each write.
    async fn writes<B>(body: B) -> (Vec<Vec<Bytes>>, Option<B::Error>)
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let mut body = body;
        let mut writes = Vec::new();
        let mut batch = Vec::new();
        let mut error = None;
        std::future::poll_fn(|cx| loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    batch.push(frame.into_data().unwrap_or_default());
                }
                Poll::Ready(Some(Err(e))) => {
                    error = Some(e);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {
                    if !batch.is_empty() {
                        writes.push(std::mem::take(&mut batch));
                    }
                    return Poll::Pending;
                }
            }
        })
        .await;
        if !batch.is_empty() {
            writes.push(batch);
        }
        (writes, error)
    }

    #[test]
    fn data_frames_are_joined_up_to_trailers() {
        let trailers = || Frame::trailers(http::HeaderMap::new());
        let mut held: VecDeque<Frame<Bytes>> = VecDeque::from([
            Frame::data(event(0)),
            Frame::data(event(1)),
            trailers(),
            Frame::data(event(2)),
        ]);
        let joined = take_joined(&mut held).and_then(|f| f.into_data().ok());
        assert_eq!(joined, Some(Bytes::from([event(0), event(1)].concat())));
        assert!(take_joined(&mut held).is_some_and(|f| f.is_trailers()));
        assert_eq!(
            take_joined(&mut held).and_then(|f| f.into_data().ok()),
            Some(event(2))
        );
        assert!(take_joined(&mut held).is_none());
    }

    /// The bytes of each write, frames joined.
    fn bytes_of(writes: &[Vec<Bytes>]) -> Vec<u8> {
        writes.iter().flatten().flat_map(|b| b.to_vec()).collect()
    }

    fn event(n: usize) -> Bytes {
        Bytes::from(format!("event: e{n}\ndata: {{}}\n\n"))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_a_feeding_task_has_ready_go_out_in_one_write() {
        let (tx, rx) = mpsc::channel(1);
        // Sends one event per turn, as hyper's connection task does.
        tokio::spawn(async move {
            for n in 0..12 {
                if tx.send(Ok(event(n))).await.is_err() {
                    return;
                }
            }
        });
        let (writes, error) = writes(Coalesce::new(Channel(rx))).await;
        assert!(error.is_none());
        assert_eq!(
            bytes_of(&writes),
            bytes_of(&[(0..12).map(event).collect()]),
            "in order, untouched"
        );
        assert!(
            writes.len() <= 2,
            "{} writes for 12 ready events",
            writes.len()
        );
        assert!(
            writes.iter().all(|write| write.len() == 1),
            "each write one joined frame: {writes:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_it_each_event_is_its_own_write() {
        // The baseline the test above improves on, so that it can fail.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for n in 0..12 {
                let _ = tx.send(Ok(event(n))).await;
            }
        });
        let (writes, _) = writes(Channel(rx)).await;
        assert!(writes.len() >= 6, "{} writes", writes.len());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_paced_event_goes_out_without_waiting_for_the_next() {
        let (tx, rx) = mpsc::channel(1);
        let sent = Arc::new(AtomicUsize::new(0));
        let sender = sent.clone();
        tokio::spawn(async move {
            for n in 0..3 {
                let _ = tx.send(Ok(event(n))).await;
                sender.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        let mut body = Coalesce::new(Channel(rx));
        for n in 0..3 {
            let frame = body.frame().await.expect("a frame").expect("no error");
            assert_eq!(frame.into_data().ok(), Some(event(n)));
            // The paused clock only moves when every task waits: the event
            // arrived without the next one being sent.
            assert_eq!(sent.load(Ordering::SeqCst), n + 1);
        }
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_error_comes_after_the_frames_before_it() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(event(0))).await.unwrap();
        tx.send(Ok(event(1))).await.unwrap();
        tx.send(Err("reset")).await.unwrap();
        drop(tx);
        let (writes, error) = writes(Coalesce::new(Channel(rx))).await;
        assert_eq!(bytes_of(&writes), bytes_of(&[vec![event(0), event(1)]]));
        assert_eq!(error, Some("reset"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flood_is_released_in_bounded_batches() {
        let (tx, rx) = mpsc::channel(200);
        for n in 0..100 {
            tx.send(Ok(event(n))).await.unwrap();
        }
        drop(tx);
        let mut body = Coalesce::new(Channel(rx));
        // Everything is ready: the first poll gathers at most the cap.
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let first = first
            .and_then(|f| f.ok()?.into_data().ok())
            .expect("a data frame");
        let capped: Vec<u8> = (0..MAX_HELD_FRAMES)
            .flat_map(|n| event(n).to_vec())
            .collect();
        assert_eq!(
            &first[..],
            &capped[..],
            "the first batch is the cap, joined"
        );
        let rest = body.collect().await.expect("no error").to_bytes();
        let expected: Vec<u8> = (MAX_HELD_FRAMES..100)
            .flat_map(|n| event(n).to_vec())
            .collect();
        assert_eq!(&rest[..], &expected[..]);
    }

    /// One frame, then `Pending` forever, but says it ended after the
    /// frame: hyper's body with a content-length, before its task closes it.
    struct KnownLength(Option<Bytes>);

    impl Body for KnownLength {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            match self.0.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[test]
    fn a_body_that_says_it_ended_is_not_polled_again() {
        let mut body = Coalesce::new(KnownLength(Some(Bytes::from_static(b"{}"))));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(_)))), "{first:?}");
        assert!(body.is_end_stream());
        let second = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(second, Poll::Ready(None)), "{second:?}");
    }

    #[test]
    fn the_size_hint_counts_held_bytes() {
        let body = Coalesce::new(http_body_util::Full::new(Bytes::from_static(b"abcd")));
        assert_eq!(body.size_hint().exact(), Some(4));
    }
}
