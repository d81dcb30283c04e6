use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{BoxError, RelayBody};
use crate::json::{find_model_value, quoted};
use crate::sse::splice::{Edit, Splicer};
use crate::sse::{event_type, Event, SseScanner};

/// The largest JSON answer rewritten whole; larger ones pass untouched.
const MAX_PENDING_DOCUMENT: usize = 64 * 1024 * 1024;

/// How the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Server-sent events: complete events are rewritten and sent on; only
    /// an unfinished event (which no SSE client can use yet) is held back.
    /// `once`: stop after the first rewrite (Anthropic names the model only
    /// in `message_start`).
    Events { once: bool },
    /// One JSON document, rewritten when complete.
    Document,
}

pin_project! {
    /// A response body that shows the client its own model name where the
    /// upstream names the mapped one.
    pub struct MapModelBody {
        #[pin]
        inner: RelayBody,
        from: Bytes,
        to: Bytes,
        mode: Mode,
    }
}

enum Mode {
    /// An event stream, edited event by event.
    Events { splicer: Splicer, once: bool },
    /// A JSON document, held until complete.
    Document(Document),
}

struct Document {
    // The first data frame, held as it came: a document that arrives in
    // one frame (the usual case) is never copied before its rewrite.
    first: Option<Bytes>,
    // Every frame held so far, once there is more than one.
    pending: BytesMut,
    // Set once the document is too large to rewrite.
    passthrough: bool,
    // A trailers frame that arrived while data was still held.
    queued: Option<Frame<Bytes>>,
    inner_done: bool,
}

impl MapModelBody {
    /// Rewrites `"model": from` to `"model": to` (both plain names).
    pub(super) fn new(inner: RelayBody, from: &str, to: &str, framing: Framing) -> Self {
        let mode = match framing {
            Framing::Events { once } => Mode::Events {
                splicer: Splicer::new(SseScanner::new()),
                once,
            },
            Framing::Document => Mode::Document(Document {
                first: None,
                pending: BytesMut::new(),
                passthrough: false,
                queued: None,
                inner_done: false,
            }),
        };
        Self {
            inner,
            from: Bytes::from(quoted(from)),
            to: Bytes::from(quoted(to)),
            mode,
        }
    }
}

/// `bytes` with its first `"model": from` member rewritten, if it has one.
fn rewrite_first(bytes: &[u8], from: &[u8], to: &[u8]) -> Option<Bytes> {
    let span = find_model_value(bytes, from)?;
    // Exactly sized: a full `BytesMut` freezes without another allocation.
    let mut out = BytesMut::with_capacity(bytes.len() - span.len() + to.len());
    out.extend_from_slice(&bytes[..span.start]);
    out.extend_from_slice(to);
    out.extend_from_slice(&bytes[span.end..]);
    Some(out.freeze())
}

impl Body for MapModelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let (from, to) = (&this.from[..], &this.to[..]);
        match this.mode {
            Mode::Events { splicer, once } => {
                let once = *once;
                let mut rewrote = false;
                let mut decide = |event: &Event<'_>, raw: &[u8]| {
                    // Anthropic names the model once, in `message_start`;
                    // OpenAI in every chunk.
                    if once && (rewrote || event_type(event) != b"message_start") {
                        return Edit::Keep;
                    }
                    match rewrite_first(raw, from, to) {
                        Some(bytes) => {
                            rewrote = true;
                            Edit::Replace(bytes)
                        }
                        None => Edit::Keep,
                    }
                };
                let poll = splicer.poll_frame(this.inner, cx, &mut decide);
                if once && rewrote {
                    // Nothing more to rewrite: forward frames as they come.
                    splicer.stop_editing();
                }
                poll
            }
            Mode::Document(doc) => doc.poll_frame(this.inner, cx, from, to),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.mode {
            Mode::Events { splicer, .. } => splicer.is_end_stream(),
            Mode::Document(doc) => {
                doc.inner_done
                    && doc.first.is_none()
                    && doc.pending.is_empty()
                    && doc.queued.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes with the rewrite.
        SizeHint::default()
    }
}

