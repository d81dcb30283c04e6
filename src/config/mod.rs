//! The example proxy's TOML configuration, checked and resolved.
//!
//! [`Config::from_toml`] parses the file described in `shared/PROXY.md`,
//! resolves every `*_env` credential, and checks everything it can before a
//! server listens: each error names the file, the field (`accounts[1].api_key`)
//! and what is wrong. Unknown fields are errors, so a typo cannot silently
//! drop a setting. Secrets stay in [`SecretString`]s and never appear in
//! `Debug` output or errors.
//!
//! # Examples
//!
//! ```
//! use tower_llm_relay::config::Config;
//!
//! let toml = r#"
//!     [[keys]]
//!     key = "sk-relay-alice"
//!     name = "alice"
//!
//!     [[accounts]]
//!     id = "claude-1"
//!     platform = "anthropic"
//!     type = "api_key"
//!     api_key_env = "ANTHROPIC_KEY"
//! "#;
//! let env = |name: &str| (name == "ANTHROPIC_KEY").then(|| "sk-ant-1".to_owned());
//! let config = Config::from_toml(toml, "relay.toml", env).unwrap();
//! assert_eq!(config.accounts.accounts().len(), 1);
//!
//! let missing = Config::from_toml(toml, "relay.toml", |_| None).unwrap_err();
//! assert!(missing.to_string().contains("accounts[0].api_key_env"));
//! ```

mod effective;
mod raw;

pub use effective::REDACTED;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Uri;
use secrecy::{ExposeSecret, SecretString};

use crate::account::{Account, Credentials, Platform};
use crate::body_limit::DEFAULT_BODY_LIMIT;
use crate::builder::RelayBuilder;
use crate::glob::ModelGlobs;
use crate::principal::{ClientKeys, KeyLimits, Principal};
use crate::select::AccountPool;
use crate::upstream::UpstreamConfig;

use raw::{RawAccount, RawConfig, RawKey};

/// The longest duration a config may give (ten years): every duration
/// is added to a clock reading somewhere, and `u64::MAX` seconds would
/// overflow it on the first request.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// A configuration error: which file, which field, what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    origin: String,
    field: String,
    message: String,
}

impl ConfigError {
    fn new(origin: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: origin.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field at fault (`accounts[0].base_url`), empty for errors in
    /// the TOML syntax itself.
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads the file as written, naming the field at fault (`scheduling.top_k`)
/// from the schema's path rather than from the text.
fn parse_raw(origin: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let document =
        toml::Deserializer::parse(text).map_err(|e| syntax_error(origin, text, "", &e))?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        let mut segments: Vec<_> = e.path().iter().collect();
        // An unknown field is at fault in the table that holds it; its
        // name is the file's text, and serde's message quotes it already.
        if e.inner().message().starts_with("unknown field") {
            segments.pop();
        }
        syntax_error(origin, text, &field_path(&segments), e.inner())
    })
}

/// `accounts[0].model_mapping`, from serde's path segments.
fn field_path(segments: &[&serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    path
}

/// TOML's own error, by line and column. Not its `Display`: that quotes
/// the line, which prints the credential when the typo is on its line.
fn syntax_error(origin: &str, text: &str, field: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim_end();
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return ConfigError::new(origin, field, format!("(line unknown) {message}"));
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError::new(
        origin,
        field,
        format!("line {line}, column {column}: {message}"),
    )
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// In this process (the default; one replica).
    Memory,
    /// In Redis, shared by replicas.
    Redis,
}

/// What to do when the shared state store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStateError {
    /// Keep serving with this replica's own state.
    FailOpen,
    /// Refuse requests with 503.
    FailClosed,
}

