//! No credential ever leaves the proxy: the real `examples/proxy` binary,
//! logging at debug level, with every kind of upstream account and the
//! admin and metrics keys configured, is driven through success, upstream
//! errors, failover, an OAuth refresh, bad client keys, `/metrics`,
//! `/admin` and `--check`. Everything it wrote — logs, response heads and
//! bodies, `--check` output — is searched for every configured credential,
//! and the mock upstream checks that no client key reached it.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use support::proxy_process::{binary as proxy_binary, ConfigFile, Proxy};
use support::{chat_body, client, messages_body};
use tower_llm_relay::mock::{
    Fault, FaultPlan, MockProxy, MockUpstream, ProxyKind, AWS_TEST_SECRET_ACCESS_KEY,
};

/// In every credential below, so a fragment of one is found too.
const MARKER: &str = "ZQXLEAK";

const CLIENT_KEY: &str = "sk-relay-ZQXLEAK-client-alpha-7f3e";
const CLIENT_KEY_2: &str = "sk-relay-ZQXLEAK-client-beta-91ab";
/// Never configured: a guess a client sends.
const WRONG_KEY: &str = "sk-relay-ZQXLEAK-wrong-guess-0000";
const ADMIN_KEY: &str = "sk-relay-ZQXLEAK-admin-5c2d";
const METRICS_KEY: &str = "sk-relay-ZQXLEAK-metrics-e8f0";
const API_KEY_1: &str = "sk-ant-api03-ZQXLEAK-api-1-aa11";
const API_KEY_2: &str = "sk-ant-api03-ZQXLEAK-api-2-bb22";
const ERR_401_KEY: &str = "sk-ant-api03-ZQXLEAK-err401-cc33";
const ERR_429_KEY: &str = "sk-ant-api03-ZQXLEAK-err429-dd44";
const ERR_500_KEY: &str = "sk-ant-api03-ZQXLEAK-err500-ee55";
const CUT_KEY: &str = "sk-ant-api03-ZQXLEAK-cut-ff66";
const OAUTH_ACCESS: &str = "sk-ant-oat01-ZQXLEAK-access-1234";
const OAUTH_REFRESH: &str = "sk-ant-ort01-ZQXLEAK-refresh-5678";
/// What the mock's token endpoint hands out on the first refresh.
const REFRESHED_ACCESS: &str = "sk-ant-oat-refreshed-1";
const REFRESHED_REFRESH: &str = "sk-ant-ort-refreshed-1";
/// Given through the environment, not the file.
const OPENAI_KEY: &str = "sk-proj-ZQXLEAK-openai-9abc";
const OPENAI_ERR_KEY: &str = "sk-proj-ZQXLEAK-openai-err-def0";
const AWS_KEY_ID: &str = "AKIAZQXLEAKBEDROCK01";
const AWS_SESSION_TOKEN: &str = "FwoGZXIvYXdzZQXLEAKsessiontoken";
/// The password in the OpenAI account's egress proxy URL.
const EGRESS_PASSWORD: &str = "ZQXLEAK-egress-pw-4d4d";

/// Every upstream credential the proxy holds.
const UPSTREAM_SECRETS: &[&str] = &[
    API_KEY_1,
    API_KEY_2,
    ERR_401_KEY,
    ERR_429_KEY,
    ERR_500_KEY,
    CUT_KEY,
    OAUTH_ACCESS,
    OAUTH_REFRESH,
    REFRESHED_ACCESS,
    REFRESHED_REFRESH,
    OPENAI_KEY,
    OPENAI_ERR_KEY,
    AWS_KEY_ID,
    AWS_TEST_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    EGRESS_PASSWORD,
];

/// Keys clients hold: they may appear in what a client sent, never in
/// what the proxy wrote, nor upstream.
const CLIENT_SECRETS: &[&str] = &[CLIENT_KEY, CLIENT_KEY_2, WRONG_KEY, ADMIN_KEY, METRICS_KEY];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn api_key_account(id: &str, key: &str, models: &str, priority: u32) -> String {
    format!(
        "[[accounts]]\nid = \"{id}\"\nplatform = \"anthropic\"\ntype = \"api_key\"\n\
         api_key = \"{key}\"\nbase_url = \"{{base}}\"\nmodels = [\"{models}\"]\npriority = {priority}\n"
    )
}

