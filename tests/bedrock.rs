//! Bedrock accounts through the whole relay, against the mock's Bedrock
//! endpoint on 127.0.0.1: Anthropic Messages in, signed InvokeModel
//! requests upstream (the mock recomputes each signature), Anthropic JSON
//! and SSE back with usage, Bedrock errors failed over like Anthropic's.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use support::{account, messages_body, Answer, Harness};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream, AWS_TEST_SECRET_ACCESS_KEY};
use tower_llm_relay::usage::{UsageReceiver, UsageReport};

const MODEL: &str = "claude-sonnet-4-5";
const MODEL_ID: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
const WRONG_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYWRONGSECRET";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEMOCKSESSIONTOKEN";

/// A Bedrock account signing with `secret`, key id `key_id`.
fn bedrock(id: &str, key_id: &str, secret: &str, priority: i32) -> String {
    format!(
        "[[accounts]]\nid = \"{id}\"\nplatform = \"anthropic\"\ntype = \"bedrock\"\n\
         aws_region = \"us-east-1\"\naws_access_key_id = \"{key_id}\"\n\
         aws_secret_access_key = \"{secret}\"\nbase_url = \"{{base}}\"\npriority = {priority}\n\
         model_mapping = {{ \"{MODEL}\" = \"{MODEL_ID}\" }}\n"
    )
}

fn two_bedrock_accounts() -> String {
    bedrock("bedrock-1", "AKIDFIRST", AWS_TEST_SECRET_ACCESS_KEY, 1)
        + &bedrock("bedrock-2", "AKIDSECOND", AWS_TEST_SECRET_ACCESS_KEY, 2)
}

async fn next_report(reports: &mut UsageReceiver) -> UsageReport {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a usage report within 10 s")
        .expect("the sink is open")
}

/// No credential of any account reaches the client, in headers or body.
fn assert_no_credentials(answer: &Answer) {
    let text = answer.text();
    let headers = format!("{:?}", answer.headers);
    for secret in [
        AWS_TEST_SECRET_ACCESS_KEY,
        WRONG_SECRET,
        SESSION_TOKEN,
        "AKIDFIRST",
        "AKIDSECOND",
        "AWS4-HMAC-SHA256",
    ] {
        assert!(!text.contains(secret), "{secret} in the body: {text}");
        assert!(!headers.contains(secret), "{secret} in the headers");
    }
    assert!(
        !headers.contains("x-amzn"),
        "Bedrock headers reached the client"
    );
}

/// The SSE events of a body, as (event name, data JSON).
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split_terminator("\n\n")
        .map(|event| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).expect("data is JSON");
                }
            }
            (name, data)
        })
        .collect()
}

/// What the mock counts as input: a quarter of the body it received.
fn mock_input_tokens(h: &Harness, i: usize) -> u64 {
    (h.mock.received()[i].body.len() as u64 / 4).max(1)
}

#[tokio::test]
async fn a_streamed_answer_reaches_the_client_as_anthropic_sse_with_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let (h, mut reports) = Harness::with_usage(mock, &two_bedrock_accounts()).await;
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    assert_eq!(answer.headers["x-relay-account"], "bedrock-1");
    let text = answer.text();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(names.last(), Some(&"message_stop"), "{text}");
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "{text}");
    }
    // The client's model, not Bedrock's id; Bedrock's metrics dropped.
    assert_eq!(events[0].1["message"]["model"], MODEL);
    assert!(!text.contains("invocationMetrics"), "{text}");
    let said: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "Hello from the mock upstream.");
    // No frame byte reached the client: it is all text, event by event.
    assert!(!text.contains(":event-type") && !text.contains("\"bytes\""));
    assert_no_credentials(&answer);

    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    assert_eq!(
        report.account.as_ref().map(|a| a.as_str()),
        Some("bedrock-1")
    );
    assert_eq!(report.client_model.as_deref(), Some(MODEL));
    assert_eq!(report.served_model.as_deref(), Some(MODEL_ID));
    assert!(report.stream && report.complete);
    assert!(report.first_token.is_some());
}

#[tokio::test]
async fn a_json_answer_comes_back_as_anthropic_json_with_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let (h, mut reports) = Harness::with_usage(mock, &two_bedrock_accounts()).await;
    let answer = h.call("/v1/messages", &messages_body(MODEL, false)).await;

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "application/json");
    let message = answer.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], MODEL);
    assert_eq!(
        message["content"][0]["text"],
        "Hello from the mock upstream."
    );
    assert_no_credentials(&answer);

    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    assert!(!report.stream && report.complete);
}

