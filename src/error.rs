//! The crate's one error type, and its one conversion to an HTTP response.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::account::AccountId;
use crate::body::{BoxError, RelayBody};
use crate::endpoint::ApiFormat;

/// Everything that can stop the relay from serving a request.
///
/// Its `Display` is the message a client may see: it never holds a
/// credential, an upstream URL or an upstream's private error text. Causes
/// stay behind [`std::error::Error::source`] for logs.
///
/// [`RelayError::into_response`] is the one place an error becomes a
/// response, in the API's own format.
///
/// # Examples
///
/// ```
/// use http::StatusCode;
/// use tower_llm_relay::{ApiFormat, RelayError};
///
/// let response = RelayError::MissingApiKey.into_response(ApiFormat::Anthropic);
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayError {
    /// The request body is larger than the configured limit (413).
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read from the client (400).
    BodyRead(BoxError),
    /// No client key was sent (401).
    MissingApiKey,
    /// The client key is not one the relay accepts (401).
    InvalidApiKey,
    /// The request is malformed (400, `invalid_request_error`).
    InvalidRequest(String),
    /// The client key is over its own rate or concurrency limit (429).
    ClientRateLimited {
        /// When a request would be allowed again.
        retry_after: Duration,
        /// Which limit: `rpm` or `concurrency`.
        limit: &'static str,
    },
    /// The client key may not use this model (403).
    ModelNotAllowed(String),
    /// No such path (404).
    NotFound,
    /// The path exists but not for this method (405).
    MethodNotAllowed,
    /// No account can serve this request now (503).
    NoAccount {
        /// The model the client asked for.
        model: String,
    },
    /// Every account that could serve is cooling down, past the wait the
    /// relay allows: 429 `rate_limit_error` when they are rate-limited,
    /// else Anthropic 529 `overloaded_error` (OpenAI 503), with
    /// `retry-after` at the soonest end.
    CoolingDown {
        /// The model the client asked for.
        model: String,
        /// When the soonest cooldown ends.
        retry_after: Duration,
        /// Whether the soonest to return is rate-limited.
        rate_limited: bool,
    },
    /// The chosen account's wait queue is full or the wait timed out
    /// (Anthropic 529 `overloaded_error`; OpenAI 503).
    Overloaded {
        /// A hint for when to retry.
        retry_after: Option<Duration>,
    },
    /// Every attempt failed (the status and type follow the last failure,
    /// per seed 002's mapping).
    Exhausted(Exhausted),
    /// The shared state store failed and the relay is set to fail closed
    /// (503).
    State(crate::state::StateError),
    /// Calling the chosen account failed before a response head arrived
    /// (502, or 504 on a timeout).
    Upstream(UpstreamError),
}

