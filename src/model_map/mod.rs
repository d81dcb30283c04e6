//! Maps the client's model name to the selected account's, and back.
//!
//! When the account's `model_mapping` names another model for the one the
//! client asked for, the request body's top-level `model` is replaced (the
//! rest of the body is kept byte for byte), and the answer shows the client
//! its own name again: in a JSON answer, in Anthropic's `message_start`
//! event, and in every OpenAI stream chunk. Unmapped requests pass through
//! untouched, answer included.
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
//! use tower_llm_relay::model_map::ModelMapLayer;
//! use tower_llm_relay::{Account, Credentials, Endpoint, ParsedRequest, Platform, RelayBody, RelayError, SelectedAccount};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let account = Account::builder("a1", Platform::Anthropic, Credentials::ApiKey(SecretString::from("k")))
//!     .map_model("sonnet", "claude-sonnet-4-5-20250929")
//!     .build();
//! // The upstream sees the mapped name and answers with it.
//! let upstream = service_fn(|req: Request<Bytes>| async move {
//!     assert_eq!(&req.body()[..], br#"{"model":"claude-sonnet-4-5-20250929","messages":[]}"#);
//!     let answer = Response::builder()
//!         .header("content-type", "application/json")
//!         .body(RelayBody::full(r#"{"model":"claude-sonnet-4-5-20250929"}"#))
//!         .unwrap();
//!     Ok::<_, RelayError>(answer)
//! });
//! let body = br#"{"model":"sonnet","messages":[]}"#;
//! let mut req = Request::post("/v1/messages").body(Bytes::from_static(body)).unwrap();
//! req.extensions_mut().insert(ParsedRequest::parse(Endpoint::Messages, body).unwrap());
//! req.extensions_mut().insert(SelectedAccount(Arc::new(account)));
//! let response = ModelMapLayer::new().layer(upstream).oneshot(req).await.unwrap();
//! let answer = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&answer[..], br#"{"model":"sonnet"}"#);
//! # }
//! ```

mod body;

pub use body::MapModelBody;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{Platform, SelectedAccount};
use crate::body::RelayBody;
use crate::future::{OnResponse, ResponseHook};
use crate::json::replace_top_level_string;
use crate::parse::ParsedRequest;

use body::Framing;

/// Applies [`ModelMap`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelMapLayer;

impl ModelMapLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ModelMapLayer {
    type Service = ModelMap<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelMap { inner }
    }
}

/// Middleware that maps model names; see the module docs.
#[derive(Debug, Clone)]
pub struct ModelMap<S> {
    inner: S,
}

impl<S> ModelMap<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer for this middleware.
    pub fn layer() -> ModelMapLayer {
        ModelMapLayer
    }

    inner_accessors!();
}

/// The mapping in force for `req`, as (client model, upstream model,
/// platform), when the names differ.
fn mapping(req: &Request<Bytes>) -> Option<(String, String, Platform)> {
    let parsed = req.extensions().get::<ParsedRequest>()?;
    let account = req.extensions().get::<SelectedAccount>()?;
    let client = parsed.model();
    let upstream = account.upstream_model(client);
    (upstream != client).then(|| (client.to_owned(), upstream.to_owned(), account.platform()))
}

impl<S> Service<Request<Bytes>> for ModelMap<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>>,
{
    type Response = Response<RelayBody>;
    type Error = S::Error;
    type Future = OnResponse<S::Future, MapBack>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let Some((client, upstream, platform)) = mapping(&req) else {
            return OnResponse::new(self.inner.call(req), MapBack(None));
        };
        if let Some(body) = replace_top_level_string(req.body(), "model", &upstream) {
            *req.body_mut() = Bytes::from(body);
        }
        let hook = MapBack(Some(Names {
            client,
            upstream,
            platform,
        }));
        OnResponse::new(self.inner.call(req), hook)
    }
}

#[derive(Debug)]
struct Names {
    client: String,
    upstream: String,
    platform: Platform,
}

/// Wraps a mapped request's answer so the client sees its own model name.
#[derive(Debug)]
pub struct MapBack(Option<Names>);

impl ResponseHook<RelayBody> for MapBack {
    fn apply(self, response: Response<RelayBody>) -> Response<RelayBody> {
        let Some(names) = self.0 else {
            return response;
        };
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let framing = if content_type.starts_with("text/event-stream") {
            Framing::Events {
                once: names.platform == Platform::Anthropic,
            }
        } else if content_type.starts_with("application/json") {
            Framing::Document
        } else {
            return response;
        };
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = MapModelBody::new(body, &names.upstream, &names.client, framing);
        Response::from_parts(parts, RelayBody::new(body))
    }
}
