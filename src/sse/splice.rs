//! Editing a stream event by event: the few body wrappers that must change
//! bytes (a model name shown back to the client, an injected usage chunk
//! taken out) hold back only the unfinished event, and forward everything
//! else as it came.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use super::{Event, SseScanner};
use crate::body::{BoxError, RelayBody};

/// What to do with one complete event.
#[derive(Debug)]
pub(crate) enum Edit {
    /// Forward it as it is.
    Keep,
    /// Leave it out of the client's stream.
    Drop,
    /// Send these bytes (a whole event, blank line included) instead.
    Replace(Bytes),
}

/// Applies [`Edit`]s to a stream of frames.
///
/// Only the bytes of the unfinished event are held (an SSE client cannot
/// act on them before the blank line anyway), bounded by the scanner's cap:
/// past it the event is forwarded unedited. A frame that completes its
/// events and needs no edit is forwarded as the same [`Bytes`].
#[derive(Debug)]
pub(crate) struct Splicer {
    scanner: SseScanner,
    /// The unfinished event's bytes, from stream offset
    /// `scanner.position() - held.len()`.
    held: BytesMut,
    edits: Vec<(u64, u64, Edit)>,
    editing: bool,
    inner_done: bool,
    /// Whether the end of the stream was handled (last event dispatched).
    finished: bool,
    /// A clean end, as opposed to an error: the last event may be read.
    clean_end: bool,
    queued_trailers: Option<Frame<Bytes>>,
    queued_error: Option<BoxError>,
}

impl Splicer {
    pub(crate) fn new(scanner: SseScanner) -> Self {
        Self {
            scanner,
            held: BytesMut::new(),
            edits: Vec::new(),
            editing: true,
            inner_done: false,
            finished: false,
            clean_end: false,
            queued_trailers: None,
            queued_error: None,
        }
    }

    /// Stops editing: from now on frames pass as they come (after what is
    /// held).
    pub(crate) fn stop_editing(&mut self) {
        self.editing = false;
    }