impl RelayError {
    /// The HTTP status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_) | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::MissingApiKey | Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::ClientRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoAccount { .. } | Self::State(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::CoolingDown {
                rate_limited: true, ..
            } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::CoolingDown { .. } => {
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Self::Upstream(e) if e.kind == UpstreamErrorKind::Timeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Exhausted(e) => e.status,
        }
    }

    /// When the client may retry, if the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CoolingDown { retry_after, .. } => Some(*retry_after),
            Self::Overloaded { retry_after } => *retry_after,
            Self::ClientRateLimited { retry_after, .. } => Some(*retry_after),
            Self::Exhausted(e) => e.retry_after,
            _ => None,
        }
    }

    /// The error's `type` in the given format, and for OpenAI its `code`.
    fn kind_in(&self, format: ApiFormat) -> (&'static str, Option<&'static str>) {
        match (format, self) {
            (ApiFormat::Anthropic, e) => (
                match e {
                    Self::BodyTooLarge { .. } => "request_too_large",
                    Self::BodyRead(_) | Self::InvalidRequest(_) => "invalid_request_error",
                    Self::MissingApiKey | Self::InvalidApiKey => "authentication_error",
                    Self::ModelNotAllowed(_) => "permission_error",
                    Self::ClientRateLimited { .. }
                    | Self::CoolingDown {
                        rate_limited: true, ..
                    } => "rate_limit_error",
                    Self::NotFound | Self::MethodNotAllowed => "not_found_error",
                    Self::NoAccount { .. } | Self::CoolingDown { .. } | Self::Overloaded { .. } => {
                        "overloaded_error"
                    }
                    Self::State(_) | Self::Upstream(_) => "api_error",
                    Self::Exhausted(e) => e.kind,
                },
                None,
            ),
            (ApiFormat::OpenAi, Self::BodyTooLarge { .. }) => {
                ("invalid_request_error", Some("request_too_large"))
            }
            (ApiFormat::OpenAi, Self::BodyRead(_) | Self::InvalidRequest(_)) => {
                ("invalid_request_error", None)
            }
            (ApiFormat::OpenAi, Self::MissingApiKey) => {
                ("invalid_request_error", Some("missing_api_key"))
            }
            (ApiFormat::OpenAi, Self::InvalidApiKey) => {
                ("invalid_request_error", Some("invalid_api_key"))
            }
            (ApiFormat::OpenAi, Self::ModelNotAllowed(_)) => {
                ("invalid_request_error", Some("model_not_allowed"))
            }
            (ApiFormat::OpenAi, Self::ClientRateLimited { .. }) => {
                ("requests", Some("rate_limit_exceeded"))
            }
            (ApiFormat::OpenAi, Self::NotFound) => ("invalid_request_error", Some("not_found")),
            (ApiFormat::OpenAi, Self::MethodNotAllowed) => {
                ("invalid_request_error", Some("method_not_allowed"))
            }
            (ApiFormat::OpenAi, Self::NoAccount { .. }) => {
                ("server_error", Some("no_available_account"))
            }
            (
                ApiFormat::OpenAi,
                Self::CoolingDown {
                    rate_limited: true, ..
                },
            ) => ("requests", Some("rate_limit_exceeded")),
            (ApiFormat::OpenAi, Self::CoolingDown { .. }) => {
                ("server_error", Some("accounts_cooling_down"))
            }
            (ApiFormat::OpenAi, Self::Overloaded { .. }) => ("server_error", Some("overloaded")),
            (ApiFormat::OpenAi, Self::Exhausted(e)) => (
                match e.kind {
                    "rate_limit_error" => "requests",
                    _ => "server_error",
                },
                Some("all_attempts_failed"),
            ),
            (ApiFormat::OpenAi, Self::State(_)) => ("server_error", Some("state_unavailable")),
            (ApiFormat::OpenAi, Self::Upstream(e)) => ("server_error", Some(e.kind.code())),
        }
    }

    /// The error as a response in `format`: a JSON body with the right
    /// status (and `allow` on a 405).
    pub fn into_response(self, format: ApiFormat) -> Response<RelayBody> {
        let mut status = self.status();
        // OpenAI clients know 503, not Anthropic's 529.
        if format == ApiFormat::OpenAi && status.as_u16() == 529 {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        let (kind, code) = self.kind_in(format);
        let message = self.to_string();
        let body = match format {
            ApiFormat::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": kind, "message": message },
            }),
            ApiFormat::OpenAi => serde_json::json!({
                "error": { "message": message, "type": kind, "param": null, "code": code },
            }),
        };
        let bytes = Bytes::from(body.to_string());
        let mut response = Response::new(RelayBody::full(bytes));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: never tell a client to come back early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(self, Self::MethodNotAllowed) {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BodyTooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            Self::BodyRead(_) => f.write_str("the request body could not be read"),
            Self::MissingApiKey => {
                f.write_str("missing API key: send it in x-api-key or Authorization: Bearer")
            }
            Self::InvalidApiKey => f.write_str("invalid API key"),
            Self::InvalidRequest(message) => f.write_str(message),
            Self::ClientRateLimited {
                limit: "concurrency",
                ..
            } => {
                f.write_str("this API key has too many requests in flight; retry when one finishes")
            }
            Self::ClientRateLimited { .. } => {
                f.write_str("this API key is over its requests-per-minute limit; retry later")
            }
            Self::ModelNotAllowed(model) => {
                write!(f, "this API key may not use model `{model}`")
            }
            Self::NotFound => f.write_str("no such endpoint"),
            Self::MethodNotAllowed => f.write_str("method not allowed on this endpoint"),
            Self::NoAccount { model } => {
                write!(f, "no upstream account is available for model `{model}`")
            }
            Self::CoolingDown { model, .. } => {
                write!(
                    f,
                    "every account for model `{model}` is cooling down; retry later"
                )
            }
            Self::Overloaded { .. } => f.write_str("all accounts are busy; retry later"),
            Self::State(_) => f.write_str("the relay's shared state is unavailable"),
            Self::Exhausted(e) => fmt::Display::fmt(e, f),
            Self::Upstream(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::BodyRead(e) => Some(e.as_ref()),
            Self::Upstream(e) => Some(e),
            Self::State(e) => Some(e),
            _ => None,
        }
    }
}

