//! Fuzz target: the config loader. Any text gives a config or a
//! `ConfigError`, never a panic; an error names the field at fault, or —
//! when the TOML itself does not parse or fit the schema — the line and
//! column; and every duration a config accepts can be added to a clock
//! reading (a request deadline of `u64::MAX` seconds used to panic on the
//! first request). See `support/fuzz.rs` for the driver and its
//! environment variables.

mod support;

use std::time::Instant;

use proptest::prelude::*;
use support::fuzz::fuzz;
use tower_llm_relay::config::Config;

/// Top-level fields and sections, to check that an error's field is one.
const ROOTS: &[&str] = &[
    "listen",
    "body_limit_bytes",
    "admin_key",
    "admin_key_env",
    "max_connections",
    "header_limit_bytes",
    "idle_timeout_secs",
    "listen_backlog",
    "metrics_key",
    "metrics_key_env",
    "shutdown_grace_secs",
    "state",
    "scheduling",
    "upstream",
    "keys",
    "accounts",
];

const TOP: &[&str] = &[
    "listen",
    "body_limit_bytes",
    "admin_key",
    "admin_key_env",
    "max_connections",
    "header_limit_bytes",
    "idle_timeout_secs",
    "listen_backlog",
    "metrics_key_env",
    "shutdown_grace_secs",
];
const STATE: &[&str] = &["backend", "url", "prefix", "on_error", "timeout_ms"];
const SCHEDULING: &[&str] = &[
    "sticky_ttl_secs",
    "sticky_wait_timeout_secs",
    "sticky_max_waiting",
    "fallback_wait_timeout_secs",
    "fallback_max_waiting",
    "tier_fallback_chain",
    "failover_on_400",
    "max_account_switches",
    "cooldown_wait_max_secs",
    "retry_budget_percent",
    "anthropic_policy",
    "openai_policy",
    "top_k",
    "session_header",
    "stream_keepalive_secs",
    "eject_after_failures",
    "sticky_error_rate_margin",
    "sticky_ttft_factor",
    "request_deadline_secs",
];
const UPSTREAM: &[&str] = &[
    "connect_timeout_secs",
    "first_byte_timeout_secs",
    "stream_first_byte_timeout_secs",
    "pool_idle_timeout_secs",
    "pool_max_idle_per_host",
];
const KEY: &[&str] = &[
    "key",
    "key_env",
    "name",
    "group",
    "models",
    "rpm",
    "concurrency",
];
const ACCOUNT: &[&str] = &[
    "id",
    "platform",
    "type",
    "group",
    "base_url",
    "access_token",
    "access_token_env",
    "refresh_token",
    "expires_at",
    "token_url",
    "api_key",
    "api_key_env",
    "aws_region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "priority",
    "concurrency",
    "rpm",
    "models",
    "model_mapping",
    "proxy",
];

/// A TOML value, mostly of a plausible type, sometimes of any other.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(4_294_967_296),
            any::<i64>(),
            0..100_000i64,
        ]
        .prop_map(|v| v.to_string()),
        prop_oneof![
            Just("nan".to_owned()),
            Just("inf".to_owned()),
            Just("-inf".to_owned()),
            Just("-0.0".to_owned()),
            Just("1e308".to_owned()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
        ],
        any::<bool>().prop_map(|b| b.to_string()),
        proptest::sample::select(
            &[
                "anthropic",
                "openai",
                "bedrock",
                "api_key",
                "setup_token",
                "oauth",
                "memory",
                "redis",
                "fail_open",
                "fail_closed",
                "load_aware",
                "scored_top_k",
                "127.0.0.1:0",
                "[::1]:99999",
                "http://127.0.0.1:1",
                "socks5://127.0.0.1:1080",
                "https://",
                "",
                " ",
                "claude-*",
                "x-session-id",
                "bad header\n",
                "SET_ENV",
                "UNSET_ENV",
            ][..]
        )
        .prop_map(|s| format!("{s:?}")),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
        prop::collection::vec("[a-z*-]{0,8}", 0..3).prop_map(|v| format!("{v:?}")),
        Just(r#"{ "claude-sonnet-4-5" = "x" }"#.to_owned()),
    ]
}

fn fields(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec((proptest::sample::select(names), value()), 0..6).prop_map(|fields| {
        // TOML refuses a key twice; keep the first.
        let mut seen = std::collections::HashSet::new();
        fields
            .into_iter()
            .filter(|(k, _)| seen.insert(*k))
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    })
}

/// A config in the schema's shape with random values.
fn structured() -> impl Strategy<Value = String> {
    (
        fields(TOP),
        fields(STATE),
        fields(SCHEDULING),
        fields(UPSTREAM),
        prop::collection::vec(fields(KEY), 0..3),
        prop::collection::vec(fields(ACCOUNT), 0..4),
    )
        .prop_map(|(top, state, scheduling, upstream, keys, accounts)| {
            let mut text = top;
            text += &format!("[state]\n{state}[scheduling]\n{scheduling}[upstream]\n{upstream}");
            for key in keys {
                text += &format!("[[keys]]\n{key}");
            }
            for account in accounts {
                text += &format!("[[accounts]]\n{account}");
            }
            text
        })
}

