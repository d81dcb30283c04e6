//! An incremental scanner for server-sent events (SSE), built to watch a
//! stream without slowing it.
//!
//! [`SseScanner`] is fed the frames of a response as they arrive, split
//! anywhere, and calls back with each complete [`Event`]: its name (the
//! `event:` field) and its data (the `data:` fields joined with `\n`).
//! Line ends are found with `memchr`; an event that fits in its frame is
//! handed out borrowed from it, so the common case copies nothing. An event
//! split across frames is kept in buffers bounded by a cap: past it the
//! event is skipped and counted, and scanning resumes at the next one.
//!
//! The scanner only reads: the relay's body wrappers forward the frames
//! themselves, untouched, and show the scanner a borrowed view of each.
//! The [`usage`](crate::usage) layer reads token usage with it, and the
//! [`model_map`](crate::model_map) layer finds the events whose model name it
//! rewrites.
//!
//! # Examples
//!
//! ```
//! use tower_llm_relay::sse::SseScanner;
//!
//! let stream = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n: a comment\n\ndata:1\ndata:2\n\n";
//! let mut names = Vec::new();
//! let mut scanner = SseScanner::new();
//! // Any split of the stream gives the same events.
//! for frame in stream.chunks(7) {
//!     scanner.feed(frame, |event| {
//!         names.push((String::from_utf8_lossy(event.name()).into_owned(),
//!                     String::from_utf8_lossy(event.data()).into_owned()));
//!     });
//! }
//! assert_eq!(names, [
//!     ("message_start".to_owned(), r#"{"type":"message_start"}"#.to_owned()),
//!     (String::new(), "1\n2".to_owned()),
//! ]);
//! ```

mod scanner;
pub(crate) mod splice;

pub use scanner::{Event, SseScanner, DEFAULT_MAX_EVENT};

/// The event's type: its name, or for an unnamed event whose JSON data
/// opens with a `type` member, that member's value. Anthropic and OpenAI
/// Responses name every event, but some compatible upstreams send only
/// `data:` lines, and both APIs put `type` first.
pub(crate) fn event_type<'a>(event: &Event<'a>) -> &'a [u8] {
    if !event.name().is_empty() {
        return event.name();
    }
    leading_type(event.data()).unwrap_or_default()
}

/// The value of a leading `"type":"…"` member of a JSON object.
fn leading_type(data: &[u8]) -> Option<&[u8]> {
    fn skip_ws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
        s.get(n..).unwrap_or_default()
    }
    let rest = skip_ws(data).strip_prefix(b"{")?;
    let rest = skip_ws(rest).strip_prefix(b"\"type\"")?;
    let rest = skip_ws(rest).strip_prefix(b":")?;
    let rest = skip_ws(rest).strip_prefix(b"\"")?;
    // Event types never hold escapes; a value with one is not matched.
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| &rest[..end])
}

#[cfg(test)]
mod tests;
