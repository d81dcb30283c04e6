//! Reading usage out of each API's events and documents.
//!
//! Only the events that carry usage (or the served model, or the response
//! id) are JSON-parsed, into small structs that skip everything else; text
//! deltas are recognised by name and never parsed.

use std::borrow::Cow;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::types::Usage;
use crate::endpoint::Endpoint;
use crate::json;
use crate::needle::Needle;
use crate::sse::{event_type, Event};

/// Which API's answers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Anthropic Messages.
    Messages,
    /// OpenAI Chat Completions.
    ChatCompletions,
    /// OpenAI Responses.
    Responses,
    /// Nothing to read (token counting, unknown paths).
    None,
}

impl Api {
    pub(crate) fn of(endpoint: Option<Endpoint>) -> Self {
        match endpoint {
            Some(Endpoint::Messages) => Self::Messages,
            Some(Endpoint::ChatCompletions) => Self::ChatCompletions,
            Some(Endpoint::Responses) => Self::Responses,
            Some(Endpoint::CountTokens) | None => Self::None,
        }
    }
}

/// What has been read of one answer so far.
#[derive(Debug)]
pub(crate) struct Extractor {
    api: Api,
    started: Instant,
    /// Take the usage-only chat chunk out of the client's stream (the relay
    /// asked for it, the client did not).
    strip_usage_chunk: bool,
    pub(crate) usage: Usage,
    pub(crate) served_model: Option<String>,
    pub(crate) response_id: Option<String>,
    pub(crate) first_token: Option<Duration>,
    /// The answer's closing event (or a whole JSON document) was read.
    pub(crate) terminal: bool,
}

// === wire shapes: only the fields read ===

/// An Anthropic `usage` object: flat counts, read by walking its members
/// (see [`AnthropicUsage::read`]).
#[derive(Default)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Reads a `usage` value (absent or `null`: `Some(None)`); `None` when
    /// it is not one whole object or a count is not a non-negative integer.
    /// Other members (`cache_creation`, `service_tier`, …) are skipped.
    /// Hand-read because serde's derive spent about 500 instructions per
    /// member, and every answer has one or two of these.
    fn read(value: Option<&[u8]>) -> Option<Option<Self>> {
        let value = match value {
            None | Some(b"null") => return Some(None),
            Some(value) => value,
        };
        let mut usage = Self::default();
        let mut counts_read = true;
        let whole = json::top_level_members(value, |key, span| {
            let slot = match key {
                b"input_tokens" => &mut usage.input_tokens,
                b"output_tokens" => &mut usage.output_tokens,
                b"cache_creation_input_tokens" => &mut usage.cache_creation_input_tokens,
                b"cache_read_input_tokens" => &mut usage.cache_read_input_tokens,
                _ => return,
            };
            match count(&value[span]) {
                Some(count) => *slot = count,
                None => counts_read = false,
            }
        });
        (whole && counts_read).then_some(Some(usage))
    }

    fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_creation_input_tokens: self.cache_creation_input_tokens.unwrap_or(0),
            cache_read_input_tokens: self.cache_read_input_tokens.unwrap_or(0),
        }
    }
}

/// A JSON count: an integer in `u64` (`Some`), `null` (`Some(None)`), or
/// `None` for anything else, as serde reads an `Option<u64>`.
fn count(value: &[u8]) -> Option<Option<u64>> {
    match value {
        b"null" => Some(None),
        [b'0'] => Some(Some(0)),
        [b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(value).ok()?.parse().ok().map(Some)
        }
        _ => None,
    }
}

/// The values of the members `keys` of `json`, when it is one whole
/// object (see [`json::top_level_members`]): the rest is walked, never
/// parsed.
fn members<'a, const N: usize>(json: &'a [u8], keys: [&[u8]; N]) -> Option<[Option<&'a [u8]>; N]> {
    let mut values = [None; N];
    json::top_level_members(json, |key, span| {
        if let Some(at) = keys.iter().position(|k| *k == key) {
            values[at] = Some(&json[span]);
        }
    })
    .then_some(values)
}