/// `[state]`.
#[derive(Clone)]
pub struct StateConfig {
    /// The backend.
    pub backend: StateBackend,
    /// The Redis URL, for `redis`.
    pub url: Option<String>,
    /// The key prefix in Redis.
    pub prefix: String,
    /// What to do when the store is unreachable.
    pub on_error: OnStateError,
    /// The longest any store call may hold a request.
    pub timeout: Duration,
    /// How long a Redis slot lease outlives a crashed replica
    /// (`lease_ttl_secs`, default 15).
    pub lease_ttl: Duration,
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateConfig")
            .field("backend", &self.backend)
            // A Redis URL may carry a password.
            .field(
                "url",
                &self.url.as_deref().map(crate::account::redact_user_info),
            )
            .field("prefix", &self.prefix)
            .field("on_error", &self.on_error)
            .field("timeout", &self.timeout)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

impl StateConfig {
    /// The shared store this section names: `None` for `memory` (the
    /// builder's default), a [`RedisStore`](crate::state::RedisStore) for
    /// `redis`. Each call makes a new store (its own connection).
    pub fn store(&self) -> Option<std::sync::Arc<dyn crate::state::StateStore>> {
        match self.backend {
            StateBackend::Memory => None,
            #[cfg(feature = "redis")]
            StateBackend::Redis => {
                use crate::state::redis::{OnRedisError, RedisStore};
                let on_error = match self.on_error {
                    OnStateError::FailOpen => OnRedisError::FailOpen,
                    OnStateError::FailClosed => OnRedisError::FailClosed,
                };
                let store = RedisStore::builder(self.url.clone().unwrap_or_default())
                    .prefix(self.prefix.clone())
                    .timeout(self.timeout)
                    .on_error(on_error)
                    .lease_ttl(self.lease_ttl)
                    .build();
                match store {
                    Ok(store) => Some(std::sync::Arc::new(store)),
                    Err(e) => {
                        // Checked when the config was read: not expected.
                        tracing::error!(error = %e, "redis state unavailable; using memory");
                        None
                    }
                }
            }
            #[cfg(not(feature = "redis"))]
            StateBackend::Redis => None,
        }
    }
}

pub use crate::select::{SchedulingConfig, ScoreWeights, SelectionPolicy};

/// The whole configuration, checked, with credentials resolved.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The request body limit in bytes.
    pub body_limit_bytes: usize,
    /// The admin key; without one `/admin/*` is 404.
    pub admin_key: Option<SecretString>,
    /// The key `/metrics` needs, if any.
    pub metrics_key: Option<SecretString>,
    /// The most client connections at once. The example proxy answers a
    /// connection past it "overloaded, retry shortly" and closes it.
    pub max_connections: usize,
    /// The largest request head in bytes.
    pub header_limit_bytes: usize,
    /// Idle client connections are closed after this: keep-alive ones
    /// (HTTP/2 ones with GOAWAY, though they answer pings), new ones that
    /// send no request, slow request heads, and request bodies that stall
    /// (those answered 400).
    pub idle_timeout: Duration,
    /// The listen socket's backlog.
    pub listen_backlog: u32,
    /// How long in-flight requests may finish after a stop signal.
    pub shutdown_grace: Duration,
    /// `[state]`.
    pub state: StateConfig,
    /// `[scheduling]`.
    pub scheduling: SchedulingConfig,
    /// `[upstream]`: the upstream client's timeouts.
    pub upstream: UpstreamConfig,
    /// `[[keys]]`.
    pub keys: ClientKeys,
    /// `[[accounts]]`.
    pub accounts: AccountPool,
}

impl Config {
    /// Reads and checks the file at `path`, resolving `*_env` from the
    /// process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&origin, "", format!("cannot read the file: {e}")))?;
        Self::from_toml(&text, &origin, |name| std::env::var(name).ok())
    }

    /// Parses and checks `text`, which came from `origin` (named in
    /// errors); `env` looks up environment variables.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw = parse_raw(origin, text)?;
        Check { origin, env: &env }.config(raw)
    }

    /// A [`RelayBuilder`] with this configuration's keys, accounts,
    /// scheduling and limits.
    pub fn relay_builder(&self) -> RelayBuilder {
        let builder = RelayBuilder::new()
            .keys(self.keys.clone())
            .accounts(self.accounts.clone())
            .body_limit(self.body_limit_bytes)
            .upstream_config(self.upstream.clone())
            .scheduling(self.scheduling.clone());
        match self.state.store() {
            Some(store) => builder.state(store),
            None => builder,
        }
    }
}

/// `at.field`, or `field` at the top level.
fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

/// The checks, with what every error must name.
struct Check<'a, E> {
    origin: &'a str,
    env: &'a E,
}

