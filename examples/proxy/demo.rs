//! `--demo`: the proxy on the bundled mock upstream, no keys needed.

use std::net::SocketAddr;
use std::time::Duration;

use tower_llm_relay::config::{Config, ConfigError};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};

/// The client key the demo accepts.
pub(crate) const DEMO_KEY: &str = "sk-relay-demo";

/// The demo's admin key (status page, `/admin/*`).
pub(crate) const DEMO_ADMIN_KEY: &str = "sk-relay-demo-admin";

/// The running mock; dropping it stops the mock.
pub(crate) struct Demo {
    _mock: MockUpstream,
}

/// Starts the mock and returns a config whose accounts point at it: two
/// Anthropic API-key accounts, one subscription account whose every fourth
/// request is answered 529 (overloaded: watch `x-relay-attempts` show the
/// failover), and one OpenAI account.
pub(crate) async fn start() -> Result<(Config, Demo), Box<dyn std::error::Error>> {
    let mock = MockUpstream::builder()
        .event_interval(Duration::from_millis(30))
        .start()
        .await?;
    mock.set_faults(
        "sk-ant-oat-demo-flaky",
        FaultPlan::EveryNth {
            n: 4,
            fault: Fault::Status {
                status: 529,
                retry_after: None,
            },
        },
    );
    let config = demo_config(&mock.base_url())?;
    Ok((config, Demo { _mock: mock }))
}

fn demo_config(base_url: &str) -> Result<Config, ConfigError> {
    let toml = format!(
        r#"
listen = "127.0.0.1:8080"
admin_key = "{DEMO_ADMIN_KEY}"

[[keys]]
key = "{DEMO_KEY}"
name = "demo"

[[accounts]]
id = "demo-anthropic-1"
platform = "anthropic"
type = "api_key"
api_key = "sk-ant-api-demo-1"
base_url = "{base_url}"
model_mapping = {{ "claude-sonnet-4-5" = "claude-sonnet-4-5-20250929" }}

[[accounts]]
id = "demo-anthropic-2"
platform = "anthropic"
type = "api_key"
api_key = "sk-ant-api-demo-2"
base_url = "{base_url}"

[[accounts]]
id = "demo-subscription-flaky"
platform = "anthropic"
type = "setup_token"
access_token = "sk-ant-oat-demo-flaky"
base_url = "{base_url}"

[[accounts]]
id = "demo-openai-1"
platform = "openai"
type = "api_key"
api_key = "sk-openai-demo-1"
base_url = "{base_url}"
"#
    );
    Config::from_toml(&toml, "(demo config)", |_| None)
}

impl Demo {
    /// Tells the person at the terminal how to try it.
    pub(crate) fn print_instructions(&self, listen: SocketAddr) {
        println!("demo: mock upstream running; client key: {DEMO_KEY}");
        println!(
            "status page: http://admin:{DEMO_ADMIN_KEY}@{listen}/admin (any user name, the admin key as password)"
        );
        println!("try:");
        println!(
            "  curl -s http://{listen}/v1/messages -H 'x-api-key: {DEMO_KEY}' -H 'content-type: application/json' \\\n    -d '{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
        );
        println!(
            "  curl -sN http://{listen}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\\n    -d '{{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
        );
    }
}
