//! Chooses the upstream account for a request.
//!
//! Today's policy is the simplest correct one: the first account, by
//! priority, of the caller's group that serves the endpoint and model. The
//! choice is put in the request extensions as a [`SelectedAccount`]; the
//! response gets `x-relay-account` and `x-relay-attempts` headers and a
//! [`ServedBy`] extension. When no account fits, the answer is 503 in the
//! API's format.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use secrecy::SecretString;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::parse::ParseRequestLayer;
//! use tower_llm_relay::select::AccountSelectLayer;
//! use tower_llm_relay::{Account, AccountPool, Credentials, Platform, RelayBody, RelayError, SelectedAccount};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let pool = AccountPool::new([Account::builder(
//!     "claude-1",
//!     Platform::Anthropic,
//!     Credentials::ApiKey(SecretString::from("sk-ant-x")),
//! )
//! .build()]);
//! let inner = service_fn(|req: Request<Bytes>| async move {
//!     assert_eq!(req.extensions().get::<SelectedAccount>().unwrap().id().as_str(), "claude-1");
//!     Ok::<_, RelayError>(Response::new(RelayBody::empty()))
//! });
//! let service = ParseRequestLayer::new().layer(AccountSelectLayer::new(pool).layer(inner));
//! let req = Request::post("/v1/messages")
//!     .body(Bytes::from_static(br#"{"model":"claude-haiku-4-5","messages":[]}"#))
//!     .unwrap();
//! let response = service.oneshot(req).await.unwrap();
//! assert_eq!(response.headers()["x-relay-account"], "claude-1");
//! # }
//! ```

mod pool;

pub use pool::AccountPool;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{AccountId, SelectedAccount, ServedBy};
use crate::body::RelayBody;
use crate::endpoint::{ApiFormat, Endpoint};
use crate::error::RelayError;
use crate::future::{OnResponse, RejectOr, ResponseHook};
use crate::parse::ParsedRequest;
use crate::principal::Principal;

/// The response header naming the account that served it.
pub const ACCOUNT_HEADER: HeaderName = HeaderName::from_static("x-relay-account");
/// The response header counting the attempts it took.
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-relay-attempts");

/// Applies [`AccountSelect`]: see the module docs.
#[derive(Debug, Clone)]
pub struct AccountSelectLayer {
    pool: AccountPool,
}

impl AccountSelectLayer {
    /// Selects from `pool`.
    pub fn new(pool: AccountPool) -> Self {
        Self { pool }
    }
}

impl<S> Layer<S> for AccountSelectLayer {
    type Service = AccountSelect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccountSelect::new(inner, self.pool.clone())
    }
}

/// Middleware that selects an account; see the module docs.
#[derive(Debug, Clone)]
pub struct AccountSelect<S> {
    inner: S,
    pool: AccountPool,
}

impl<S> AccountSelect<S> {
    /// Wraps `inner`, selecting from `pool`.
    pub fn new(inner: S, pool: AccountPool) -> Self {
        Self { inner, pool }
    }

    /// A layer for this middleware.
    pub fn layer(pool: AccountPool) -> AccountSelectLayer {
        AccountSelectLayer::new(pool)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The pool it selects from.
    pub fn pool(&self) -> &AccountPool {
        &self.pool
    }
}

fn select(pool: &AccountPool, req: &Request<Bytes>) -> Result<SelectedAccount, RelayError> {
    let parsed = req.extensions().get::<ParsedRequest>().ok_or_else(|| {
        RelayError::InvalidRequest("the request was not parsed before account selection".into())
    })?;
    let endpoint = req
        .extensions()
        .get::<Endpoint>()
        .copied()
        .unwrap_or(parsed.endpoint());
    let group = req
        .extensions()
        .get::<Principal>()
        .map(Principal::group_name);
    pool.candidates(endpoint, parsed.model(), group)
        .next()
        .map(|account| SelectedAccount(account.clone()))
        .ok_or_else(|| RelayError::NoAccount {
            model: parsed.model().to_owned(),
        })
}

impl<S> Service<Request<Bytes>> for AccountSelect<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = RejectOr<OnResponse<S::Future, MarkServedBy>, RelayError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        match select(&self.pool, &req) {
            Ok(selected) => {
                let hook = MarkServedBy {
                    account: selected.id().clone(),
                    attempts: 1,
                };
                req.extensions_mut().insert(selected);
                RejectOr::inner(OnResponse::new(self.inner.call(req), hook))
            }
            Err(error) => RejectOr::respond(error.into_response(ApiFormat::of(&req))),
        }
    }
}

/// Marks a response with the account that served it and the attempts taken.
#[derive(Debug)]
pub struct MarkServedBy {
    account: AccountId,
    attempts: u32,
}

impl<B> ResponseHook<B> for MarkServedBy {
    fn apply(self, mut response: Response<B>) -> Response<B> {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(self.account.as_str()) {
            headers.insert(ACCOUNT_HEADER, value);
        }
        headers.insert(ATTEMPTS_HEADER, HeaderValue::from(self.attempts));
        response.extensions_mut().insert(ServedBy(self.account));
        response
    }
}
