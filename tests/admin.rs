//! The proxy's admin API, through the real binary.

mod support;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::proxy_process::{ConfigFile, Proxy};
use support::{account, messages_body};
use tower_llm_relay::mock::MockUpstream;

fn get(url: String, auth: Option<(&str, String)>) -> Request<Full<Bytes>> {
    let mut req = Request::get(url);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn admin_accounts_shows_state_to_the_admin_key_only() {
    let mock = MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "admin_key = \"sk-relay-admin-test\"\n[[keys]]\nkey = \"sk-relay-c\"\nname = \"c\"\n{}",
        account(
            "acct-1",
            "anthropic",
            "api_key",
            "sk-ant-secret-admin",
            &mock.base_url()
        )
    ));
    let proxy = Proxy::start(config.path(), &[]);
    let served = support::send(
        Request::post(proxy.url("/v1/messages"))
            .header("x-api-key", "sk-relay-c")
            .body(Full::new(Bytes::from(messages_body(
                "claude-sonnet-4-5",
                false,
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(served.status, 200);

    let refused = support::send(get(proxy.url("/admin/accounts"), None)).await;
    assert_eq!(refused.status, 401);
    let wrong = support::send(get(
        proxy.url("/admin/accounts"),
        Some(("x-api-key", "sk-relay-c".into())),
    ))
    .await;
    assert_eq!(wrong.status, 401, "a client key is not the admin key");

    let basic = base64::engine::general_purpose::STANDARD.encode("anyone:sk-relay-admin-test");
    for auth in [
        ("authorization", "Bearer sk-relay-admin-test".to_owned()),
        ("x-api-key", "sk-relay-admin-test".to_owned()),
        ("authorization", format!("Basic {basic}")),
    ] {
        let answer = support::send(get(proxy.url("/admin/accounts"), Some(auth))).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let json = answer.json();
        let first = &json["accounts"][0];
        assert_eq!(first["id"], "acct-1");
        assert_eq!(first["in_flight"], 0);
        assert_eq!(first["concurrency"], 4);
        assert!(first["cooldown_until"].is_null());
        assert!(
            !answer.text().contains("sk-ant-secret-admin"),
            "a credential leaked"
        );
    }
}

#[tokio::test]
async fn without_an_admin_key_admin_paths_are_404() {
    let mock = MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "[[keys]]\nkey = \"sk-relay-c\"\nname = \"c\"\n{}",
        account("acct-1", "anthropic", "api_key", "k", &mock.base_url())
    ));
    let proxy = Proxy::start(config.path(), &[]);
    for path in ["/admin", "/admin/accounts", "/admin/keys"] {
        let answer = support::send(get(
            proxy.url(path),
            Some(("authorization", "Bearer anything".into())),
        ))
        .await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.json()["type"], "error");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_per_account_state() {
    let mock = MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "metrics_key = \"sk-relay-metrics\"\n[[keys]]\nkey = \"sk-relay-c\"\nname = \"c\"\n{}",
        account(
            "acct-1",
            "anthropic",
            "api_key",
            "sk-ant-secret-m",
            &mock.base_url()
        )
    ));
    let proxy = Proxy::start(config.path(), &[]);
    let served = support::send(
        Request::post(proxy.url("/v1/messages"))
            .header("x-api-key", "sk-relay-c")
            .body(Full::new(Bytes::from(messages_body(
                "claude-sonnet-4-5",
                false,
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(served.status, 200);
    let refused = support::send(get(proxy.url("/metrics"), None)).await;
    assert_eq!(refused.status, 401);
    let answer = support::send(get(
        proxy.url("/metrics"),
        Some(("authorization", "Bearer sk-relay-metrics".into())),
    ))
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = answer.text();
    assert!(text.contains("relay_requests_total{"), "{text}");
    assert!(text.contains("account=\"acct-1\""), "{text}");
    assert!(
        text.contains("relay_account_in_flight{account=\"acct-1\"} 0"),
        "{text}"
    );
    assert!(
        !text.contains("sk-ant-secret-m") && !text.contains("sk-relay-c"),
        "a credential leaked"
    );
}

#[tokio::test]
async fn admin_keys_shows_usage_per_key_name_never_the_key() {
    let mock = MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "admin_key = \"sk-relay-admin-test\"\n\
         [[keys]]\nkey = \"sk-relay-key-alice\"\nname = \"alice\"\n\
         [[keys]]\nkey = \"sk-relay-key-bob\"\nname = \"bob\"\ngroup = \"other\"\n{}",
        account(
            "acct-1",
            "anthropic",
            "api_key",
            "sk-ant-secret-keys",
            &mock.base_url()
        )
    ));
    let proxy = Proxy::start(config.path(), &[]);
    for stream in [false, true] {
        let served = support::send(
            Request::post(proxy.url("/v1/messages"))
                .header("x-api-key", "sk-relay-key-alice")
                .body(Full::new(Bytes::from(messages_body(
                    "claude-sonnet-4-5",
                    stream,
                ))))
                .unwrap(),
        )
        .await;
        assert_eq!(served.status, 200);
    }
    let admin = || Some(("x-api-key", "sk-relay-admin-test".to_owned()));
    assert_eq!(
        support::send(get(proxy.url("/admin/keys"), None))
            .await
            .status,
        401
    );
    // Usage is reported when a body ends, just after the client has it.
    let mut keys = serde_json::Value::Null;
    for _ in 0..50 {
        keys = support::send(get(proxy.url("/admin/keys"), admin()))
            .await
            .json();
        if keys["keys"][0]["usage"]["requests"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let alice = &keys["keys"][0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["usage"]["requests"], 2);
    assert!(alice["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(alice["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let bob = &keys["keys"][1];
    assert_eq!(
        (bob["name"].as_str(), bob["group"].as_str()),
        (Some("bob"), Some("other"))
    );
    assert_eq!(bob["usage"]["requests"], 0);
    let text = keys.to_string();
    for secret in [
        "sk-relay-key-alice",
        "sk-relay-key-bob",
        "sk-ant-secret-keys",
        "sk-relay-admin-test",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    let accounts = support::send(get(proxy.url("/admin/accounts"), admin()))
        .await
        .json();
    assert_eq!(accounts["accounts"][0]["usage"]["requests"], 2);
}

/// The value of the Prometheus sample whose line starts with `series`
/// (name and labels), or 0 when there is none yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_as_requests_are_served_and_fail() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_faults(
        "sk-ant-m-bad",
        tower_llm_relay::mock::FaultPlan::Always(tower_llm_relay::mock::Fault::Status {
            status: 529,
            retry_after: None,
        }),
    );
    let base = mock.base_url();
    let config = ConfigFile::new(&format!(
        "[[keys]]\nkey = \"sk-relay-m\"\nname = \"m\"\n{}priority = 1\n{}priority = 2\n",
        account("m-bad", "anthropic", "api_key", "sk-ant-m-bad", &base),
        account("m-good", "anthropic", "api_key", "sk-ant-m-good", &base),
    ));
    let proxy = Proxy::start(config.path(), &[]);
    let scrape = || async { support::send(get(proxy.url("/metrics"), None)).await.text() };
    let call = |key: &'static str| {
        support::send(
            Request::post(proxy.url("/v1/messages"))
                .header("x-api-key", key)
                .body(Full::new(Bytes::from(messages_body(
                    "claude-sonnet-4-5",
                    false,
                ))))
                .unwrap(),
        )
    };
    let served = r#"relay_requests_total{route="/v1/messages",status="200",account="m-good",outcome="served"}"#;
    let switches = r#"relay_account_switches_total{account="m-bad"}"#;
    let refused = r#"relay_errors_total{status="401"}"#;
    let tokens = r#"relay_tokens_total{kind="output",key="m",account="m-good"}"#;

    let before = scrape().await;
    assert_eq!(call("sk-relay-m").await.status, 200);
    assert_eq!(call("sk-relay-wrong").await.status, 401);
    // Usage is counted when the body ends, just after the client has it.
    let mut after = scrape().await;
    for _ in 0..50 {
        if sample(&after, tokens) > sample(&before, tokens) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = scrape().await;
    }
    assert_eq!(
        sample(&after, served) - sample(&before, served),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, switches) - sample(&before, switches),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, refused) - sample(&before, refused),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, tokens) - sample(&before, tokens),
        5.0,
        "{after}"
    );
}
