//! Derives a [`SessionHash`] that keeps one conversation on one account.
//!
//! The sources, first match wins (seed 002):
//!
//! 1. a configured client header (e.g. `x-session-id`), when set;
//! 2. `metadata.user_id` containing `session_<uuid>`: that uuid, as is;
//! 3. the text of blocks marked `cache_control: {type: "ephemeral"}`: the
//!    system's marked blocks, or else the first message that carries a
//!    marked block (all its text);
//! 4. the system text;
//! 5. the first message's text.
//!
//! Texts (and header values) are hashed with SHA-256, keeping the first 16
//! bytes as 32 hex digits. When no source applies there is no hash, and the
//! request is scheduled without stickiness.
//!
//! # Examples
//!
//! ```
//! use tower_llm_relay::session_hash::SessionHash;
//! use tower_llm_relay::{Endpoint, ParsedRequest};
//!
//! let body = br#"{"model":"m","metadata":{"user_id":"user_x_session_123e4567-e89b-12d3-a456-426614174000"},"messages":[]}"#;
//! let parsed = ParsedRequest::parse(Endpoint::Messages, body).unwrap();
//! let hash = SessionHash::from_request(&parsed, None).unwrap();
//! assert_eq!(hash.as_str(), "123e4567-e89b-12d3-a456-426614174000");
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, Request};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower_layer::Layer;
use tower_service::Service;

use crate::parse::ParsedRequest;

mod borrowed;

use borrowed::{Block, Content, Conversation, Text};

/// A conversation's identity (request extension), when one could be
/// derived.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionHash(Arc<str>);

impl SessionHash {
    /// The hash as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 bytes of SHA-256 of `text`, in hex.
    pub fn of_text(text: &str) -> Self {
        Self::of_digest(Sha256::digest(text.as_bytes()).as_slice())
    }

    /// The hash of the concatenation of `pieces`, or `None` when it is
    /// empty; without building the concatenation.
    fn of_pieces<'s>(pieces: impl IntoIterator<Item = &'s str>) -> Option<Self> {
        let mut sha = Sha256::new();
        let mut empty = true;
        for piece in pieces {
            empty &= piece.is_empty();
            sha.update(piece.as_bytes());
        }
        (!empty).then(|| Self::of_digest(sha.finalize().as_slice()))
    }

    fn of_digest(digest: &[u8]) -> Self {
        Self(crate::hex::encode(&digest[..16], &mut [0; 32]).into())
    }

    /// The hash of a parsed request, with `header` (the configured session
    /// header's value) first; see the module docs for the order.
    pub fn from_request(parsed: &ParsedRequest, header: Option<&str>) -> Option<Self> {
        if let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) {
            return Some(Self::of_text(value));
        }
        if let Some(uuid) = parsed.user_id().and_then(session_uuid) {
            return Some(Self(uuid.into()));
        }
        // A shape the in-place reading does not take: the trees decide.
        hash_in_place(parsed).unwrap_or_else(|_| Self::from_tree(parsed))
    }

    /// Steps 3–5 of the module docs over `serde_json::Value` trees: the
    /// reference that [`hash_in_place`] reproduces without the trees.
    fn from_tree(parsed: &ParsedRequest) -> Option<Self> {
        let system = parsed
            .system()
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok());
        // Chat-style requests carry the conversation in `messages`;
        // Responses requests in `input`.
        let messages = parsed
            .messages()
            .or(parsed.input())
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok());
        let messages = messages
            .as_ref()
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let cacheable = cacheable_text(system.as_ref(), messages);
        if !cacheable.is_empty() {
            return Some(Self::of_text(&cacheable));
        }
        let system_text = system.as_ref().map(text_of).unwrap_or_default();
        if !system_text.is_empty() {
            return Some(Self::of_text(&system_text));
        }
        let instructions = parsed
            .instructions()
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
            .map(|v| text_of(&v))
            .unwrap_or_default();
        if !instructions.is_empty() {
            return Some(Self::of_text(&instructions));
        }
        let first = match messages.first() {
            Some(message) => message.get("content").map(text_of).unwrap_or_default(),
            // A Responses `input` may be one plain string.
            None => parsed
                .input()
                .and_then(|raw| serde_json::from_str::<String>(raw).ok())
                .unwrap_or_default(),
        };
        (!first.is_empty()).then(|| Self::of_text(&first))
    }
}

