//! `/admin/*`: the operator's view, behind the admin key. Without an
//! admin key configured, every `/admin` path is 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tower_llm_relay::oauth::Refresher;
use tower_llm_relay::select::Scheduler;
use tower_llm_relay::{ApiFormat, RelayError};

#[derive(Clone)]
struct Admin {
    key: Arc<SecretString>,
    scheduler: Scheduler,
    refresher: Arc<Refresher>,
}

/// The admin routes, or 404s for them when no key is configured.
pub(crate) fn routes(
    key: Option<SecretString>,
    scheduler: Scheduler,
    refresher: Arc<Refresher>,
) -> Router {
    let Some(key) = key else {
        return Router::new()
            .route("/admin", any(not_found))
            .route("/admin/{*rest}", any(not_found));
    };
    let state = Admin {
        key: Arc::new(key),
        scheduler,
        refresher,
    };
    Router::new()
        .route("/admin/accounts", get(accounts))
        .route("/admin", any(not_found))
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
        bool::from(given.as_bytes().ct_eq(admin.key.expose_secret().as_bytes()))
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
    let pool = admin.scheduler.pool().clone();
    let statuses = admin.scheduler.status().await;
    let accounts: Vec<serde_json::Value> = statuses
        .into_iter()
        .zip(pool.accounts())
        .map(|(status, account)| {
            let mut value = serde_json::to_value(&status).unwrap_or_default();
            if let Some(expires) = admin.refresher.expires_at(account) {
                value["token_expires_at"] = serde_json::json!(expires);
            }
            value
        })
        .collect();
    Json(serde_json::json!({ "accounts": accounts })).into_response()
}
