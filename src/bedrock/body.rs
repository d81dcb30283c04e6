//! Response bodies that turn Bedrock's answers into Anthropic's.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use serde::Deserialize;
use serde_json::{json, Value};

use super::eventstream::{Decoder, Message};
use crate::body::{BoxError, RelayBody};
use crate::needle::Needle;

/// The key Bedrock adds to the last event (and some answers) with its own
/// metrics; not part of Anthropic's API.
const INVOCATION_METRICS: &str = "amazon-bedrock-invocationMetrics";
static INVOCATION_METRICS_KEY: Needle = Needle::new(INVOCATION_METRICS.as_bytes());
/// The largest JSON answer rewritten; past it the answer fails rather than
/// the relay buffering without limit.
const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

pin_project! {
    /// A Bedrock event stream (`application/vnd.amazon.eventstream`) turned
    /// into Anthropic server-sent events.
    ///
    /// Each `chunk` event's base64 payload becomes `event: <type>` and
    /// `data: <json>`, with the given model name in `message_start` and
    /// Bedrock's invocation metrics removed. An exception frame becomes an
    /// Anthropic `event: error` and ends the stream. A frame that fails its
    /// checksum, a stream that ends inside a frame, or an event that is not
    /// UTF-8 JSON with a non-empty, one-line `type` ends the body with an
    /// error. An event's JSON goes out on one `data:` line. No frame byte
    /// is ever passed on.
    pub struct EventStreamBody {
        #[pin]
        inner: RelayBody,
        decoder: Decoder,
        model: String,
        // An error met after some events of the same read; reported next.
        error: Option<BoxError>,
        done: bool,
    }
}

impl EventStreamBody {
    /// Translates `inner`, naming `model` in `message_start`.
    ///
    /// # Examples
    ///
    /// ```
    /// use base64::Engine as _;
    /// use http_body_util::BodyExt;
    /// use tower_llm_relay::bedrock::{encode_frame, EventStreamBody};
    /// use tower_llm_relay::RelayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let event = r#"{"type":"message_stop"}"#;
    /// let payload = format!(r#"{{"bytes":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(event));
    /// let frame = encode_frame(
    ///     &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
    ///     payload.as_bytes(),
    /// );
    /// let body = EventStreamBody::new(RelayBody::full(frame), "claude-sonnet-4-5");
    /// let sse = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(&sse[..], b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    /// # }
    /// ```
    pub fn new(inner: RelayBody, model: impl Into<String>) -> Self {
        Self {
            inner,
            decoder: Decoder::default(),
            model: model.into(),
            error: None,
            done: false,
        }
    }
}

impl std::fmt::Debug for EventStreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStreamBody")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// What one decoded message comes to.
enum Translated {
    /// An SSE event to send.
    Event(Bytes),
    /// The last SSE event: the stream is over.
    Last(Bytes),
    /// Nothing for the client.
    Skip,
}

