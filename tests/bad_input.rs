//! Every bad request gets its status and an error body in the API's own
//! format, and never reaches the upstream.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{account, messages_body, Harness, CLIENT_KEY};

fn accounts() -> String {
    account(
        "claude-1",
        "anthropic",
        "api_key",
        "sk-ant-upstream-1",
        "{base}",
    ) + &account(
        "openai-1",
        "openai",
        "api_key",
        "sk-openai-upstream-1",
        "{base}",
    )
}

fn req(
    h: &Harness,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(h.url(path));
    if let Some(key) = key {
        builder = builder.header("x-api-key", key);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Asserts an Anthropic-format error with `status` and `kind`.
fn assert_anthropic_error(answer: &support::Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["type"], "error", "{json}");
    assert_eq!(json["error"]["type"], kind, "{json}");
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(answer.headers.contains_key("x-relay-request-id"));
}

/// Asserts an OpenAI-format error with `status`.
fn assert_openai_error(answer: &support::Answer, status: u16) {
    assert_eq!(answer.status, status, "{}", answer.text());
    let json = answer.json();
    assert!(json.get("type").is_none(), "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert!(json["error"]["type"].is_string(), "{json}");
}

#[tokio::test]
async fn anthropic_bad_inputs() {
    let h = Harness::start(&accounts()).await;
    let good = messages_body("claude-sonnet-4-5", false);
    let cases: Vec<(Request<Full<Bytes>>, u16, &str)> = vec![
        (
            req(&h, "POST", "/v1/messages", None, &good),
            401,
            "authentication_error",
        ),
        (
            req(&h, "POST", "/v1/messages", Some("sk-relay-wrong"), &good),
            401,
            "authentication_error",
        ),
        (
            req(&h, "POST", "/v1/messages", Some(CLIENT_KEY), "{not json"),
            400,
            "invalid_request_error",
        ),
        (
            req(&h, "POST", "/v1/messages", Some(CLIENT_KEY), ""),
            400,
            "invalid_request_error",
        ),
        (
            req(&h, "POST", "/v1/messages", Some(CLIENT_KEY), "[1,2]"),
            400,
            "invalid_request_error",
        ),
        (
            req(
                &h,
                "POST",
                "/v1/messages",
                Some(CLIENT_KEY),
                r#"{"messages":[]}"#,
            ),
            400,
            "invalid_request_error",
        ),
        (
            req(
                &h,
                "POST",
                "/v1/messages",
                Some(CLIENT_KEY),
                r#"{"model":"","messages":[]}"#,
            ),
            400,
            "invalid_request_error",
        ),
        (
            req(
                &h,
                "POST",
                "/v1/messages",
                Some(CLIENT_KEY),
                r#"{"model":7,"messages":[]}"#,
            ),
            400,
            "invalid_request_error",
        ),
        (
            req(
                &h,
                "POST",
                "/v1/messages",
                Some(CLIENT_KEY),
                r#"{"model":"m","messages":"x"}"#,
            ),
            400,
            "invalid_request_error",
        ),
        (
            req(
                &h,
                "POST",
                "/v1/messages",
                Some(CLIENT_KEY),
                r#"{"model":"m","stream":"yes","messages":[]}"#,
            ),
            400,
            "invalid_request_error",
        ),
        (
            req(&h, "POST", "/v1/nothing", Some(CLIENT_KEY), &good),
            404,
            "not_found_error",
        ),
        (
            req(&h, "GET", "/v1/messages", Some(CLIENT_KEY), ""),
            405,
            "not_found_error",
        ),
    ];
    for (request, status, kind) in cases {
        let answer = h.send(request).await;
        assert_anthropic_error(&answer, status, kind);
    }
    assert_eq!(
        h.mock.request_count(),
        0,
        "a bad request reached the upstream"
    );
}

#[tokio::test]
async fn openai_paths_answer_in_openai_format() {
    let h = Harness::start(&accounts()).await;
    let good = support::chat_body("gpt-4o", false);
    let cases = vec![
        (req(&h, "POST", "/v1/chat/completions", None, &good), 401),
        (
            req(&h, "POST", "/v1/chat/completions", Some(CLIENT_KEY), "{"),
            400,
        ),
        (
            req(
                &h,
                "POST",
                "/v1/responses",
                Some(CLIENT_KEY),
                r#"{"input":"x"}"#,
            ),
            400,
        ),
    ];
    for (request, status) in cases {
        let answer = h.send(request).await;
        assert_openai_error(&answer, status);
    }
    let missing = h
        .send(req(&h, "POST", "/v1/chat/completions", None, &good))
        .await;
    assert_eq!(missing.json()["error"]["code"], "missing_api_key");
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn a_model_the_key_may_not_use_is_403() {
    let h = Harness::with_toml(&format!(
        "[[keys]]\nkey = \"sk-relay-limited\"\nname = \"limited\"\nmodels = [\"claude-haiku-*\"]\n{}",
        account("claude-1", "anthropic", "api_key", "k", "{base}")
    ))
    .await;
    let body = messages_body("claude-opus-4-1", false);
    let answer = h
        .send(req(
            &h,
            "POST",
            "/v1/messages",
            Some("sk-relay-limited"),
            &body,
        ))
        .await;
    assert_anthropic_error(&answer, 403, "permission_error");
    assert!(answer.text().contains("claude-opus-4-1"));
    let allowed = messages_body("claude-haiku-4-5", false);
    let ok = h
        .send(req(
            &h,
            "POST",
            "/v1/messages",
            Some("sk-relay-limited"),
            &allowed,
        ))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn bodies_past_the_limit_are_413() {
    let h = Harness::with_toml(&format!(
        "body_limit_bytes = 1024\n[[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"t\"\n{}",
        account("claude-1", "anthropic", "api_key", "k", "{base}")
    ))
    .await;
    let big = serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let answer = h
        .send(req(
            &h,
            "POST",
            "/v1/messages",
            Some(CLIENT_KEY),
            &big.to_string(),
        ))
        .await;
    assert_anthropic_error(&answer, 413, "request_too_large");
    let chat = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let answer = h
        .send(req(
            &h,
            "POST",
            "/v1/chat/completions",
            Some(CLIENT_KEY),
            &chat.to_string(),
        ))
        .await;
    assert_openai_error(&answer, 413);
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn no_account_for_the_model_is_503_in_format() {
    let extra = account("claude-1", "anthropic", "api_key", "k", "{base}")
        + "models = [\"claude-haiku-*\"]\n";
    let h = Harness::start(&extra).await;
    let answer = h
        .call("/v1/messages", &messages_body("claude-opus-4-1", false))
        .await;
    assert_anthropic_error(&answer, 503, "overloaded_error");
    let chat = h
        .call("/v1/chat/completions", &support::chat_body("gpt-4o", false))
        .await;
    assert_openai_error(&chat, 503);
    assert_eq!(h.mock.request_count(), 0);
}
