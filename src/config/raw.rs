//! The TOML file as written, before checks (see `shared/PROXY.md`).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) body_limit_bytes: Option<usize>,
    pub(super) admin_key: Option<SecretString>,
    pub(super) admin_key_env: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_limit_bytes: Option<usize>,
    pub(super) idle_timeout_secs: Option<u64>,
    pub(super) listen_backlog: Option<u32>,
    pub(super) metrics_key: Option<SecretString>,
    pub(super) metrics_key_env: Option<String>,
    pub(super) shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) scheduling: RawScheduling,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) on_error: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) lease_ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScheduling {
    pub(super) sticky_ttl_secs: Option<u64>,
    pub(super) sticky_wait_timeout_secs: Option<u64>,
    pub(super) sticky_max_waiting: Option<u32>,
    pub(super) fallback_wait_timeout_secs: Option<u64>,
    pub(super) fallback_max_waiting: Option<u32>,
    pub(super) tier_fallback_chain: Option<bool>,
    pub(super) failover_on_400: Option<bool>,
    pub(super) max_account_switches: Option<u32>,
    pub(super) cooldown_wait_max_secs: Option<u64>,
    pub(super) retry_budget_percent: Option<f64>,
    pub(super) anthropic_policy: Option<String>,
    pub(super) openai_policy: Option<String>,
    pub(super) top_k: Option<usize>,
    pub(super) score_weights: Option<RawScoreWeights>,
    pub(super) session_header: Option<String>,
    pub(super) stream_keepalive_secs: Option<u64>,
    pub(super) eject_after_failures: Option<u32>,
    pub(super) sticky_error_rate_margin: Option<f64>,
    pub(super) sticky_ttft_factor: Option<f64>,
    pub(super) request_deadline_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScoreWeights {
    pub(super) priority: Option<f64>,
    pub(super) load: Option<f64>,
    pub(super) queue: Option<f64>,
    pub(super) error_rate: Option<f64>,
    pub(super) ttft: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) connect_timeout_secs: Option<u64>,
    pub(super) first_byte_timeout_secs: Option<u64>,
    pub(super) stream_first_byte_timeout_secs: Option<u64>,
    pub(super) pool_idle_timeout_secs: Option<u64>,
    pub(super) pool_max_idle_per_host: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) key: Option<SecretString>,
    pub(super) key_env: Option<String>,
    pub(super) name: Option<String>,
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) models: Vec<String>,
    pub(super) rpm: Option<u32>,
    pub(super) concurrency: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) id: Option<String>,
    pub(super) platform: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) group: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) access_token: Option<SecretString>,
    pub(super) access_token_env: Option<String>,
    pub(super) refresh_token: Option<SecretString>,
    pub(super) refresh_token_env: Option<String>,
    pub(super) expires_at: Option<u64>,
    pub(super) token_url: Option<String>,
    pub(super) api_key: Option<SecretString>,
    pub(super) api_key_env: Option<String>,
    pub(super) aws_region: Option<String>,
    pub(super) aws_access_key_id: Option<SecretString>,
    pub(super) aws_access_key_id_env: Option<String>,
    pub(super) aws_secret_access_key: Option<SecretString>,
    pub(super) aws_secret_access_key_env: Option<String>,
    pub(super) aws_session_token: Option<SecretString>,
    pub(super) aws_session_token_env: Option<String>,
    pub(super) priority: Option<i32>,
    pub(super) concurrency: Option<u32>,
    pub(super) rpm: Option<u32>,
    #[serde(default)]
    pub(super) models: Vec<String>,
    #[serde(default)]
    pub(super) model_mapping: BTreeMap<String, String>,
    pub(super) proxy: Option<String>,
}