#[derive(Deserialize)]
struct OpenAiUsage {
    // Chat Completions names.
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<CachedTokens>,
    // Responses names.
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<CachedTokens>,
}

#[derive(Deserialize)]
struct CachedTokens {
    cached_tokens: Option<u64>,
}

/// A chat completion, or one chunk of a chat stream.
#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<ChatChoice<'a>>>,
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow)]
    delta: Option<ChatDelta<'a>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    tool_calls: Option<IgnoredAny>,
    function_call: Option<IgnoredAny>,
}

impl ChatDelta<'_> {
    /// Whether the delta carries generated content (a role-only or empty
    /// first chunk does not).
    fn has_content(&self) -> bool {
        let text = |v: &Option<&RawValue>| v.is_some_and(|raw| raw.get() != "\"\"");
        text(&self.content)
            || text(&self.reasoning_content)
            || text(&self.refusal)
            || self.tool_calls.is_some()
            || self.function_call.is_some()
    }
}

/// A Responses answer, or the `response` of a `response.*` event.
#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct ResponseEvent<'a> {
    #[serde(borrow)]
    response: Option<ResponseObject<'a>>,
}

impl OpenAiUsage {
    fn to_usage(&self) -> Usage {
        let input = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage {
            // OpenAI counts cached tokens inside the input; see `Usage`.
            input_tokens: input.saturating_sub(cached),
            output_tokens: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached.min(input),
        }
    }
}

