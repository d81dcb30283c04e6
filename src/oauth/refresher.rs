use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::account::{Account, AccountId, Credentials};
use crate::state::StateStore;

/// Where refreshes go when an account names no `token_url`.
pub const DEFAULT_TOKEN_URL: &str = "https://console.anthropic.com/v1/oauth/token";
/// The longest a refresh may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// A replica's refresh lock lapses after this, should it crash holding it.
const LOCK_TTL: Duration = Duration::from_secs(35);
/// A replica that lost the lock looks for the winner's tokens this often.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Tokens a refresh produced.
#[derive(Clone)]
pub struct RefreshedTokens {
    /// The new access token.
    pub access_token: SecretString,
    /// The refresh token to use next time (it may have rotated).
    pub refresh_token: SecretString,
    /// Unix seconds when the access token expires.
    pub expires_at: u64,
}

impl fmt::Debug for RefreshedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshedTokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Told about every refresh, so new tokens can be persisted (a rotated
/// refresh token is the only one that works next time). Must not block.
pub trait CredentialSink: Send + Sync + fmt::Debug + 'static {
    /// `account` has new tokens.
    fn refreshed(&self, account: &AccountId, tokens: &RefreshedTokens);
}

/// A sink that only logs that a refresh happened (never the tokens).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl CredentialSink for TracingSink {
    fn refreshed(&self, account: &AccountId, tokens: &RefreshedTokens) {
        tracing::info!(%account, expires_at = tokens.expires_at, "OAuth tokens refreshed");
    }
}

/// Why a refresh failed. Never holds a token.
#[derive(Debug)]
pub struct RefreshError(String);

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OAuth refresh failed: {}", self.0)
    }
}

impl std::error::Error for RefreshError {}

#[derive(Clone)]
struct Tokens {
    refresh: SecretString,
    expires_at: u64,
    bearer: HeaderValue,
}

/// One account's live tokens; the async lock makes refreshes single-flight.
struct Slot {
    tokens: Mutex<Option<Tokens>>,
    refreshing: tokio::sync::Mutex<()>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Holds and refreshes OAuth tokens; see the module docs.
pub struct Refresher {
    slots: Mutex<HashMap<AccountId, Arc<Slot>>>,
    sink: Arc<dyn CredentialSink>,
    ahead: Duration,
    client: HttpsClient,
    // Shares tokens and the refresh lock between replicas, when set.
    store: Option<Arc<dyn StateStore>>,
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("ahead", &self.ahead)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bearer(token: &SecretString) -> Result<HeaderValue, RefreshError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| RefreshError("the token is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Refresher {
    /// Refreshes `ahead` of expiry, reporting to `sink`.
    pub fn new(sink: Arc<dyn CredentialSink>, ahead: Duration) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            slots: Mutex::new(HashMap::new()),
            sink,
            ahead,
            client: Client::builder(TokioExecutor::new()).build(https),
            store: None,
        }
    }

    /// Shares refreshed tokens through `store` and refreshes under its
    /// per-account lock, so replicas sharing a store never spend the same
    /// refresh token twice: the replica that loses the lock waits for the
    /// winner's tokens and uses them.
    ///
    /// [`RelayBuilder::state`](crate::RelayBuilder::state) does this for
    /// the relay's own refresher.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tower_llm_relay::oauth::{Refresher, TracingSink};
    /// use tower_llm_relay::state::MemoryStore;
    ///
    /// let refresher = Refresher::new(Arc::new(TracingSink), Duration::from_secs(300))
    ///     .with_store(Arc::new(MemoryStore::new()));
    /// # let _ = refresher;
    /// ```
    pub fn with_store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// A refresher like this one (same sink and margin, no live tokens)
    /// sharing tokens through `store`.
    pub(crate) fn for_store(&self, store: Arc<dyn StateStore>) -> Self {
        Self::new(self.sink.clone(), self.ahead).with_store(store)
    }

