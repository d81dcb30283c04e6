//! Every served response is reported once with its usage: stream and
//! non-stream, on all three APIs, also when a stream is cut or the client
//! leaves.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::{account, chat_body, messages_body, Harness};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
use tower_llm_relay::usage::{BodyEnd, Usage, UsageReceiver, UsageReport};
use tower_llm_relay::Endpoint;

fn accounts() -> String {
    account("claude-1", "anthropic", "api_key", "k1", "{base}")
        + "model_mapping = { \"sonnet\" = \"claude-sonnet-4-5-20250929\" }\n"
        + &account("oai-1", "openai", "api_key", "k2", "{base}")
}

async fn start() -> (Harness, UsageReceiver) {
    Harness::with_usage(MockUpstream::start().await.unwrap(), &accounts()).await
}

async fn next_report(reports: &mut UsageReceiver) -> UsageReport {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a usage report within 10 s")
        .expect("the sink is open")
}

/// What the mock counts as input: a quarter of the body it received.
fn mock_input_tokens(h: &Harness, i: usize) -> u64 {
    (h.mock.received()[i].body.len() as u64 / 4).max(1)
}

fn responses_body(stream: bool) -> String {
    serde_json::json!({"model": "gpt-4o", "stream": stream, "input": "Hello"}).to_string()
}

#[tokio::test]
async fn anthropic_json_answers_report_usage() {
    let (h, mut reports) = start().await;
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 200);
    let report = next_report(&mut reports).await;
    assert_eq!(
        report.usage,
        Usage {
            input_tokens: mock_input_tokens(&h, 0),
            output_tokens: 5,
            ..Usage::default()
        }
    );
    assert_eq!(
        report.account.as_ref().map(|a| a.as_str()),
        Some("claude-1")
    );
    assert_eq!(
        report.request_id.as_ref().map(|id| id.as_str()),
        answer.headers["x-relay-request-id"].to_str().ok()
    );
    assert_eq!(report.endpoint, Some(Endpoint::Messages));
    assert!(!report.stream && report.complete);
    assert_eq!(report.first_token, None);
    assert_eq!(report.status, 200);
}

#[tokio::test]
async fn anthropic_streams_report_usage_and_first_token_time() {
    let (h, mut reports) = start().await;
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", true))
        .await;
    // The client's stream is the upstream's, byte for byte.
    assert_eq!(answer.body, h.mock.received()[0].response_body);
    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    let first_token = report.first_token.expect("a first-token time");
    assert!(first_token <= report.duration);
    assert!(report.stream && report.complete);
    assert_eq!(report.end, BodyEnd::Finished);
}

#[tokio::test]
async fn mapped_models_report_the_asked_and_the_served_name() {
    let (h, mut reports) = start().await;
    h.call("/v1/messages", &messages_body("sonnet", true)).await;
    let report = next_report(&mut reports).await;
    assert_eq!(report.client_model.as_deref(), Some("sonnet"));
    assert_eq!(
        report.served_model.as_deref(),
        Some("claude-sonnet-4-5-20250929")
    );
}

#[tokio::test]
async fn chat_json_answers_report_usage() {
    let (h, mut reports) = start().await;
    let answer = h
        .call("/v1/chat/completions", &chat_body("gpt-4o", false))
        .await;
    assert_eq!(answer.status, 200);
    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    assert_eq!(report.account.as_ref().map(|a| a.as_str()), Some("oai-1"));
    assert!(report.complete);
}