impl Body for EventStreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(error) = this.error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if *this.done {
                return Poll::Ready(None);
            }
            let data = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    *this.done = true;
                    if this.decoder.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(
                        "the Bedrock event stream ended inside a frame".into()
                    )));
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers carry nothing for an SSE client.
                    Err(_) => continue,
                },
            };
            this.decoder.push(&data);
            let mut out = BytesMut::new();
            loop {
                match this.decoder.next_message() {
                    Ok(None) => break,
                    Ok(Some(message)) => match translate(&message, this.model) {
                        Ok(Translated::Event(event)) => out.extend_from_slice(&event),
                        Ok(Translated::Skip) => {}
                        Ok(Translated::Last(event)) => {
                            out.extend_from_slice(&event);
                            *this.done = true;
                            break;
                        }
                        Err(e) => {
                            *this.done = true;
                            *this.error = Some(e);
                            break;
                        }
                    },
                    Err(e) => {
                        *this.done = true;
                        *this.error = Some(e.into());
                        break;
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.error.is_none()
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
}

fn sse(kind: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + kind.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// The Anthropic `event: error` for an error Bedrock reported in-band.
fn error_event(kind: &str, message: &str) -> Bytes {
    let data = json!({"type": "error", "error": {"type": kind, "message": message}});
    sse("error", data.to_string().as_bytes())
}

fn translate(message: &Message, model: &str) -> Result<Translated, BoxError> {
    match message.header_str(":message-type") {
        Some("event") => {}
        Some("exception") => {
            let kind = message.header_str(":exception-type").unwrap_or_default();
            let text = serde_json::from_slice::<Value>(&message.payload)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "the Bedrock stream failed".to_owned());
            return Ok(Translated::Last(error_event(error_type(kind, None), &text)));
        }
        Some("error") => {
            let code = message.header_str(":error-code").unwrap_or_default();
            let text = message
                .header_str(":error-message")
                .unwrap_or("the Bedrock stream failed");
            return Ok(Translated::Last(error_event(error_type(code, None), text)));
        }
        _ => return Ok(Translated::Skip),
    }
    if message.header_str(":event-type") != Some("chunk") {
        return Ok(Translated::Skip);
    }
    let chunk: Chunk<'_> = serde_json::from_slice(&message.payload)?;
    let event = base64::engine::general_purpose::STANDARD.decode(chunk.bytes.as_bytes())?;
    // SSE is UTF-8, the event may go out as it came, and serde_json does
    // not check the UTF-8 of the fields it skips.
    let kind = serde_json::from_str::<Typed<'_>>(std::str::from_utf8(&event)?)?
        .kind
        .into_owned();
    // The type becomes the `event:` line, which must stay one line.
    if kind.is_empty() || kind.contains(['\r', '\n']) {
        return Err("a Bedrock event's type is not an SSE event name".into());
    }
    // JSON may break lines between its tokens, a `data:` line may not:
    // such an event is written again on one line (Bedrock's never need it).
    let rewrite = kind == "message_start"
        || INVOCATION_METRICS_KEY.is_in(&event)
        || memchr::memchr2(b'\n', b'\r', &event).is_some();
    if !rewrite {
        // The common case, every delta: the event's JSON as Bedrock sent it.
        return Ok(Translated::Event(sse(&kind, &event)));
    }
    let mut value: Value = serde_json::from_slice(&event)?;
    if let Some(object) = value.as_object_mut() {
        object.remove(INVOCATION_METRICS);
    }
    if kind == "message_start" {
        if let Some(message) = value.get_mut("message").and_then(Value::as_object_mut) {
            message.insert("model".to_owned(), Value::String(model.to_owned()));
        }
    }
    Ok(Translated::Event(sse(&kind, value.to_string().as_bytes())))
}

/// The Anthropic error `type` for a Bedrock error name (`ThrottlingException`,
/// or a stream's `throttlingException`), else for the status.
pub(super) fn error_type(name: &str, status: Option<StatusCode>) -> &'static str {
    let name = name.to_ascii_lowercase();
    let by_name = match name.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => Some("rate_limit_error"),
        "serviceunavailableexception" | "modelnotreadyexception" => Some("overloaded_error"),
        "validationexception" => Some("invalid_request_error"),
        "accessdeniedexception" => Some("permission_error"),
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "expiredtokenexception"
        | "incompletesignatureexception" => Some("authentication_error"),
        "resourcenotfoundexception" => Some("not_found_error"),
        "" => None,
        _ => Some("api_error"),
    };
    if let Some(kind) = by_name {
        return kind;
    }
    match status.map(|s| s.as_u16()) {
        Some(400 | 422) => "invalid_request_error",
        Some(401) => "authentication_error",
        Some(403) => "permission_error",
        Some(404) => "not_found_error",
        Some(413) => "request_too_large",
        Some(429) => "rate_limit_error",
        Some(503 | 529) => "overloaded_error",
        _ => "api_error",
    }
}

/// What to make of a whole JSON answer.
#[derive(Debug)]
pub(super) enum Document {
    /// A Messages answer: name the model, drop Bedrock's metrics.
    Message {
        /// The model name to show (the Bedrock model id that served it).
        model: String,
    },
    /// An error answer (`{"message": …}` with `x-amzn-ErrorType`): make
    /// it an Anthropic error.
    Error {
        /// The Bedrock error name, if the upstream gave one.
        name: String,
        /// The answer's status.
        status: StatusCode,
    },
}

