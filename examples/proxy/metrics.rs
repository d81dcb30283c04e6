//! `GET /metrics`: Prometheus text from the relay's `metrics` facade, plus
//! per-account gauges read from the scheduler at scrape time.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
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
    let handle = match recorder().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
            recorder().build_recorder().handle()
        }
    };
    // Histogram samples queue until upkeep folds them into their buckets;
    // without it a proxy nobody scrapes grew ~100 bytes per request (seen
    // in the soak run: 50 → 350 MiB in 10 minutes).
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let state = Metrics {
        handle,
        key: key.map(Arc::new),
        live,
    };
    Router::new()
        .route("/metrics", get(render))
        .with_state(state)
}

/// How often queued histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Latency buckets in seconds, from a loopback round trip to a long
/// generation.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Attempts per request: 1 is the common case, more mean failovers.
const ATTEMPTS_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 10.0];

/// Histograms with fixed buckets: their memory is bounded, and unlike
/// summaries they add up across replicas.
fn recorder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("relay_attempts_per_request".into()),
                ATTEMPTS_BUCKETS,
            )
        })
        // Only empty bucket lists are refused, and these are constants.
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

fn key_matches(headers: &HeaderMap, key: &SecretString) -> bool {
    let presented = headers
        .get("x-api-key")
        .or_else(|| headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().strip_prefix("Bearer ").unwrap_or(v.trim()));
    // Digests are of equal length, so the key's length does not show.
    presented.is_some_and(|p| {
        let p = Sha256::digest(p.as_bytes());
        let key = Sha256::digest(key.expose_secret().as_bytes());
        bool::from(p.as_slice().ct_eq(key.as_slice()))
    })
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
