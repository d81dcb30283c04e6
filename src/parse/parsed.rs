use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::endpoint::Endpoint;
use crate::error::RelayError;

/// The deepest nesting of arrays and objects a body may have: serde_json's
/// own limit, which the session hash meets when it parses the messages.
/// The parser skips raw fields without one, and would otherwise forward a
/// body nested 10,000 deep.
const MAX_DEPTH: usize = 128;

/// What the relay needs to know of a request body (request extension).
///
/// Parsed once, by [`ParseRequest`](super::ParseRequest). Large parts
/// (`system`, `messages`, `tools`, …) stay raw JSON so no layer pays for a
/// tree it does not read. Cloning is cheap.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::{Endpoint, ParsedRequest};
///
/// let body = br#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}],
///                 "metadata":{"user_id":"u-1"}}"#;
/// let parsed = ParsedRequest::parse(Endpoint::Messages, body).unwrap();
/// assert_eq!(parsed.model(), "claude-sonnet-4-5");
/// assert!(parsed.is_stream());
/// assert_eq!(parsed.user_id(), Some("u-1"));
/// assert!(ParsedRequest::parse(Endpoint::Messages, b"{").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    endpoint: Endpoint,
    fields: Arc<Fields>,
}

#[derive(Debug, Deserialize)]
struct Fields {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    system: Option<Box<RawValue>>,
    #[serde(default)]
    messages: Option<Box<RawValue>>,
    #[serde(default)]
    tools: Option<Box<RawValue>>,
    #[serde(default)]
    thinking: Option<Box<RawValue>>,
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    instructions: Option<Box<RawValue>>,
    #[serde(default)]
    previous_response_id: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

impl ParsedRequest {
    /// Parses and checks a body for `endpoint`: it must be a JSON object
    /// with a non-empty string `model`; `stream` must be a boolean when
    /// present; chat endpoints need a `messages` array.
    pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Self, RelayError> {
        let invalid = |m: &str| RelayError::InvalidRequest(m.to_owned());
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(invalid("the request body is empty: expected a JSON object"));
        }
        let fields: Fields = serde_json::from_slice(body).map_err(|e| {
            RelayError::InvalidRequest(if e.is_data() {
                format!("the request body is not a valid request object: {e}")
            } else {
                format!("the request body is not valid JSON: {e}")
            })
        })?;
        if crate::json::nests_deeper_than(body, MAX_DEPTH) {
            return Err(invalid(&format!(
                "the request body nests arrays and objects more than {MAX_DEPTH} deep"
            )));
        }
        match &fields.model {
            Some(serde_json::Value::String(m)) if !m.trim().is_empty() => {}
            Some(serde_json::Value::String(_)) => return Err(invalid("`model` must not be empty")),
            Some(_) => return Err(invalid("`model` must be a string")),
            None => return Err(invalid("`model` is required")),
        }
        match &fields.stream {
            None | Some(serde_json::Value::Bool(_) | serde_json::Value::Null) => {}
            Some(_) => return Err(invalid("`stream` must be a boolean")),
        }
        if matches!(
            endpoint,
            Endpoint::Messages | Endpoint::CountTokens | Endpoint::ChatCompletions
        ) {
            let is_array = fields
                .messages
                .as_ref()
                .is_some_and(|m| m.get().trim_start().starts_with('['));
            if !is_array {
                return Err(invalid("`messages` must be an array"));
            }
        }
        if let Some(id) = &fields.previous_response_id {
            if !(id.is_string() || id.is_null()) {
                return Err(invalid("`previous_response_id` must be a string"));
            }
        }
        Ok(Self {
            endpoint,
            fields: Arc::new(fields),
        })
    }

    /// The endpoint the request was sent to.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The model the client asked for.
    pub fn model(&self) -> &str {
        match &self.fields.model {
            Some(serde_json::Value::String(m)) => m,
            // `parse` accepts only string models.
            _ => "",
        }
    }

    /// Whether the client asked for a stream (never for count_tokens).
    pub fn is_stream(&self) -> bool {
        self.endpoint.can_stream()
            && matches!(self.fields.stream, Some(serde_json::Value::Bool(true)))
    }

    /// `metadata.user_id`, when it is a string.
    pub fn user_id(&self) -> Option<&str> {
        self.fields.metadata.as_ref()?.user_id.as_ref()?.as_str()
    }

    /// `system` (Anthropic), raw.
    pub fn system(&self) -> Option<&RawValue> {
        self.fields.system.as_deref()
    }

    /// `messages` (Anthropic, OpenAI chat), raw.
    pub fn messages(&self) -> Option<&RawValue> {
        self.fields.messages.as_deref()
    }

    /// `tools`, raw.
    pub fn tools(&self) -> Option<&RawValue> {
        self.fields.tools.as_deref()
    }

    /// `thinking` (Anthropic), raw.
    pub fn thinking(&self) -> Option<&RawValue> {
        self.fields.thinking.as_deref()
    }

    /// `input` (OpenAI Responses), raw.
    pub fn input(&self) -> Option<&RawValue> {
        self.fields.input.as_deref()
    }

    /// `instructions` (OpenAI Responses), raw.
    pub fn instructions(&self) -> Option<&RawValue> {
        self.fields.instructions.as_deref()
    }

    /// `previous_response_id` (OpenAI Responses).
    pub fn previous_response_id(&self) -> Option<&str> {
        self.fields.previous_response_id.as_ref()?.as_str()
    }
}