#[tokio::test]
async fn chat_streams_are_asked_for_usage_and_the_client_does_not_see_it() {
    let (h, mut reports) = start().await;
    let answer = h
        .call("/v1/chat/completions", &chat_body("gpt-4o", true))
        .await;
    let sent: serde_json::Value = serde_json::from_slice(&h.mock.received()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let text = answer.text();
    assert!(!text.contains("\"choices\":[]"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Everything else is the upstream's stream as it was.
    let upstream = String::from_utf8_lossy(&h.mock.received()[0].response_body).into_owned();
    let usage_chunk = upstream
        .split_inclusive("\n\n")
        .find(|e| e.contains("\"choices\":[]"))
        .expect("the upstream sent a usage chunk");
    assert_eq!(text, upstream.replace(usage_chunk, ""));

    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    assert!(report.first_token.is_some());
    assert!(report.complete);
}

#[tokio::test]
async fn chat_streams_that_ask_for_usage_get_it_untouched() {
    let (h, mut reports) = start().await;
    let body = serde_json::json!({
        "model": "gpt-4o",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello"}],
    })
    .to_string();
    let answer = h.call("/v1/chat/completions", &body).await;
    assert_eq!(h.mock.received()[0].body, body.as_bytes());
    assert_eq!(answer.body, h.mock.received()[0].response_body);
    assert!(answer.text().contains("\"choices\":[]"));
    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.output_tokens, 5);
}

#[tokio::test]
async fn responses_json_answers_report_usage_and_the_response_id() {
    let (h, mut reports) = start().await;
    let answer = h.call("/v1/responses", &responses_body(false)).await;
    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    assert_eq!(report.response_id.as_deref(), answer.json()["id"].as_str());
    assert!(report.complete);
}

#[tokio::test]
async fn responses_streams_report_usage_and_the_response_id() {
    let (h, mut reports) = start().await;
    let answer = h.call("/v1/responses", &responses_body(true)).await;
    assert_eq!(answer.body, h.mock.received()[0].response_body);
    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert_eq!(report.usage.output_tokens, 5);
    assert!(report
        .response_id
        .as_deref()
        .is_some_and(|id| id.starts_with("resp_mock_")));
    assert!(report.first_token.is_some());
    assert!(report.complete);
}

#[tokio::test]
async fn a_stream_cut_before_message_delta_reports_what_it_saw_as_incomplete() {
    let (h, mut reports) = start().await;
    // message_start, content_block_start, ping, one delta; then the cut.
    h.mock
        .set_default_faults(FaultPlan::Always(Fault::MidStreamCut { after_events: 4 }));
    let req = h
        .post("/v1/messages")
        .body(Full::new(Bytes::from(messages_body(
            "claude-sonnet-4-5",
            true,
        ))))
        .unwrap();
    let response = support::open(req).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await;
    let report = next_report(&mut reports).await;
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    // Only message_start's count: the delta never came.
    assert_eq!(report.usage.output_tokens, 1);
    assert!(report.first_token.is_some());
    assert!(!report.complete);
    assert_eq!(report.end, BodyEnd::UpstreamError);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_reported_once_as_incomplete() {
    let mock = MockUpstream::builder()
        .stream_deltas(200)
        .event_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let (h, mut reports) = Harness::with_usage(mock, &accounts()).await;
    let req = h
        .post("/v1/messages")
        .body(Full::new(Bytes::from(messages_body(
            "claude-sonnet-4-5",
            true,
        ))))
        .unwrap();
    let mut body = support::open(req).await.into_body();
    for _ in 0..5 {
        body.frame().await.expect("a frame").expect("no error");
    }
    drop(body);
    let report = next_report(&mut reports).await;
    assert_eq!(report.end, BodyEnd::ClientGone);
    assert!(!report.complete);
    assert_eq!(report.usage.input_tokens, mock_input_tokens(&h, 0));
    assert!(report.first_token.is_some());
    // Exactly once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reports.try_recv().is_none());
}

#[tokio::test]
async fn after_failover_only_the_serving_account_is_reported() {
    let extra = account("claude-a", "anthropic", "api_key", "ka", "{base}")
        + "priority = 1\n"
        + &account("claude-b", "anthropic", "api_key", "kb", "{base}")
        + "priority = 2\n";
    let mock = MockUpstream::start().await.unwrap();
    mock.set_faults(
        "ka",
        FaultPlan::Always(Fault::Status {
            status: 529,
            retry_after: None,
        }),
    );
    let (h, mut reports) = Harness::with_usage(mock, &extra).await;
    for stream in [false, true] {
        let answer = h
            .call("/v1/messages", &messages_body("claude-sonnet-4-5", stream))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let report = next_report(&mut reports).await;
        assert_eq!(
            report.account.as_ref().map(|a| a.as_str()),
            Some("claude-b")
        );
        assert_eq!(report.status, 200);
        assert!(report.usage.output_tokens > 0);
    }
    // The 529 attempts made no report of their own.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reports.try_recv().is_none());
}

#[tokio::test]
async fn answers_that_end_in_an_error_report_nothing() {
    let (h, mut reports) = start().await;
    h.mock
        .set_default_faults(FaultPlan::Sequence(vec![Fault::Status {
            status: 429,
            retry_after: None,
        }]));
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 429);
    // (The Claude account now cools down; the OpenAI one serves.)
    let served = h
        .call("/v1/chat/completions", &chat_body("gpt-4o", false))
        .await;
    assert_eq!(served.status, 200, "{}", served.text());
    // The first report is the served request's: the 429 spent no tokens.
    let report = next_report(&mut reports).await;
    assert_eq!(report.status, 200);
    assert!(!report.usage.is_zero());
}

#[tokio::test]
async fn a_responses_conversation_stays_on_the_account_that_made_its_previous_response() {
    let extra: String = (1..=4)
        .map(|i| {
            account(
                &format!("oai-{i}"),
                "openai",
                "api_key",
                &format!("ok{i}"),
                "{base}",
            )
        })
        .collect();
    let (h, _reports) = Harness::with_usage(MockUpstream::start().await.unwrap(), &extra).await;
    // Six conversations of five turns, interleaved turn by turn, so that
    // without affinity load balancing would move them between accounts.
    let mut previous: Vec<Option<String>> = vec![None; 6];
    let mut served_by: Vec<Vec<String>> = vec![Vec::new(); 6];
    for turn in 0..5 {
        for (conversation, previous) in previous.iter_mut().enumerate() {
            // Each turn's own text: no session hash ties the turns together,
            // only `previous_response_id` does.
            let input = format!("conversation {conversation}, turn {turn}");
            let mut body = serde_json::json!({"model": "gpt-4o", "input": input});
            if let Some(id) = previous.as_ref() {
                body["previous_response_id"] = id.clone().into();
            }
            let answer = h.call("/v1/responses", &body.to_string()).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            *previous = answer.json()["id"].as_str().map(str::to_owned);
            let account = answer.headers["x-relay-account"]
                .to_str()
                .unwrap()
                .to_owned();
            served_by[conversation].push(account);
        }
    }
    for turns in &served_by {
        assert!(
            turns.iter().all(|a| *a == turns[0]),
            "a conversation moved: {turns:?}"
        );
    }
    let first_accounts: std::collections::HashSet<_> = served_by.iter().map(|t| &t[0]).collect();
    assert!(
        first_accounts.len() > 1,
        "new conversations were spread: {first_accounts:?}"
    );
}
