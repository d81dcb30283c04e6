//! Drives the real `examples/proxy` binary through its config file, as an
//! operator would.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::proxy_process::{binary as proxy_binary, ConfigFile, Proxy};
use support::{account, messages_body};

#[tokio::test]
async fn the_proxy_serves_from_its_config_file_and_stops_cleanly_on_sigterm() {
    let mock = tower_llm_relay::mock::MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:1\"\n[[keys]]\nkey_env = \"RELAY_TEST_KEY\"\nname = \"ops\"\n{}",
        account(
            "claude-1",
            "anthropic",
            "api_key",
            "sk-ant-file-1",
            &mock.base_url()
        )
    ));
    let mut running = Proxy::start(config.path(), &[("RELAY_TEST_KEY", "sk-relay-from-env")]);

    let health = support::send(
        Request::get(format!("http://{}/healthz", running.addr))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok");

    let answer = support::send(running.messages("sk-relay-from-env", false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock.received()[0].response_body);
    assert_eq!(mock.received()[0].headers["x-api-key"], "sk-ant-file-1");

    let pid = running.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status =
        wait_with_timeout(&mut running.child, Duration::from_secs(10)).expect("the proxy exits");
    assert!(status.success(), "exit status {status:?}");
}

/// A client that keeps its connection open does not hold the stop up:
/// the connection is told to close, and the proxy exits long before its
/// 30 s grace period (or the 60 s idle timeout) would end it.
#[tokio::test]
async fn sigterm_closes_open_keep_alive_connections_at_once() {
    let mock = tower_llm_relay::mock::MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:1\"\n[[keys]]\nkey = \"sk-relay-open\"\nname = \"ops\"\n{}",
        account(
            "claude-1",
            "anthropic",
            "api_key",
            "sk-ant-1",
            &mock.base_url()
        )
    ));
    let mut running = Proxy::start(config.path(), &[]);
    let stream = tokio::net::TcpStream::connect(&running.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let answer = sender
        .send_request(running.messages("sk-relay-open", false))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap();
    assert!(!connection.is_finished(), "kept alive after the answer");

    let pid = running.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status =
        wait_with_timeout(&mut running.child, Duration::from_secs(10)).expect("the proxy exits");
    assert!(status.success(), "exit status {status:?}");
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the proxy closed the connection")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_proxy_logs_one_usage_line_per_request() {
    let mock = tower_llm_relay::mock::MockUpstream::start().await.unwrap();
    let config = ConfigFile::new(&format!(
        "[[keys]]\nkey = \"sk-relay-log\"\nname = \"ops\"\n{}",
        account("claude-1", "anthropic", "api_key", "k1", &mock.base_url())
    ));
    let mut running = Proxy::start_with(
        config.path(),
        &[("RUST_LOG", "info")],
        &["--log-json"],
        true,
    );
    let stderr = running.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let answer = support::send(running.messages("sk-relay-log", true)).await;
    assert_eq!(answer.status, 200);
    let usage_line = rx
        .iter()
        .take(200)
        .find(|l| l.contains("tower_llm_relay::usage"))
        .expect("a usage log line");
    let logged: serde_json::Value = serde_json::from_str(&usage_line).expect("a JSON log line");
    let fields = &logged["fields"];
    assert_eq!(fields["account"], "claude-1");
    assert_eq!(fields["output_tokens"], 5);
    assert!(fields["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert!(fields["first_token_ms"].is_u64());
    assert_eq!(fields["complete"], true);
    assert_eq!(
        fields["request_id"].as_str(),
        answer.headers["x-relay-request-id"].to_str().ok()
    );
}

#[test]
fn a_bad_config_stops_the_proxy_before_it_listens_naming_the_field() {
    let config = ConfigFile::new("[[accounts]]\nid = \"a\"\nplatform = \"anthropic\"\ntype = \"api_key\"\nbase_url = \"http://x\"\n");
    let output = Command::new(proxy_binary())
        .arg("--config")
        .arg(config.path())
        .output()
        .expect("run proxy");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&config.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("accounts[0].api_key"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening on"));
}

#[test]
fn a_missing_config_file_is_reported() {
    let output = Command::new(proxy_binary())
        .args(["--config", "/nonexistent/relay.toml"])
        .output()
        .expect("run proxy");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/relay.toml"));
}

#[tokio::test]
async fn the_demo_answers_its_own_curl_line() {
    let mut child = Command::new(proxy_binary())
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("text");
    let addr = first
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    let printed: Vec<String> = lines.by_ref().take(3).map_while(Result::ok).collect();
    let mut running = Proxy {
        child,
        addr,
        stderr: None,
    };
    let key_line = printed
        .iter()
        .find(|l| l.contains("client key"))
        .expect("the key is printed");
    let key = key_line.rsplit(' ').next().expect("key");
    let answer = support::send(
        Request::post(format!("http://{}/v1/messages", running.addr))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(messages_body(
                "claude-sonnet-4-5",
                false,
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["type"], "message");
    assert_eq!(answer.json()["model"], "claude-sonnet-4-5");
    let _ = running.child.kill();
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn check_prints_the_effective_config_without_a_credential() {
    let config = ConfigFile::new(
        "admin_key = \"sk-relay-admin-check\"\n\
         [[keys]]\nkey = \"sk-relay-check-alice\"\nname = \"alice\"\n\
         [[accounts]]\nid = \"claude-1\"\nplatform = \"anthropic\"\ntype = \"oauth\"\n\
         access_token = \"sk-ant-oat-check\"\nrefresh_token = \"sk-ant-ort-check\"\n\
         proxy = \"http://egress-user:egress-pw@127.0.0.1:3128\"\n",
    );
    let output = Command::new(proxy_binary())
        .arg("--check")
        .arg("--config")
        .arg(config.path())
        .output()
        .expect("run proxy --check");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    for secret in [
        "sk-relay-admin-check",
        "sk-relay-check-alice",
        "sk-ant-oat-check",
        "sk-ant-ort-check",
        "egress-pw",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    let effective: toml::Table = toml::from_str(&printed).expect("the output is TOML");
    assert_eq!(
        effective["scheduling"]["sticky_ttl_secs"].as_integer(),
        Some(3600)
    );
    assert_eq!(effective["accounts"][0]["id"].as_str(), Some("claude-1"));
    assert_eq!(
        effective["accounts"][0]["refresh_token"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(effective["keys"][0]["name"].as_str(), Some("alice"));
    assert!(!printed.contains("listening on"));

    let bad = ConfigFile::new("[scheduling]\ntop_k = \"seven\"\n");
    let output = Command::new(proxy_binary())
        .arg("--check")
        .arg("--config")
        .arg(bad.path())
        .output()
        .expect("run proxy --check");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("top_k"));
}
