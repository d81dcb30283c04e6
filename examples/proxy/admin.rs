//! `/admin/*`: the operator's view, behind the admin key. Without an
//! admin key configured, every `/admin` path is 404.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_llm_relay::oauth::Refresher;
use tower_llm_relay::select::Scheduler;
use tower_llm_relay::usage::{Totals, UsageTotals};
use tower_llm_relay::KeyId;
use tower_llm_relay::{ApiFormat, RelayError};

use crate::reload::LiveRelay;
use crate::status_page::{AccountRow, KeyRow};

/// What the admin routes read: the live scheduler and refresher of the
/// relay, its usage totals, and the configured client keys (names only).
#[derive(Clone)]
pub(crate) struct AdminView {
    pub(crate) scheduler: Scheduler,
    pub(crate) refresher: Arc<Refresher>,
    pub(crate) totals: UsageTotals,
    /// Every configured key's name and group, by name.
    pub(crate) keys: Arc<[(KeyId, String)]>,
}

#[derive(Clone)]
struct Admin {
    key: Arc<SecretString>,
    live: LiveRelay,
}

/// The admin routes, or 404s for them when no key is configured.
pub(crate) fn routes(key: Option<SecretString>, live: LiveRelay) -> Router {
    let Some(key) = key else {
        return Router::new()
            .route("/admin", any(not_found))
            .route("/admin/{*rest}", any(not_found));
    };
    let state = Admin {
        key: Arc::new(key),
        live,
    };
    Router::new()
        .route("/admin", get(status_page))
        .route("/admin/", get(status_page))
        .route("/admin/accounts", get(accounts))
        .route("/admin/keys", get(keys))
        .route("/admin/{*rest}", any(not_found))
        .with_state(state)
}

async fn not_found() -> Response {
    into_axum(RelayError::NotFound)
}

fn into_axum(error: RelayError) -> Response {
    error.into_response(ApiFormat::Anthropic).into_response()
}

/// The admin key from `Authorization: Bearer`, `x-api-key`, or Basic
/// (any user name, the key as password) — never from the query string.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_owned());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, value) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, pass)| pass.to_owned());
    }
    None
}

fn authorized(admin: &Admin, headers: &HeaderMap) -> bool {
    presented(headers).is_some_and(|given| {
        // Digests are of equal length: a slice `ct_eq` of unequal lengths
        // returns at once, which would tell the key's length.
        let given = Sha256::digest(given.as_bytes());
        let key = Sha256::digest(admin.key.expose_secret().as_bytes());
        bool::from(given.as_slice().ct_eq(key.as_slice()))
    })
}

fn unauthorized() -> Response {
    let mut response = into_axum(RelayError::InvalidApiKey);
    // Lets a browser ask for the key.
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"relay admin\""),
    );
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

async fn accounts(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let accounts: Vec<serde_json::Value> = admin
        .live
        .current()
        .view
        .accounts()
        .await
        .into_iter()
        .map(|row| {
            let mut value = serde_json::to_value(&row.status).unwrap_or_default();
            value["token_expires_at"] = serde_json::json!(row.token_expires_at);
            value["usage"] = totals_json(&row.totals);
            value
        })
        .collect();
    Json(serde_json::json!({ "accounts": accounts })).into_response()
}

async fn keys(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let keys: Vec<serde_json::Value> = admin
        .live
        .current()
        .view
        .keys()
        .into_iter()
        .map(|row| {
            serde_json::json!({
                "name": row.name.as_str(),
                "group": row.group,
                "usage": totals_json(&row.totals),
            })
        })
        .collect();
    Json(serde_json::json!({ "keys": keys })).into_response()
}

async fn status_page(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let live = admin.live.current();
    let accounts = live.view.accounts().await;
    let keys = live.view.keys();
    let html = crate::status_page::render(&accounts, &keys, SystemTime::now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn unix(time: Option<SystemTime>) -> Option<u64> {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

fn totals_json(totals: &Totals) -> serde_json::Value {
    serde_json::json!({
        "requests": totals.requests,
        "incomplete": totals.incomplete,
        "input_tokens": totals.usage.input_tokens,
        "output_tokens": totals.usage.output_tokens,
        "cache_creation_input_tokens": totals.usage.cache_creation_input_tokens,
        "cache_read_input_tokens": totals.usage.cache_read_input_tokens,
        "last_used": unix(totals.last_seen),
    })
}

impl AdminView {
    async fn accounts(&self) -> Vec<AccountRow> {
        let pool = self.scheduler.pool().clone();
        self.scheduler
            .status()
            .await
            .into_iter()
            .zip(pool.accounts())
            .map(|(status, account)| AccountRow {
                token_expires_at: self.refresher.expires_at(account),
                totals: self.totals.account(account.id()),
                status,
            })
            .collect()
    }

    fn keys(&self) -> Vec<KeyRow> {
        self.keys
            .iter()
            .map(|(name, group)| KeyRow {
                totals: self.totals.key(name),
                name: name.clone(),
                group: group.clone(),
            })
            .collect()
    }
}