#[tokio::test]
async fn the_request_is_translated_to_a_signed_invoke_model_call() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    let body = json!({
        "model": MODEL,
        "max_tokens": 64,
        "stream": true,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
    });
    let req = h
        .post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14",
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let answer = h.send(req).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let seen = &h.mock.received()[0];
    assert_eq!(
        seen.path_and_query,
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    // The mock found the signature right (it answers 403 otherwise) and
    // files the request under the access key id.
    assert_eq!(seen.status, 200);
    assert_eq!(seen.credential.as_deref(), Some("AKIDFIRST"));
    let authorization = seen.headers["authorization"].to_str().unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDFIRST/"),
        "{authorization}"
    );
    assert!(authorization.contains("/us-east-1/bedrock/aws4_request, SignedHeaders="));
    assert!(seen.headers.contains_key("x-amz-date"));
    assert_eq!(seen.headers["accept"], "application/vnd.amazon.eventstream");
    for absent in [
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "x-amz-security-token",
    ] {
        assert!(
            !seen.headers.contains_key(absent),
            "{absent} went to Bedrock"
        );
    }
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        sent,
        json!({
            "anthropic_version": "bedrock-2023-05-31",
            "anthropic_beta": ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"],
            "max_tokens": 64,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello"}],
        })
    );

    // Non-stream requests go to `/invoke`.
    let answer = h.call("/v1/messages", &messages_body(MODEL, false)).await;
    assert_eq!(answer.status, 200);
    let seen = &h.mock.received()[1];
    assert_eq!(
        seen.path_and_query,
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    assert_eq!(seen.headers["accept"], "application/json");
}

#[tokio::test]
async fn a_session_token_is_sent_and_signed() {
    let config = bedrock("bedrock-1", "AKIDFIRST", AWS_TEST_SECRET_ACCESS_KEY, 1)
        + &format!("aws_session_token = \"{SESSION_TOKEN}\"\n");
    let h = Harness::start(&config).await;
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = &h.mock.received()[0];
    assert_eq!(seen.headers["x-amz-security-token"], SESSION_TOKEN);
    let authorization = seen.headers["authorization"].to_str().unwrap();
    assert!(
        authorization.contains("x-amz-security-token"),
        "{authorization}"
    );
    assert_no_credentials(&answer);
}

#[tokio::test]
async fn a_signature_with_the_wrong_secret_is_refused_and_fails_over() {
    let config = bedrock("bedrock-bad", "AKIDFIRST", WRONG_SECRET, 1)
        + &bedrock("bedrock-2", "AKIDSECOND", AWS_TEST_SECRET_ACCESS_KEY, 2);
    let h = Harness::start(&config).await;
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-relay-account"], "bedrock-2");
    assert_eq!(answer.headers["x-relay-attempts"], "2");
    let seen = h.mock.received();
    assert_eq!(seen[0].status, 403);
    let refusal = String::from_utf8_lossy(&seen[0].response_body);
    assert!(refusal.contains("signature"), "{refusal}");
    assert_eq!(seen[1].status, 200);
    assert_no_credentials(&answer);
}

#[tokio::test]
async fn throttling_fails_over_to_the_second_account() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    let throttled = Fault::Status {
        status: 429,
        retry_after: None,
    };
    h.mock.set_faults("AKIDFIRST", FaultPlan::Always(throttled));
    for stream in [true, false] {
        let answer = h.call("/v1/messages", &messages_body(MODEL, stream)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.headers["x-relay-account"], "bedrock-2");
        assert_no_credentials(&answer);
    }
    // The first account cools down: the second request skipped it.
    let first_hits = h
        .mock
        .received()
        .iter()
        .filter(|r| r.credential.as_deref() == Some("AKIDFIRST"))
        .count();
    assert_eq!(first_hits, 1);
}

#[tokio::test]
async fn a_throttling_exception_frame_first_fails_over_unseen() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    h.mock
        .set_faults("AKIDFIRST", FaultPlan::Always(Fault::SseErrorFirst));
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-relay-account"], "bedrock-2");
    assert_eq!(answer.headers["x-relay-attempts"], "2");
    let text = answer.text();
    assert!(!text.contains("event: error"), "{text}");
    assert!(text.starts_with("event: message_start\n"), "{text}");
    // The first account did send an exception frame.
    let first = &h.mock.received()[0];
    assert_eq!(first.credential.as_deref(), Some("AKIDFIRST"));
    assert!(String::from_utf8_lossy(&first.response_body).contains("throttlingException"));
}

