//! `GET /metrics`: Prometheus text from the relay's `metrics` facade, plus
//! per-account gauges read from the scheduler at scrape time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tower_llm_relay::{ApiFormat, RelayError};

use crate::reload::LiveRelay;

#[derive(Clone)]
struct Metrics {
    handle: PrometheusHandle,
    key: Option<Arc<SecretString>>,
    live: LiveRelay,
}

/// Installs the process-wide Prometheus recorder and serves `/metrics`
/// (behind `metrics_key` when one is set).
pub(crate) fn routes(key: Option<SecretString>, live: LiveRelay) -> Router {
    let handle = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
            PrometheusBuilder::new().build_recorder().handle()
        }
    };
    let state = Metrics {
        handle,
        key: key.map(Arc::new),
        live,
    };
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}

fn key_matches(headers: &HeaderMap, key: &SecretString) -> bool {
    let presented = headers
        .get("x-api-key")
        .or_else(|| headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().strip_prefix("Bearer ").unwrap_or(v.trim()));
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(key.expose_secret().as_bytes())))
}

async fn render(State(metrics): State<Metrics>, headers: HeaderMap) -> Response {
    if let Some(key) = &metrics.key {
        if !key_matches(&headers, key) {
            return RelayError::InvalidApiKey
                .into_response(ApiFormat::Anthropic)
                .into_response();
        }
    }
    for account in metrics.live.current().view.scheduler.status().await {
        let id = account.id;
        metrics::gauge!("relay_account_in_flight", "account" => id.clone()).set(account.in_flight);
        metrics::gauge!("relay_account_waiting", "account" => id.clone()).set(account.waiting);
        metrics::gauge!("relay_account_concurrency", "account" => id.clone())
            .set(account.concurrency);
        metrics::gauge!("relay_account_error_rate", "account" => id.clone())
            .set(account.error_rate);
        metrics::gauge!("relay_account_cooling", "account" => id.clone())
            .set(f64::from(u8::from(account.cooldown_until.is_some())));
        if let Some(ttft) = account.ttft_ms {
            metrics::gauge!("relay_account_ttft_ms", "account" => id).set(ttft);
        }
    }
    metrics.handle.run_upkeep();
    let mut response = metrics.handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