/// A valid config with bytes changed, inserted or cut.
fn mutated() -> impl Strategy<Value = String> {
    const VALID: &str = r#"listen = "127.0.0.1:8080"
[scheduling]
sticky_ttl_secs = 3600
request_deadline_secs = 600
[upstream]
first_byte_timeout_secs = 600
[[keys]]
key = "sk-relay-1"
name = "alice"
models = ["claude-*", "gpt-*"]
concurrency = 4
[[accounts]]
id = "claude-1"
platform = "anthropic"
type = "api_key"
api_key = "sk-ant-1"
priority = 1
concurrency = 8
model_mapping = { "claude-sonnet-4-5" = "claude-sonnet-4-5-20250929" }
[[accounts]]
id = "gpt-1"
platform = "openai"
type = "api_key"
api_key_env = "SET_ENV"
base_url = "http://127.0.0.1:9"
"#;
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6).prop_map(
        |edits| {
            let mut text = VALID.as_bytes().to_vec();
            for (at, byte, how) in edits {
                let i = at.index(text.len() + 1);
                match how {
                    0 if i < text.len() => text[i] = byte,
                    1 => text.insert(i, byte),
                    _ if i < text.len() => {
                        text.remove(i);
                    }
                    _ => {}
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        },
    )
}

/// A valid config with one field of any section set to a random value,
/// so each field's own check is reached (in `structured`, another field
/// usually fails first).
fn one_field() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        proptest::sample::select(TOP).prop_map(|f| ("", f)),
        proptest::sample::select(STATE).prop_map(|f| ("[state]\n", f)),
        proptest::sample::select(SCHEDULING).prop_map(|f| ("[scheduling]\n", f)),
        proptest::sample::select(UPSTREAM).prop_map(|f| ("[upstream]\n", f)),
        proptest::sample::select(KEY).prop_map(|f| ("[[keys]]\nkey = \"k2\"\n", f)),
        proptest::sample::select(ACCOUNT).prop_map(|f| (
            "[[accounts]]\nid = \"a2\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key = \"x\"\n",
            f
        )),
    ];
    (section, value()).prop_map(|((header, field), value)| {
        // A field given twice is TOML's error; replace the default one.
        let header: String = header
            .lines()
            .filter(|l| !l.starts_with(&format!("{field} ")))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{header}{field} = {value}\n")
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        4 => structured(),
        3 => mutated(),
        4 => one_field(),
    ]
}

fn env(name: &str) -> Option<String> {
    match name {
        "SET_ENV" => Some("from-the-environment".to_owned()),
        "EMPTY_ENV" => Some(String::new()),
        _ => None,
    }
}

fn check(text: &str) -> Result<(), TestCaseError> {
    match Config::from_toml(text, "fuzz.toml", env) {
        Ok(config) => {
            let s = &config.scheduling;
            let u = &config.upstream;
            let now = Instant::now();
            for (name, d) in [
                ("sticky_ttl", s.sticky_ttl),
                ("sticky_wait_timeout", s.sticky_wait_timeout),
                ("fallback_wait_timeout", s.fallback_wait_timeout),
                ("cooldown_wait_max", s.cooldown_wait_max),
                ("stream_keepalive", s.stream_keepalive),
                ("request_deadline", s.request_deadline),
                ("connect_timeout", u.connect_timeout),
                ("first_byte_timeout", u.first_byte_timeout),
                ("stream_first_byte_timeout", u.stream_first_byte_timeout),
                ("pool_idle_timeout", u.pool_idle_timeout),
                ("idle_timeout", config.idle_timeout),
                ("shutdown_grace", config.shutdown_grace),
                ("state.timeout", config.state.timeout),
            ] {
                // Deadlines are clock readings plus these.
                prop_assert!(
                    now.checked_add(d.saturating_mul(2)).is_some(),
                    "{name} = {d:?} overflows a deadline"
                );
            }
            // The effective config prints, and a relay builds from it.
            prop_assert!(!config.effective_toml().is_empty());
            let _ = config.relay_builder();
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("fuzz.toml: "), "{shown}");
            if e.field().is_empty() {
                // Only TOML's own errors name no field; they give the place.
                prop_assert!(shown.contains("line"), "no field, no line: {shown}");
            } else {
                let root = e.field().split(['.', '[']).next().unwrap_or_default();
                prop_assert!(
                    ROOTS.contains(&root),
                    "unknown field {:?}: {shown}",
                    e.field()
                );
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_config_loader() {
    fuzz("config_loader", text(), |text| check(&text));
}

#[test]
fn a_duration_that_overflows_a_deadline_is_refused_by_name() {
    for field in [
        "[scheduling]\nrequest_deadline_secs",
        "[scheduling]\nsticky_ttl_secs",
        "[upstream]\nfirst_byte_timeout_secs",
        "idle_timeout_secs",
    ] {
        let text = format!("{field} = 9223372036854775807\n");
        let err = Config::from_toml(&text, "t.toml", env).expect_err(&text);
        let name = field.rsplit(['\n', ']']).next().unwrap_or_default();
        assert!(err.field().ends_with(name), "{err}");
    }
    check("[scheduling]\nrequest_deadline_secs = 9223372036854775807\n")
        .expect("refused, not accepted");
}