#[tokio::test]
async fn service_unavailable_and_access_denied_fail_over() {
    for status in [503, 500, 403] {
        let h = Harness::start(&two_bedrock_accounts()).await;
        let fault = Fault::Status {
            status,
            retry_after: None,
        };
        h.mock.set_faults("AKIDFIRST", FaultPlan::Always(fault));
        let answer = h.call("/v1/messages", &messages_body(MODEL, false)).await;
        assert_eq!(answer.status, 200, "{status}: {}", answer.text());
        assert_eq!(answer.headers["x-relay-account"], "bedrock-2", "{status}");
    }
}

#[tokio::test]
async fn a_validation_error_goes_back_to_the_client_in_anthropic_format() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    let fault = Fault::BadRequest {
        message: "messages.0.content: must not be empty".to_owned(),
    };
    h.mock.set_faults("AKIDFIRST", FaultPlan::Always(fault));
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.headers["x-relay-attempts"], "1");
    assert_eq!(
        answer.json(),
        json!({"type": "error", "error": {
            "type": "invalid_request_error",
            "message": "messages.0.content: must not be empty",
        }})
    );
    assert_no_credentials(&answer);
}

#[tokio::test]
async fn when_every_account_throttles_the_client_gets_an_anthropic_rate_limit_error() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    let throttled = || {
        FaultPlan::Always(Fault::Status {
            status: 429,
            retry_after: None,
        })
    };
    h.mock.set_faults("AKIDFIRST", throttled());
    h.mock.set_faults("AKIDSECOND", throttled());
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    let error = answer.json();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_no_credentials(&answer);
}

#[tokio::test]
async fn count_tokens_and_unmapped_models_never_land_on_bedrock() {
    let config = bedrock("bedrock-1", "AKIDFIRST", AWS_TEST_SECRET_ACCESS_KEY, 1)
        + &account("claude-api", "anthropic", "api_key", "sk-ant-api", "{base}")
        + "priority = 2\n";
    let h = Harness::start(&config).await;
    let counted = h
        .call("/v1/messages/count_tokens", &messages_body(MODEL, false))
        .await;
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert_eq!(counted.headers["x-relay-account"], "claude-api");
    let unmapped = h
        .call("/v1/messages", &messages_body("claude-haiku-4-5", false))
        .await;
    assert_eq!(unmapped.headers["x-relay-account"], "claude-api");
    // The mapped model still goes to Bedrock first (another conversation,
    // so no sticky session binds it to the API-key account).
    let other = json!({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi there"}]});
    let mapped = h.call("/v1/messages", &other.to_string()).await;
    assert_eq!(mapped.headers["x-relay-account"], "bedrock-1");
    let paths: Vec<String> = h
        .mock
        .received()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/messages/count_tokens",
            "/v1/messages",
            "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
        ]
    );
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_event_for_the_client() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    h.mock.set_faults(
        "AKIDFIRST",
        FaultPlan::Always(Fault::MidStreamCut { after_events: 4 }),
    );
    let answer = support::send(
        h.post("/v1/messages")
            .body(Full::new(Bytes::from(messages_body(MODEL, true))))
            .unwrap(),
    )
    .await;
    // Committed after the first event: the same account, a clean SSE end.
    assert_eq!(answer.headers["x-relay-account"], "bedrock-1");
    let text = answer.text();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    let last = sse_events(&text).pop().unwrap();
    assert_eq!(last.0, "error", "{text}");
    assert_no_credentials(&answer);
}

#[tokio::test]
async fn count_tokens_with_only_bedrock_accounts_is_not_implemented() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    let answer = h
        .call("/v1/messages/count_tokens", &messages_body(MODEL, false))
        .await;
    assert_eq!(answer.status, 501, "{}", answer.text());
    let error = answer.json();
    assert_eq!(error["type"], "error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Bedrock"));
    assert!(answer.headers.contains_key("x-relay-request-id"));
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn when_every_stream_opens_with_a_throttling_exception_the_client_gets_a_429() {
    let h = Harness::start(&two_bedrock_accounts()).await;
    h.mock
        .set_faults("AKIDFIRST", FaultPlan::Always(Fault::SseErrorFirst));
    h.mock
        .set_faults("AKIDSECOND", FaultPlan::Always(Fault::SseErrorFirst));
    let answer = h.call("/v1/messages", &messages_body(MODEL, true)).await;
    // No byte of either stream went out, so the answer has the status
    // the exceptions call for, in Anthropic's format.
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(answer.json()["error"]["type"], "rate_limit_error");
    assert_eq!(h.mock.request_count(), 2);
    assert_no_credentials(&answer);
}
