//! The answer the mock gives, before it is put in an API's shape.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;

/// The text pieces answers are made of; a stream sends one per delta
/// event, cycling through them.
const WORDS: [&str; 5] = ["Hello", " from", " the", " mock", " upstream."];

/// One answer: its number (for ids), the model it claims, token counts
/// and its text in stream-sized pieces.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub(super) number: u64,
    pub(super) model: String,
    pub(super) input_tokens: u64,
    pub(super) pieces: Vec<&'static str>,
    pub(super) created: u64,
}

impl Answer {
    /// `request_bytes` stands in for the prompt's size: four bytes a token,
    /// at least one.
    pub(super) fn new(number: u64, model: &str, request_bytes: usize, deltas: usize) -> Self {
        Self {
            number,
            model: model.to_owned(),
            input_tokens: (request_bytes as u64 / 4).max(1),
            pieces: (0..deltas).map(|i| WORDS[i % WORDS.len()]).collect(),
            created: unix_time(),
        }
    }

    /// The whole text, as a non-stream answer carries it.
    pub(super) fn text(&self) -> String {
        self.pieces.concat()
    }

    /// One token per piece, at least one.
    pub(super) fn output_tokens(&self) -> u64 {
        (self.pieces.len() as u64).max(1)
    }
}

/// One server-sent event, `event:` line included when named.
pub(super) fn sse_event(name: Option<&str>, data: &Value) -> Bytes {
    let mut event = String::new();
    if let Some(name) = name {
        event.push_str("event: ");
        event.push_str(name);
        event.push('\n');
    }
    event.push_str("data: ");
    event.push_str(&data.to_string());
    event.push_str("\n\n");
    Bytes::from(event)
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A short message for an injected error status.
pub(super) fn status_message(status: u16) -> &'static str {
    match status {
        400 => "Invalid request",
        401 => "Invalid API key",
        403 => "Permission denied",
        404 => "Not found",
        429 => "Rate limited",
        529 => "Overloaded",
        500..=599 => "Internal server error",
        _ => "Error",
    }
}