/// Steps 3–5 of the module docs, reading each part in place only when
/// the steps before it found nothing; `Err` where a part has a shape the
/// in-place reading declines.
fn hash_in_place(parsed: &ParsedRequest) -> serde_json::Result<Option<SessionHash>> {
    let system: Option<Content<'_>> = borrowed::read(parsed.system())?;
    let marked_system = system
        .as_ref()
        .map(Content::blocks)
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ephemeral())
        .filter_map(Block::text);
    if let Some(hash) = SessionHash::of_pieces(marked_system) {
        return Ok(Some(hash));
    }
    // Chat-style requests carry the conversation in `messages`; Responses
    // requests in `input`.
    let conversation = Conversation::read(parsed.messages().or(parsed.input()))?;
    let marked_message = conversation.first_marked();
    if let Some(hash) = marked_message.and_then(|c| SessionHash::of_pieces(c.texts())) {
        return Ok(Some(hash));
    }
    if let Some(hash) = system.and_then(|c| SessionHash::of_pieces(c.texts())) {
        return Ok(Some(hash));
    }
    let instructions: Option<Content<'_>> = borrowed::read(parsed.instructions())?;
    if let Some(hash) = instructions.and_then(|c| SessionHash::of_pieces(c.texts())) {
        return Ok(Some(hash));
    }
    if conversation.has_first {
        return Ok(conversation
            .first()
            .and_then(|c| SessionHash::of_pieces(c.texts())));
    }
    // A Responses `input` may be one plain string (anything else: no text).
    let input = borrowed::read::<Text<'_>>(parsed.input()).ok().flatten();
    Ok(input.and_then(|text| SessionHash::of_pieces([&*text.0])))
}

impl fmt::Display for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The uuid of a `session_<uuid>` inside `user_id` (36 characters of
/// lowercase hex and dashes).
fn session_uuid(user_id: &str) -> Option<&str> {
    let mut rest = user_id;
    while let Some(at) = rest.find("session_") {
        let candidate = &rest[at + 8..];
        let uuid = candidate.get(..36);
        if let Some(uuid) = uuid.filter(|u| {
            u.bytes()
                .all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9' | b'-'))
        }) {
            return Some(uuid);
        }
        rest = &rest[at + 8..];
    }
    None
}

fn is_ephemeral(block: &Value) -> bool {
    block
        .get("cache_control")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        == Some("ephemeral")
}

/// The cacheable text: the system's marked blocks, else the first message
/// with a marked block.
fn cacheable_text(system: Option<&Value>, messages: &[Value]) -> String {
    let mut text = String::new();
    if let Some(blocks) = system.and_then(Value::as_array) {
        for block in blocks.iter().filter(|b| is_ephemeral(b)) {
            if let Some(t) = block.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
        }
    }
    if !text.is_empty() {
        return text;
    }
    for message in messages {
        let content = message.get("content");
        let marked = content
            .and_then(Value::as_array)
            .is_some_and(|blocks| blocks.iter().any(is_ephemeral));
        if marked {
            return content.map(text_of).unwrap_or_default();
        }
    }
    text
}

/// The text of a string, or of the `text` blocks of an array.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| {
                let kind = b.get("type").and_then(Value::as_str);
                // Anthropic `text`, OpenAI `text` / `input_text`; system
                // blocks may omit the type.
                kind.is_none_or(|k| k == "text" || k == "input_text")
            })
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Applies [`SetSessionHash`]: see the module docs.
#[derive(Debug, Clone, Default)]
pub struct SessionHashLayer {
    header: Option<HeaderName>,
}

impl SessionHashLayer {
    /// Hashes from the body only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets a client header name the session first.
    pub fn header(mut self, header: Option<HeaderName>) -> Self {
        self.header = header;
        self
    }
}

impl<S> Layer<S> for SessionHashLayer {
    type Service = SetSessionHash<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetSessionHash {
            inner,
            header: self.header.clone(),
        }
    }
}

/// Middleware that derives the session hash; see the module docs.
#[derive(Debug, Clone)]
pub struct SetSessionHash<S> {
    inner: S,
    header: Option<HeaderName>,
}

impl<S> SetSessionHash<S> {
    /// A layer for this middleware.
    pub fn layer() -> SessionHashLayer {
        SessionHashLayer::new()
    }

    inner_accessors!();
}

impl<S> Service<Request<Bytes>> for SetSessionHash<S>
where
    S: Service<Request<Bytes>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        if let Some(parsed) = req.extensions().get::<ParsedRequest>() {
            let header = self
                .header
                .as_ref()
                .and_then(|name| req.headers().get(name))
                .and_then(|v| v.to_str().ok());
            if let Some(hash) = SessionHash::from_request(parsed, header) {
                // A prefix is enough to follow a session in logs.
                let prefix = hash.as_str().get(..8).unwrap_or(hash.as_str());
                crate::trace::record_on_current_span("session", prefix);
                req.extensions_mut().insert(hash);
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests;
