//! OAuth subscription accounts: refreshed before expiry, once for many
//! concurrent requests, reported to the sink; a failed refresh fails over.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use support::{account, messages_body, Harness};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream, TOKEN_FAULTS};
use tower_llm_relay::oauth::{CredentialSink, RefreshedTokens};
use tower_llm_relay::AccountId;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn oauth_account(expires_in: u64) -> String {
    format!(
        "[[accounts]]\nid = \"max-1\"\nplatform = \"anthropic\"\ntype = \"oauth\"\naccess_token = \"sk-ant-oat-old\"\nrefresh_token = \"sk-ant-ort-old\"\nexpires_at = {}\ntoken_url = \"{{base}}/v1/oauth/token\"\nbase_url = \"{{base}}\"\n",
        unix_now() + expires_in
    )
}

#[derive(Debug, Default)]
struct CountingSink(AtomicUsize);

impl CredentialSink for CountingSink {
    fn refreshed(&self, _: &AccountId, tokens: &RefreshedTokens) {
        assert!(tokens.expires_at > unix_now());
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_expiry_is_refreshed_once_for_a_hundred_concurrent_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let sink = Arc::new(CountingSink::default());
    let builder = support::config_for(&mock, &oauth_account(60))
        .relay_builder()
        .credential_sink(sink.clone());
    let h = Arc::new(Harness::serve(mock, builder).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": format!("n{i}")}]});
            h.call("/v1/messages", &body.to_string()).await.status.as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(h.mock.token_refreshes(), 1, "one refresh for all");
    assert_eq!(sink.0.load(Ordering::SeqCst), 1);
    let bearers: std::collections::HashSet<String> = h
        .mock
        .received()
        .iter()
        .filter(|r| r.path_and_query == "/v1/messages")
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        bearers.into_iter().collect::<Vec<_>>(),
        ["Bearer sk-ant-oat-refreshed-1"]
    );
    // The OAuth beta flag goes with it.
    let first = h
        .mock
        .received()
        .into_iter()
        .find(|r| r.path_and_query == "/v1/messages")
        .unwrap();
    assert!(first.headers["anthropic-beta"]
        .to_str()
        .unwrap()
        .contains("oauth-2025-04-20"));
}

#[tokio::test]
async fn a_token_far_from_expiry_is_used_as_is() {
    let h = Harness::start(&oauth_account(3600)).await;
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(h.mock.token_refreshes(), 0);
    assert_eq!(
        h.mock.received()[0].headers["authorization"],
        "Bearer sk-ant-oat-old"
    );
}

#[tokio::test]
async fn a_failed_refresh_takes_the_account_out_and_fails_over() {
    let extra = oauth_account(60)
        + &account("backup", "anthropic", "api_key", "sk-ant-backup", "{base}")
        + "priority = 5\n";
    let h = Harness::start(&extra).await;
    h.mock.set_faults(
        TOKEN_FAULTS,
        FaultPlan::Always(Fault::Status {
            status: 400,
            retry_after: None,
        }),
    );
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-relay-account"], "backup");
    // The broken account is not tried again: no second refresh attempt.
    let again = h
        .call("/v1/messages", &messages_body("claude-opus-4-1", false))
        .await;
    assert_eq!(again.headers["x-relay-account"], "backup");
    let refresh_calls = h
        .mock
        .received()
        .iter()
        .filter(|r| r.path_and_query == "/v1/oauth/token")
        .count();
    assert_eq!(refresh_calls, 1);
    assert!(!answer.text().contains("sk-ant-ort"), "no token in answers");
}

#[tokio::test]
async fn setup_tokens_never_refresh() {
    let mock = MockUpstream::start().await.unwrap();
    let extra = format!(
        "[[accounts]]\nid = \"st\"\nplatform = \"anthropic\"\ntype = \"setup_token\"\naccess_token = \"sk-ant-oat-setup\"\nbase_url = \"{}\"\n",
        mock.base_url()
    );
    let h = Harness::with_mock(mock, &extra).await;
    h.call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(h.mock.token_refreshes(), 0);
    assert_eq!(
        h.mock.received()[0].headers["authorization"],
        "Bearer sk-ant-oat-setup"
    );
}