impl Document {
    fn rewrite(&self, bytes: &[u8]) -> Bytes {
        let json = serde_json::from_slice::<Value>(bytes).ok();
        match self {
            Self::Message { model } => {
                let Some(mut value) = json else {
                    return Bytes::copy_from_slice(bytes);
                };
                if let Some(object) = value.as_object_mut() {
                    object.remove(INVOCATION_METRICS);
                    object.insert("model".to_owned(), Value::String(model.clone()));
                }
                Bytes::from(value.to_string())
            }
            Self::Error { name, status } => {
                let body_name = json
                    .as_ref()
                    .and_then(|v| v.get("__type").or_else(|| v.get("type")))
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t));
                let name = if name.is_empty() {
                    body_name.unwrap_or_default()
                } else {
                    name
                };
                let message = json
                    .as_ref()
                    .and_then(|v| v.get("message").or_else(|| v.get("Message")))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the Bedrock upstream answered {status}"));
                let body = json!({
                    "type": "error",
                    "error": {"type": error_type(name, Some(*status)), "message": message},
                });
                Bytes::from(body.to_string())
            }
        }
    }
}

pin_project! {
    /// A whole JSON answer, rewritten once it has arrived.
    pub(super) struct DocumentBody {
        #[pin]
        inner: RelayBody,
        buf: BytesMut,
        document: Option<Document>,
    }
}

impl DocumentBody {
    pub(super) fn new(inner: RelayBody, document: Document) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            document: Some(document),
        }
    }
}

