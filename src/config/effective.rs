//! The effective configuration as TOML, every default filled in and every
//! credential replaced by a placeholder: what `proxy --check` prints.

use std::time::Duration;

use toml::{Table, Value};

use super::{Config, OnStateError, StateBackend};
use crate::account::{Account, Credentials};
use crate::select::SelectionPolicy;

/// What stands in for every secret.
pub const REDACTED: &str = "<redacted>";

fn secs(d: Duration) -> Value {
    Value::Integer(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

fn redacted() -> Value {
    text(REDACTED)
}

fn policy(p: SelectionPolicy) -> Value {
    text(match p {
        SelectionPolicy::LoadAware => "load_aware",
        SelectionPolicy::ScoredTopK => "scored_top_k",
    })
}

/// A URL with any `user:password@` taken out.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn account(a: &Account) -> Table {
    let mut t = Table::new();
    t.insert("id".into(), text(a.id().as_str()));
    t.insert("platform".into(), text(a.platform().as_str()));
    t.insert("type".into(), text(a.account_type().as_str()));
    t.insert("group".into(), text(a.group()));
    t.insert("base_url".into(), text(without_userinfo(a.base_url())));
    t.insert("priority".into(), int(a.priority()));
    t.insert("concurrency".into(), int(a.concurrency()));
    if let Some(rpm) = a.rpm() {
        t.insert("rpm".into(), int(rpm));
    }
    let models: Vec<Value> = a.models().iter().map(|g| text(g.as_str())).collect();
    if !models.is_empty() {
        t.insert("models".into(), Value::Array(models));
    }
    if !a.model_mapping().is_empty() {
        let mut mapping: Vec<_> = a.model_mapping().iter().collect();
        mapping.sort();
        let mapping: Table = mapping
            .into_iter()
            .map(|(from, to)| (from.clone(), text(to.as_str())))
            .collect();
        t.insert("model_mapping".into(), Value::Table(mapping));
    }
    if let Some(proxy) = a.proxy() {
        t.insert("proxy".into(), text(without_userinfo(proxy)));
    }
    match a.credentials() {
        Credentials::ApiKey(_) => {
            t.insert("api_key".into(), redacted());
        }
        Credentials::SetupToken(_) => {
            t.insert("access_token".into(), redacted());
        }
        Credentials::OAuth {
            refresh_token,
            expires_at,
            token_url,
            ..
        } => {
            t.insert("access_token".into(), redacted());
            if refresh_token.is_some() {
                t.insert("refresh_token".into(), redacted());
            }
            if let Some(at) = expires_at {
                t.insert("expires_at".into(), int(*at));
            }
            if let Some(url) = token_url {
                t.insert("token_url".into(), text(without_userinfo(url)));
            }
        }
        Credentials::Bedrock {
            region,
            session_token,
            ..
        } => {
            t.insert("region".into(), text(region.as_str()));
            t.insert("aws_access_key_id".into(), redacted());
            t.insert("aws_secret_access_key".into(), redacted());
            if session_token.is_some() {
                t.insert("aws_session_token".into(), redacted());
            }
        }
    }
    t
}

impl Config {
    /// The effective configuration as TOML: defaults filled in, every
    /// credential (client keys, admin and metrics keys, upstream tokens
    /// and keys, user:password in URLs) replaced by `<redacted>`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_llm_relay::config::Config;
    ///
    /// let toml = r#"
    /// [[keys]]
    /// key = "sk-relay-alice"
    /// name = "alice"
    ///
    /// [[accounts]]
    /// id = "claude-1"
    /// platform = "anthropic"
    /// type = "api_key"
    /// api_key = "sk-ant-secret"
    /// "#;
    /// let config = Config::from_toml(toml, "relay.toml", |_| None).unwrap();
    /// let effective = config.effective_toml();
    /// assert!(effective.contains("sticky_ttl_secs = 3600"));
    /// assert!(effective.contains("name = \"alice\""));
    /// assert!(!effective.contains("sk-relay-alice"));
    /// assert!(!effective.contains("sk-ant-secret"));
    /// ```
    pub fn effective_toml(&self) -> String {
        let mut root = Table::new();
        root.insert("listen".into(), text(self.listen.to_string()));
        root.insert("body_limit_bytes".into(), int(self.body_limit_bytes));
        if self.admin_key.is_some() {
            root.insert("admin_key".into(), redacted());
        }
        if self.metrics_key.is_some() {
            root.insert("metrics_key".into(), redacted());
        }
        root.insert("max_connections".into(), int(self.max_connections));
        root.insert("header_limit_bytes".into(), int(self.header_limit_bytes));
        root.insert("idle_timeout_secs".into(), secs(self.idle_timeout));
        root.insert("listen_backlog".into(), int(self.listen_backlog));
        root.insert("shutdown_grace_secs".into(), secs(self.shutdown_grace));

        let mut state = Table::new();
        let backend = match self.state.backend {
            StateBackend::Memory => "memory",
            StateBackend::Redis => "redis",
        };
        state.insert("backend".into(), text(backend));
        if let Some(url) = &self.state.url {
            state.insert("url".into(), text(without_userinfo(url)));
        }
        state.insert("prefix".into(), text(self.state.prefix.as_str()));
        let on_error = match self.state.on_error {
            OnStateError::FailOpen => "fail_open",
            OnStateError::FailClosed => "fail_closed",
        };
        state.insert("on_error".into(), text(on_error));
        state.insert(
            "timeout_ms".into(),
            int(u64::try_from(self.state.timeout.as_millis()).unwrap_or(u64::MAX)),
        );
        state.insert("lease_ttl_secs".into(), secs(self.state.lease_ttl));
        root.insert("state".into(), Value::Table(state));

        let s = &self.scheduling;
        let mut scheduling = Table::new();
        for (name, value) in [
            ("sticky_ttl_secs", secs(s.sticky_ttl)),
            ("sticky_wait_timeout_secs", secs(s.sticky_wait_timeout)),
            ("sticky_max_waiting", int(s.sticky_max_waiting)),
            ("fallback_wait_timeout_secs", secs(s.fallback_wait_timeout)),
            ("fallback_max_waiting", int(s.fallback_max_waiting)),
            ("tier_fallback_chain", Value::Boolean(s.tier_fallback_chain)),
            ("failover_on_400", Value::Boolean(s.failover_on_400)),
            ("max_account_switches", int(s.max_account_switches)),
            ("cooldown_wait_max_secs", secs(s.cooldown_wait_max)),
            ("retry_budget_percent", Value::Float(s.retry_budget_percent)),
            ("anthropic_policy", policy(s.anthropic_policy)),
            ("openai_policy", policy(s.openai_policy)),
            ("top_k", int(s.top_k)),
            ("stream_keepalive_secs", secs(s.stream_keepalive)),
            ("eject_after_failures", int(s.eject_after_failures)),
            ("request_deadline_secs", secs(s.request_deadline)),
            (
                "sticky_error_rate_margin",
                Value::Float(s.sticky_error_rate_margin),
            ),
            ("sticky_ttft_factor", Value::Float(s.sticky_ttft_factor)),
        ] {
            scheduling.insert(name.into(), value);
        }
        if let Some(header) = &s.session_header {
            scheduling.insert("session_header".into(), text(header.as_str()));
        }
        let w = &s.score_weights;
        let weights: Table = [
            ("priority", w.priority),
            ("load", w.load),
            ("queue", w.queue),
            ("error_rate", w.error_rate),
            ("ttft", w.ttft),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Float(v)))
        .collect();
        scheduling.insert("score_weights".into(), Value::Table(weights));
        root.insert("scheduling".into(), Value::Table(scheduling));

        let u = &self.upstream;
        let upstream: Table = [
            ("connect_timeout_secs", secs(u.connect_timeout)),
            (
                "stream_first_byte_timeout_secs",
                secs(u.stream_first_byte_timeout),
            ),
            ("first_byte_timeout_secs", secs(u.first_byte_timeout)),
            ("pool_idle_timeout_secs", secs(u.pool_idle_timeout)),
            ("pool_max_idle_per_host", int(u.pool_max_idle_per_host)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        root.insert("upstream".into(), Value::Table(upstream));

        let mut principals: Vec<_> = self.keys.principals().collect();
        principals.sort_by(|a, b| a.id().cmp(b.id()));
        let keys: Vec<Value> = principals
            .into_iter()
            .map(|p| {
                let mut t = Table::new();
                t.insert("key".into(), redacted());
                t.insert("name".into(), text(p.id().as_str()));
                t.insert("group".into(), text(p.group_name()));
                let models: Vec<Value> = p
                    .allowed_models()
                    .iter()
                    .map(|g| text(g.as_str()))
                    .collect();
                if !models.is_empty() {
                    t.insert("models".into(), Value::Array(models));
                }
                let limits = p.key_limits();
                if let Some(rpm) = limits.rpm {
                    t.insert("rpm".into(), int(rpm));
                }
                if let Some(concurrency) = limits.concurrency {
                    t.insert("concurrency".into(), int(concurrency));
                }
                Value::Table(t)
            })
            .collect();
        root.insert("keys".into(), Value::Array(keys));
        let accounts: Vec<Value> = self
            .accounts
            .accounts()
            .iter()
            .map(|a| Value::Table(account(a)))
            .collect();
        root.insert("accounts".into(), Value::Array(accounts));
        toml::to_string(&root).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::without_userinfo;

    #[test]
    fn userinfo_is_taken_out_of_urls() {
        assert_eq!(
            without_userinfo("http://user:pw@proxy:8080/x"),
            "http://<redacted>@proxy:8080/x"
        );
        assert_eq!(without_userinfo("socks5://h:1"), "socks5://h:1");
        assert_eq!(
            without_userinfo("https://api.example.com/a@b"),
            "https://api.example.com/a@b"
        );
    }
}