    /// Whether everything has been sent.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.finished
            && self.held.is_empty()
            && self.queued_trailers.is_none()
            && self.queued_error.is_none()
    }

    /// Takes in the next frame; returns what can be sent now.
    pub(crate) fn push<D>(&mut self, data: Bytes, decide: &mut D) -> Option<Bytes>
    where
        D: FnMut(&Event<'_>, &[u8]) -> Edit,
    {
        if !self.editing {
            if self.held.is_empty() {
                return Some(data);
            }
            self.held.extend_from_slice(&data);
            return Some(self.held.split().freeze());
        }
        let held_from = self.scanner.position() - self.held.len() as u64;
        let Self {
            scanner,
            held,
            edits,
            ..
        } = self;
        edits.clear();
        let from_held = !held.is_empty();
        if from_held {
            held.extend_from_slice(&data);
            scanner.feed(&data, |event| record(event, held, held_from, edits, decide));
        } else {
            scanner.feed(&data, |event| {
                record(event, &data, held_from, edits, decide)
            });
        }
        let emit_len =
            usize::try_from(scanner.position() - scanner.unfinished_len() - held_from).unwrap_or(0);
        if !from_held && edits.is_empty() {
            // The fast path: this frame's complete events go out as they
            // came, without a copy.
            if emit_len >= data.len() {
                return Some(data);
            }
            held.extend_from_slice(&data[emit_len..]);
            return (emit_len > 0).then(|| data.slice(..emit_len));
        }
        let out = if from_held {
            let region = held.split_to(emit_len.min(held.len()));
            if edits.is_empty() {
                region.freeze()
            } else {
                apply(&region, held_from, edits)
            }
        } else {
            let out = apply(&data[..emit_len.min(data.len())], held_from, edits);
            held.extend_from_slice(data.get(emit_len..).unwrap_or_default());
            out
        };
        (!out.is_empty()).then_some(out)
    }

    /// Ends the stream: reads the last event on a clean end, and returns
    /// whatever is still held.
    fn finish<D>(&mut self, decide: &mut D) -> Option<Bytes>
    where
        D: FnMut(&Event<'_>, &[u8]) -> Edit,
    {
        self.finished = true;
        if !self.editing || !self.clean_end {
            return (!self.held.is_empty()).then(|| self.held.split().freeze());
        }
        let held_from = self.scanner.position() - self.held.len() as u64;
        let Self {
            scanner,
            held,
            edits,
            ..
        } = self;
        edits.clear();
        scanner.finish(|event| record(event, held, held_from, edits, decide));
        let region = held.split();
        let out = if edits.is_empty() {
            region.freeze()
        } else {
            apply(&region, held_from, edits)
        };
        (!out.is_empty()).then_some(out)
    }

    /// Polls `inner` for the next frame to send, editing as `decide` says.
    /// Held bytes go out before an error or trailers.
    pub(crate) fn poll_frame<D>(
        &mut self,
        mut inner: Pin<&mut RelayBody>,
        cx: &mut Context<'_>,
        decide: &mut D,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        D: FnMut(&Event<'_>, &[u8]) -> Edit,
    {
        loop {
            if self.inner_done {
                if !self.finished {
                    if let Some(out) = self.finish(decide) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                if let Some(error) = self.queued_error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                return Poll::Ready(self.queued_trailers.take().map(Ok));
            }
            match ready!(inner.as_mut().poll_frame(cx)) {
                None => {
                    self.inner_done = true;
                    self.clean_end = true;
                }
                Some(Err(error)) => {
                    self.inner_done = true;
                    self.queued_error = Some(error);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(out) = self.push(data, decide) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        // Trailers end the body.
                        self.inner_done = true;
                        self.clean_end = true;
                        self.queued_trailers = Some(trailers);
                    }
                },
            }
        }
    }
}

/// Asks `decide` about `event`, whose bytes are in `source` (which starts
/// at stream offset `from`), and notes any edit.
fn record<D>(
    event: &Event<'_>,
    source: &[u8],
    from: u64,
    edits: &mut Vec<(u64, u64, Edit)>,
    decide: &mut D,
) where
    D: FnMut(&Event<'_>, &[u8]) -> Edit,
{
    let range = event.range();
    let local = |offset: u64| usize::try_from(offset.saturating_sub(from)).unwrap_or(usize::MAX);
    let Some(raw) = source.get(local(range.start)..local(range.end)) else {
        // Not held (it began in bytes already sent): it cannot be edited.
        return;
    };
    match decide(event, raw) {
        Edit::Keep => {}
        edit => edits.push((range.start, range.end, edit)),
    }
}

/// `region` (starting at stream offset `from`) with `edits` applied.
fn apply(region: &[u8], from: u64, edits: &mut Vec<(u64, u64, Edit)>) -> Bytes {
    let extra: usize = edits
        .iter()
        .map(|(_, _, edit)| match edit {
            Edit::Replace(bytes) => bytes.len(),
            _ => 0,
        })
        .sum();
    let mut out = BytesMut::with_capacity(region.len() + extra);
    let mut at = 0;
    for (start, end, edit) in edits.drain(..) {
        let start = usize::try_from(start - from)
            .unwrap_or(region.len())
            .min(region.len());
        let end = usize::try_from(end - from)
            .unwrap_or(region.len())
            .min(region.len());
        if start < at {
            continue;
        }
        out.extend_from_slice(&region[at..start]);
        if let Edit::Replace(bytes) = edit {
            out.extend_from_slice(&bytes);
        }
        at = end;
    }
    out.extend_from_slice(&region[at..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(frames: &[&str], decide: &mut impl FnMut(&Event<'_>, &[u8]) -> Edit) -> Vec<Bytes> {
        let mut splicer = Splicer::new(SseScanner::new());
        let mut out = Vec::new();
        for frame in frames {
            out.extend(splicer.push(Bytes::copy_from_slice(frame.as_bytes()), decide));
        }
        splicer.clean_end = true;
        out.extend(splicer.finish(decide));
        out
    }

    fn joined(frames: &[Bytes]) -> String {
        frames.iter().map(|f| String::from_utf8_lossy(f)).collect()
    }

    #[test]
    fn frames_without_edits_pass_as_the_same_bytes() {
        let mut splicer = Splicer::new(SseScanner::new());
        let frame = Bytes::from_static(b"data: 1\n\ndata: 2\n\n");
        let out = splicer.push(frame.clone(), &mut |_, _| Edit::Keep);
        let out = out.unwrap_or_default();
        assert_eq!(out.as_ptr(), frame.as_ptr());
        assert_eq!(out.len(), frame.len());
    }

    #[test]
    fn only_the_unfinished_event_is_held() {
        let out = run(&["data: 1\n\ndata: ", "2\n\n"], &mut |_, _| Edit::Keep);
        assert_eq!(out, [&b"data: 1\n\n"[..], b"data: 2\n\n"]);
    }

    #[test]
    fn drops_and_replaces_events_split_across_frames() {
        let mut decide = |event: &Event<'_>, _: &[u8]| match event.data() {
            b"drop" => Edit::Drop,
            b"swap" => Edit::Replace(Bytes::from_static(b"data: swapped\n\n")),
            _ => Edit::Keep,
        };
        let out = run(
            &["data: a\n\nda", "ta: drop\r\n", "\r\ndata: swap\n\ndata: z"],
            &mut decide,
        );
        assert_eq!(joined(&out), "data: a\n\ndata: swapped\n\ndata: z");
    }

    #[test]
    fn a_final_event_without_a_blank_line_can_be_edited() {
        let out = run(&["data: a\n\ndata: drop"], &mut |event, _| {
            if event.data() == b"drop" {
                Edit::Drop
            } else {
                Edit::Keep
            }
        });
        assert_eq!(joined(&out), "data: a\n\n");
    }

    #[test]
    fn an_oversized_event_is_forwarded_unedited_and_not_held() {
        let mut splicer = Splicer::new(SseScanner::with_max_event(16));
        let mut decide = |_: &Event<'_>, _: &[u8]| Edit::Drop;
        let first = splicer.push(Bytes::from_static(b"data: 0123456789"), &mut decide);
        assert_eq!(first.as_deref(), None);
        let second = splicer.push(Bytes::from_static(b"0123456789"), &mut decide);
        assert_eq!(second.as_deref(), Some(&b"data: 01234567890123456789"[..]));
        assert!(splicer.held.is_empty());
    }
}
