//! What a client sees when its only account fails: an error in the API's
//! format naming the attempts, without internals. A client that leaves
//! mid-stream cancels the upstream request.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::{account, messages_body, Harness};
use tower_llm_relay::mock::{Fault, FaultPlan};

#[tokio::test]
async fn a_rate_limited_only_account_gives_429_with_its_retry_after() {
    let h = Harness::start(&account("claude-1", "anthropic", "api_key", "k1", "{base}")).await;
    h.mock
        .set_default_faults(FaultPlan::Sequence(vec![Fault::Status {
            status: 429,
            retry_after: Some(7),
        }]));
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(answer.json()["error"]["type"], "rate_limit_error");
    assert!(answer.text().contains("claude-1: 429"), "{}", answer.text());
    // The account cools down: the next request is answered at once, unsent.
    let again = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(again.status, 429);
    assert_eq!(again.json()["error"]["type"], "rate_limit_error");
    let retry: u64 = again.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((6..=7).contains(&retry), "{retry}");
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn a_reset_connection_is_a_502_without_internals() {
    let h = Harness::start(&account(
        "claude-1",
        "anthropic",
        "api_key",
        "sk-ant-secret-1",
        "{base}",
    ))
    .await;
    h.mock
        .set_default_faults(FaultPlan::Always(Fault::ConnectionReset));
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.json()["error"]["type"], "upstream_error");
    let text = answer.text();
    assert!(!text.contains("sk-ant-secret-1"));
    assert!(!text.contains("127.0.0.1"), "{text}");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let h = Harness::start(&account("claude-1", "anthropic", "api_key", "k1", &base)).await;
    let answer = h
        .call("/v1/chat/completions", &support::chat_body("gpt-4o", false))
        .await;
    // No OpenAI account: 503. Then the Anthropic path: 502.
    assert_eq!(answer.status, 503);
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 502);
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_after_the_first_byte_timeout() {
    let extra = format!(
        "[upstream]\nfirst_byte_timeout_secs = 1\n{}",
        account("claude-1", "anthropic", "api_key", "k1", "{base}")
    );
    let h = Harness::start(&extra).await;
    h.mock.set_default_faults(FaultPlan::Always(Fault::Hang));
    let started = std::time::Instant::now();
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 504, "{}", answer.text());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_stream() {
    let mock = tower_llm_relay::mock::MockUpstream::builder()
        .stream_deltas(200)
        .event_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let h = Harness::with_mock(
        mock,
        &account("claude-1", "anthropic", "api_key", "k1", "{base}"),
    )
    .await;
    let req = h
        .post("/v1/messages")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            messages_body("claude-sonnet-4-5", true),
        )))
        .unwrap();
    let response = support::open(req).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Read a few events, then go away.
    for _ in 0..3 {
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert!(frame.is_data());
    }
    assert_eq!(h.mock.open_streams(), 1);
    drop(body);
    assert!(
        support::eventually(|| h.mock.cancelled_streams() == 1).await,
        "the upstream stream was not cancelled"
    );
    assert_eq!(h.mock.completed_streams(), 0);
}

#[tokio::test]
async fn a_mid_stream_cut_ends_the_client_stream_with_an_error_event() {
    let h = Harness::start(&account("claude-1", "anthropic", "api_key", "k1", "{base}")).await;
    h.mock
        .set_default_faults(FaultPlan::Always(Fault::MidStreamCut { after_events: 4 }));
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", true))
        .await;
    assert_eq!(answer.status, 200);
    let text = answer.text();
    // The content that was sent, then one well-formed error event.
    let sent = String::from_utf8_lossy(&h.mock.received()[0].response_body).into_owned();
    assert!(text.starts_with(&sent), "{text}");
    let tail = &text[sent.len()..];
    let data = tail
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("{tail}"));
    let data: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
}

#[tokio::test]
async fn a_json_answer_cut_in_half_is_a_body_error_not_a_silent_truncation() {
    let h = Harness::start(&account("claude-1", "anthropic", "api_key", "k1", "{base}")).await;
    h.mock
        .set_default_faults(FaultPlan::Always(Fault::MidStreamCut { after_events: 1 }));
    let req = h
        .post("/v1/messages")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            messages_body("claude-sonnet-4-5", false),
        )))
        .unwrap();
    let response = support::open(req).await;
    let collected =
        tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await;
    assert!(
        matches!(collected, Ok(Err(_))),
        "the client saw a clean end of a cut answer"
    );
}
