//! What a response used, and the report made of it when its body ends.

use std::time::Duration;

use http::StatusCode;

use crate::account::AccountId;
use crate::endpoint::Endpoint;
use crate::principal::KeyId;
use crate::request_id::RequestId;

/// Tokens one response used, in the same terms for every API.
///
/// `input_tokens` counts input tokens that were neither read from nor
/// written to the prompt cache, as Anthropic reports them. OpenAI's
/// `prompt_tokens` / `input_tokens` include the cached ones, so for OpenAI
/// the relay reports `prompt_tokens - cached_tokens` here and the cached
/// tokens in `cache_read_input_tokens`; [`Usage::total_input_tokens`] adds
/// them back up.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::usage::Usage;
///
/// let usage = Usage { input_tokens: 20, cache_read_input_tokens: 1800, output_tokens: 300, ..Usage::default() };
/// assert_eq!(usage.total_input_tokens(), 1820);
/// assert!(!usage.is_zero());
/// assert!(Usage::default().is_zero());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Input tokens billed at the plain input rate (not cached).
    pub input_tokens: u64,
    /// Output tokens, thinking included.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic).
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Every input token: plain, cache writes and cache reads.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// Whether no token was counted at all.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BodyEnd {
    /// The upstream's body ended cleanly and was read to its end.
    #[default]
    Finished,
    /// The upstream's body failed part way (a reset, a cut stream).
    UpstreamError,
    /// The body was dropped before its end: the client went away.
    ClientGone,
}

impl BodyEnd {
    /// A short name for logs: `finished`, `upstream_error`, `client_gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::UpstreamError => "upstream_error",
            Self::ClientGone => "client_gone",
        }
    }
}

/// Everything the relay learned about one served response, made once when
/// its body ends, errors, or is dropped.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::usage::{BodyEnd, UsageReport};
///
/// let report = UsageReport::default();
/// assert!(!report.complete);
/// assert_eq!(report.end, BodyEnd::Finished);
/// assert!(report.usage.is_zero());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageReport {
    /// The relay's id for the request.
    pub request_id: Option<RequestId>,
    /// The account that served it.
    pub account: Option<AccountId>,
    /// The client key that asked (its name).
    pub key: Option<KeyId>,
    /// The model the client asked for.
    pub client_model: Option<String>,
    /// The model the upstream says it served (after any model mapping).
    pub served_model: Option<String>,
    /// The endpoint called.
    pub endpoint: Option<Endpoint>,
    /// Whether the answer was a server-sent-event stream.
    pub stream: bool,
    /// The upstream's status.
    pub status: StatusCode,
    /// The tokens seen. For an incomplete answer, what was seen before it
    /// ended.
    pub usage: Usage,
    /// From the request reaching the layer to the first content event of a
    /// stream (text, thinking or tool-call delta); `None` for non-stream
    /// answers and for streams that ended before any content.
    pub first_token: Option<Duration>,
    /// From the request reaching the layer to the end of the body.
    pub duration: Duration,
    /// Whether the whole answer was read: a clean end and, for a stream, its
    /// closing event (`message_stop`, `[DONE]`, `response.completed` or
    /// another terminal `response.*` event); for JSON, one whole object
    /// whose `model` and `usage` members parse.
    pub complete: bool,
    /// How the body ended.
    pub end: BodyEnd,
    /// The OpenAI Responses id (what a later request names as
    /// `previous_response_id`), for affinity.
    pub response_id: Option<String>,
}
