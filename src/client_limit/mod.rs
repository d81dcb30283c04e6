//! Holds each client key to its own limits: requests per minute
//! (`governor`'s GCRA, bursts up to the limit) and requests in flight.
//!
//! Over either limit the answer is 429 in the API's format with
//! `retry-after`. A concurrency permit rides in the response body, so a
//! stream counts until it ends. Keys without limits pass untouched, as do
//! requests without a [`Principal`].
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::client_limit::ClientLimitLayer;
//! use tower_llm_relay::{KeyLimits, Principal, RelayBody, RelayError};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let alice = Principal::new("alice").limits(KeyLimits { rpm: Some(1), concurrency: None });
//! let layer = ClientLimitLayer::new([&alice]);
//! let inner = service_fn(|_: Request<Bytes>| async { Ok::<_, RelayError>(Response::new(RelayBody::empty())) });
//! let service = layer.layer(inner);
//! let request = || {
//!     let mut req = Request::post("/v1/messages").body(Bytes::new()).unwrap();
//!     req.extensions_mut().insert(alice.clone());
//!     req
//! };
//! assert_eq!(service.clone().oneshot(request()).await.unwrap().status(), StatusCode::OK);
//! let limited = service.oneshot(request()).await.unwrap();
//! assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert!(limited.headers().contains_key("retry-after"));
//! # }
//! ```

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{HoldUntilEnd, RelayBody};
use crate::endpoint::ApiFormat;
use crate::error::RelayError;
use crate::future::{OnResponse, RejectOr, ResponseHook};
use crate::principal::{KeyId, Principal};

#[derive(Debug)]
struct KeyState {
    rpm: Option<DefaultDirectRateLimiter>,
    in_flight: Option<Arc<Semaphore>>,
}

/// Applies [`ClientLimit`]: see the module docs.
#[derive(Debug, Clone)]
pub struct ClientLimitLayer {
    keys: Arc<HashMap<KeyId, KeyState>>,
}

impl ClientLimitLayer {
    /// Limits for these principals (keys without limits are skipped).
    pub fn new<'a>(principals: impl IntoIterator<Item = &'a Principal>) -> Self {
        let keys = principals
            .into_iter()
            .filter_map(|p| {
                let limits = p.key_limits();
                let rpm = limits
                    .rpm
                    .and_then(NonZeroU32::new)
                    .map(|rpm| RateLimiter::direct(Quota::per_minute(rpm)));
                let in_flight = limits
                    .concurrency
                    .map(|n| Arc::new(Semaphore::new(n as usize)));
                (rpm.is_some() || in_flight.is_some())
                    .then(|| (p.id().clone(), KeyState { rpm, in_flight }))
            })
            .collect();
        Self {
            keys: Arc::new(keys),
        }
    }
}

impl<S> Layer<S> for ClientLimitLayer {
    type Service = ClientLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientLimit {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// Middleware that enforces per-key limits; see the module docs.
#[derive(Debug, Clone)]
pub struct ClientLimit<S> {
    inner: S,
    keys: Arc<HashMap<KeyId, KeyState>>,
}

impl<S> ClientLimit<S> {
    /// A layer for this middleware.
    pub fn layer<'a>(principals: impl IntoIterator<Item = &'a Principal>) -> ClientLimitLayer {
        ClientLimitLayer::new(principals)
    }

    inner_accessors!();

    /// Admits a request of `key`, returning the permit it holds.
    fn admit(&self, key: &KeyId) -> Result<Option<OwnedSemaphorePermit>, RelayError> {
        let Some(state) = self.keys.get(key) else {
            return Ok(None);
        };
        // Concurrency first: a refused request must not spend its RPM.
        let permit = match &state.in_flight {
            Some(semaphore) => Some(semaphore.clone().try_acquire_owned().map_err(|_| {
                RelayError::ClientRateLimited {
                    retry_after: Duration::from_secs(1),
                    limit: "concurrency",
                }
            })?),
            None => None,
        };
        if let Some(limiter) = &state.rpm {
            if let Err(not_until) = limiter.check() {
                return Err(RelayError::ClientRateLimited {
                    retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                    limit: "rpm",
                });
            }
        }
        Ok(permit)
    }
}

impl<S> Service<Request<Bytes>> for ClientLimit<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = RejectOr<OnResponse<S::Future, HoldPermit>, RelayError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let admitted = match req.extensions().get::<Principal>() {
            Some(principal) => self.admit(principal.id()),
            None => Ok(None),
        };
        match admitted {
            Ok(permit) => {
                RejectOr::inner(OnResponse::new(self.inner.call(req), HoldPermit(permit)))
            }
            Err(error) => RejectOr::respond(error.into_response(ApiFormat::of(&req))),
        }
    }
}

/// Moves a concurrency permit into the response body.
#[derive(Debug)]
pub struct HoldPermit(Option<OwnedSemaphorePermit>);

impl ResponseHook<RelayBody> for HoldPermit {
    fn apply(self, response: Response<RelayBody>) -> Response<RelayBody> {
        match self.0 {
            Some(permit) => response.map(|body| RelayBody::new(HoldUntilEnd::new(body, permit))),
            None => response,
        }
    }
}