/// A config with every account type, each serving its own models so each
/// request reaches the account it means to.
fn config_toml(base: &str, egress: SocketAddr) -> String {
    let mut toml = format!(
        "admin_key = \"{ADMIN_KEY}\"\nmetrics_key = \"{METRICS_KEY}\"\n\
         [[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"alpha\"\n\
         [[keys]]\nkey = \"{CLIENT_KEY_2}\"\nname = \"beta\"\n"
    );
    toml += &api_key_account("api-1", API_KEY_1, "claude-sonnet-*", 1);
    toml += &api_key_account("api-2", API_KEY_2, "claude-sonnet-*", 2);
    toml += &api_key_account("err-401", ERR_401_KEY, "claude-err-401", 1);
    toml += &api_key_account("err-429", ERR_429_KEY, "claude-err-429", 1);
    toml += &api_key_account("err-500", ERR_500_KEY, "claude-err-500", 1);
    toml += &api_key_account("cut", CUT_KEY, "claude-cut", 1);
    toml += &format!(
        "[[accounts]]\nid = \"max-1\"\nplatform = \"anthropic\"\ntype = \"oauth\"\n\
         access_token = \"{OAUTH_ACCESS}\"\nrefresh_token = \"{OAUTH_REFRESH}\"\n\
         expires_at = {}\ntoken_url = \"{{base}}/v1/oauth/token\"\nbase_url = \"{{base}}\"\n\
         models = [\"claude-opus-*\"]\n",
        unix_now() + 60
    );
    toml += &format!(
        "[[accounts]]\nid = \"bedrock-1\"\nplatform = \"anthropic\"\ntype = \"bedrock\"\n\
         aws_region = \"us-east-1\"\naws_access_key_id = \"{AWS_KEY_ID}\"\n\
         aws_secret_access_key = \"{AWS_TEST_SECRET_ACCESS_KEY}\"\n\
         aws_session_token = \"{AWS_SESSION_TOKEN}\"\nbase_url = \"{{base}}\"\n\
         models = [\"claude-haiku-*\"]\n\
         model_mapping = {{ \"claude-haiku-4-5\" = \"anthropic.claude-haiku-4-5-20251001-v1:0\" }}\n"
    );
    toml += "[[accounts]]\nid = \"openai-1\"\nplatform = \"openai\"\ntype = \"api_key\"\n\
             api_key_env = \"RELAY_SECRETS_TEST_OPENAI_KEY\"\nbase_url = \"{base}\"\nmodels = [\"gpt-4o*\"]\n";
    toml += &format!("proxy = \"http://relay-user:{EGRESS_PASSWORD}@{egress}\"\n");
    toml += &format!(
        "[[accounts]]\nid = \"openai-err\"\nplatform = \"openai\"\ntype = \"api_key\"\n\
         api_key = \"{OPENAI_ERR_KEY}\"\nbase_url = \"{{base}}\"\nmodels = [\"gpt-err\"]\n"
    );
    toml.replace("{base}", base)
}

/// One thing the proxy wrote, and where.
struct Output {
    what: String,
    text: String,
}

/// Where any of `secrets` shows in `outputs`: as it is, percent-encoded,
/// in base64, or (for ours) by the marker alone.
fn leaks(outputs: &[Output], secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for output in outputs {
        for secret in secrets {
            let forms = [
                (*secret).to_owned(),
                percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
                base64::engine::general_purpose::STANDARD.encode(secret),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            ];
            if forms.iter().any(|form| output.text.contains(form.as_str())) {
                found.push(format!("`{secret}` in {}", output.what));
            }
        }
        if output.text.contains(MARKER) {
            found.push(format!("the marker {MARKER} in {}", output.what));
        }
    }
    found
}

