//! `count_tokens` when only Bedrock accounts could serve the model.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use serde_json::json;
use tower_layer::Layer;
use tower_service::Service;

use crate::account::AccountType;
use crate::body::RelayBody;
use crate::endpoint::Endpoint;
use crate::error::RelayError;
use crate::future::RejectOr;
use crate::parse::ParsedRequest;
use crate::principal::Principal;
use crate::select::AccountPool;

/// Applies [`CountTokensGate`].
///
/// Bedrock has no token counting, so Bedrock accounts never serve
/// `/v1/messages/count_tokens`. When no other account can serve the model
/// but a Bedrock account could serve its Messages, the answer is a 501 in
/// Anthropic's format at once (rather than a 503 that invites retries).
/// Place it below [`parse`](crate::parse) and [`auth`](crate::auth), above
/// account selection.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use secrecy::SecretString;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_llm_relay::bedrock::CountTokensGateLayer;
/// use tower_llm_relay::{Account, AccountPool, Credentials, Endpoint, ParsedRequest, Platform, RelayBody, RelayError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let credentials = Credentials::Bedrock {
///     region: "us-east-1".into(),
///     access_key_id: SecretString::from("AKID"),
///     secret_access_key: SecretString::from("secret"),
///     session_token: None,
/// };
/// let pool = AccountPool::new([Account::builder("bedrock-1", Platform::Anthropic, credentials)
///     .map_model("claude-sonnet-4-5", "anthropic.claude-sonnet-4-5-20250929-v1:0")
///     .build()]);
/// let inner = service_fn(|_: Request<Bytes>| async { Ok::<_, RelayError>(Response::new(RelayBody::empty())) });
/// let service = CountTokensGateLayer::new(pool).layer(inner);
/// let body = br#"{"model":"claude-sonnet-4-5","messages":[]}"#;
/// let mut req = Request::post("/v1/messages/count_tokens").body(Bytes::from_static(body)).unwrap();
/// req.extensions_mut().insert(ParsedRequest::parse(Endpoint::CountTokens, body).unwrap());
/// let response = service.oneshot(req).await.unwrap();
/// assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CountTokensGateLayer {
    pool: AccountPool,
}

impl CountTokensGateLayer {
    /// Gates on the accounts of `pool`.
    pub fn new(pool: AccountPool) -> Self {
        Self { pool }
    }
}

impl<S> Layer<S> for CountTokensGateLayer {
    type Service = CountTokensGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountTokensGate {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// Middleware that answers `count_tokens` with 501 when only Bedrock
/// accounts could serve it; see [`CountTokensGateLayer`].
#[derive(Debug, Clone)]
pub struct CountTokensGate<S> {
    inner: S,
    pool: AccountPool,
}

impl<S> CountTokensGate<S> {
    /// Wraps `inner`, gating on `pool`.
    pub fn new(inner: S, pool: AccountPool) -> Self {
        Self { inner, pool }
    }

    /// A layer for this middleware.
    pub fn layer(pool: AccountPool) -> CountTokensGateLayer {
        CountTokensGateLayer::new(pool)
    }

    inner_accessors!();
}

impl<S> CountTokensGate<S> {
    /// Whether only Bedrock accounts could serve this request's model.
    fn only_bedrock(&self, req: &Request<Bytes>) -> bool {
        let Some(parsed) = req.extensions().get::<ParsedRequest>() else {
            return false;
        };
        if parsed.endpoint() != Endpoint::CountTokens {
            return false;
        }
        let group = req
            .extensions()
            .get::<Principal>()
            .map(Principal::group_name);
        let model = parsed.model();
        self.pool
            .candidates(Endpoint::CountTokens, model, group)
            .next()
            .is_none()
            && self
                .pool
                .candidates(Endpoint::Messages, model, group)
                .any(|a| a.account_type() == AccountType::Bedrock)
    }
}

impl<S> Service<Request<Bytes>> for CountTokensGate<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = RejectOr<S::Future, RelayError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        if !self.only_bedrock(&req) {
            return RejectOr::inner(self.inner.call(req));
        }
        let body = json!({"type": "error", "error": {
            "type": "api_error",
            "message": "count_tokens is not available for this model: only AWS Bedrock accounts serve it, and Bedrock cannot count tokens",
        }});
        let mut response = Response::new(RelayBody::full(body.to_string()));
        *response.status_mut() = StatusCode::NOT_IMPLEMENTED;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        RejectOr::respond(response)
    }
}
