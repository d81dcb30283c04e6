use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;

use crate::endpoint::Endpoint;
use crate::error::RelayError;
use crate::json::{self, ObjectError, MAX_NESTING};

/// What the relay needs to know of a request body (request extension).
///
/// Parsed once, by [`ParseRequest`](super::ParseRequest). Large parts
/// (`system`, `messages`, `tools`, …) are kept as their JSON text, so no
/// layer pays for a tree it does not read. Cloning is cheap.
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
/// assert_eq!(parsed.messages(), Some(r#"[{"role":"user","content":"hi"}]"#));
/// assert!(ParsedRequest::parse(Endpoint::Messages, b"{").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    endpoint: Endpoint,
    fields: Arc<Fields>,
}

#[derive(Debug, Default)]
struct Fields {
    /// The whole body (checked UTF-8); the raw parts are spans of it.
    text: Box<str>,
    model: String,
    stream: bool,
    user_id: Option<String>,
    previous_response_id: Option<String>,
    system: Option<Range<usize>>,
    messages: Option<Range<usize>>,
    tools: Option<Range<usize>>,
    thinking: Option<Range<usize>>,
    input: Option<Range<usize>>,
    instructions: Option<Range<usize>>,
}

/// The members [`ParsedRequest`] reads, in [`MEMBERS`] order.
#[derive(Clone, Copy)]
enum Member {
    Model,
    Stream,
    Metadata,
    System,
    Messages,
    Tools,
    Thinking,
    Input,
    Instructions,
    PreviousResponseId,
}

const MEMBERS: [(&str, Member); 10] = [
    ("model", Member::Model),
    ("stream", Member::Stream),
    ("metadata", Member::Metadata),
    ("system", Member::System),
    ("messages", Member::Messages),
    ("tools", Member::Tools),
    ("thinking", Member::Thinking),
    ("input", Member::Input),
    ("instructions", Member::Instructions),
    ("previous_response_id", Member::PreviousResponseId),
];

