//! Reads the token usage of every response as it streams past, and reports
//! it once per response.
//!
//! The [`UsageExtract`] layer wraps each response body. Frames go to the
//! client untouched (the same `Bytes`, the same boundaries, no added wait);
//! the wrapper scans them with the [`sse`](crate::sse) scanner and
//! JSON-parses only the events that carry usage:
//!
//! | API | read from |
//! |---|---|
//! | Anthropic Messages | `message_start` (input, cache write, cache read tokens; model), `message_delta` (output tokens; input and cache counts when the start had none) |
//! | OpenAI Chat Completions | chunks with a non-null `usage` (`prompt_tokens_details.cached_tokens` included) |
//! | OpenAI Responses | `response.completed` / `incomplete` / `failed` (`usage`, `input_tokens_details.cached_tokens`), and the response id |
//! | non-stream JSON of all three | the document's `usage`, `model` (and `id` for Responses) |
//!
//! When the body ends, errors, or is dropped (the client went away), one
//! [`UsageReport`] is made: the usage seen, the first-token time of a
//! stream, the duration, the status, the model the client asked for and the
//! one served, and whether the answer was read whole (`complete`). It goes
//! to the layer's [`UsageSink`] ([`TracingSink`] by default) and to the
//! [`UsageHandle`] in the response's extensions.
//!
//! # Chat streams and `include_usage`
//!
//! OpenAI sends usage in a chat stream only when asked. By default
//! ([`IncludeUsage::Inject`]) the layer adds
//! `"stream_options":{"include_usage":true}` to a chat stream request that
//! did not ask, and takes the usage-only chunk that this adds out of the
//! client's stream. That is the one case where the client's bytes change
//! (and the only one where frames may be re-cut: the unfinished event is
//! held until complete); a client that asked for usage gets the stream as
//! sent. The other chunks then carry `"usage":null`, which OpenAI's own
//! schema allows.
//!
//! # Attribution
//!
//! The layer sits just above the upstream call, below account selection,
//! so each attempt is reported with the account that served it. Only the
//! body a client reads is reported: an attempt whose body is dropped
//! unpolled (a failover layer discarding it) reports nothing, and a layer
//! that reads part of an attempt before discarding it calls
//! [`UsageHandle::discard`]. Answers that fail before a response head
//! (connect errors, timeouts) have no body and report nothing; error
//! statuses are reported with no usage.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::usage::{ChannelSink, UsageExtractLayer};
//! use tower_llm_relay::{RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let upstream = service_fn(|_: Request<Bytes>| async {
//!     let stream = concat!(
//!         "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
//!         "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
//!         "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
//!         "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
//!     );
//!     let response = Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(RelayBody::full(stream))
//!         .unwrap();
//!     Ok::<_, RelayError>(response)
//! });
//! let (sink, mut reports) = ChannelSink::new(64);
//! let service = UsageExtractLayer::new().sink(sink).layer(upstream);
//! let req = Request::post("/v1/messages").body(Bytes::new()).unwrap();
//! let response = service.oneshot(req).await.unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(body.starts_with(b"event: message_start")); // forwarded as it came
//!
//! let report = reports.recv().await.unwrap();
//! assert_eq!(report.usage.input_tokens, 25);
//! assert_eq!(report.usage.output_tokens, 15);
//! assert_eq!(report.served_model.as_deref(), Some("claude-x"));
//! assert!(report.first_token.is_some());
//! assert!(report.complete);
//! # }
//! ```

mod body;
mod extract;
mod layer;
mod sink;
mod totals;
mod types;

pub use body::UsageHandle;
pub use layer::{Attach, IncludeUsage, UsageExtract, UsageExtractLayer};
pub use sink::{ChannelSink, MetricsSink, TracingSink, UsageReceiver, UsageSink};
pub use totals::{Totals, UsageTotals};
pub use types::{BodyEnd, Usage, UsageReport};

#[cfg(test)]
mod tests;
