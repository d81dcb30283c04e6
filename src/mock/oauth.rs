//! An OAuth token endpoint (`refresh_token` grant) with rotating refresh
//! tokens, as Anthropic's subscription accounts use.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use super::state::{lock, Shared};

/// What the token endpoint answers: a status and a JSON body.
pub(super) type TokenAnswer = (StatusCode, Bytes);

/// An OAuth error answer (RFC 6749 §5.2 shape).
pub(super) fn error(status: u16, description: &str) -> TokenAnswer {
    let code = match status {
        400 => "invalid_grant",
        401 => "invalid_client",
        429 => "rate_limited",
        500..=599 => "server_error",
        _ => "invalid_request",
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({"error": code, "error_description": description});
    (status, Bytes::from(body.to_string()))
}

/// Answers a JSON `{"grant_type": "refresh_token", "refresh_token": ..}`
/// with fresh tokens. A refresh token works once: a second use is refused,
/// so a client that refreshes twice with the same token notices.
pub(super) fn refresh(shared: &Shared, body: &[u8]) -> TokenAnswer {
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => return refused("invalid_request", "the body is not JSON"),
    };
    if request.get("grant_type").and_then(Value::as_str) != Some("refresh_token") {
        return refused("unsupported_grant_type", "only refresh_token is supported");
    }
    let Some(refresh_token) = request.get("refresh_token").and_then(Value::as_str) else {
        return refused("invalid_request", "refresh_token is required");
    };
    if !lock(&shared.spent_refresh_tokens).insert(refresh_token.to_owned()) {
        return refused("invalid_grant", "refresh token already used");
    }
    let n = shared.token_refreshes.fetch_add(1, Ordering::SeqCst) + 1;
    let body = json!({
        "token_type": "Bearer",
        "access_token": format!("sk-ant-oat-refreshed-{n}"),
        "refresh_token": format!("sk-ant-ort-refreshed-{n}"),
        "expires_in": 3600,
    });
    (StatusCode::OK, Bytes::from(body.to_string()))
}

fn refused(code: &str, description: &str) -> TokenAnswer {
    let body = json!({"error": code, "error_description": description});
    (StatusCode::BAD_REQUEST, Bytes::from(body.to_string()))
}
