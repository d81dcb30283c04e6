//! Addresses the request to the selected account and signs it with the
//! account's credentials.
//!
//! The URI becomes the account's base URL plus the endpoint's path and the
//! client's query. Anthropic API keys go in `x-api-key`; subscription
//! tokens (`oauth`, `setup_token`) and OpenAI keys go in
//! `Authorization: Bearer`. Anthropic requests without `anthropic-version`
//! get `2023-06-01`. Credential header values are marked sensitive, so
//! hyper never indexes them in HTTP/2 header tables and `Debug` hides them.
//! Bedrock requests pass untouched: the [`bedrock`](crate::bedrock) layer
//! addresses and signs them.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use secrecy::SecretString;
//! use std::sync::Arc;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::credentials::CredentialsLayer;
//! use tower_llm_relay::{Account, Credentials, Platform, RelayBody, RelayError, SelectedAccount};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let account = Account::builder("a1", Platform::Anthropic, Credentials::ApiKey(SecretString::from("sk-ant-1")))
//!     .base_url("http://127.0.0.1:9")
//!     .build();
//! let inner = service_fn(|req: Request<Bytes>| async move {
//!     assert_eq!(req.uri(), "http://127.0.0.1:9/v1/messages?beta=true");
//!     assert_eq!(req.headers()["x-api-key"], "sk-ant-1");
//!     assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
//!     Ok::<_, RelayError>(Response::new(RelayBody::empty()))
//! });
//! let service = CredentialsLayer::new().layer(inner);
//! let mut req = Request::post("/v1/messages?beta=true").body(Bytes::new()).unwrap();
//! req.extensions_mut().insert(SelectedAccount(Arc::new(account)));
//! let response = service.oneshot(req).await.unwrap();
//! # }
//! ```

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response, Uri};
use secrecy::{ExposeSecret, SecretString};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{Account, Credentials, Platform, SelectedAccount};
use crate::body::RelayBody;
use crate::endpoint::Endpoint;
use crate::error::{RelayError, UpstreamError, UpstreamErrorKind};
use crate::future::RejectOr;

/// The `anthropic-version` header.
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// The API version sent when the client names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Applies [`SetCredentials`]: see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialsLayer;

impl CredentialsLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CredentialsLayer {
    type Service = SetCredentials<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetCredentials { inner }
    }
}

/// Middleware that addresses and signs upstream requests; see the module
/// docs.
#[derive(Debug, Clone)]
pub struct SetCredentials<S> {
    inner: S,
}

impl<S> SetCredentials<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer for this middleware.
    pub fn layer() -> CredentialsLayer {
        CredentialsLayer
    }

    inner_accessors!();
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn bearer(token: &SecretString) -> Option<HeaderValue> {
    sensitive(&format!("Bearer {}", token.expose_secret()))
}

/// Rewrites `req` to go to `account`.
fn address_and_sign(req: &mut Request<Bytes>, account: &Account) -> Result<(), RelayError> {
    if let Credentials::Bedrock { .. } = account.credentials() {
        // Bedrock has its own paths and signs the whole request afresh for
        // each attempt: `crate::bedrock` does both, further down the stack.
        return Ok(());
    }
    let request_error = || {
        RelayError::from(UpstreamError::new(
            UpstreamErrorKind::Request,
            account.id().clone(),
            None,
        ))
    };
    let endpoint = req.extensions().get::<Endpoint>().copied();
    let built = match (endpoint, req.uri().query()) {
        (Some(endpoint), None) => account.uri_of(endpoint.upstream_path()),
        _ => None,
    };
    let uri = match built {
        Some(uri) => uri,
        None => {
            let path = match endpoint {
                Some(endpoint) => endpoint.upstream_path(),
                None => req.uri().path(),
            };
            let uri = match req.uri().query() {
                Some(query) => format!("{}{path}?{query}", account.base_url()),
                None => format!("{}{path}", account.base_url()),
            };
            uri.parse::<Uri>().map_err(|_| request_error())?
        }
    };
    *req.uri_mut() = uri;

    let (name, value) = match account.credentials() {
        Credentials::ApiKey(key) if account.platform() == Platform::Anthropic => (
            HeaderName::from_static("x-api-key"),
            sensitive(key.expose_secret()),
        ),
        Credentials::ApiKey(token)
        | Credentials::SetupToken(token)
        | Credentials::OAuth {
            access_token: token,
            ..
        } => (header::AUTHORIZATION, bearer(token)),
        // Addressed and signed by `crate::bedrock` (returned above).
        Credentials::Bedrock { .. } => return Ok(()),
    };
    let headers = req.headers_mut();
    headers.insert(name, value.ok_or_else(request_error)?);
    if account.platform() == Platform::Anthropic && !headers.contains_key(ANTHROPIC_VERSION) {
        headers.insert(
            ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(())
}

impl<S> Service<Request<Bytes>> for SetCredentials<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = RejectOr<S::Future, RelayError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let Some(account) = req.extensions().get::<SelectedAccount>().cloned() else {
            // A stack without account selection above this layer.
            let error = RelayError::NoAccount {
                model: String::new(),
            };
            return RejectOr::ready(Err(error));
        };
        match address_and_sign(&mut req, &account) {
            Ok(()) => RejectOr::inner(self.inner.call(req)),
            Err(error) => RejectOr::ready(Err(error)),
        }
    }
}