impl Document {
    fn poll_frame(
        &mut self,
        mut inner: Pin<&mut RelayBody>,
        cx: &mut Context<'_>,
        from: &[u8],
        to: &[u8],
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.inner_done {
                if let Some(held) = self.first.take() {
                    let out = rewrite_first(&held, from, to).unwrap_or(held);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                if !self.pending.is_empty() {
                    let held = self.pending.split().freeze();
                    let out = rewrite_first(&held, from, to).unwrap_or(held);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                return Poll::Ready(self.queued.take().map(Ok));
            }
            let frame = match inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.inner_done = true;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => {
                    // Trailers end the body: send what is held first.
                    self.queued = Some(trailers);
                    self.inner_done = true;
                    continue;
                }
            };
            if self.passthrough {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if self.first.is_none() && self.pending.is_empty() {
                if data.len() > MAX_PENDING_DOCUMENT {
                    self.passthrough = true;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                self.first = Some(data);
                continue;
            }
            if let Some(first) = self.first.take() {
                self.pending.extend_from_slice(&first);
            }
            self.pending.extend_from_slice(&data);
            if self.pending.len() > MAX_PENDING_DOCUMENT {
                self.passthrough = true;
                return Poll::Ready(Some(Ok(Frame::data(self.pending.split().freeze()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn run(frames: &[&'static str], framing: Framing) -> (Vec<Bytes>, Bytes) {
        let source =
            RelayBody::from_frames(frames.iter().map(|f| Ok(Bytes::from_static(f.as_bytes()))));
        let mut body = MapModelBody::new(source, "up-1", "client", framing);
        let mut out = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            out.push(frame.into_data().unwrap_or_default());
        }
        let all: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        (out, all.into())
    }

    #[tokio::test]
    async fn anthropic_stream_rewrites_message_start_across_a_split_and_then_passes_through() {
        let (frames, all) = run(
            &[
                "event: message_start\ndata: {\"message\":{\"mod",
                "el\":\"up-1\",\"content\":[]}}\n\n",
                "event: content_block_delta\ndata: {\"model\":\"up-1\"}\n\n",
            ],
            Framing::Events { once: true },
        )
        .await;
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.contains(r#"{"message":{"model":"client","content":[]}}"#),
            "{text}"
        );
        // After the first rewrite the stream is forwarded untouched.
        assert!(text.contains(r#"data: {"model":"up-1"}"#), "{text}");
        // Only the unfinished event waited; complete events go out at once,
        // and after the rewrite frames pass as they came.
        assert_eq!(frames.len(), 2);
        assert!(frames[0].starts_with(b"event: message_start\n"));
        assert!(frames[0].ends_with(b"}}\n\n"));
        assert_eq!(
            &frames[1][..],
            b"event: content_block_delta\ndata: {\"model\":\"up-1\"}\n\n"
        );
    }

    #[tokio::test]
    async fn only_message_start_is_rewritten_in_anthropic_streams() {
        let (_, all) = run(
            &[
                "event: ping\ndata: {\"model\":\"up-1\"}\n\n",
                "data: {\"type\":\"message_start\",\"message\":{\"model\":\"up-1\"}}\n\n",
            ],
            Framing::Events { once: true },
        )
        .await;
        assert_eq!(
            &all[..],
            b"event: ping\ndata: {\"model\":\"up-1\"}\n\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"client\"}}\n\n"
        );
    }

    #[tokio::test]
    async fn openai_stream_rewrites_every_chunk() {
        let (_, all) = run(
            &[
                "data: {\"model\":\"up-1\"}\n\n",
                "data: {\"model\": \"up-1\"}\n\ndata: [DONE]\n\n",
            ],
            Framing::Events { once: false },
        )
        .await;
        assert_eq!(
            &all[..],
            b"data: {\"model\":\"client\"}\n\ndata: {\"model\": \"client\"}\n\ndata: [DONE]\n\n"
        );
    }

    #[tokio::test]
    async fn documents_in_one_two_or_three_frames_are_rewritten_alike() {
        let doc = br#"{"id":1,"model":"up-1","content":[{"text":"model up-1"}]}"#;
        let want = br#"{"id":1,"model":"client","content":[{"text":"model up-1"}]}"#;
        let mut splits = vec![vec![]];
        for a in 0..=doc.len() {
            splits.push(vec![a]);
            for b in a..=doc.len() {
                splits.push(vec![a, b]);
            }
        }
        for cuts in splits {
            let mut frames = Vec::new();
            let mut start = 0;
            for &cut in cuts.iter().chain([&doc.len()]) {
                frames.push(Ok(Bytes::copy_from_slice(&doc[start..cut])));
                start = cut;
            }
            let source = RelayBody::from_frames(frames);
            let mut body = MapModelBody::new(source, "up-1", "client", Framing::Document);
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                out.extend_from_slice(&frame.unwrap().into_data().unwrap_or_default());
            }
            assert_eq!(&out[..], &want[..], "cut at {cuts:?}");
            assert!(body.is_end_stream(), "cut at {cuts:?}");
        }
    }

    #[tokio::test]
    async fn json_document_is_rewritten_once_when_complete() {
        let (frames, all) = run(
            &[
                "{\"id\":1,\"model\":\"u",
                "p-1\",\"content\":[{\"input\":{\"model\":\"up-1\"}}]}",
            ],
            Framing::Document,
        )
        .await;
        assert_eq!(frames.len(), 1);
        assert_eq!(
            &all[..],
            b"{\"id\":1,\"model\":\"client\",\"content\":[{\"input\":{\"model\":\"up-1\"}}]}"
        );
    }
}
