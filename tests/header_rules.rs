//! What reaches the upstream: the account's credential and the allowed
//! client headers; never the client's credential, cookies, hop-by-hop or
//! forwarding headers. And `anthropic-beta` per account type.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{account, messages_body, Harness, CLIENT_KEY};

async fn send_with_headers(
    h: &Harness,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> support::Answer {
    let mut builder = Request::post(h.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    h.send(
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn client_credentials_and_private_headers_never_reach_the_upstream() {
    let h = Harness::start(&account(
        "claude-1",
        "anthropic",
        "api_key",
        "sk-ant-upstream-1",
        "{base}",
    ))
    .await;
    let answer = send_with_headers(
        &h,
        "/v1/messages",
        &messages_body("claude-sonnet-4-5", false),
        &[
            ("authorization", &format!("Bearer {CLIENT_KEY}")),
            ("cookie", "session=secret-cookie"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-real-ip", "10.1.2.3"),
            ("forwarded", "for=10.1.2.3"),
            ("proxy-authorization", "Basic abc"),
            ("x-custom-tracking", "drop-me"),
            ("user-agent", "my-sdk/1.0"),
            ("anthropic-version", "2023-01-01"),
            ("x-stainless-lang", "js"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let received = &h.mock.received()[0];
    let headers = &received.headers;
    for name in [
        "authorization",
        "cookie",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "proxy-authorization",
        "x-custom-tracking",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {headers:?}"
        );
    }
    let all: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v:?}\n"))
        .collect();
    assert!(
        !all.contains(CLIENT_KEY),
        "the client key reached the upstream"
    );
    assert_eq!(headers["x-api-key"], "sk-ant-upstream-1");
    assert_eq!(received.credential.as_deref(), Some("sk-ant-upstream-1"));
    assert_eq!(headers["user-agent"], "my-sdk/1.0");
    assert_eq!(headers["x-stainless-lang"], "js");
    // The client's own API version is kept.
    assert_eq!(headers["anthropic-version"], "2023-01-01");
}

#[tokio::test]
async fn anthropic_version_is_added_when_absent_and_openai_uses_bearer() {
    let h = Harness::start(
        &(account("claude-1", "anthropic", "api_key", "sk-ant-1", "{base}")
            + &account("oai", "openai", "api_key", "sk-oai-1", "{base}")),
    )
    .await;
    h.call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    h.call("/v1/chat/completions", &support::chat_body("gpt-4o", false))
        .await;
    let received = h.mock.received();
    assert_eq!(received[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(received[1].headers["authorization"], "Bearer sk-oai-1");
    assert!(!received[1].headers.contains_key("anthropic-version"));
    assert!(!received[1].headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn subscription_accounts_get_the_oauth_beta_flag() {
    let h = Harness::start(&account(
        "sub-1",
        "anthropic",
        "setup_token",
        "sk-ant-oat-1",
        "{base}",
    ))
    .await;
    let body = messages_body("claude-sonnet-4-5", false);
    let haiku = messages_body("claude-haiku-4-5", false);
    // No client flags: the model's default list.
    send_with_headers(&h, "/v1/messages", &body, &[("x-api-key", CLIENT_KEY)]).await;
    send_with_headers(&h, "/v1/messages", &haiku, &[("x-api-key", CLIENT_KEY)]).await;
    // Client flags are kept; the OAuth flag goes after Claude Code's.
    send_with_headers(
        &h,
        "/v1/messages",
        &body,
        &[
            ("x-api-key", CLIENT_KEY),
            (
                "anthropic-beta",
                "claude-code-20250219,context-1m-2025-08-07",
            ),
        ],
    )
    .await;
    send_with_headers(
        &h,
        "/v1/messages",
        &body,
        &[
            ("x-api-key", CLIENT_KEY),
            ("anthropic-beta", "tools-2024-04-04"),
        ],
    )
    .await;
    let received = h.mock.received();
    let beta = |i: usize| {
        received[i].headers["anthropic-beta"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        beta(0),
        "oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    );
    assert_eq!(beta(1), "oauth-2025-04-20,interleaved-thinking-2025-05-14");
    assert_eq!(
        beta(2),
        "claude-code-20250219,oauth-2025-04-20,context-1m-2025-08-07"
    );
    assert_eq!(beta(3), "oauth-2025-04-20,tools-2024-04-04");
    assert_eq!(received[0].headers["authorization"], "Bearer sk-ant-oat-1");
    assert!(!received[0].headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn api_key_accounts_pass_the_client_beta_value_through() {
    let h = Harness::start(&account(
        "claude-1",
        "anthropic",
        "api_key",
        "sk-ant-1",
        "{base}",
    ))
    .await;
    let body = messages_body("claude-sonnet-4-5", false);
    send_with_headers(
        &h,
        "/v1/messages",
        &body,
        &[
            ("x-api-key", CLIENT_KEY),
            ("anthropic-beta", "tools-2024-04-04"),
        ],
    )
    .await;
    send_with_headers(&h, "/v1/messages", &body, &[("x-api-key", CLIENT_KEY)]).await;
    let received = h.mock.received();
    assert_eq!(received[0].headers["anthropic-beta"], "tools-2024-04-04");
    assert!(!received[1].headers.contains_key("anthropic-beta"));
}
