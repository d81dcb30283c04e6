//! Which API a request speaks, decided once from its path.

use crate::account::Platform;

/// The wire format of a request and of the errors answered to it.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::ApiFormat;
///
/// assert_eq!(ApiFormat::for_path("/v1/chat/completions"), ApiFormat::OpenAi);
/// assert_eq!(ApiFormat::for_path("/v1/messages"), ApiFormat::Anthropic);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFormat {
    /// Anthropic: errors are `{"type":"error","error":{"type":…,"message":…}}`.
    Anthropic,
    /// OpenAI: errors are `{"error":{"message":…,"type":…,"code":…}}`.
    OpenAi,
}

impl ApiFormat {
    /// The format of a path. Paths the relay does not serve answer in
    /// Anthropic's format, except OpenAI-only path families.
    pub fn for_path(path: &str) -> Self {
        const OPENAI_PREFIXES: [&str; 4] = [
            "/v1/chat/",
            "/v1/responses",
            "/v1/completions",
            "/v1/embeddings",
        ];
        if OPENAI_PREFIXES.iter().any(|p| path.starts_with(p)) {
            Self::OpenAi
        } else {
            Self::Anthropic
        }
    }

    /// The format of a request: its [`Endpoint`] extension when a layer
    /// already routed it, else its path.
    pub fn of<B>(req: &http::Request<B>) -> Self {
        match req.extensions().get::<Endpoint>() {
            Some(endpoint) => endpoint.format(),
            None => Self::for_path(req.uri().path()),
        }
    }
}

/// An API operation the relay forwards upstream.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::Endpoint;
///
/// assert_eq!(Endpoint::from_path("/v1/messages"), Some(Endpoint::Messages));
/// assert_eq!(Endpoint::from_path("/v1/nothing"), None);
/// assert_eq!(Endpoint::Responses.upstream_path(), "/v1/responses");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/messages` (Anthropic Messages).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic token counting).
    CountTokens,
    /// `POST /v1/chat/completions` (OpenAI Chat Completions).
    ChatCompletions,
    /// `POST /v1/responses` (OpenAI Responses).
    Responses,
}

impl Endpoint {
    /// Every endpoint, in a stable order.
    pub const ALL: [Endpoint; 4] = [
        Self::Messages,
        Self::CountTokens,
        Self::ChatCompletions,
        Self::Responses,
    ];

    /// The endpoint served at `path`, if any. A trailing slash is tolerated.
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.strip_suffix('/').unwrap_or(path);
        Self::ALL.into_iter().find(|e| e.upstream_path() == path)
    }

    /// The path this endpoint has on its upstream (the relay keeps paths).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Responses => "/v1/responses",
        }
    }

    /// The wire format requests and errors use here.
    pub fn format(self) -> ApiFormat {
        match self.platform() {
            Platform::Anthropic => ApiFormat::Anthropic,
            Platform::OpenAi => ApiFormat::OpenAi,
        }
    }

    /// The platform whose accounts can serve this endpoint.
    pub fn platform(self) -> Platform {
        match self {
            Self::Messages | Self::CountTokens => Platform::Anthropic,
            Self::ChatCompletions | Self::Responses => Platform::OpenAi,
        }
    }

    /// Whether requests here may ask for a stream.
    pub fn can_stream(self) -> bool {
        !matches!(self, Self::CountTokens)
    }
}
