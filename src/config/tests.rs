use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn error(toml: &str) -> String {
    match Config::from_toml(toml, "relay.toml", no_env) {
        Ok(_) => panic!("expected an error for {toml}"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"
listen = "127.0.0.1:9090"
body_limit_bytes = 1000
admin_key = "sk-relay-admin"
max_connections = 10
header_limit_bytes = 4096
idle_timeout_secs = 5
listen_backlog = 64

[state]
backend = "memory"
on_error = "fail_closed"
timeout_ms = 150

[scheduling]
sticky_ttl_secs = 60
failover_on_400 = true
anthropic_policy = "scored_top_k"
score_weights = { priority = 2.0, load = 1.0, queue = 0.5, error_rate = 0.8, ttft = 0.1 }
session_header = "x-session-id"

[[keys]]
key = "sk-relay-alice"
name = "alice"
group = "team"
models = ["claude-*"]
rpm = 10
concurrency = 2

[[accounts]]
id = "claude-max-1"
platform = "anthropic"
type = "oauth"
group = "team"
base_url = "http://127.0.0.1:9999"
access_token = "sk-ant-oat-secret"
refresh_token = "sk-ant-ort-secret"
expires_at = 1767225600
token_url = "http://127.0.0.1:9999/v1/oauth/token"
priority = 2
concurrency = 3
model_mapping = { "claude-sonnet-4-5" = "claude-sonnet-4-5-20250929" }
proxy = "http://127.0.0.1:3128"

[[accounts]]
id = "openai-1"
platform = "openai"
type = "api_key"
api_key = "sk-openai-secret"

[[accounts]]
id = "bedrock-1"
platform = "anthropic"
type = "bedrock"
aws_region = "us-east-1"
aws_access_key_id = "AKIDEXAMPLE"
aws_secret_access_key = "secret"
"#;

#[test]
fn full_example_parses_with_every_field() {
    let config = Config::from_toml(FULL, "relay.toml", no_env).unwrap();
    assert_eq!(config.listen.port(), 9090);
    assert_eq!(config.body_limit_bytes, 1000);
    assert_eq!(config.max_connections, 10);
    assert_eq!(config.state.on_error, OnStateError::FailClosed);
    assert_eq!(config.scheduling.sticky_ttl, Duration::from_secs(60));
    assert_eq!(
        config.scheduling.anthropic_policy,
        SelectionPolicy::ScoredTopK
    );
    assert_eq!(config.scheduling.score_weights.priority, 2.0);
    assert_eq!(config.keys.len(), 1);
    let alice = config.keys.find("sk-relay-alice").unwrap();
    assert_eq!(alice.group_name(), "team");
    assert!(!alice.may_use("gpt-4o"));
    let accounts = config.accounts.accounts();
    assert_eq!(accounts.len(), 3);
    // Sorted by priority: the priority-2 OAuth account comes last.
    assert_eq!(accounts[2].id().as_str(), "claude-max-1");
    assert_eq!(accounts[2].base_url(), "http://127.0.0.1:9999");
    assert_eq!(accounts[2].proxy(), Some("http://127.0.0.1:3128"));
    assert_eq!(
        accounts[2].upstream_model("claude-sonnet-4-5"),
        "claude-sonnet-4-5-20250929"
    );
    assert_eq!(
        accounts
            .iter()
            .find(|a| a.id().as_str() == "bedrock-1")
            .map(|a| a.base_url()),
        Some("https://bedrock-runtime.us-east-1.amazonaws.com")
    );
}

#[test]
fn debug_output_holds_no_secret() {
    let config = Config::from_toml(FULL, "relay.toml", no_env).unwrap();
    let debug = format!("{config:?}");
    for secret in [
        "sk-relay-alice",
        "sk-ant-oat-secret",
        "sk-ant-ort-secret",
        "sk-openai-secret",
        "AKIDEXAMPLE",
        "sk-relay-admin",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
    }
}

#[test]
fn env_credentials_resolve() {
    let toml = r#"
        [[keys]]
        key_env = "K"
        name = "k"
        [[accounts]]
        id = "a"
        platform = "openai"
        type = "api_key"
        api_key_env = "A"
    "#;
    let env = |n: &str| match n {
        "K" => Some("client".to_owned()),
        "A" => Some("upstream".to_owned()),
        _ => None,
    };
    let config = Config::from_toml(toml, "relay.toml", env).unwrap();
    assert!(config.keys.find("client").is_some());
}

#[test]
fn bedrock_credentials_come_from_the_environment_too() {
    let toml = r#"
        [[accounts]]
        id = "bedrock-env"
        platform = "anthropic"
        type = "bedrock"
        aws_region = "eu-west-1"
        aws_access_key_id_env = "AKID"
        aws_secret_access_key_env = "SECRET"
        aws_session_token_env = "TOKEN"
        base_url = "http://127.0.0.1:9"
        model_mapping = { "claude-sonnet-4-5" = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0" }
    "#;
    let env = |n: &str| match n {
        "AKID" => Some("AKIDFROMENV".to_owned()),
        "SECRET" => Some("secret-from-env".to_owned()),
        "TOKEN" => Some("token-from-env".to_owned()),
        _ => None,
    };
    let config = Config::from_toml(toml, "relay.toml", env).unwrap();
    let account = config.accounts.accounts()[0].clone();
    let Credentials::Bedrock {
        region,
        access_key_id,
        secret_access_key,
        session_token,
    } = account.credentials()
    else {
        panic!("a bedrock account");
    };
    assert_eq!(region, "eu-west-1");
    assert_eq!(access_key_id.expose_secret(), "AKIDFROMENV");
    assert_eq!(secret_access_key.expose_secret(), "secret-from-env");
    assert_eq!(
        session_token.as_ref().map(|t| t.expose_secret()),
        Some("token-from-env")
    );
    assert_eq!(account.base_url(), "http://127.0.0.1:9");
    assert!(account.serves_model("claude-sonnet-4-5"));
    assert!(
        !account.serves_model("claude-haiku-4-5"),
        "unmapped models are not Bedrock's"
    );
    assert!(!format!("{config:?}").contains("secret-from-env"));
}

#[test]
fn errors_name_the_file_and_the_field() {
    let cases = [
        ("listen = \"nowhere\"", "listen"),
        ("lisen = \"127.0.0.1:1\"", "lisen"),
        ("[[keys]]\nname = \"a\"", "keys[0].key"),
        ("[[keys]]\nkey = \"k\"", "keys[0].name"),
        ("[[keys]]\nkey = \"k\"\nname = \"a\"\n[[keys]]\nkey = \"k\"\nname = \"b\"", "keys[1].key"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"", "accounts[0].api_key"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"gemini\"\ntype = \"api_key\"", "accounts[0].platform"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"openai\"\ntype = \"oauth\"\naccess_token = \"t\"", "accounts[0].type"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key = \"k\"\nbase_url = \"ftp://x\"", "accounts[0].base_url"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key = \"k\"\nbase_url = \"https://x/v1\"", "accounts[0].base_url"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key = \"k\"\napi_key_env = \"X\"", "accounts[0].api_key"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key_env = \"MISSING\"", "accounts[0].api_key_env"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key = \"k\"\n[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\napi_key = \"k\"", "accounts[1].id"),
        ("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"bedrock\"\naws_access_key_id = \"k\"\naws_secret_access_key = \"s\"", "accounts[0].aws_region"),
        ("[state]\nbackend = \"etcd\"", "state.backend"),
        ("[state]\nbackend = \"redis\"", "state.url"),
        ("[state]\nbackend = \"redis\"\nurl = \"http://x\"", "state.url"),
        ("[state]\ntimeout_ms = 0", "state.timeout_ms"),
        ("[scheduling]\nanthropic_policy = \"random\"", "scheduling.anthropic_policy"),
        ("body_limit_bytes = 0", "body_limit_bytes"),
    ];
    for (toml, field) in cases {
        let message = error(toml);
        assert!(message.starts_with("relay.toml: "), "{message}");
        assert!(message.contains(field), "`{field}` not named in: {message}");
    }
}

#[test]
fn syntax_errors_give_the_line() {
    let message = error("listen = \n[[keys]");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn a_syntax_error_on_a_credentials_line_gives_the_place_not_the_text() {
    let message = error("[[accounts]]\nid = \"a\"\napi_key = \"sk-very-secret\" priority = 1\n");
    assert!(message.contains("line 3, column "), "{message}");
    assert!(!message.contains("sk-very-secret"), "{message}");
    let unterminated = error("[[keys]]\nkey = \"sk-very-secret\nname = \"x\"\n");
    assert!(unterminated.contains("line 2"), "{unterminated}");
    assert!(!unterminated.contains("sk-very-secret"), "{unterminated}");
}

#[test]
fn a_type_error_names_the_field_by_its_path() {
    let err = Config::from_toml(
        "[[accounts]]\nid = \"a\"\nconcurrency = \"many\"\n",
        "relay.toml",
        no_env,
    )
    .expect_err("a string is not a concurrency");
    assert_eq!(err.field(), "accounts[0].concurrency");
    assert!(err.to_string().contains("line 3"), "{err}");
    let unknown = Config::from_toml("[scheduling]\nstiky_ttl_secs = 1\n", "relay.toml", no_env)
        .expect_err("a misspelt field is refused");
    assert_eq!(unknown.field(), "scheduling");
    assert!(
        unknown.to_string().contains("`stiky_ttl_secs`"),
        "{unknown}"
    );
}

#[test]
fn secrets_do_not_appear_in_errors() {
    let toml = "[[accounts]]\nid = \"a\"\nplatform = \"openai\"\ntype = \"oauth\"\naccess_token = \"sk-very-secret\"";
    assert!(!error(toml).contains("sk-very-secret"));
}

#[test]
fn the_bundled_example_config_is_valid() {
    let text = include_str!("../../examples/relay.toml");
    let env = |name: &str| Some(format!("test-value-of-{name}"));
    let config = Config::from_toml(text, "examples/relay.toml", env).unwrap();
    assert_eq!(config.accounts.accounts().len(), 3);
    assert!(config.keys.find("test-value-of-RELAY_ALICE_KEY").is_some());
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
}

#[test]
fn redis_state_is_read_with_its_defaults() {
    let toml = "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n";
    let config = Config::from_toml(toml, "relay.toml", no_env).unwrap();
    assert_eq!(config.state.backend, StateBackend::Redis);
    assert_eq!(config.state.prefix, "relay:");
    assert_eq!(config.state.on_error, OnStateError::FailOpen);
    assert_eq!(config.state.timeout, Duration::from_millis(200));
    assert_eq!(config.state.lease_ttl, Duration::from_secs(15));
    assert!(config.state.store().is_some());
}

#[test]
fn debug_output_hides_passwords_in_urls() {
    let toml = "[state]\nbackend = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n\
                [[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\n\
                api_key = \"sk-very-secret\"\nproxy = \"http://user:hunter3@127.0.0.1:3128\"\n";
    let config = Config::from_toml(toml, "relay.toml", no_env).expect("valid");
    let printed = format!("{config:?}");
    for secret in ["hunter2", "hunter3", "sk-very-secret"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    assert!(
        printed.contains("redis://[REDACTED]@127.0.0.1:6379/0"),
        "{printed}"
    );
}
