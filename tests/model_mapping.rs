//! The upstream sees the account's model name; the client sees its own.

mod support;

use support::{account, chat_body, messages_body, Harness};

fn accounts() -> String {
    account("claude-1", "anthropic", "api_key", "k1", "{base}")
        + "model_mapping = { \"sonnet\" = \"claude-sonnet-4-5-20250929\" }\n"
        + &account("oai", "openai", "api_key", "k2", "{base}")
        + "model_mapping = { \"fast\" = \"gpt-4o-mini-2024-07-18\" }\n"
}

#[tokio::test]
async fn json_answers_show_the_client_model() {
    let h = Harness::start(&accounts()).await;
    let answer = h
        .call("/v1/messages", &messages_body("sonnet", false))
        .await;
    assert_eq!(answer.status, 200);
    let sent: serde_json::Value = serde_json::from_slice(&h.mock.received()[0].body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5-20250929");
    // Everything but the model is as the client sent it.
    assert_eq!(sent["messages"][0]["content"], "Hello");
    assert_eq!(answer.json()["model"], "sonnet");
    let upstream: serde_json::Value =
        serde_json::from_slice(&h.mock.received()[0].response_body).unwrap();
    assert_eq!(upstream["model"], "claude-sonnet-4-5-20250929");
}

#[tokio::test]
async fn anthropic_streams_show_the_client_model_in_message_start() {
    let h = Harness::start(&accounts()).await;
    let answer = h.call("/v1/messages", &messages_body("sonnet", true)).await;
    let text = answer.text();
    assert!(!text.contains("claude-sonnet-4-5-20250929"), "{text}");
    let start = text
        .split("\n\n")
        .find(|e| e.starts_with("event: message_start"))
        .expect("a message_start event");
    let data: serde_json::Value =
        serde_json::from_str(start.split_once("data: ").unwrap().1).unwrap();
    assert_eq!(data["message"]["model"], "sonnet");
    // The rest of the stream is the upstream's bytes.
    let upstream = String::from_utf8_lossy(&h.mock.received()[0].response_body).into_owned();
    assert_eq!(
        text.replace("\"sonnet\"", "\"claude-sonnet-4-5-20250929\""),
        upstream
    );
}

#[tokio::test]
async fn openai_streams_show_the_client_model_in_every_chunk() {
    let h = Harness::start(&accounts()).await;
    let answer = h
        .call("/v1/chat/completions", &chat_body("fast", true))
        .await;
    let text = answer.text();
    assert!(!text.contains("gpt-4o-mini-2024-07-18"), "{text}");
    let chunks: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 3);
    assert!(chunks.iter().all(|c| c["model"] == "fast"), "{text}");
}

#[tokio::test]
async fn unmapped_models_pass_untouched() {
    let h = Harness::start(&accounts()).await;
    let body = messages_body("claude-opus-4-1", false);
    let answer = h.call("/v1/messages", &body).await;
    assert_eq!(h.mock.received()[0].body, body.as_bytes());
    assert_eq!(answer.body, h.mock.received()[0].response_body);
}
