//! What the relay logs: one line per request with who, what model, which
//! account — and never a credential or message content.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::{account, Harness, CLIENT_KEY};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's log lines up to `level`, as the proxy writes
/// them without colour, while the guard lives.
fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// A relay with one Anthropic API-key account on the mock upstream.
async fn harness() -> Harness {
    Harness::start(&account(
        "acct-1",
        "anthropic",
        "api_key",
        "sk-ant-upstream-secret",
        "{base}",
    ))
    .await
}

#[tokio::test]
async fn one_line_per_request_without_secrets_or_content() {
    let (captured, _guard) = capture(tracing::Level::DEBUG);

    let h = harness().await;
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "system": "private system prompt",
        "messages": [{"role": "user", "content": "private message content"}],
    });
    let answer = h.call("/v1/messages", &body.to_string()).await;
    assert_eq!(answer.status, 200);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("answered"))
        .unwrap_or_else(|| panic!("{logs}"));
    for field in [
        "key=\"test\"",
        "model=\"claude-sonnet-4-5\"",
        "status=200",
        "account=acct-1",
        "session=\"",
    ] {
        assert!(line.contains(field), "`{field}` missing from: {line}");
    }
    for secret in [
        CLIENT_KEY,
        "sk-ant-upstream-secret",
        "private system prompt",
        "private message content",
    ] {
        assert!(
            !logs.contains(secret),
            "`{secret}` reached the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn at_info_a_served_request_logs_its_usage_line_only_and_a_refusal_its_answer() {
    let (captured, _guard) = capture(tracing::Level::INFO);

    let h = harness().await;
    let body = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
    let answer = h.call("/v1/messages", body).await;
    assert_eq!(answer.status, 200);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 1, "one line for one request:\n{logs}");
    for field in [
        "tower_llm_relay::usage",
        "account=\"acct-1\"",
        "key=\"test\"",
        "client_model=\"claude-sonnet-4-5\"",
        "status=200",
        "complete=true",
    ] {
        assert!(lines[0].contains(field), "`{field}` missing from: {logs}");
    }

    // An answer no upstream gave has no usage line: its own line stays.
    captured.0.lock().unwrap().clear();
    let answer = h.call("/v1/messages", r#"{"model":"#).await;
    assert_eq!(answer.status, 400);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 1, "one line for one refusal:\n{logs}");
    assert!(
        lines[0].contains("answered") && lines[0].contains("status=400"),
        "{logs}"
    );
}