#[derive(Deserialize)]
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
        let text = std::str::from_utf8(body).map_err(|e| {
            let (line, column) = ObjectError::line_and_column(e.valid_up_to(), body);
            invalid(&format!(
                "the request body is not valid JSON: invalid UTF-8 at line {line} column {column}"
            ))
        })?;
        // Spans of the members read, found in the same pass that checks
        // the whole body.
        let mut spans: [Option<Range<usize>>; MEMBERS.len()] = Default::default();
        let mut duplicate = None;
        let mut escaped_keys = false;
        let checked = json::validate_object(body, |key, span| {
            if key.contains(&b'\\') {
                escaped_keys = true;
            } else if let Some(at) = MEMBERS.iter().position(|(name, _)| name.as_bytes() == key) {
                if spans[at].replace(span).is_some() {
                    duplicate = Some(MEMBERS[at].0);
                }
            }
        });
        match checked {
            Ok(()) => {}
            Err(ObjectError::Syntax { expected, at }) => {
                let (line, column) = ObjectError::line_and_column(at, body);
                return Err(invalid(&format!(
                    "the request body is not valid JSON: expected {expected} at line {line} column {column}"
                )));
            }
            Err(ObjectError::NotObject) => {
                return Err(invalid(
                    "the request body is not a valid request object: expected a JSON object",
                ))
            }
            Err(ObjectError::TooDeep) => {
                return Err(invalid(&format!(
                    "the request body nests arrays and objects more than {MAX_NESTING} deep"
                )))
            }
        }
        if escaped_keys {
            // A key spelled with escapes: rare enough to read the keys again
            // in full, with their escapes decoded.
            spans = Default::default();
            duplicate = None;
            let mut undecodable = false;
            json::top_level_members(body, |key, span| {
                // The key with its quotes: `key` is a slice of `body`.
                let start = key.as_ptr() as usize - body.as_ptr() as usize;
                let quoted = body.get(start.wrapping_sub(1)..start + key.len() + 1);
                let name = match quoted.map(serde_json::from_slice::<String>) {
                    Some(Ok(name)) => name,
                    _ => {
                        undecodable = true;
                        return;
                    }
                };
                if let Some(at) = MEMBERS.iter().position(|(known, _)| *known == name) {
                    if spans[at].replace(span).is_some() {
                        duplicate = Some(MEMBERS[at].0);
                    }
                }
            });
            if undecodable {
                return Err(invalid(
                    "the request body is not valid JSON: a key holds an invalid escape",
                ));
            }
        }
        if let Some(name) = duplicate {
            return Err(invalid(&format!(
                "the request body is not a valid request object: duplicate field `{name}`"
            )));
        }
        let mut fields = Fields::default();
        for ((name, member), span) in MEMBERS.iter().zip(spans) {
            let Some(span) = span else { continue };
            let Some(value) = text.get(span.clone()) else {
                continue;
            };
            let string_or_null = |what: &str| -> Result<Option<String>, RelayError> {
                match value.as_bytes().first().copied().unwrap_or_default() {
                    b'"' => serde_json::from_str(value).map(Some).map_err(|e| {
                        invalid(&format!(
                            "the request body is not valid JSON: `{name}`: {e}"
                        ))
                    }),
                    _ if value == "null" => Ok(None),
                    _ => Err(invalid(what)),
                }
            };
            match member {
                Member::Model => match string_or_null("`model` must be a string")? {
                    Some(model) if model.trim().is_empty() => {
                        return Err(invalid("`model` must not be empty"))
                    }
                    Some(model) => fields.model = model,
                    None => {}
                },
                Member::Stream => match value {
                    "true" => fields.stream = true,
                    "false" | "null" => {}
                    _ => return Err(invalid("`stream` must be a boolean")),
                },
                Member::Metadata => {
                    let metadata: Option<Metadata> = serde_json::from_str(value).map_err(|e| {
                        invalid(&format!(
                            "the request body is not a valid request object: `metadata`: {e}"
                        ))
                    })?;
                    fields.user_id = match metadata.and_then(|m| m.user_id) {
                        Some(serde_json::Value::String(id)) => Some(id),
                        _ => None,
                    };
                }
                Member::PreviousResponseId => {
                    fields.previous_response_id =
                        string_or_null("`previous_response_id` must be a string")?;
                }
                Member::System => fields.system = Some(span),
                Member::Messages => fields.messages = Some(span),
                Member::Tools => fields.tools = Some(span),
                Member::Thinking => fields.thinking = Some(span),
                Member::Input => fields.input = Some(span),
                Member::Instructions => fields.instructions = Some(span),
            }
        }
        if fields.model.is_empty() {
            return Err(invalid("`model` is required"));
        }
        if matches!(
            endpoint,
            Endpoint::Messages | Endpoint::CountTokens | Endpoint::ChatCompletions
        ) {
            let is_array = fields
                .messages
                .as_ref()
                .is_some_and(|span| text.get(span.clone()).is_some_and(|m| m.starts_with('[')));
            if !is_array {
                return Err(invalid("`messages` must be an array"));
            }
        }
        fields.text = text.into();
        Ok(Self {
            endpoint,
            fields: Arc::new(fields),
        })
    }

    fn raw(&self, span: &Option<Range<usize>>) -> Option<&str> {
        self.fields.text.get(span.clone()?)
    }

    /// The endpoint the request was sent to.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The model the client asked for.
    pub fn model(&self) -> &str {
        &self.fields.model
    }

    /// Whether the client asked for a stream (never for count_tokens).
    pub fn is_stream(&self) -> bool {
        self.endpoint.can_stream() && self.fields.stream
    }

    /// `metadata.user_id`, when it is a string.
    pub fn user_id(&self) -> Option<&str> {
        self.fields.user_id.as_deref()
    }

    /// `system` (Anthropic), as its JSON text.
    pub fn system(&self) -> Option<&str> {
        self.raw(&self.fields.system)
    }

    /// `messages` (Anthropic, OpenAI chat), as its JSON text.
    pub fn messages(&self) -> Option<&str> {
        self.raw(&self.fields.messages)
    }

    /// `tools`, as its JSON text.
    pub fn tools(&self) -> Option<&str> {
        self.raw(&self.fields.tools)
    }

    /// `thinking` (Anthropic), as its JSON text.
    pub fn thinking(&self) -> Option<&str> {
        self.raw(&self.fields.thinking)
    }

    /// `input` (OpenAI Responses), as its JSON text.
    pub fn input(&self) -> Option<&str> {
        self.raw(&self.fields.input)
    }

    /// `instructions` (OpenAI Responses), as its JSON text.
    pub fn instructions(&self) -> Option<&str> {
        self.raw(&self.fields.instructions)
    }

    /// `previous_response_id` (OpenAI Responses).
    pub fn previous_response_id(&self) -> Option<&str> {
        self.fields.previous_response_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &str) -> String {
        match ParsedRequest::parse(Endpoint::Messages, body.as_bytes()) {
            Err(RelayError::InvalidRequest(message)) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn keys_spelled_with_escapes_are_the_same_members() {
        let body = r#"{"mod\u0065l":"m","stre\u0061m":true,"messages":[],"x\"y":1}"#;
        let parsed = ParsedRequest::parse(Endpoint::Messages, body.as_bytes()).unwrap();
        assert_eq!(parsed.model(), "m");
        assert!(parsed.is_stream());
        assert_eq!(parsed.messages(), Some("[]"));
        assert!(error_of(r#"{"model":"a","mod\u0065l":"b","messages":[]}"#)
            .contains("duplicate field `model`"));
        assert!(error_of(r#"{"\ud800":1,"model":"m","messages":[]}"#).contains("invalid escape"));
    }

    #[test]
    fn refusals_say_what_is_wrong_and_where() {
        assert_eq!(
            error_of("{\n  \"model\": \"m\",\n  \"messages\": [1,]\n}"),
            "the request body is not valid JSON: expected a value at line 3 column 18"
        );
        assert!(error_of(r#"[{"model":"m"}]"#).contains("not a valid request object"));
        assert!(error_of(&format!(
            r#"{{"model":"m","messages":{}{}}}"#,
            "[".repeat(128),
            "]".repeat(128)
        ))
        .contains("more than 128 deep"));
        assert!(error_of(r#"{"model":"m","messages":[],"model":"n"}"#).contains("duplicate field"));
        assert_eq!(
            error_of(r#"{"model":7,"messages":[]}"#),
            "`model` must be a string"
        );
        assert_eq!(
            error_of(r#"{"model":" ","messages":[]}"#),
            "`model` must not be empty"
        );
        assert_eq!(
            error_of(r#"{"model":null,"messages":[]}"#),
            "`model` is required"
        );
        assert_eq!(
            error_of(r#"{"model":"m","stream":1,"messages":[]}"#),
            "`stream` must be a boolean"
        );
        assert_eq!(
            error_of(r#"{"model":"m","messages":{}}"#),
            "`messages` must be an array"
        );
        assert!(error_of(r#"{"model":"m","metadata":5,"messages":[]}"#).contains("`metadata`"));
        let invalid_utf8 = ParsedRequest::parse(Endpoint::Messages, b"{\"model\":\"\xff\"}");
        assert!(
            matches!(invalid_utf8, Err(RelayError::InvalidRequest(m)) if m.contains("invalid UTF-8 at line 1 column 11"))
        );
    }
}