impl Body for DocumentBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(document) = this.document.as_ref() else {
                return Poll::Ready(None);
            };
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let out = document.rewrite(this.buf);
                    this.document.take();
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.document.take();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if this.buf.len() + data.len() > MAX_DOCUMENT {
                            this.document.take();
                            return Poll::Ready(Some(
                                Err("the Bedrock answer is too large".into()),
                            ));
                        }
                        this.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.document.is_none()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::super::eventstream::encode;
    use super::*;

    fn chunk(event: &Value) -> Bytes {
        let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        encode(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            json!({"bytes": b64, "p": "abc"}).to_string().as_bytes(),
        )
    }

    fn stream_of(frames: Vec<Bytes>, split: usize) -> RelayBody {
        let all: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        RelayBody::from_frames(
            all.chunks(split.max(1))
                .map(|piece| Ok(Bytes::copy_from_slice(piece))),
        )
    }

    async fn text(body: EventStreamBody) -> Result<String, BoxError> {
        let bytes = body.collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn frames() -> Vec<Bytes> {
        vec![
            chunk(
                &json!({"type": "message_start", "message": {"id": "m", "model": "anthropic.claude-x-v1:0", "usage": {"input_tokens": 3}}}),
            ),
            chunk(
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            chunk(&json!({"type": "message_stop", INVOCATION_METRICS: {"inputTokenCount": 3}})),
        ]
    }

    #[tokio::test]
    async fn chunks_become_sse_with_the_client_model_at_any_split() {
        for split in [1, 2, 3, 7, 50, 10_000] {
            let body = EventStreamBody::new(stream_of(frames(), split), "sonnet");
            let out = text(body).await.unwrap();
            let events: Vec<&str> = out.split_terminator("\n\n").collect();
            assert_eq!(events.len(), 3, "{out}");
            assert!(events[0].starts_with("event: message_start\ndata: "));
            assert!(events[0].contains(r#""model":"sonnet""#), "{out}");
            assert!(events[1].starts_with("event: content_block_delta\n"));
            assert_eq!(
                events[2],
                "event: message_stop\ndata: {\"type\":\"message_stop\"}"
            );
            assert!(!out.contains("invocationMetrics"));
            assert!(!out.contains(":event-type"));
        }
    }

    #[tokio::test]
    async fn an_exception_frame_becomes_an_error_event_and_ends_the_stream() {
        let mut f = frames();
        f.insert(
            2,
            encode(
                &[
                    (":exception-type", "modelStreamErrorException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                br#"{"message":"the model broke"}"#,
            ),
        );
        let out = text(EventStreamBody::new(stream_of(f, 5), "sonnet"))
            .await
            .unwrap();
        let last = out.split_terminator("\n\n").last().unwrap();
        assert!(last.starts_with("event: error\ndata: "), "{out}");
        assert!(last.contains("the model broke"));
        assert!(!out.contains("message_stop"), "nothing after the exception");
    }

    #[tokio::test]
    async fn a_throttling_exception_first_is_a_rate_limit_error_event() {
        let throttled = encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        let mut f = vec![throttled];
        f.extend(frames());
        let mut body = EventStreamBody::new(stream_of(f, 3), "m");
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let text = std::str::from_utf8(&first).unwrap();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {
                "type": "rate_limit_error",
                "message": "Too many requests, please wait before trying again.",
            }})
        );
        // Nothing after the exception, and a clean end.
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn an_answer_without_invocation_metrics_passes_byte_for_byte() {
        let event = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a\"b"}});
        let out = text(EventStreamBody::new(stream_of(vec![chunk(&event)], 1), "m"))
            .await
            .unwrap();
        assert_eq!(
            out,
            format!("event: content_block_delta\ndata: {event}\n\n")
        );
    }

    #[tokio::test]
    async fn an_event_with_line_breaks_is_sent_on_one_data_line() {
        // Found by tests/fuzz_eventstream.rs: a pretty-printed event went
        // out as it came, its lines breaking the SSE event apart.
        let event = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a\nb"}});
        for text in [
            serde_json::to_string_pretty(&event).unwrap(),
            format!("{event}\r\n"),
        ] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
            let frame = encode(
                &[(":event-type", "chunk"), (":message-type", "event")],
                json!({ "bytes": b64 }).to_string().as_bytes(),
            );
            let out = text_of(frame).await.unwrap();
            assert_eq!(
                out,
                format!("event: content_block_delta\ndata: {event}\n\n"),
                "{text:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_event_type_that_is_no_sse_event_name_fails_the_body() {
        for kind in ["content_block_delta\n\nevent: message_stop", "a\rb", ""] {
            let event = json!({"type": kind});
            let out = text_of(chunk(&event)).await;
            assert!(out.is_err(), "{kind:?}: {out:?}");
        }
    }

    #[tokio::test]
    async fn an_event_that_is_not_utf8_fails_the_body() {
        // Found by tests/fuzz_eventstream.rs: valid JSON but for the UTF-8
        // of a field the relay does not read went out as it came.
        let event = b"{\"type\":\"ping\",\"x\":\"\xff\"}";
        let b64 = base64::engine::general_purpose::STANDARD.encode(event);
        let frame = encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            json!({ "bytes": b64 }).to_string().as_bytes(),
        );
        let out = text_of(frame).await;
        assert!(out.is_err(), "{out:?}");
    }

    async fn text_of(frame: Bytes) -> Result<String, BoxError> {
        text(EventStreamBody::new(stream_of(vec![frame], 7), "m")).await
    }

    #[tokio::test]
    async fn json_answers_lose_bedrock_metrics_and_name_the_model() {
        let answer = json!({"type": "message", "model": "claude-x", "usage": {"input_tokens": 1}, INVOCATION_METRICS: {}});
        let body = DocumentBody::new(
            RelayBody::full(answer.to_string()),
            Document::Message {
                model: "bedrock-id".into(),
            },
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"type": "message", "model": "bedrock-id", "usage": {"input_tokens": 1}})
        );
    }

    #[test]
    fn bedrock_error_names_map_to_anthropic_types() {
        let cases = [
            ("ThrottlingException", 429, "rate_limit_error"),
            ("ServiceUnavailableException", 503, "overloaded_error"),
            ("ValidationException", 400, "invalid_request_error"),
            ("AccessDeniedException", 403, "permission_error"),
            ("InvalidSignatureException", 403, "authentication_error"),
            ("InternalServerException", 500, "api_error"),
            ("", 429, "rate_limit_error"),
            ("", 503, "overloaded_error"),
        ];
        for (name, status, kind) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(error_type(name, Some(status)), kind, "{name} {status}");
        }
    }

    #[tokio::test]
    async fn a_corrupt_frame_fails_the_body_after_the_good_events() {
        let mut f = frames();
        let mut bad = f[2].to_vec();
        let at = bad.len() - 8;
        bad[at] ^= 1;
        f[2] = Bytes::from(bad);
        let mut body = EventStreamBody::new(stream_of(f, 10_000), "sonnet");
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .contains("content_block_delta"));
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_fails() {
        let f = frames();
        let cut = f[0].slice(..f[0].len() - 3);
        assert!(text(EventStreamBody::new(stream_of(vec![cut], 4), "m"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn errors_become_anthropic_errors() {
        let body = DocumentBody::new(
            RelayBody::full(r#"{"message":"Too many requests"}"#),
            Document::Error {
                name: "ThrottlingException".into(),
                status: StatusCode::TOO_MANY_REQUESTS,
            },
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many requests"}})
        );
    }
}