/// A whole answer as text (status, every header, the body), tolerating a
/// body that ends in an error.
async fn fetch(outputs: &mut Vec<Output>, what: &str, req: Request<Full<Bytes>>) -> (u16, String) {
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .unwrap_or_else(|_| panic!("{what}: an answer within 20 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (parts, mut body) = response.into_parts();
    let mut text = format!("{}\n", parts.status);
    for (name, value) in &parts.headers {
        text += &format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()));
    }
    text += "\n";
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bytes = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline.into(), body.frame()).await {
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    let body = String::from_utf8_lossy(&bytes).into_owned();
    text += &body;
    outputs.push(Output {
        what: format!("the answer to {what}"),
        text,
    });
    (parts.status.as_u16(), body)
}

fn post(
    proxy: &Proxy,
    path: &str,
    key: Option<(&str, &str)>,
    body: String,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(proxy.url(path))
        .header("content-type", "application/json");
    if let Some((name, value)) = key {
        req = req.header(name, value);
    }
    req.body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

fn get(proxy: &Proxy, path: &str, key: Option<(&str, &str)>) -> Request<Full<Bytes>> {
    let mut req = Request::get(proxy.url(path));
    if let Some((name, value)) = key {
        req = req.header(name, value);
    }
    req.body(Full::new(Bytes::new())).expect("a valid request")
}

fn x_api_key(key: &str) -> Option<(&'static str, &str)> {
    Some(("x-api-key", key))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn the_search_finds_a_credential_in_any_form() {
    let probe = |text: String| {
        leaks(
            &[Output {
                what: "a probe".into(),
                text,
            }],
            UPSTREAM_SECRETS,
        )
    };
    assert!(!probe(format!("x-api-key: {API_KEY_1}")).is_empty());
    assert!(!probe(format!(
        "token={}",
        AWS_TEST_SECRET_ACCESS_KEY
            .replace('/', "%2F")
            .replace('+', "%2B")
    ))
    .is_empty());
    assert!(!probe(base64::engine::general_purpose::STANDARD.encode(REFRESHED_REFRESH)).is_empty());
    assert!(!probe("key=sk-ant-…ZQXLEAK…".to_owned()).is_empty());
    assert!(probe("x-api-key: [REDACTED]".to_owned()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_proxy_writes_holds_a_credential() {
    let mock = MockUpstream::start().await.expect("mock upstream starts");
    mock.set_faults(
        ERR_401_KEY,
        FaultPlan::Always(Fault::Status {
            status: 401,
            retry_after: None,
        }),
    );
    mock.set_faults(
        ERR_429_KEY,
        FaultPlan::Always(Fault::Status {
            status: 429,
            // Longer than the relay waits for a cooldown: straight to the client.
            retry_after: Some(30),
        }),
    );
    mock.set_faults(
        ERR_500_KEY,
        FaultPlan::Always(Fault::Status {
            status: 500,
            retry_after: None,
        }),
    );
    mock.set_faults(
        CUT_KEY,
        FaultPlan::Always(Fault::MidStreamCut { after_events: 2 }),
    );
    mock.set_faults(
        OPENAI_ERR_KEY,
        FaultPlan::Always(Fault::Status {
            status: 401,
            retry_after: None,
        }),
    );
    let egress = MockProxy::start(ProxyKind::HttpConnect)
        .await
        .expect("egress proxy starts");
    let config = ConfigFile::new(&config_toml(&mock.base_url(), egress.addr()));
    let mut outputs = Vec::new();

    // `--check` prints the effective config.
    let check = Command::new(proxy_binary())
        .arg("--check")
        .arg("--config")
        .arg(config.path())
        .env("RELAY_SECRETS_TEST_OPENAI_KEY", OPENAI_KEY)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run proxy --check");
    assert!(check.status.success(), "{check:?}");
    let printed = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(printed.contains("bedrock-1"), "{printed}");
    outputs.push(Output {
        what: "--check's stdout".into(),
        text: printed,
    });
    outputs.push(Output {
        what: "--check's stderr".into(),
        text: String::from_utf8_lossy(&check.stderr).into_owned(),
    });

    // Configs it refuses: a typo on a credential's line, a key given twice.
    for (what, text) in [
        (
            "a typo",
            format!("[[keys]]\nkey = \"{CLIENT_KEY}\" name = \"alpha\"\n"),
        ),
        (
            "a key twice",
            format!(
                "[[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"a\"\n[[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"b\"\n"
            ),
        ),
    ] {
        let bad = ConfigFile::new(&text);
        let refused = Command::new(proxy_binary())
            .arg("--config")
            .arg(bad.path())
            .output()
            .expect("run proxy on a bad config");
        assert_eq!(refused.status.code(), Some(2), "{what}: {refused:?}");
        outputs.push(Output {
            what: format!("the error for {what}"),
            text: String::from_utf8_lossy(&refused.stderr).into_owned()
                + &String::from_utf8_lossy(&refused.stdout),
        });
    }

    let mut proxy = Proxy::start_with(
        config.path(),
        &[
            ("RUST_LOG", "debug"),
            ("RELAY_SECRETS_TEST_OPENAI_KEY", OPENAI_KEY),
        ],
        &[],
        true,
    );
    // Read the logs as they come: a full pipe would stall the proxy.
    let mut stderr = proxy.stderr.take().expect("stderr is piped");
    let logs = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });

    let o = &mut outputs;
    let p = &proxy;
    let sonnet = || messages_body("claude-sonnet-4-5", false);

    // Successes on every account type, streamed and not.
    let (status, body) = fetch(
        o,
        "a message",
        post(p, "/v1/messages", x_api_key(CLIENT_KEY), sonnet()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fetch(
        o,
        "a stream",
        post(
            p,
            "/v1/messages",
            Some(("authorization", bearer(CLIENT_KEY_2).as_str())),
            messages_body("claude-sonnet-4-5", true),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("message_stop"), "{body}");
    let (status, body) = fetch(
        o,
        "count_tokens",
        post(
            p,
            "/v1/messages/count_tokens",
            x_api_key(CLIENT_KEY),
            sonnet(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for stream in [false, true] {
        let (status, body) = fetch(
            o,
            "an OAuth message",
            post(
                p,
                "/v1/messages",
                x_api_key(CLIENT_KEY),
                messages_body("claude-opus-4-1", stream),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = fetch(
            o,
            "a Bedrock message",
            post(
                p,
                "/v1/messages",
                x_api_key(CLIENT_KEY),
                messages_body("claude-haiku-4-5", stream),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = fetch(
            o,
            "a chat completion",
            post(
                p,
                "/v1/chat/completions",
                Some(("authorization", bearer(CLIENT_KEY).as_str())),
                chat_body("gpt-4o", stream),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let responses = serde_json::json!({"model": "gpt-4o", "input": "Hello"}).to_string();
    let (status, body) = fetch(
        o,
        "a response",
        post(p, "/v1/responses", x_api_key(CLIENT_KEY), responses),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.token_refreshes(), 1, "the OAuth account was refreshed");
    assert!(
        egress.tunnels() >= 1,
        "OpenAI traffic went through the egress proxy"
    );

    // Upstream errors that reach the client, and one cut mid-stream.
    for (model, stream) in [
        ("claude-err-401", false),
        ("claude-err-429", false),
        ("claude-err-500", false),
        ("claude-err-500", true),
        ("claude-cut", true),
    ] {
        let (status, body) = fetch(
            o,
            &format!("a message to {model}"),
            post(
                p,
                "/v1/messages",
                x_api_key(CLIENT_KEY),
                messages_body(model, stream),
            ),
        )
        .await;
        assert!(
            status != 200 || body.contains("error"),
            "{model}: {status} {body}"
        );
    }
    let (status, _) = fetch(
        o,
        "a chat completion to a 401",
        post(
            p,
            "/v1/chat/completions",
            x_api_key(CLIENT_KEY),
            chat_body("gpt-err", false),
        ),
    )
    .await;
    assert_ne!(status, 200);

    // A failover: api-1 fails once, api-2 serves.
    mock.set_faults(
        API_KEY_1,
        FaultPlan::Sequence(vec![Fault::Status {
            status: 500,
            retry_after: None,
        }]),
    );
    let (status, body) = fetch(
        o,
        "a failover",
        post(p, "/v1/messages", x_api_key(CLIENT_KEY), sonnet()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let served: Vec<_> = mock
        .received()
        .iter()
        .filter_map(|r| r.credential.clone())
        .collect();
    assert!(
        served.iter().any(|c| c == API_KEY_2),
        "api-2 took over: {served:?}"
    );

    // Bad and missing client keys, on both APIs.
    for (what, req) in [
        (
            "a wrong x-api-key",
            post(p, "/v1/messages", x_api_key(WRONG_KEY), sonnet()),
        ),
        (
            "a wrong bearer",
            post(
                p,
                "/v1/chat/completions",
                Some(("authorization", bearer(WRONG_KEY).as_str())),
                chat_body("gpt-4o", false),
            ),
        ),
        (
            "an upstream key as client key",
            post(p, "/v1/messages", x_api_key(API_KEY_1), sonnet()),
        ),
        (
            "the admin key as client key",
            post(p, "/v1/messages", x_api_key(ADMIN_KEY), sonnet()),
        ),
        ("no key", post(p, "/v1/messages", None, sonnet())),
    ] {
        let (status, body) = fetch(o, what, req).await;
        assert_eq!(status, 401, "{what}: {body}");
    }

    // The operator's pages, with and without their keys.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{ADMIN_KEY}"))
    );
    let (status, body) = fetch(
        o,
        "/admin",
        get(p, "/admin", Some(("authorization", &basic))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("max-1"), "{body}");
    let (status, body) = fetch(
        o,
        "/admin/accounts",
        get(
            p,
            "/admin/accounts",
            Some(("authorization", bearer(ADMIN_KEY).as_str())),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("bedrock-1"), "{body}");
    let (status, body) = fetch(
        o,
        "/admin/keys",
        get(p, "/admin/keys", x_api_key(ADMIN_KEY)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alpha"), "{body}");
    let (status, _) = fetch(
        o,
        "/admin with a client key",
        get(p, "/admin/keys", x_api_key(CLIENT_KEY)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = fetch(
        o,
        "/metrics",
        get(
            p,
            "/metrics",
            Some(("authorization", bearer(METRICS_KEY).as_str())),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("relay_"), "{body}");
    let (status, _) = fetch(o, "/metrics without its key", get(p, "/metrics", None)).await;
    assert_eq!(status, 401);
    let (status, body) = fetch(o, "/v1/models", get(p, "/v1/models", x_api_key(CLIENT_KEY))).await;
    assert_eq!(status, 200, "{body}");

    // Stop it cleanly so every queued log line is written.
    let pid = proxy.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(status) = proxy.child.try_wait().expect("wait on the proxy") {
            break status;
        }
        assert!(Instant::now() < deadline, "the proxy did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let logs = logs.join().expect("the log reader");
    assert!(logs.contains("DEBUG"), "debug lines were logged:\n{logs}");
    assert!(logs.contains("OAuth tokens refreshed"), "{logs}");
    assert!(logs.matches("answered").count() >= 15, "{logs}");
    outputs.push(Output {
        what: "the logs".into(),
        text: logs,
    });

    let every_secret: Vec<&str> = UPSTREAM_SECRETS
        .iter()
        .chain(CLIENT_SECRETS)
        .copied()
        .collect();
    let found = leaks(&outputs, &every_secret);
    assert!(
        found.is_empty(),
        "credentials leaked:\n{}",
        found.join("\n")
    );

    // Upstream saw account credentials only, never a client's key.
    let received = mock.received();
    assert!(received.len() >= 15, "{} upstream requests", received.len());
    for request in &received {
        let mut seen = format!("{} {}\n", request.method, request.path_and_query);
        for (name, value) in &request.headers {
            seen += &format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()));
        }
        seen += &String::from_utf8_lossy(&request.body);
        for key in CLIENT_SECRETS {
            assert!(!seen.contains(key), "`{key}` went upstream:\n{seen}");
        }
    }
    assert!(received.iter().any(|r| r
        .headers
        .get("authorization")
        .is_some_and(|v| v == bearer(REFRESHED_ACCESS).as_str())));
}
