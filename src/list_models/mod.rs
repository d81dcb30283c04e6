//! Answers `GET /v1/models` from the account pool, without an upstream call.
//!
//! The list holds every model name the caller may use that some account of
//! its group serves by name: literal entries of the accounts' `models`
//! lists and their `model_mapping` keys (a glob such as `claude-*` names no
//! model to list). One body satisfies both SDKs: it has OpenAI's
//! `object: "list"` and each entry carries both Anthropic's fields (`type`,
//! `display_name`, `created_at`) and OpenAI's (`object`, `created`,
//! `owned_by`). Other requests pass through.
//!
//! # Examples
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use secrecy::SecretString;
//! use bytes::Bytes;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::list_models::ListModelsLayer;
//! use tower_llm_relay::{Account, AccountPool, Credentials, Platform, RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let pool = AccountPool::new([Account::builder("a1", Platform::Anthropic, Credentials::ApiKey(SecretString::from("k")))
//!     .models(["claude-sonnet-4-5", "claude-*"])
//!     .build()]);
//! let inner = service_fn(|_: Request<Bytes>| async { Ok::<_, RelayError>(Response::new(RelayBody::empty())) });
//! let service = ListModelsLayer::new(pool).layer(inner);
//! let response = service.oneshot(Request::get("/v1/models").body(Bytes::new()).unwrap()).await.unwrap();
//! let body: serde_json::Value =
//!     serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(body["data"][0]["id"], "claude-sonnet-4-5");
//! assert_eq!(body["data"].as_array().unwrap().len(), 1);
//! # }
//! ```

use std::collections::BTreeMap;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::Platform;
use crate::body::RelayBody;
use crate::future::RejectOr;
use crate::principal::Principal;
use crate::select::AccountPool;

/// The path this layer answers.
pub const MODELS_PATH: &str = "/v1/models";

/// Applies [`ListModels`]: see the module docs.
#[derive(Debug, Clone)]
pub struct ListModelsLayer {
    pool: AccountPool,
}

impl ListModelsLayer {
    /// Lists the models of `pool`.
    pub fn new(pool: AccountPool) -> Self {
        Self { pool }
    }
}

impl<S> Layer<S> for ListModelsLayer {
    type Service = ListModels<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ListModels {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// Middleware that answers `GET /v1/models`; see the module docs.
#[derive(Debug, Clone)]
pub struct ListModels<S> {
    inner: S,
    pool: AccountPool,
}

impl<S> ListModels<S> {
    /// Wraps `inner`, listing the models of `pool`.
    pub fn new(inner: S, pool: AccountPool) -> Self {
        Self { inner, pool }
    }

    /// A layer for this middleware.
    pub fn layer(pool: AccountPool) -> ListModelsLayer {
        ListModelsLayer::new(pool)
    }

    inner_accessors!();
}

/// Model name → the platform that serves it, for `principal`.
fn models_for(pool: &AccountPool, principal: Option<&Principal>) -> BTreeMap<String, Platform> {
    let mut models = BTreeMap::new();
    for account in pool.accounts() {
        if principal.is_some_and(|p| p.group_name() != account.group()) {
            continue;
        }
        let named = account
            .models()
            .iter()
            .filter(|g| g.is_literal())
            .map(|g| g.as_str())
            .chain(account.model_mapping().keys().map(String::as_str));
        for model in named {
            if principal.is_none_or(|p| p.may_use(model)) {
                models.insert(model.to_owned(), account.platform());
            }
        }
    }
    models
}

fn list_response(models: &BTreeMap<String, Platform>) -> Response<RelayBody> {
    let data: Vec<serde_json::Value> = models
        .iter()
        .map(|(id, platform)| {
            serde_json::json!({
                "id": id,
                "type": "model",
                "display_name": id,
                "created_at": "1970-01-01T00:00:00Z",
                "object": "model",
                "created": 0,
                "owned_by": platform.as_str(),
            })
        })
        .collect();
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": models.keys().next(),
        "last_id": models.keys().next_back(),
    });
    let mut response = Response::new(RelayBody::full(body.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl<S, E> Service<Request<Bytes>> for ListModels<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = E>,
{
    type Response = Response<RelayBody>;
    type Error = E;
    type Future = RejectOr<S::Future, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let path = req.uri().path();
        if req.method() == Method::GET && (path == MODELS_PATH || path == "/v1/models/") {
            let models = models_for(&self.pool, req.extensions().get::<Principal>());
            return RejectOr::respond(list_response(&models));
        }
        RejectOr::inner(self.inner.call(req))
    }
}
