//! Speaks AWS Bedrock for Bedrock accounts: Anthropic Messages in, Bedrock
//! `InvokeModel` / `InvokeModelWithResponseStream` out, and Anthropic
//! answers back.
//!
//! When the [`SelectedAccount`] is a Bedrock account, the request becomes:
//!
//! - `POST {base_url}/model/{model id}/invoke`, or
//!   `/invoke-with-response-stream` for a stream. The model id is the
//!   account's `model_mapping` entry for the client's model,
//!   percent-encoded in the path (`:` → `%3A`). Accounts without a mapping
//!   for a model are never chosen for it (see
//!   [`Account::serves_model`](crate::Account::serves_model)); the
//!   [`DEFAULT_MODEL_IDS`] table helps fill a mapping.
//! - The client's body without `model` and `stream`, with
//!   `anthropic_version: "bedrock-2023-05-31"`; the client's
//!   `anthropic-beta` flags go into the body as an `anthropic_beta` list.
//! - Only `content-type` and `accept` headers, signed afresh for each
//!   attempt with SigV4 (service `bedrock`, the account's region,
//!   `x-amz-security-token` with a session token). No `x-api-key`, Bearer
//!   or `anthropic-version` header goes to Bedrock.
//!
//! Answers come back in Anthropic's shape, so the layers above
//! ([`usage`](crate::usage), [`failover`](crate::failover)) see what an
//! Anthropic account would give:
//!
//! - a JSON answer is the Anthropic message without
//!   `amazon-bedrock-invocationMetrics`;
//! - the event stream (`application/vnd.amazon.eventstream`, each `chunk`
//!   carrying a base64 Anthropic event) becomes `text/event-stream`
//!   (`event:` and `data:` lines);
//!   no frame byte reaches the client; frames are CRC-checked and a frame
//!   over 16 MiB is refused, so a broken stream cannot make the relay
//!   buffer without bound;
//! - an exception frame (`throttlingException`, …) becomes an Anthropic
//!   `event: error` and ends the stream: as the first event, failover
//!   still moves to another account;
//! - an error answer (`x-amzn-ErrorType: ThrottlingException`, …) keeps
//!   its status and becomes an Anthropic error body (429
//!   `rate_limit_error`, 503 `overloaded_error`, 400
//!   `invalid_request_error`, 403 `permission_error`), which the failover
//!   rules then treat like Anthropic's own.
//!
//! Both name the Bedrock model id that served them as `model`, like any
//! mapped upstream model: [`model_map`](crate::model_map), above in the
//! default stack, shows the client its own model name again, and usage
//! reports the served id.
//!
//! Requests for other accounts pass through untouched. Bedrock cannot
//! count tokens: [`CountTokensGateLayer`] answers `count_tokens` with a 501
//! when only Bedrock accounts could serve the model. The layer sits
//! below [`usage`](crate::usage) and above [`upstream`](crate::upstream);
//! [`credentials`](crate::credentials) leaves Bedrock requests to it.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use secrecy::SecretString;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::bedrock::BedrockAdaptLayer;
//! use tower_llm_relay::{Account, Credentials, Endpoint, ParsedRequest, Platform, RelayBody, RelayError, SelectedAccount};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let credentials = Credentials::Bedrock {
//!     region: "us-east-1".into(),
//!     access_key_id: SecretString::from("AKIDEXAMPLE"),
//!     secret_access_key: SecretString::from("secret"),
//!     session_token: None,
//! };
//! let account = Account::builder("bedrock-1", Platform::Anthropic, credentials)
//!     .map_model("claude-sonnet-4-5", "anthropic.claude-sonnet-4-5-20250929-v1:0")
//!     .build();
//! let bedrock = service_fn(|req: Request<Bytes>| async move {
//!     assert_eq!(
//!         req.uri(),
//!         "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
//!     );
//!     let auth = req.headers()["authorization"].to_str().unwrap();
//!     assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
//!     assert!(auth.contains("/us-east-1/bedrock/aws4_request"));
//!     let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
//!     assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
//!     assert!(body.get("model").is_none());
//!     let answer = Response::builder()
//!         .header("content-type", "application/json")
//!         .body(RelayBody::full(r#"{"type":"message","model":"claude-sonnet-4-5-20250929","content":[]}"#))
//!         .unwrap();
//!     Ok::<_, RelayError>(answer)
//! });
//! let body = br#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[]}"#;
//! let mut req = Request::post("/v1/messages").body(Bytes::from_static(body)).unwrap();
//! req.extensions_mut().insert(ParsedRequest::parse(Endpoint::Messages, body).unwrap());
//! req.extensions_mut().insert(SelectedAccount(Arc::new(account)));
//! let response = BedrockAdaptLayer::new().layer(bedrock).oneshot(req).await.unwrap();
//! let answer = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(
//!     &answer[..],
//!     br#"{"content":[],"model":"anthropic.claude-sonnet-4-5-20250929-v1:0","type":"message"}"#
//! );
//! # }
//! ```

mod body;
mod count_tokens;
pub(crate) mod eventstream;
mod request;
pub(crate) mod sign;

pub use body::EventStreamBody;
pub use count_tokens::{CountTokensGate, CountTokensGateLayer};
pub use eventstream::encode as encode_frame;
pub use request::{invoke_body, invoke_path, ANTHROPIC_VERSION, DEFAULT_MODEL_IDS};