impl<E: Fn(&str) -> Option<String>> Check<'_, E> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin, field, message)
    }

    /// A secret given inline as `field` or through `field_env`.
    fn secret(
        &self,
        at: &str,
        field: &str,
        inline: Option<SecretString>,
        env_name: Option<&String>,
    ) -> Result<Option<SecretString>, ConfigError> {
        match (inline, env_name) {
            (Some(_), Some(_)) => Err(self.err(
                join(at, field),
                format!("give either `{field}` or `{field}_env`, not both"),
            )),
            (Some(value), None) if value.expose_secret().trim().is_empty() => {
                Err(self.err(join(at, field), "must not be empty"))
            }
            (Some(value), None) => Ok(Some(value)),
            (None, Some(name)) => match (self.env)(name) {
                Some(value) if !value.trim().is_empty() => Ok(Some(SecretString::from(value))),
                Some(_) => Err(self.err(
                    join(at, &format!("{field}_env")),
                    format!("environment variable `{name}` is empty"),
                )),
                None => Err(self.err(
                    join(at, &format!("{field}_env")),
                    format!("environment variable `{name}` is not set"),
                )),
            },
            (None, None) => Ok(None),
        }
    }

    /// A duration in whole `unit`s (1 for seconds, 1000 for milliseconds)
    /// from `field`, at most [`MAX_DURATION_SECS`]: every duration here
    /// ends up added to a clock reading, which a huge one would overflow.
    fn duration(
        &self,
        field: &str,
        value: Option<u64>,
        default: Duration,
        unit: u64,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if v / unit > MAX_DURATION_SECS => Err(self.err(
                field,
                format!("must be at most {} (ten years)", MAX_DURATION_SECS * unit),
            )),
            Some(v) if unit == 1 => Ok(Duration::from_secs(v)),
            Some(v) => Ok(Duration::from_millis(v)),
        }
    }

    fn required_secret(
        &self,
        at: &str,
        field: &str,
        inline: Option<SecretString>,
        env_name: Option<&String>,
    ) -> Result<SecretString, ConfigError> {
        self.secret(at, field, inline, env_name)?
            .ok_or_else(|| self.err(join(at, field), format!("is required (or `{field}_env`)")))
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = listen.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "listen",
                format!("`{listen}` is not an IP address and port"),
            )
        })?;
        let positive = |field: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(self.err(field, "must be greater than 0")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let admin_key = self.secret("", "admin_key", raw.admin_key, raw.admin_key_env.as_ref());
        let metrics_key = self.secret(
            "",
            "metrics_key",
            raw.metrics_key,
            raw.metrics_key_env.as_ref(),
        );
        let keys = self.keys(raw.keys)?;
        let accounts = self.accounts(raw.accounts)?;
        Ok(Config {
            listen,
            body_limit_bytes: positive(
                "body_limit_bytes",
                raw.body_limit_bytes,
                DEFAULT_BODY_LIMIT,
            )?,
            admin_key: admin_key?,
            metrics_key: metrics_key?,
            max_connections: positive("max_connections", raw.max_connections, 10_000)?,
            header_limit_bytes: positive("header_limit_bytes", raw.header_limit_bytes, 65_536)?,
            idle_timeout: self.duration(
                "idle_timeout_secs",
                raw.idle_timeout_secs,
                Duration::from_secs(60),
                1,
            )?,
            listen_backlog: raw.listen_backlog.unwrap_or(4096).max(1),
            shutdown_grace: self.duration(
                "shutdown_grace_secs",
                raw.shutdown_grace_secs,
                Duration::from_secs(30),
                1,
            )?,
            state: self.state(raw.state)?,
            scheduling: self.scheduling(raw.scheduling)?,
            upstream: self.upstream(raw.upstream)?,
            keys,
            accounts,
        })
    }

    fn state(&self, raw: raw::RawState) -> Result<StateConfig, ConfigError> {
        let backend = match raw.backend.as_deref().unwrap_or("memory") {
            "memory" => StateBackend::Memory,
            "redis" if cfg!(feature = "redis") => StateBackend::Redis,
            "redis" => {
                return Err(self.err(
                    "state.backend",
                    "`redis` needs the crate's `redis` feature; use `memory`",
                ))
            }
            other => {
                return Err(self.err(
                    "state.backend",
                    format!("`{other}` is not one of `memory`, `redis`"),
                ))
            }
        };
        let on_error = match raw.on_error.as_deref().unwrap_or("fail_open") {
            "fail_open" => OnStateError::FailOpen,
            "fail_closed" => OnStateError::FailClosed,
            other => {
                return Err(self.err(
                    "state.on_error",
                    format!("`{other}` is not one of `fail_open`, `fail_closed`"),
                ))
            }
        };
        if backend == StateBackend::Redis {
            let Some(url) = raw.url.as_deref() else {
                return Err(self.err("state.url", "`backend = \"redis\"` needs a `url`"));
            };
            #[cfg(feature = "redis")]
            let parses = redis::Client::open(url).is_ok();
            #[cfg(not(feature = "redis"))]
            let parses = true;
            if !parses
                || !(url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("unix://")
                    || url.starts_with("redis+unix://"))
            {
                // The URL may hold a password: not echoed.
                return Err(self.err(
                    "state.url",
                    "not a Redis URL (expected `redis://host:port/db`)",
                ));
            }
        }
        if raw.timeout_ms == Some(0) {
            return Err(self.err("state.timeout_ms", "must be at least 1"));
        }
        if raw.lease_ttl_secs == Some(0) {
            return Err(self.err("state.lease_ttl_secs", "must be at least 1"));
        }
        Ok(StateConfig {
            backend,
            url: raw.url,
            prefix: raw.prefix.unwrap_or_else(|| "relay:".to_owned()),
            on_error,
            timeout: self.duration(
                "state.timeout_ms",
                raw.timeout_ms,
                Duration::from_millis(200),
                1000,
            )?,
            lease_ttl: self.duration(
                "state.lease_ttl_secs",
                raw.lease_ttl_secs,
                Duration::from_secs(15),
                1,
            )?,
        })
    }

    fn policy(
        &self,
        field: &str,
        value: Option<&str>,
        default: SelectionPolicy,
    ) -> Result<SelectionPolicy, ConfigError> {
        match value {
            None => Ok(default),
            Some("load_aware") => Ok(SelectionPolicy::LoadAware),
            Some("scored_top_k") => Ok(SelectionPolicy::ScoredTopK),
            Some(other) => Err(self.err(
                field,
                format!("`{other}` is not one of `load_aware`, `scored_top_k`"),
            )),
        }
    }

    fn scheduling(&self, raw: raw::RawScheduling) -> Result<SchedulingConfig, ConfigError> {
        let secs = |field: &str, v: Option<u64>, d: u64| {
            self.duration(&format!("scheduling.{field}"), v, Duration::from_secs(d), 1)
        };
        let weights = raw.score_weights.unwrap_or_default();
        let score_weights = ScoreWeights {
            priority: weights.priority.unwrap_or(1.0),
            load: weights.load.unwrap_or(1.0),
            queue: weights.queue.unwrap_or(0.7),
            error_rate: weights.error_rate.unwrap_or(0.8),
            ttft: weights.ttft.unwrap_or(0.5),
        };
        let all_weights = [
            score_weights.priority,
            score_weights.load,
            score_weights.queue,
            score_weights.error_rate,
            score_weights.ttft,
        ];
        if all_weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(self.err(
                "scheduling.score_weights",
                "weights must be finite and not negative",
            ));
        }
        let retry_budget_percent = raw.retry_budget_percent.unwrap_or(20.0);
        if !(0.0..=1000.0).contains(&retry_budget_percent) {
            return Err(self.err(
                "scheduling.retry_budget_percent",
                "must be between 0 and 1000",
            ));
        }
        if raw.top_k == Some(0) {
            return Err(self.err("scheduling.top_k", "must be greater than 0"));
        }
        if let Some(name) = &raw.session_header {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(self.err(
                    "scheduling.session_header",
                    format!("`{name}` is not a valid header name"),
                ));
            }
        }
        Ok(SchedulingConfig {
            sticky_ttl: secs("sticky_ttl_secs", raw.sticky_ttl_secs, 3600)?,
            sticky_wait_timeout: secs(
                "sticky_wait_timeout_secs",
                raw.sticky_wait_timeout_secs,
                45,
            )?,
            sticky_max_waiting: raw.sticky_max_waiting.unwrap_or(3),
            fallback_wait_timeout: secs(
                "fallback_wait_timeout_secs",
                raw.fallback_wait_timeout_secs,
                30,
            )?,
            fallback_max_waiting: raw.fallback_max_waiting.unwrap_or(100),
            tier_fallback_chain: raw.tier_fallback_chain.unwrap_or(false),
            failover_on_400: raw.failover_on_400.unwrap_or(false),
            max_account_switches: raw.max_account_switches.unwrap_or(10),
            cooldown_wait_max: secs("cooldown_wait_max_secs", raw.cooldown_wait_max_secs, 5)?,
            retry_budget_percent,
            anthropic_policy: self.policy(
                "scheduling.anthropic_policy",
                raw.anthropic_policy.as_deref(),
                SelectionPolicy::LoadAware,
            )?,
            openai_policy: self.policy(
                "scheduling.openai_policy",
                raw.openai_policy.as_deref(),
                SelectionPolicy::ScoredTopK,
            )?,
            top_k: raw.top_k.unwrap_or(7),
            score_weights,
            session_header: raw.session_header,
            stream_keepalive: secs("stream_keepalive_secs", raw.stream_keepalive_secs, 0)?,
            sticky_error_rate_margin: raw.sticky_error_rate_margin.unwrap_or(0.5),
            sticky_ttft_factor: raw.sticky_ttft_factor.unwrap_or(3.0),
            eject_after_failures: raw.eject_after_failures.unwrap_or(5).max(1),
            request_deadline: secs("request_deadline_secs", raw.request_deadline_secs, 600)?,
        })
    }

    fn upstream(&self, raw: raw::RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let defaults = UpstreamConfig::default();
        let secs = |field: &str, v: Option<u64>, d: Duration| match v {
            Some(0) => Err(self.err(format!("upstream.{field}"), "must be greater than 0")),
            v => self.duration(&format!("upstream.{field}"), v, d, 1),
        };
        Ok(UpstreamConfig {
            connect_timeout: secs(
                "connect_timeout_secs",
                raw.connect_timeout_secs,
                defaults.connect_timeout,
            )?,
            first_byte_timeout: secs(
                "first_byte_timeout_secs",
                raw.first_byte_timeout_secs,
                defaults.first_byte_timeout,
            )?,
            stream_first_byte_timeout: secs(
                "stream_first_byte_timeout_secs",
                raw.stream_first_byte_timeout_secs,
                defaults.stream_first_byte_timeout,
            )?,
            pool_idle_timeout: secs(
                "pool_idle_timeout_secs",
                raw.pool_idle_timeout_secs,
                defaults.pool_idle_timeout,
            )?,
            pool_max_idle_per_host: raw
                .pool_max_idle_per_host
                .unwrap_or(defaults.pool_max_idle_per_host),
        })
    }

    fn keys(&self, raw: Vec<RawKey>) -> Result<ClientKeys, ConfigError> {
        let mut keys = ClientKeys::new();
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        for (i, key) in raw.into_iter().enumerate() {
            let at = format!("keys[{i}]");
            let secret = self.required_secret(&at, "key", key.key, key.key_env.as_ref())?;
            let name = key
                .name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| self.err(format!("{at}.name"), "is required"))?;
            if !names.insert(name.clone()) {
                return Err(self.err(format!("{at}.name"), format!("`{name}` is used twice")));
            }
            // The digest, not a copy of the key that would outlive the
            // zeroized secret.
            if !seen.insert(crate::principal::digest(secret.expose_secret())) {
                return Err(self.err(format!("{at}.key"), "the same key is given twice"));
            }
            let principal = Principal::new(&name)
                .group(key.group.unwrap_or_else(|| "default".to_owned()))
                .models(ModelGlobs::new(key.models))
                .limits(KeyLimits {
                    rpm: key.rpm,
                    concurrency: key.concurrency,
                });
            keys.insert(secret, principal);
        }
        Ok(keys)
    }

    fn accounts(&self, raw: Vec<RawAccount>) -> Result<AccountPool, ConfigError> {
        let mut ids = HashSet::new();
        let mut accounts = Vec::with_capacity(raw.len());
        for (i, account) in raw.into_iter().enumerate() {
            let at = format!("accounts[{i}]");
            let built = self.account(&at, account)?;
            if !ids.insert(built.id().clone()) {
                return Err(self.err(
                    format!("{at}.id"),
                    format!("`{}` is used twice", built.id()),
                ));
            }
            accounts.push(built);
        }
        Ok(AccountPool::new(accounts))
    }

    fn account(&self, at: &str, raw: RawAccount) -> Result<Account, ConfigError> {
        let id = raw
            .id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| self.err(format!("{at}.id"), "is required"))?;
        let platform = match raw.platform.as_deref() {
            Some("anthropic") => Platform::Anthropic,
            Some("openai") => Platform::OpenAi,
            Some(other) => {
                return Err(self.err(
                    format!("{at}.platform"),
                    format!("`{other}` is not one of `anthropic`, `openai`"),
                ))
            }
            None => return Err(self.err(format!("{at}.platform"), "is required")),
        };
        let kind = raw
            .kind
            .as_deref()
            .ok_or_else(|| self.err(format!("{at}.type"), "is required"))?;
        let credentials = match (platform, kind) {
            (_, "api_key") => Credentials::ApiKey(self.required_secret(
                at,
                "api_key",
                raw.api_key,
                raw.api_key_env.as_ref(),
            )?),
            (Platform::Anthropic, "setup_token") => Credentials::SetupToken(self.required_secret(
                at,
                "access_token",
                raw.access_token,
                raw.access_token_env.as_ref(),
            )?),
            (Platform::Anthropic, "oauth") => {
                if let Some(url) = &raw.token_url {
                    self.http_url(&format!("{at}.token_url"), url)?;
                }
                Credentials::OAuth {
                    access_token: self.required_secret(
                        at,
                        "access_token",
                        raw.access_token,
                        raw.access_token_env.as_ref(),
                    )?,
                    refresh_token: self.secret(
                        at,
                        "refresh_token",
                        raw.refresh_token,
                        raw.refresh_token_env.as_ref(),
                    )?,
                    expires_at: raw.expires_at,
                    token_url: raw.token_url,
                }
            }
            (Platform::Anthropic, "bedrock") => Credentials::Bedrock {
                region: raw
                    .aws_region
                    .filter(|r| !r.trim().is_empty())
                    .ok_or_else(|| {
                        self.err(format!("{at}.aws_region"), "is required for bedrock")
                    })?,
                access_key_id: self.required_secret(
                    at,
                    "aws_access_key_id",
                    raw.aws_access_key_id,
                    raw.aws_access_key_id_env.as_ref(),
                )?,
                secret_access_key: self.required_secret(
                    at,
                    "aws_secret_access_key",
                    raw.aws_secret_access_key,
                    raw.aws_secret_access_key_env.as_ref(),
                )?,
                session_token: self.secret(
                    at,
                    "aws_session_token",
                    raw.aws_session_token,
                    raw.aws_session_token_env.as_ref(),
                )?,
            },
            (Platform::OpenAi, "oauth" | "setup_token" | "bedrock") => {
                return Err(self.err(
                    format!("{at}.type"),
                    format!(
                        "`{kind}` accounts are Anthropic accounts; openai accounts are `api_key`"
                    ),
                ))
            }
            (_, other) => {
                return Err(self.err(
                    format!("{at}.type"),
                    format!("`{other}` is not one of `oauth`, `setup_token`, `api_key`, `bedrock`"),
                ))
            }
        };
        if raw.concurrency == Some(0) {
            return Err(self.err(format!("{at}.concurrency"), "must be greater than 0"));
        }
        let mut builder = Account::builder(id, platform, credentials)
            .priority(raw.priority.unwrap_or(1))
            .concurrency(raw.concurrency.unwrap_or(4))
            .rpm(raw.rpm)
            .models(raw.models)
            .group(raw.group.unwrap_or_else(|| "default".to_owned()));
        if let Some(base_url) = &raw.base_url {
            self.http_url(&format!("{at}.base_url"), base_url)?;
            if base_url.trim_end_matches('/').ends_with("/v1") {
                return Err(self.err(
                    format!("{at}.base_url"),
                    "give the origin without `/v1`: the relay appends `/v1/messages` etc.",
                ));
            }
            builder = builder.base_url(base_url);
        }
        if let Some(proxy) = &raw.proxy {
            let uri = proxy
                .parse::<Uri>()
                .map_err(|_| self.err(format!("{at}.proxy"), format!("`{proxy}` is not a URL")))?;
            let supported = matches!(uri.scheme_str(), Some("http" | "socks5" | "socks5h"));
            if !supported || uri.host().is_none() {
                return Err(self.err(
                    format!("{at}.proxy"),
                    "must be an `http://` (CONNECT) or `socks5://` proxy URL with a host",
                ));
            }
        }
        builder = builder.proxy(raw.proxy);
        for (client, upstream) in raw.model_mapping {
            if client.is_empty() || upstream.is_empty() {
                return Err(self.err(
                    format!("{at}.model_mapping"),
                    "model names must not be empty",
                ));
            }
            builder = builder.map_model(client, upstream);
        }
        Ok(builder.build())
    }

    fn http_url(&self, field: &str, url: &str) -> Result<Uri, ConfigError> {
        let uri = url
            .parse::<Uri>()
            .map_err(|_| self.err(field, format!("`{url}` is not a URL")))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(_)) => Ok(uri),
            _ => Err(self.err(field, format!("`{url}` must be an http:// or https:// URL"))),
        }
    }
}

#[cfg(test)]
mod tests;