    fn slot(&self, account: &Account) -> Arc<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(account.id().clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    tokens: Mutex::new(None),
                    refreshing: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// When `account`'s live access token expires (unix seconds), if known.
    pub fn expires_at(&self, account: &Account) -> Option<u64> {
        let slot = self.slot(account);
        let live = slot
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match (live, account.credentials()) {
            (Some(tokens), _) => Some(tokens.expires_at),
            (None, Credentials::OAuth { expires_at, .. }) => *expires_at,
            _ => None,
        }
    }

    /// The `Authorization` value for `account`, refreshing first when its
    /// token expires within the refresh margin.
    pub async fn bearer(&self, account: &Account) -> Result<HeaderValue, RefreshError> {
        let Credentials::OAuth {
            access_token,
            refresh_token: Some(refresh_token),
            expires_at,
            token_url,
        } = account.credentials()
        else {
            return Err(RefreshError("not a refreshable OAuth account".into()));
        };
        let slot = self.slot(account);
        let fresh = |expires: u64| expires > now() + self.ahead.as_secs();
        let live = || {
            slot.tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        match live() {
            // The refreshed token's header value is kept ready.
            Some(tokens) if fresh(tokens.expires_at) => return Ok(tokens.bearer),
            None if expires_at.is_none_or(fresh) => return bearer(access_token),
            _ => {}
        }
        // One refresh at a time; whoever waited uses its result.
        let _refreshing = slot.refreshing.lock().await;
        let refresh = match live() {
            Some(tokens) if fresh(tokens.expires_at) => return Ok(tokens.bearer),
            Some(tokens) => tokens.refresh,
            None => refresh_token.clone(),
        };
        let url = token_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
        let keep = |tokens: RefreshedTokens| -> Result<HeaderValue, RefreshError> {
            let value = bearer(&tokens.access_token)?;
            *slot.tokens.lock().unwrap_or_else(PoisonError::into_inner) = Some(Tokens {
                refresh: tokens.refresh_token,
                expires_at: tokens.expires_at,
                bearer: value.clone(),
            });
            Ok(value)
        };
        let Some(store) = &self.store else {
            let tokens = self.refresh(url, &refresh).await?;
            self.sink.refreshed(account.id(), &tokens);
            return keep(tokens);
        };
        // Across replicas: whoever holds the account's lock refreshes; the
        // others wait for the tokens it stores.
        let id = account.id();
        let deadline = tokio::time::Instant::now() + LOCK_TTL;
        loop {
            let stored = store.tokens_get(id).await.ok().flatten();
            if let Some(tokens) = stored.clone().filter(|t| fresh(t.expires_at)) {
                return keep(tokens);
            }
            let lock = match store.refresh_lock(id, LOCK_TTL).await {
                Ok(lock) => lock,
                Err(e) => {
                    // The store is down and fails closed: better one
                    // replica refreshing alone than none at all.
                    tracing::warn!(account = %id, error = %e, "refreshing without the shared lock");
                    let tokens = self.refresh(url, &refresh).await?;
                    self.sink.refreshed(id, &tokens);
                    return keep(tokens);
                }
            };
            if let Some(_lock) = lock {
                // The stored refresh token is the newest one (another
                // replica may have rotated it); read again under the lock.
                let stored = store.tokens_get(id).await.ok().flatten().or(stored);
                if let Some(tokens) = stored.clone().filter(|t| fresh(t.expires_at)) {
                    return keep(tokens);
                }
                let spend = stored.map_or(refresh, |t| t.refresh_token);
                let tokens = self.refresh(url, &spend).await?;
                if let Err(e) = store.tokens_set(id, &tokens).await {
                    tracing::warn!(account = %id, error = %e, "could not share refreshed tokens");
                }
                self.sink.refreshed(id, &tokens);
                return keep(tokens);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RefreshError(
                    "another replica held the refresh lock too long".into(),
                ));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    async fn refresh(
        &self,
        url: &str,
        refresh_token: &SecretString,
    ) -> Result<RefreshedTokens, RefreshError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose_secret(),
        });
        let req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| RefreshError("the token URL is not valid".into()))?;
        let response = tokio::time::timeout(REFRESH_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| RefreshError("the token endpoint did not answer in time".into()))?
            .map_err(|e| RefreshError(format!("the token endpoint could not be reached ({e})")))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|_| RefreshError("the token answer could not be read".into()))?
            .to_bytes();
        if !status.is_success() {
            // The OAuth error code is safe to show; the body may not be.
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str().map(str::to_owned)))
                .unwrap_or_else(|| "unknown".into());
            return Err(RefreshError(format!(
                "the token endpoint answered {status} ({code})"
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| RefreshError("the token answer is not the expected JSON".into()))?;
        Ok(RefreshedTokens {
            access_token: SecretString::from(answer.access_token),
            refresh_token: answer
                .refresh_token
                .map_or_else(|| refresh_token.clone(), SecretString::from),
            expires_at: now() + answer.expires_in.unwrap_or(3600),
        })
    }
}