use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{Account, Credentials, SelectedAccount};
use crate::beta_header::ANTHROPIC_BETA;
use crate::body::{BoxError, RelayBody};
use crate::endpoint::Endpoint;
use crate::error::{RelayError, UpstreamError, UpstreamErrorKind};
use crate::future::{OnResponse, RejectOr, ResponseHook};
use crate::parse::ParsedRequest;

use body::{Document, DocumentBody};

/// The content type of Bedrock's response streams.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Applies [`BedrockAdapt`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BedrockAdaptLayer;

impl BedrockAdaptLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for BedrockAdaptLayer {
    type Service = BedrockAdapt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BedrockAdapt { inner }
    }
}

/// Middleware that translates requests for Bedrock accounts; see the
/// module docs.
#[derive(Debug, Clone)]
pub struct BedrockAdapt<S> {
    inner: S,
}

impl<S> BedrockAdapt<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer for this middleware.
    pub fn layer() -> BedrockAdaptLayer {
        BedrockAdaptLayer
    }

    inner_accessors!();
}

/// The response future of [`BedrockAdapt`].
pub type ResponseFuture<F> = RejectOr<OnResponse<F, ToAnthropic>, RelayError>;

impl<S> Service<Request<Bytes>> for BedrockAdapt<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let account = req
            .extensions()
            .get::<SelectedAccount>()
            .filter(|a| matches!(a.credentials(), Credentials::Bedrock { .. }))
            .cloned();
        let Some(account) = account else {
            return RejectOr::inner(OnResponse::new(self.inner.call(req), ToAnthropic(None)));
        };
        match translate(&mut req, &account, SystemTime::now()) {
            Ok(translation) => RejectOr::inner(OnResponse::new(
                self.inner.call(req),
                ToAnthropic(Some(translation)),
            )),
            Err(source) => {
                // Never the source's text in the answer: it may describe the
                // request; the account id is enough for the attempt trace.
                tracing::warn!(account = %account.id(), error = %source, "bedrock request not sent");
                RejectOr::ready(Err(RelayError::from(UpstreamError::new(
                    UpstreamErrorKind::Request,
                    account.id().clone(),
                    Some(source),
                ))))
            }
        }
    }
}

/// What the answer to a translated request needs.
#[derive(Debug)]
struct Translation {
    model_id: String,
}

/// Rewrites `req` into a signed Bedrock request for `account`.
fn translate(
    req: &mut Request<Bytes>,
    account: &Account,
    now: SystemTime,
) -> Result<Translation, BoxError> {
    let Credentials::Bedrock {
        region,
        access_key_id,
        secret_access_key,
        session_token,
    } = account.credentials()
    else {
        return Err("not a Bedrock account".into());
    };
    let parsed = req
        .extensions()
        .get::<ParsedRequest>()
        .ok_or("the request was not parsed")?;
    if parsed.endpoint() != Endpoint::Messages {
        return Err("Bedrock accounts serve only Anthropic Messages".into());
    }
    let stream = parsed.is_stream();
    let model_id = account
        .model_mapping()
        .get(parsed.model())
        .ok_or("the account maps no Bedrock model id for this model")?
        .clone();
    let body = invoke_body(req.body(), req.headers().get(ANTHROPIC_BETA))?;
    let uri: Uri = format!("{}{}", account.base_url(), invoke_path(&model_id, stream)).parse()?;
    if uri.host().is_none() {
        return Err("the account's base URL has no host".into());
    }
    // A fresh header set: nothing of the client's (or of Anthropic's
    // protocol) is signed or sent.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(if stream {
            EVENT_STREAM_CONTENT_TYPE
        } else {
            "application/json"
        }),
    );
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    *req.body_mut() = body;
    let keys = sign::AwsKeys {
        region,
        access_key_id,
        secret_access_key,
        session_token: session_token.as_ref(),
    };
    sign::sign_request(req, &keys, now)?;
    Ok(Translation { model_id })
}

/// Turns a Bedrock answer into an Anthropic one; a no-op for answers of
/// other accounts.
#[derive(Debug)]
pub struct ToAnthropic(Option<Translation>);

impl ResponseHook<RelayBody> for ToAnthropic {
    fn apply(self, response: Response<RelayBody>) -> Response<RelayBody> {
        let Some(translation) = self.0 else {
            return response;
        };
        let (mut parts, body) = response.into_parts();
        let headers = &mut parts.headers;
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(EVENT_STREAM_CONTENT_TYPE));
        let error_name = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            // `ThrottlingException:http://internal.amazon.com/coral/…`
            .map(|v| v.split(':').next().unwrap_or_default().to_owned());
        headers.remove(header::CONTENT_LENGTH);
        // Bedrock's own bookkeeping (request ids, token counts) is not part
        // of the Anthropic answer.
        let amazon: Vec<_> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("x-amzn-"))
            .cloned()
            .collect();
        for name in amazon {
            headers.remove(name);
        }
        let status = parts.status;
        let body = if status.is_success() && event_stream {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            RelayBody::new(EventStreamBody::new(body, translation.model_id))
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let document = if status.is_success() {
                Document::Message {
                    model: translation.model_id,
                }
            } else {
                Document::Error {
                    name: error_name.unwrap_or_default(),
                    status,
                }
            };
            RelayBody::new(DocumentBody::new(body, document))
        };
        Response::from_parts(parts, body)
    }
}