/// Whether `data` has a `"usage"` member whose value is not `null` (OpenAI
/// sends `"usage":null` in every chunk once usage is asked for).
fn has_usage(data: &[u8]) -> bool {
    static USAGE_KEY: Needle = Needle::new(b"\"usage\"");
    USAGE_KEY.find_iter(data).any(|at| {
        let rest = &data[at + USAGE_KEY.len()..];
        let rest = trim_start(rest);
        let Some(rest) = rest.strip_prefix(b":") else {
            return false;
        };
        !trim_start(rest).starts_with(b"null")
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

impl Extractor {
    pub(crate) fn new(api: Api, started: Instant, strip_usage_chunk: bool) -> Self {
        Self {
            api,
            started,
            strip_usage_chunk,
            usage: Usage::default(),
            served_model: None,
            response_id: None,
            first_token: None,
            terminal: false,
        }
    }

    fn first_token_now(&mut self) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
    }

    fn set_model(&mut self, model: Option<Cow<'_, str>>) {
        if let Some(model) = model {
            if self.served_model.as_deref() != Some(&model) {
                self.served_model = Some(model.into_owned());
            }
        }
    }

    /// Reads one stream event. Returns whether the event must be left out
    /// of the client's stream.
    pub(crate) fn on_event(&mut self, event: &Event<'_>) -> bool {
        match self.api {
            Api::Messages => self.on_anthropic_event(event),
            Api::ChatCompletions => return self.on_chat_chunk(event.data()),
            Api::Responses => self.on_responses_event(event),
            Api::None => {}
        }
        false
    }

    fn on_anthropic_event(&mut self, event: &Event<'_>) {
        match event_type(event) {
            b"content_block_delta" => self.first_token_now(),
            b"message_start" => {
                let Some([Some(message)]) = members(event.data(), [b"message"]) else {
                    return;
                };
                let Some([model, usage]) = members(message, [b"model", b"usage"]) else {
                    return;
                };
                let (Some(model), Some(usage)) = (parse_member(model), AnthropicUsage::read(usage))
                else {
                    return;
                };
                self.set_model(model);
                if let Some(usage) = usage {
                    self.usage = usage.to_usage();
                }
            }
            b"message_delta" => {
                let Some([usage]) = members(event.data(), [b"usage"]) else {
                    return;
                };
                let Some(Some(usage)) = AnthropicUsage::read(usage) else {
                    return;
                };
                // The delta's output count is cumulative: it replaces the
                // start's. Input and cache counts come from the start; some
                // compatible upstreams send them only here.
                if let Some(output) = usage.output_tokens {
                    self.usage.output_tokens = output;
                }
                let fill = |have: &mut u64, late: Option<u64>| {
                    if *have == 0 {
                        *have = late.unwrap_or(0);
                    }
                };
                fill(&mut self.usage.input_tokens, usage.input_tokens);
                fill(
                    &mut self.usage.cache_creation_input_tokens,
                    usage.cache_creation_input_tokens,
                );
                fill(
                    &mut self.usage.cache_read_input_tokens,
                    usage.cache_read_input_tokens,
                );
            }
            b"message_stop" => self.terminal = true,
            _ => {}
        }
    }

    fn on_chat_chunk(&mut self, data: &[u8]) -> bool {
        if data == b"[DONE]" {
            self.terminal = true;
            return false;
        }
        // Parse the first chunks (model, first token), then only those that
        // carry usage.
        let early = self.first_token.is_none() || self.served_model.is_none();
        if !early && !has_usage(data) {
            return false;
        }
        let Ok(chunk) = serde_json::from_slice::<ChatChunk<'_>>(data) else {
            return false;
        };
        self.set_model(chunk.model);
        let choices = chunk.choices.unwrap_or_default();
        if choices
            .iter()
            .any(|c| c.delta.as_ref().is_some_and(ChatDelta::has_content))
        {
            self.first_token_now();
        }
        let Some(usage) = chunk.usage else {
            return false;
        };
        self.usage = usage.to_usage();
        self.strip_usage_chunk && choices.is_empty()
    }

    fn on_responses_event(&mut self, event: &Event<'_>) {
        let kind = event_type(event);
        match kind {
            b"response.created" | b"response.in_progress" if self.response_id.is_none() => {
                self.read_response(event.data());
            }
            b"response.completed" | b"response.incomplete" | b"response.failed" => {
                self.read_response(event.data());
                self.terminal = true;
            }
            _ if kind.ends_with(b".delta") => self.first_token_now(),
            _ => {}
        }
    }

    fn read_response(&mut self, data: &[u8]) {
        if let Ok(ResponseEvent {
            response: Some(response),
        }) = serde_json::from_slice(data)
        {
            self.take_response(response);
        }
    }

    fn take_response(&mut self, response: ResponseObject<'_>) {
        if let Some(id) = response.id {
            self.response_id = Some(id.into_owned());
        }
        self.set_model(response.model);
        if let Some(usage) = response.usage {
            self.usage = usage.to_usage();
        }
    }

    /// Reads a whole non-stream answer.
    pub(crate) fn on_document(&mut self, document: &[u8]) {
        if self.api == Api::None || self.read_document(document).is_some() {
            self.terminal = true;
        }
    }

    /// Reads the answer's `id`, `model` and `usage` members, each parsed on
    /// its own; the rest of the document is only walked for its structure.
    /// A serde pass over the whole answer cost about five times as much,
    /// most of it in the content's strings, none of which is read. `None`
    /// when the document is not one whole object or a member read does not
    /// parse.
    fn read_document(&mut self, document: &[u8]) -> Option<()> {
        let [id, model, usage] = members(document, [b"id", b"model", b"usage"])?;
        let model: Option<Cow<'_, str>> = parse_member(model)?;
        match self.api {
            Api::Messages => {
                let usage = AnthropicUsage::read(usage)?;
                self.set_model(model);
                self.usage = usage.unwrap_or_default().to_usage();
            }
            Api::ChatCompletions => {
                let usage: Option<OpenAiUsage> = parse_member(usage)?;
                self.set_model(model);
                if let Some(usage) = usage {
                    self.usage = usage.to_usage();
                }
            }
            Api::Responses => {
                let id = parse_member(id)?;
                let usage = parse_member(usage)?;
                self.take_response(ResponseObject { id, model, usage });
            }
            Api::None => {}
        }
        Some(())
    }
}

/// One member's value (absent or `null`: `Some(None)`), or `None` when it
/// does not parse as a `T`.
fn parse_member<'a, T: Deserialize<'a>>(value: Option<&'a [u8]>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(bytes) => serde_json::from_slice(bytes).ok(),
    }
}

#[cfg(test)]
mod tests {
    use crate::sse::SseScanner;

    use super::*;

