//! Chooses the upstream account for a request and holds its concurrency
//! slot while the response streams.
//!
//! The [`Scheduler`] behind it reproduces the seeds' schedulers, by layer:
//!
//! 1. **previous response** (scored policy, OpenAI Responses): the account
//!    that produced `previous_response_id`;
//! 2. **sticky session**: the account bound to the [`SessionHash`]
//!    (1 h TTL, refreshed on use) while it is healthy — not cooling down,
//!    not excluded, serving the model, and its error-rate and first-token
//!    EWMAs not far worse than the pool's; otherwise the binding is dropped
//!    and the session moves;
//! 3. **load balancing** by policy: *load-aware* (seed 002: priority, then
//!    load, then least recently used) or *scored top-K* (seed 001: weighted
//!    score, top K, seeded weighted-random order), optionally tier by tier
//!    (seed 000: subscription → API key → Bedrock).
//!
//! The first slot taken wins and binds the session. When every candidate
//! is full, the request waits in the best one's queue (bounded; a client
//! that leaves, leaves the queue), and times out with `overloaded_error`.
//!
//! The slot rides in the response body ([`SlotBody`]) and is released when
//! the body ends, fails or is dropped. The response carries
//! `x-relay-account`, `x-relay-attempts`, a [`ServedBy`] and a [`Decision`].
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use secrecy::SecretString;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::parse::ParseRequestLayer;
//! use tower_llm_relay::select::{AccountSelectLayer, Scheduler, SchedulingConfig};
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
//! let scheduler = Scheduler::new(pool, SchedulingConfig::default());
//! let service = ParseRequestLayer::new().layer(AccountSelectLayer::new(scheduler).layer(inner));
//! let req = Request::post("/v1/messages")
//!     .body(Bytes::from_static(br#"{"model":"claude-haiku-4-5","messages":[]}"#))
//!     .unwrap();
//! let response = service.oneshot(req).await.unwrap();
//! assert_eq!(response.headers()["x-relay-account"], "claude-1");
//! # }
//! ```

mod body;
mod config;
mod decision;
mod feedback;
mod pool;
mod rank;
mod scheduler;
mod status;

pub use body::SlotBody;
pub use config::{SchedulingConfig, ScoreWeights, SelectionPolicy};
pub use decision::{Decision, DecisionLayer, SchedulerMetrics};
pub use pool::AccountPool;
pub use scheduler::{
    Excluded, PinnedAccount, RecentError, Scheduler, SelectRequest, Selection, RECENT_ERRORS,
};
pub use status::{AccountStatus, ModelCooldown};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{SelectedAccount, ServedBy};
use crate::body::RelayBody;
use crate::endpoint::Endpoint;
use crate::error::RelayError;
use crate::parse::ParsedRequest;
use crate::principal::Principal;
use crate::session_hash::SessionHash;

/// The response header naming the account that served it.
pub const ACCOUNT_HEADER: HeaderName = HeaderName::from_static("x-relay-account");
/// The response header counting the attempts it took.
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-relay-attempts");

/// The value of [`ATTEMPTS_HEADER`] for `n` attempts: a static value for
/// the usual few, which allocates nothing, and formatted beyond.
pub(crate) fn attempts_value(n: usize) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(n),
    }
}

/// Applies [`AccountSelect`]: see the module docs.
#[derive(Debug, Clone)]
pub struct AccountSelectLayer {
    scheduler: Scheduler,
}

impl AccountSelectLayer {
    /// Selects with `scheduler`.
    pub fn new(scheduler: Scheduler) -> Self {
        Self { scheduler }
    }
}

impl<S> Layer<S> for AccountSelectLayer {
    type Service = AccountSelect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccountSelect::new(inner, self.scheduler.clone())
    }
}

/// Middleware that selects an account; see the module docs.
#[derive(Debug, Clone)]
pub struct AccountSelect<S> {
    inner: S,
    scheduler: Scheduler,
}

impl<S> AccountSelect<S> {
    /// Wraps `inner`, selecting with `scheduler`.
    pub fn new(inner: S, scheduler: Scheduler) -> Self {
        Self { inner, scheduler }
    }

    /// A layer for this middleware.
    pub fn layer(scheduler: Scheduler) -> AccountSelectLayer {
        AccountSelectLayer::new(scheduler)
    }

    inner_accessors!();

    /// The scheduler it selects with.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
}

/// Response future of [`AccountSelect`]: selection may wait for a slot.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<RelayBody>, RelayError>> + Send>>;

impl<S> Service<Request<Bytes>> for AccountSelect<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        // The ready service serves this request; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let scheduler = self.scheduler.clone();
        Box::pin(async move {
            let selection = {
                let parsed = req.extensions().get::<ParsedRequest>().ok_or_else(|| {
                    RelayError::InvalidRequest(
                        "the request was not parsed before account selection".into(),
                    )
                })?;
                let endpoint = req
                    .extensions()
                    .get::<Endpoint>()
                    .copied()
                    .unwrap_or(parsed.endpoint());
                let select = SelectRequest {
                    endpoint,
                    model: parsed.model(),
                    group: req
                        .extensions()
                        .get::<Principal>()
                        .map(Principal::group_name),
                    session: req
                        .extensions()
                        .get::<SessionHash>()
                        .map(SessionHash::as_str),
                    previous_response_id: parsed.previous_response_id(),
                    excluded: req.extensions().get::<Excluded>(),
                    pinned: req.extensions().get::<PinnedAccount>().map(|p| &p.0),
                };
                scheduler.select(&select).await?
            };
            let Selection {
                account,
                slot,
                decision,
            } = selection;
            req.extensions_mut()
                .insert(SelectedAccount(account.clone()));
            // On an error the slot is dropped here, freeing it at once.
            let response = inner.call(req).await?;
            let (mut parts, body) = response.into_parts();
            if let Some(value) = account.id_header() {
                parts.headers.insert(ACCOUNT_HEADER, value);
            }
            parts.headers.insert(ATTEMPTS_HEADER, attempts_value(1));
            parts.extensions.insert(ServedBy(account.id().clone()));
            parts.extensions.insert(decision);
            Ok(Response::from_parts(
                parts,
                RelayBody::new(SlotBody::new(body, slot)),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::attempts_value;

    #[test]
    fn attempts_values_are_the_count_in_decimal() {
        for n in 0..40 {
            assert_eq!(attempts_value(n).to_str().unwrap(), n.to_string());
        }
    }
}