/// What went wrong calling an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, DNS, TLS, proxy).
    Connect,
    /// No response head arrived within the first-byte timeout.
    Timeout,
    /// The connection failed after it was made (reset, closed early).
    Io,
    /// The request could not be built for this account (bad base URL).
    Request,
    /// The account's credentials could not be made ready (OAuth refresh).
    Credentials,
}

impl UpstreamErrorKind {
    /// A short machine-readable name (`connect`, `timeout`, …).
    pub fn code(self) -> &'static str {
        match self {
            Self::Connect => "upstream_connect_error",
            Self::Timeout => "upstream_timeout",
            Self::Io => "upstream_io_error",
            Self::Request => "upstream_request_error",
            Self::Credentials => "upstream_credentials_error",
        }
    }
}

/// A failure calling one account, before its response head arrived.
#[derive(Debug)]
pub struct UpstreamError {
    kind: UpstreamErrorKind,
    account: AccountId,
    source: Option<BoxError>,
}

impl UpstreamError {
    /// An error of `kind` calling `account`, caused by `source`.
    pub fn new(kind: UpstreamErrorKind, account: AccountId, source: Option<BoxError>) -> Self {
        Self {
            kind,
            account,
            source,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }

    /// The account that was called.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            UpstreamErrorKind::Connect => "could not connect to the upstream",
            UpstreamErrorKind::Timeout => "the upstream did not answer in time",
            UpstreamErrorKind::Io => "the upstream connection failed",
            UpstreamErrorKind::Request => "the upstream request could not be built",
            UpstreamErrorKind::Credentials => "the account's credentials could not be refreshed",
        };
        write!(f, "{what} (account {})", self.account)
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<UpstreamError> for RelayError {
    fn from(e: UpstreamError) -> Self {
        Self::Upstream(e)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn json(response: Response<RelayBody>) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[tokio::test]
    async fn anthropic_errors_have_type_error_and_inner_type() {
        let response = RelayError::BodyTooLarge { limit: 10 }.into_response(ApiFormat::Anthropic);
        assert_eq!(response.status(), 413);
        let body = json(response).await;
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "request_too_large");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10")));
    }

    #[tokio::test]
    async fn openai_errors_have_error_object_with_code() {
        let response = RelayError::InvalidApiKey.into_response(ApiFormat::OpenAi);
        assert_eq!(response.status(), 401);
        let body = json(response).await;
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body.get("type").is_none());
    }

    #[test]
    fn upstream_timeout_is_504_and_names_the_account_not_the_cause() {
        let cause: BoxError = "secret-token-in-cause".into();
        let e = RelayError::from(UpstreamError::new(
            UpstreamErrorKind::Timeout,
            AccountId::from("a1"),
            Some(cause),
        ));
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!e.to_string().contains("secret"));
        assert!(e.to_string().contains("a1"));
    }
}

/// Every attempt of a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    status: StatusCode,
    kind: &'static str,
    retry_after: Option<Duration>,
    attempts: Vec<(AccountId, String)>,
    why: &'static str,
}

impl Exhausted {
    /// A failure after `attempts` (account, what happened), answered with
    /// `status` and error `kind`; `why` says why the relay stopped.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        retry_after: Option<Duration>,
        attempts: Vec<(AccountId, String)>,
        why: &'static str,
    ) -> Self {
        Self {
            status,
            kind,
            retry_after,
            attempts,
            why,
        }
    }

    /// The attempts made: account and outcome.
    pub fn attempts(&self) -> &[(AccountId, String)] {
        &self.attempts
    }
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the upstream request failed ({}); attempts:", self.why)?;
        for (i, (account, outcome)) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{account}: {outcome}")?;
        }
        Ok(())
    }
}