    fn read(api: Api, strip: bool, stream: &str) -> (Extractor, Vec<bool>) {
        let mut extractor = Extractor::new(api, Instant::now(), strip);
        let mut stripped = Vec::new();
        let mut scanner = SseScanner::new();
        scanner.feed(stream.as_bytes(), |e| stripped.push(extractor.on_event(e)));
        scanner.finish(|e| stripped.push(extractor.on_event(e)));
        (extractor, stripped)
    }

    #[test]
    fn anthropic_stream_usage_comes_from_start_and_delta() {
        let (x, _) = read(
            Api::Messages,
            false,
            concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",",
                "\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,\"output_tokens\":1}}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ),
        );
        assert_eq!(
            x.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 42,
                cache_creation_input_tokens: 100,
                cache_read_input_tokens: 2000
            }
        );
        assert_eq!(x.served_model.as_deref(), Some("claude-x"));
        assert!(x.first_token.is_some());
        assert!(x.terminal);
    }

    #[test]
    fn anthropic_input_counts_sent_only_in_message_delta_are_taken() {
        let (x, _) = read(
            Api::Messages,
            false,
            concat!(
                "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n",
                "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":3,\"output_tokens\":9}}\n\n",
            ),
        );
        assert_eq!(
            x.usage,
            Usage {
                input_tokens: 7,
                output_tokens: 9,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 3
            }
        );
        // No `message_stop`: not whole.
        assert!(!x.terminal);
        assert!(x.first_token.is_none());
    }

    #[test]
    fn chat_usage_chunk_is_read_and_stripped_only_when_asked() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":5,",
            "\"prompt_tokens_details\":{\"cached_tokens\":30}}}\n\n",
            "data: [DONE]\n\n",
        );
        let (x, stripped) = read(Api::ChatCompletions, true, stream);
        assert_eq!(stripped, [false, false, true, false]);
        assert_eq!(
            x.usage,
            Usage {
                input_tokens: 20,
                output_tokens: 5,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 30
            }
        );
        assert_eq!(x.served_model.as_deref(), Some("gpt-x"));
        assert!(x.first_token.is_some());
        assert!(x.terminal);
        let (x, stripped) = read(Api::ChatCompletions, false, stream);
        assert_eq!(stripped, [false; 4]);
        assert_eq!(x.usage.output_tokens, 5);
    }

    #[test]
    fn chat_usage_on_a_chunk_with_choices_is_read_but_never_stripped() {
        let (x, stripped) = read(
            Api::ChatCompletions,
            true,
            "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        );
        assert_eq!(stripped, [false]);
        assert_eq!(x.usage.output_tokens, 4);
        assert!(x.first_token.is_some());
    }

    #[test]
    fn responses_stream_gives_usage_and_the_response_id() {
        let (x, _) = read(
            Api::Responses,
            false,
            concat!(
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-r\",\"usage\":null}}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-r\",",
                "\"output\":[{\"content\":[{\"text\":\"x\"}]}],\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":2}}}\n\n",
            ),
        );
        assert_eq!(x.response_id.as_deref(), Some("resp_1"));
        assert_eq!(
            x.usage,
            Usage {
                input_tokens: 6,
                output_tokens: 2,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 4
            }
        );
        assert!(x.first_token.is_some());
        assert!(x.terminal);
    }

    #[test]
    fn documents_of_every_api_are_read() {
        let mut x = Extractor::new(Api::Messages, Instant::now(), false);
        x.on_document(br#"{"id":"msg","model":"claude-x","content":[{"text":"\"usage\""}],"usage":{"input_tokens":5,"cache_read_input_tokens":7,"output_tokens":6}}"#);
        assert_eq!(
            (
                x.usage.input_tokens,
                x.usage.cache_read_input_tokens,
                x.usage.output_tokens
            ),
            (5, 7, 6)
        );
        assert!(x.terminal && x.first_token.is_none());

        let mut x = Extractor::new(Api::ChatCompletions, Instant::now(), false);
        x.on_document(br#"{"model":"gpt-x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":8}}}"#);
        assert_eq!(
            (
                x.usage.input_tokens,
                x.usage.cache_read_input_tokens,
                x.usage.output_tokens
            ),
            (1, 8, 2)
        );
        assert_eq!(x.served_model.as_deref(), Some("gpt-x"));

        let mut x = Extractor::new(Api::Responses, Instant::now(), false);
        x.on_document(
            br#"{"id":"resp_9","model":"gpt-r","usage":{"input_tokens":3,"output_tokens":1}}"#,
        );
        assert_eq!(x.response_id.as_deref(), Some("resp_9"));
        assert_eq!((x.usage.input_tokens, x.usage.output_tokens), (3, 1));

        let mut x = Extractor::new(Api::Messages, Instant::now(), false);
        x.on_document(br#"{"model":"cut"#);
        assert!(!x.terminal);
    }

    #[test]
    fn usage_objects_are_read_as_serde_reads_option_u64_counts() {
        let read = |text: &str| {
            AnthropicUsage::read(Some(text.as_bytes())).map(|u| u.map(|u| u.to_usage()))
        };
        let usage = read(
            r#"{"input_tokens":12,"cache_creation":{"ephemeral_5m_input_tokens":3,"input_tokens":99},
                "cache_creation_input_tokens":3,"cache_read_input_tokens":null,"output_tokens":0,
                "service_tier":"standard","server_tool_use":{"web_search_requests":1}}"#,
        )
        .flatten()
        .unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_creation_input_tokens,
                usage.cache_read_input_tokens,
                usage.output_tokens
            ),
            (12, 3, 0, 0)
        );
        assert!(matches!(AnthropicUsage::read(None), Some(None)));
        assert!(matches!(read("null"), Some(None)));
        assert_eq!(
            read(r#"{"output_tokens":18446744073709551615}"#)
                .flatten()
                .map(|u| u.output_tokens),
            Some(u64::MAX)
        );
        for refused in [
            r#"{"output_tokens":1.5}"#,
            r#"{"output_tokens":-1}"#,
            r#"{"output_tokens":01}"#,
            r#"{"output_tokens":"5"}"#,
            r#"{"output_tokens":18446744073709551616}"#,
            r#"{"output_tokens":5"#,
            r#"[5]"#,
        ] {
            assert!(read(refused).is_none(), "{refused}");
        }
    }

    #[test]
    fn documents_are_read_from_their_top_level_members_only() {
        // A `usage` inside the content is not the answer's.
        let doc = br#"{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":99},"model":"inner"}}],
                       "model" : "claude-x", "usage": {"input_tokens": 7, "output_tokens": 2}}"#;
        let mut x = Extractor::new(Api::Messages, Instant::now(), false);
        x.on_document(doc);
        assert!(x.terminal);
        assert_eq!((x.usage.input_tokens, x.usage.output_tokens), (7, 2));
        assert_eq!(x.served_model.as_deref(), Some("claude-x"));

        // Cut after its usage: read, but not whole.
        let mut x = Extractor::new(Api::Messages, Instant::now(), false);
        x.on_document(br#"{"usage":{"input_tokens":7},"content":[{"text":"a"#);
        assert!(!x.terminal);
        assert_eq!(x.usage.input_tokens, 0);

        // A member read that does not parse: not read.
        let mut x = Extractor::new(Api::ChatCompletions, Instant::now(), false);
        x.on_document(br#"{"model":5,"usage":{"prompt_tokens":3}}"#);
        assert!(!x.terminal);
        assert_eq!(x.usage.input_tokens, 0);

        // `null` members read as absent.
        let mut x = Extractor::new(Api::Responses, Instant::now(), false);
        x.on_document(br#"{"id":"resp_1","model":null,"usage":null}"#);
        assert!(x.terminal);
        assert_eq!(x.response_id.as_deref(), Some("resp_1"));
        assert_eq!(x.served_model, None);
    }

    #[test]
    fn usage_members_are_found_without_parsing() {
        assert!(has_usage(br#"{"choices":[],"usage" : {"a":1}}"#));
        assert!(!has_usage(br#"{"choices":[],"usage": null}"#));
        assert!(!has_usage(br#"{"content":"\"usage\": 1"}"#));
    }
}
