//! The service each connection serves: the proxy's own routes (health,
//! admin, metrics) through axum's router, every other request straight to
//! the relay.
//!
//! The relay's path skips what a router and hyper-util's tower adapter cost
//! per request: a clone of the service, a path match, a boxed clone of the
//! fallback route and of the relay stack (some twenty reference counts,
//! shared by every core), and two response-body boxes. The connection keeps
//! its own copy of the current relay stack, taken again only when a reload
//! swaps in a new one.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_llm_relay::{HoldUntilEnd, RelayBody};

use crate::idle::{Activity, IdleBody, InProgress};
use crate::reload::ConnectionRelay;

/// What the client gets: the answer's body, counted as a request in
/// progress on its connection until it ends.
pub(crate) type FrontBody = HoldUntilEnd<Option<InProgress>, RelayBody>;

/// One connection's service; see the module docs.
pub(crate) struct Front {
    router: Router,
    /// `RefCell`: hyper calls with `&self`; a call borrows it only while
    /// it starts the request, and one connection's calls never overlap.
    relay: RefCell<ConnectionRelay>,
    activity: Arc<Activity>,
    idle: Duration,
}

impl Front {
    /// The service of a connection whose requests count on `activity`,
    /// and whose request bodies fail after `idle` without data.
    pub(crate) fn new(
        router: Router,
        relay: ConnectionRelay,
        activity: Arc<Activity>,
        idle: Duration,
    ) -> Self {
        Self {
            router,
            relay: RefCell::new(relay),
            activity,
            idle,
        }
    }
}

/// The paths the router serves; every other one is the relay's.
fn is_own_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics" | "/admin") || path.starts_with("/admin/")
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response<FrontBody>;
    type Error = Infallible;
    type Future = FrontFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_progress = self.activity.begin();
        let idle = self.idle;
        let req = req.map(|body| Body::new(IdleBody::new(body, idle)));
        let inner = if is_own_route(req.uri().path()) {
            Inner::Router {
                future: self.router.clone().oneshot(req),
            }
        } else {
            Inner::Relay {
                future: self.relay.borrow_mut().call(req),
            }
        };
        FrontFuture {
            inner,
            in_progress: Some(in_progress),
        }
    }
}

type RelayFuture = Pin<Box<dyn Future<Output = Result<Response<RelayBody>, Infallible>> + Send>>;

pin_project! {
    /// Response future of [`Front`].
    pub(crate) struct FrontFuture {
        #[pin]
        inner: Inner,
        in_progress: Option<InProgress>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner {
        Relay { future: RelayFuture },
        Router { #[pin] future: Oneshot<Router, Request<Body>> },
    }
}

impl Future for FrontFuture {
    type Output = Result<Response<FrontBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.project() {
            InnerProj::Relay { future } => ready!(future.as_mut().poll(cx)),
            InnerProj::Router { future } => {
                ready!(future.poll(cx)).map(|response| response.map(RelayBody::new))
            }
        };
        let Ok(response) = response;
        let held = this.in_progress.take();
        Poll::Ready(Ok(response.map(|body| HoldUntilEnd::new(body, held))))
    }
}
