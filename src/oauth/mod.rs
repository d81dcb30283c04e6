//! Keeps OAuth subscription accounts' access tokens fresh.
//!
//! An `oauth` account with a refresh token and an expiry is refreshed
//! shortly before its token expires (default 5 minutes ahead) with the
//! `refresh_token` grant against its `token_url`. Refreshing is
//! single-flight per account: a hundred concurrent requests trigger one
//! refresh, and the others wait for it and use its token. The new tokens
//! are kept in memory and reported to a [`CredentialSink`], so an operator
//! can persist them (the old refresh token may no longer work).
//!
//! A failed refresh fails the attempt with an upstream credentials error:
//! failover moves the request to another account and takes this one out
//! until its credentials change. Setup-token accounts never refresh.
//!
//! The layer sits below [`credentials`](crate::credentials) and replaces
//! the bearer token it set with the live one.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use tower_llm_relay::oauth::{OAuthRefreshLayer, TracingSink};
//!
//! let layer = OAuthRefreshLayer::new(Arc::new(TracingSink));
//! # let _ = layer;
//! ```

mod refresher;

pub use refresher::{
    CredentialSink, RefreshError, RefreshedTokens, Refresher, TracingSink, DEFAULT_TOKEN_URL,
};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{Credentials, SelectedAccount};
use crate::body::RelayBody;
use crate::error::{RelayError, UpstreamError, UpstreamErrorKind};

/// Applies [`OAuthRefresh`]: see the module docs.
#[derive(Debug, Clone)]
pub struct OAuthRefreshLayer {
    refresher: Arc<Refresher>,
}

impl OAuthRefreshLayer {
    /// Refreshes 5 minutes ahead, reporting new tokens to `sink`.
    pub fn new(sink: Arc<dyn CredentialSink>) -> Self {
        Self::with_refresher(Arc::new(Refresher::new(sink, Duration::from_secs(300))))
    }

    /// Uses `refresher` (shared, e.g. with an admin view of token expiry).
    pub fn with_refresher(refresher: Arc<Refresher>) -> Self {
        Self { refresher }
    }

    /// The refresher.
    pub fn refresher(&self) -> &Arc<Refresher> {
        &self.refresher
    }
}

impl<S> Layer<S> for OAuthRefreshLayer {
    type Service = OAuthRefresh<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OAuthRefresh {
            inner,
            refresher: self.refresher.clone(),
        }
    }
}

/// Middleware that refreshes OAuth tokens; see the module docs.
#[derive(Debug, Clone)]
pub struct OAuthRefresh<S> {
    inner: S,
    refresher: Arc<Refresher>,
}

impl<S> OAuthRefresh<S> {
    inner_accessors!();
}

pin_project! {
    /// Response future of [`OAuthRefresh`]: the inner service's own future
    /// for accounts that never refresh (no allocation on that path), or a
    /// boxed one that may wait for a refresh first.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Direct { #[pin] inner: F },
        Refreshing { inner: Pin<Box<dyn Future<Output = Result<Response<RelayBody>, RelayError>> + Send>> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RelayBody>, RelayError>>,
{
    type Output = Result<Response<RelayBody>, RelayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Direct { inner } => inner.poll(cx),
            StateProj::Refreshing { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<S> Service<Request<Bytes>> for OAuthRefresh<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let refreshable = req
            .extensions()
            .get::<SelectedAccount>()
            .filter(|a| {
                matches!(
                    a.credentials(),
                    Credentials::OAuth {
                        refresh_token: Some(_),
                        ..
                    }
                )
            })
            .cloned();
        let Some(account) = refreshable else {
            return ResponseFuture {
                state: State::Direct {
                    inner: self.inner.call(req),
                },
            };
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let refresher = self.refresher.clone();
        let inner = Box::pin(async move {
            let bearer = refresher.bearer(&account).await.map_err(|e| {
                tracing::warn!(account = %account.id(), error = %e, "OAuth refresh failed");
                RelayError::from(UpstreamError::new(
                    UpstreamErrorKind::Credentials,
                    account.id().clone(),
                    Some(Box::new(e)),
                ))
            })?;
            req.headers_mut().insert(header::AUTHORIZATION, bearer);
            inner.call(req).await
        });
        ResponseFuture {
            state: State::Refreshing { inner },
        }
    }
}
