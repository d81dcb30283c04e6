//! A client calls the relay, one account serves it, and the answer comes
//! back byte for byte as the upstream sent it.

mod support;

use support::{account, chat_body, messages_body, Harness};

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

#[tokio::test]
async fn non_stream_messages_are_byte_identical() {
    let h = Harness::start(&accounts()).await;
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let received = h.mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(answer.body, received[0].response_body);
    assert_eq!(answer.json()["model"], "claude-sonnet-4-5");
    assert_eq!(answer.headers["x-relay-account"], "claude-1");
    assert_eq!(answer.headers["x-relay-attempts"], "1");
    assert!(answer.headers["x-relay-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
}

#[tokio::test]
async fn streamed_messages_are_byte_identical() {
    let h = Harness::start(&accounts()).await;
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", true))
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let received = h.mock.received();
    assert_eq!(answer.body, received[0].response_body);
    let text = answer.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
}

#[tokio::test]
async fn the_request_body_reaches_the_upstream_unchanged() {
    let h = Harness::start(&accounts()).await;
    let body = messages_body("claude-opus-4-1", false);
    h.call("/v1/messages", &body).await;
    assert_eq!(h.mock.received()[0].body, body.as_bytes());
    assert_eq!(h.mock.received()[0].path_and_query, "/v1/messages");
}

#[tokio::test]
async fn openai_chat_stream_and_json_pass_through() {
    let h = Harness::start(&accounts()).await;
    // A client that asks for usage itself gets the stream byte for byte
    // (without asking, the relay asks and strips the usage chunk: see
    // tests/usage.rs).
    let mut stream_body: serde_json::Value =
        serde_json::from_str(&chat_body("gpt-4o", true)).expect("test body is JSON");
    stream_body["stream_options"] = serde_json::json!({"include_usage": true});
    let streamed = h
        .call("/v1/chat/completions", &stream_body.to_string())
        .await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.text().ends_with("data: [DONE]\n\n"));
    let json = h
        .call("/v1/chat/completions", &chat_body("gpt-4o", false))
        .await;
    assert_eq!(json.json()["object"], "chat.completion");
    let received = h.mock.received();
    assert_eq!(streamed.body, received[0].response_body);
    assert_eq!(json.body, received[1].response_body);
    assert_eq!(streamed.headers["x-relay-account"], "openai-1");
}

#[tokio::test]
async fn responses_and_count_tokens_reach_their_upstream_paths() {
    let h = Harness::start(&accounts()).await;
    let body =
        serde_json::json!({"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_1"});
    let answer = h.call("/v1/responses", &body.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["object"], "response");
    let count = h
        .call(
            "/v1/messages/count_tokens?beta=true",
            &messages_body("claude-sonnet-4-5", false),
        )
        .await;
    assert_eq!(count.status, 200);
    assert!(count.json()["input_tokens"].as_u64().is_some());
    let paths: Vec<_> = h
        .mock
        .received()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        paths,
        ["/v1/responses", "/v1/messages/count_tokens?beta=true"]
    );
}

#[tokio::test]
async fn models_lists_what_the_accounts_name() {
    let extra = account("claude-1", "anthropic", "api_key", "k", "{base}")
        + "models = [\"claude-sonnet-4-5\", \"claude-*\"]\nmodel_mapping = { \"opus\" = \"claude-opus-4-1\" }\n";
    let h = Harness::start(&extra).await;
    let req = http::Request::get(h.url("/v1/models"))
        .header("x-api-key", support::CLIENT_KEY)
        .body(Default::default())
        .unwrap();
    let answer = h.send(req).await;
    assert_eq!(answer.status, 200);
    let ids: Vec<_> = answer.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["claude-sonnet-4-5", "opus"]);
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn accounts_with_an_egress_proxy_reach_the_upstream_only_through_it() {
    use tower_llm_relay::mock::{MockProxy, ProxyKind};
    for kind in [ProxyKind::HttpConnect, ProxyKind::Socks5] {
        let proxy = MockProxy::start(kind).await.unwrap();
        let extra = account(
            "proxied",
            "anthropic",
            "api_key",
            "sk-ant-proxied",
            "{base}",
        ) + &format!("proxy = \"{}\"\n", proxy.url());
        let h = Harness::start(&extra).await;
        for stream in [false, true] {
            let answer = h
                .call("/v1/messages", &messages_body("claude-sonnet-4-5", stream))
                .await;
            assert_eq!(answer.status, 200, "{kind:?}: {}", answer.text());
        }
        assert_eq!(h.mock.request_count(), 2);
        // Pooled: both requests went through tunnels this proxy opened.
        assert!(proxy.tunnels() >= 1, "{kind:?}: no tunnel opened");
    }
}
