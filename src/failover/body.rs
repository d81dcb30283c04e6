//! Bodies of committed attempts: a peeked prefix first, then the rest; an
//! upstream failure after the commit point ends a stream with a
//! well-formed SSE error event instead of a silent cut.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use crate::body::{BoxError, RelayBody};
use crate::endpoint::ApiFormat;
use crate::needle::{Needle, UNICODE_ESCAPE};

/// The most bytes read while looking for a stream's first event.
const MAX_PEEK: usize = 64 * 1024;

/// What the first event of a stream was.
pub(super) enum Peeked {
    /// An error event (`event: error`, or a data payload that is an
    /// error): its `type`, e.g. `overloaded_error`.
    Error(String),
    /// Anything else: the bytes read so far and the rest of the body.
    Content { prefix: Bytes, rest: RelayBody },
}

/// Reads `body` until its first event with data is complete (or 64 KiB,
/// or the end), without losing a byte.
pub(super) async fn peek_first_event(mut body: RelayBody) -> Result<Peeked, BoxError> {
    let mut buf = BytesMut::new();
    let mut scanned = 0;
    loop {
        // Look for complete events in what has arrived.
        while let Some((end, len)) = boundary(&buf[scanned..]) {
            let block = &buf[scanned..scanned + end];
            scanned += end + len;
            if let Some(kind) = error_kind(block) {
                return Ok(Peeked::Error(kind));
            }
            if has_data(block) {
                return Ok(Peeked::Content {
                    prefix: buf.freeze(),
                    rest: body,
                });
            }
        }
        if buf.len() >= MAX_PEEK {
            break;
        }
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                // Trailers before any event: nothing more to peek.
                Err(_) => break,
            },
        }
    }
    if let Some(kind) = error_kind(&buf[scanned..]) {
        return Ok(Peeked::Error(kind));
    }
    Ok(Peeked::Content {
        prefix: buf.freeze(),
        rest: body,
    })
}

/// The first event boundary in `bytes`: (end of the event, boundary length).
fn boundary(bytes: &[u8]) -> Option<(usize, usize)> {
    static LF: Needle = Needle::new(b"\n\n");
    static CRLF: Needle = Needle::new(b"\r\n\r\n");
    let lf = LF.find(bytes).map(|at| (at, LF.len()));
    let crlf = CRLF.find(bytes).map(|at| (at, CRLF.len()));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn lines(block: &[u8]) -> impl Iterator<Item = &str> {
    block
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(|l| l.trim_end_matches('\r'))
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

fn has_data(block: &[u8]) -> bool {
    lines(block).any(|l| field(l, "data").is_some())
}

/// The error type of an error event: `event: error` (Anthropic), or a data
/// payload with a top-level `error` (OpenAI).
fn error_kind(block: &[u8]) -> Option<String> {
    // Neither an `error` name nor an `error` key can be spelled without
    // the word, except through a `\u` escape: most first events (a
    // `message_start`) are cleared without parsing their JSON.
    static ERROR: Needle = Needle::new(b"error");
    if !ERROR.is_in(block) && !UNICODE_ESCAPE.is_in(block) {
        return None;
    }
    error_kind_parsed(block)
}

/// [`error_kind`] without its shortcut.
fn error_kind_parsed(block: &[u8]) -> Option<String> {
    let named_error = lines(block).any(|l| field(l, "event") == Some("error"));
    let data: String = lines(block).filter_map(|l| field(l, "data")).collect();
    let json: Option<serde_json::Value> = serde_json::from_str(&data).ok();
    let error = json.as_ref().and_then(|j| j.get("error"));
    if !named_error && error.is_none() {
        return None;
    }
    let kind = error
        .and_then(|e| e.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("api_error");
    Some(kind.to_owned())
}

/// The SSE event that ends a stream whose upstream failed after the
/// commit point.
pub(super) fn stream_error_event(format: ApiFormat) -> Bytes {
    let message = "the upstream stream failed after it had started; the answer is incomplete";
    match format {
        ApiFormat::Anthropic => {
            let data = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
            Bytes::from(format!("event: error\ndata: {data}\n\n"))
        }
        ApiFormat::OpenAi => {
            let data = serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": "upstream_stream_error"}});
            Bytes::from(format!("data: {data}\n\n"))
        }
    }
}

pin_project! {
    /// A committed answer: the peeked prefix, then the rest of the
    /// upstream body; for streams, an upstream error becomes a final SSE
    /// error event and a clean end.
    pub struct CommittedBody {
        #[pin]
        inner: RelayBody,
        prefix: Option<Bytes>,
        // Set for event streams: how to report a failure in-band.
        error_event: Option<ApiFormat>,
        done: bool,
    }
}

impl CommittedBody {
    pub(super) fn new(
        prefix: Option<Bytes>,
        inner: RelayBody,
        error_event: Option<ApiFormat>,
    ) -> Self {
        Self {
            inner,
            prefix: prefix.filter(|p| !p.is_empty()),
            error_event,
            done: false,
        }
    }
}

impl Body for CommittedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => match *this.error_event {
                Some(format) => {
                    tracing::warn!(error = %e, "upstream stream failed after commit");
                    *this.done = true;
                    Poll::Ready(Some(Ok(Frame::data(stream_error_event(format)))))
                }
                None => Poll::Ready(Some(Err(e))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.prefix.is_none() && self.inner.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just(String::new()),
            Just("event: error\n".to_owned()),
            Just("event: message_start\n".to_owned()),
            Just("event: err\\u006fr\n".to_owned()),
        ];
        let data = prop_oneof![
            Just(r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3}}}"#),
            Just(r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#),
            Just(r#"{"error":{"message":"quota","type":"insufficient_quota"}}"#),
            // An escaped key, and nothing else that spells the word.
            Just(r#"{"\u0065rror":{"type":"escaped"}}"#),
            Just(r#"{"error":null}"#),
            Just(r#"{"error":"plain"}"#),
            Just(r#"{"choices":[{"delta":{"content":"no \"errors\" here"}}]}"#),
            Just("not json"),
        ];
        (name, data).prop_map(|(name, data)| format!("{name}data: {data}\n\n"))
    }

    proptest! {
        /// The shortcut never changes the answer.
        #[test]
        fn the_shortcut_decides_as_the_parse_does(block in event()) {
            prop_assert_eq!(error_kind(block.as_bytes()), error_kind_parsed(block.as_bytes()));
        }
    }

    #[test]
    fn errors_are_found_and_ordinary_events_pass() {
        let kind = |b: &str| error_kind(b.as_bytes());
        assert_eq!(
            kind("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n"),
            Some("overloaded_error".to_owned())
        );
        assert_eq!(
            kind("data: {\"\\u0065rror\":{\"type\":\"escaped\"}}\n\n"),
            Some("escaped".to_owned())
        );
        assert_eq!(
            kind("event: message_start\ndata: {\"type\":\"message_start\"}\n\n"),
            None
        );
    }
}
