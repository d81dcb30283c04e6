use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{BoxError, RelayBody};
use crate::json::find_model_value;

/// Past this much of an unfinished SSE line the body stops rewriting and
/// forwards as is: a hostile upstream cannot make the relay buffer without
/// limit.
const MAX_PENDING_LINE: usize = 1024 * 1024;
/// The largest JSON answer rewritten whole; larger ones pass untouched.
const MAX_PENDING_DOCUMENT: usize = 64 * 1024 * 1024;

/// How the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Server-sent events: complete lines are rewritten and sent on; only a
    /// partial line (which no SSE client can use yet) is held back.
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
        framing: Framing,
        pending: BytesMut,
        // Set once no more rewriting is needed or possible.
        passthrough: bool,
        // A trailers frame that arrived while data was still held.
        queued: Option<Frame<Bytes>>,
        inner_done: bool,
    }
}

impl MapModelBody {
    /// Rewrites `"model": from` to `"model": to` (both plain names).
    pub(super) fn new(inner: RelayBody, from: &str, to: &str, framing: Framing) -> Self {
        let encode = |s: &str| Bytes::from(serde_json::to_string(s).unwrap_or_default());
        Self {
            inner,
            from: encode(from),
            to: encode(to),
            framing,
            pending: BytesMut::new(),
            passthrough: false,
            queued: None,
            inner_done: false,
        }
    }
}

/// `bytes` with every `"model": from` member rewritten (at most one when
/// `once`), and whether any was.
fn rewrite(bytes: &[u8], from: &[u8], to: &[u8], once: bool) -> (Bytes, bool) {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut offset = 0;
    while let Some(span) = find_model_value(&bytes[offset..], from) {
        let (start, end) = (offset + span.start, offset + span.end);
        let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len() + to.len()));
        out.extend_from_slice(&bytes[copied..start]);
        out.extend_from_slice(to);
        copied = end;
        offset = end;
        if once {
            break;
        }
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&bytes[copied..]);
            (out.into(), true)
        }
        None => (Bytes::copy_from_slice(bytes), false),
    }
}

impl Body for MapModelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.inner_done {
                if !this.pending.is_empty() {
                    let held = this.pending.split().freeze();
                    let once = matches!(
                        *this.framing,
                        Framing::Document | Framing::Events { once: true }
                    );
                    let (out, _) = rewrite(&held, this.from, this.to, once);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                return Poll::Ready(this.queued.take().map(Ok));
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    *this.inner_done = true;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => {
                    // Trailers end the body: send what is held first.
                    *this.queued = Some(trailers);
                    *this.inner_done = true;
                    continue;
                }
            };
            if *this.passthrough {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            match *this.framing {
                Framing::Document => {
                    this.pending.extend_from_slice(&data);
                    if this.pending.len() > MAX_PENDING_DOCUMENT {
                        *this.passthrough = true;
                        return Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))));
                    }
                }
                Framing::Events { once } => {
                    this.pending.extend_from_slice(&data);
                    let Some(last_newline) = memchr::memrchr(b'\n', this.pending) else {
                        if this.pending.len() > MAX_PENDING_LINE {
                            *this.passthrough = true;
                            return Poll::Ready(Some(Ok(Frame::data(
                                this.pending.split().freeze(),
                            ))));
                        }
                        continue;
                    };
                    let lines = this.pending.split_to(last_newline + 1).freeze();
                    let (out, rewrote) = rewrite(&lines, this.from, this.to, once);
                    if rewrote && once {
                        *this.passthrough = true;
                        if !this.pending.is_empty() {
                            let mut joined = BytesMut::from(&out[..]);
                            joined.extend_from_slice(&this.pending.split());
                            return Poll::Ready(Some(Ok(Frame::data(joined.freeze()))));
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner_done && self.pending.is_empty() && self.queued.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes with the rewrite.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A body that yields the given frames, one per poll.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    async fn run(frames: &[&'static str], framing: Framing) -> (Vec<Bytes>, Bytes) {
        let source = Frames(
            frames
                .iter()
                .map(|f| Bytes::from_static(f.as_bytes()))
                .collect(),
        );
        let mut body = MapModelBody::new(RelayBody::new(source), "up-1", "client", framing);
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
        // Complete lines go out at once; only the partial line waited.
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"event: message_start\n");
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
