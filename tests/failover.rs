//! Failover through the whole stack against the mock: every failure of the
//! first account is served by the second, and what cannot be served fails
//! well.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::{Rng, SeedableRng};
use support::{account, chat_body, messages_body, Harness};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
use tower_llm_relay::state::{MemoryStore, StateStore};
use tower_llm_relay::AccountId;

/// `first` (priority 1) and `second` (priority 2), Anthropic and OpenAI.
fn two(kind_first: &str) -> String {
    account("first", "anthropic", kind_first, "cred-first", "{base}")
        + "priority = 1\n"
        + &account("second", "anthropic", "api_key", "cred-second", "{base}")
        + "priority = 2\n"
        + &account("oai-first", "openai", "api_key", "cred-oai-first", "{base}")
        + "priority = 1\n"
        + &account(
            "oai-second",
            "openai",
            "api_key",
            "cred-oai-second",
            "{base}",
        )
        + "priority = 2\n"
}

#[tokio::test]
async fn every_failure_of_the_first_account_is_served_by_the_second() {
    let faults = [
        Fault::Status {
            status: 401,
            retry_after: None,
        },
        Fault::Status {
            status: 403,
            retry_after: None,
        },
        Fault::Status {
            status: 429,
            retry_after: Some(30),
        },
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            status: 529,
            retry_after: None,
        },
        Fault::ConnectionReset,
        Fault::SseErrorFirst,
    ];
    for fault in faults {
        for stream in [false, true] {
            let h = Harness::start(&two("api_key")).await;
            h.mock
                .set_faults("cred-first", FaultPlan::Always(fault.clone()));
            let answer = h
                .call("/v1/messages", &messages_body("claude-sonnet-4-5", stream))
                .await;
            assert_eq!(
                answer.status,
                200,
                "{fault:?} stream={stream}: {}",
                answer.text()
            );
            assert_eq!(answer.headers["x-relay-account"], "second", "{fault:?}");
            assert_eq!(answer.headers["x-relay-attempts"], "2", "{fault:?}");
            // No byte of the failed attempt reached the client.
            let served = h
                .mock
                .received()
                .into_iter()
                .find(|r| r.credential.as_deref() == Some("cred-second"))
                .unwrap();
            assert_eq!(
                answer.body, served.response_body,
                "{fault:?} stream={stream}"
            );
        }
    }
}

#[tokio::test]
async fn openai_paths_fail_over_too() {
    let h = Harness::start(&two("api_key")).await;
    h.mock.set_faults(
        "cred-oai-first",
        FaultPlan::Always(Fault::Status {
            status: 500,
            retry_after: None,
        }),
    );
    let answer = h
        .call("/v1/chat/completions", &chat_body("gpt-4o", true))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-relay-account"], "oai-second");
}

#[tokio::test]
async fn a_plain_400_is_returned_to_the_client() {
    let h = Harness::start(&two("api_key")).await;
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Always(Fault::BadRequest {
            message: "max_tokens: too large".into(),
        }),
    );
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["message"], "max_tokens: too large");
    assert_eq!(
        h.mock.request_count(),
        1,
        "a client error is not retried elsewhere"
    );
}

#[tokio::test]
async fn a_compatibility_400_fails_over_when_configured() {
    let extra = format!("[scheduling]\nfailover_on_400 = true\n{}", two("api_key"));
    let h = Harness::start(&extra).await;
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Always(Fault::BadRequest {
            message: "Invalid `signature` in `thinking` block".into(),
        }),
    );
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-relay-account"], "second");
}

#[tokio::test]
async fn a_subscription_403_is_retried_on_the_same_account_first() {
    let h = Harness::start(&two("setup_token")).await;
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Sequence(vec![Fault::Status {
            status: 403,
            retry_after: None,
        }]),
    );
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-relay-account"], "first");
    assert_eq!(answer.headers["x-relay-attempts"], "2");
}

#[tokio::test]
async fn when_every_account_fails_the_error_lists_the_attempts() {
    let h = Harness::start(&two("api_key")).await;
    h.mock.set_default_faults(FaultPlan::Always(Fault::Status {
        status: 529,
        retry_after: None,
    }));
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "overloaded_error");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("first: 529") && message.contains("second: 529"),
        "{message}"
    );

    let h = Harness::start(&two("api_key")).await;
    h.mock.set_default_faults(FaultPlan::Always(Fault::Status {
        status: 401,
        retry_after: None,
    }));
    let answer = h
        .call("/v1/chat/completions", &chat_body("gpt-4o", false))
        .await;
    assert_eq!(answer.status, 502);
    let json = answer.json();
    assert_eq!(json["error"]["code"], "all_attempts_failed");
    assert!(
        !answer.text().contains("cred-"),
        "no credential in the error"
    );
    assert!(
        !answer.text().contains("told to fail"),
        "no upstream body for auth failures"
    );
}

#[tokio::test]
async fn a_429_with_retry_after_keeps_the_account_out_for_that_long() {
    let mock = MockUpstream::start().await.unwrap();
    let (h, store) = Harness::with_store(mock, &two("api_key")).await;
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Sequence(vec![Fault::Status {
            status: 429,
            retry_after: Some(30),
        }]),
    );
    let first = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(first.headers["x-relay-account"], "second");
    let load = &store
        .loads(&[&AccountId::from("first")], Some("claude-sonnet-4-5"))
        .await
        .unwrap()[0];
    let (left, _) = load.cooldown.expect("first cools down");
    assert!(
        left > Duration::from_secs(28) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    // While it cools, new requests go straight to the second account.
    for _ in 0..5 {
        let answer = h
            .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
            .await;
        assert_eq!(answer.headers["x-relay-account"], "second");
        assert_eq!(answer.headers["x-relay-attempts"], "1");
    }
    let to_first = h
        .mock
        .received()
        .iter()
        .filter(|r| r.credential.as_deref() == Some("cred-first"))
        .count();
    assert_eq!(to_first, 1);
}

#[tokio::test]
async fn a_client_that_leaves_during_an_attempt_stops_all_further_attempts() {
    let mock = MockUpstream::builder()
        .first_byte_delay(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let h = Harness::with_mock(mock, &two("api_key")).await;
    h.mock.set_default_faults(FaultPlan::Always(Fault::Status {
        status: 529,
        retry_after: None,
    }));
    let req = h
        .post("/v1/messages")
        .body(Full::new(Bytes::from(messages_body(
            "claude-sonnet-4-5",
            false,
        ))))
        .unwrap();
    let pending = tokio::spawn(support::open(req));
    tokio::time::sleep(Duration::from_millis(100)).await;
    pending.abort();
    let _ = pending.await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        h.mock.request_count(),
        1,
        "the relay tried another account for a client that left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_mix_every_request_is_served_and_no_slot_is_held() {
    let mock = MockUpstream::start().await.unwrap();
    let store = MemoryStore::new();
    let mut toml = String::new();
    for i in 0..4 {
        toml += &account(
            &format!("acct-{i}"),
            "anthropic",
            "api_key",
            &format!("cred-{i}"),
            "{base}",
        );
        toml += "concurrency = 16\n";
    }
    let builder = support::config_for(&mock, &toml)
        .relay_builder()
        .state(Arc::new(store.clone()));
    let h = Arc::new(Harness::serve(mock, builder).await);
    h.mock.set_faults(
        "cred-0",
        FaultPlan::Random {
            probability: 0.5,
            fault: Fault::Status {
                status: 529,
                retry_after: None,
            },
            seed: 1,
        },
    );
    h.mock.set_faults(
        "cred-1",
        FaultPlan::Random {
            probability: 0.5,
            fault: Fault::ConnectionReset,
            seed: 2,
        },
    );
    let semaphore = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for i in 0..2000 {
        let stream = rng.random_bool(0.5);
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let body = serde_json::json!({
                "model": "claude-sonnet-4-5",
                "stream": stream,
                "messages": [{"role": "user", "content": format!("request {i}")}],
            });
            let answer = h.call("/v1/messages", &body.to_string()).await;
            let attempts: usize = answer
                .headers
                .get("x-relay-attempts")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (answer.status.as_u16(), attempts)
        }));
    }
    let mut served = 0;
    let mut attempts = 0;
    for task in tasks {
        let (status, n) = task.await.unwrap();
        served += usize::from(status == 200);
        attempts += n;
    }
    println!(
        "fault mix: {served}/2000 served, {:.3} attempts per request",
        attempts as f64 / 2000.0
    );
    assert_eq!(served, 2000);
    let ids: Vec<AccountId> = (0..4)
        .map(|i| AccountId::from(format!("acct-{i}")))
        .collect();
    let settled = support::eventually(|| {
        ids.iter()
            .all(|a| store.in_flight(a) == 0 && store.waiting(a) == 0)
    })
    .await;
    assert!(settled, "slots held after the fault mix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_extra_attempts_when_every_account_fails() {
    let mock = MockUpstream::start().await.unwrap();
    let mut toml = String::from("[scheduling]\ncooldown_wait_max_secs = 0\n");
    for i in 0..4 {
        toml += &account(
            &format!("acct-{i}"),
            "anthropic",
            "api_key",
            &format!("cred-{i}"),
            "{base}",
        );
    }
    let h = Arc::new(Harness::with_mock(mock, &toml).await);
    h.mock.set_default_faults(FaultPlan::Always(Fault::Status {
        status: 529,
        retry_after: Some(0),
    }));
    let requests = 500;
    let mut tasks = Vec::new();
    for i in 0..requests {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": format!("r{i}")}]});
            let started = std::time::Instant::now();
            let answer = h.call("/v1/messages", &body.to_string()).await;
            (answer.status.as_u16(), answer.headers.contains_key("retry-after"), started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (status, retry_after, took) = task.await.unwrap();
        assert!(status == 503 || status == 529, "{status}");
        assert!(retry_after, "every refusal says when to retry");
        slowest = slowest.max(took);
    }
    let upstream = h.mock.request_count();
    let ratio = upstream as f64 / requests as f64;
    println!("retry budget: {upstream} upstream attempts for {requests} requests ({ratio:.3} per request)");
    // 20% of requests plus the floor (10/s over the 10 s window).
    assert!(
        upstream as f64 <= 1.2 * requests as f64 + 100.0,
        "{upstream} attempts for {requests} requests"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "errors came promptly ({slowest:?})"
    );
}

#[tokio::test]
async fn stream_bodies_keep_their_bytes_when_peeked() {
    let mock = MockUpstream::builder()
        .stream_deltas(50)
        .start()
        .await
        .unwrap();
    let h = Harness::with_mock(mock, &two("api_key")).await;
    let req = h
        .post("/v1/messages")
        .body(Full::new(Bytes::from(messages_body(
            "claude-sonnet-4-5",
            true,
        ))))
        .unwrap();
    let response = support::open(req).await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, h.mock.received()[0].response_body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_failing_account_is_ejected_and_gets_almost_no_traffic() {
    let mock = MockUpstream::builder()
        .first_byte_delay(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let mut toml = String::new();
    for i in 0..3 {
        toml += &account(
            &format!("acct-{i}"),
            "anthropic",
            "api_key",
            &format!("cred-{i}"),
            "{base}",
        );
        toml += "concurrency = 16\n";
    }
    let h = Arc::new(Harness::with_mock(mock, &toml).await);
    // acct-0 fails at once (no delay); the others answer in 50 ms.
    h.mock
        .set_faults("cred-0", FaultPlan::Always(Fault::ConnectionReset));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    let requests = 400;
    for i in 0..requests {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let body = serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": format!("r{i}")}]});
            h.call("/v1/messages", &body.to_string()).await.status.as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let to_failing = h
        .mock
        .received()
        .iter()
        .filter(|r| r.credential.as_deref() == Some("cred-0"))
        .count();
    println!("fast failer: {to_failing} of {requests} requests reached it");
    assert!(
        to_failing <= 5 + requests / 100,
        "{to_failing} requests reached the failing account"
    );
}

#[tokio::test]
async fn a_slow_stream_gets_keepalive_comments_then_its_events() {
    let mock = MockUpstream::builder()
        .first_byte_delay(Duration::from_millis(2500))
        .start()
        .await
        .unwrap();
    let extra = format!(
        "[scheduling]\nstream_keepalive_secs = 1\n{}",
        two("api_key")
    );
    let h = Harness::with_mock(mock, &extra).await;
    let started = std::time::Instant::now();
    let req = h
        .post("/v1/messages")
        .body(Full::new(Bytes::from(messages_body(
            "claude-sonnet-4-5",
            true,
        ))))
        .unwrap();
    let response = support::open(req).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "the head waited for the upstream"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let upstream = String::from_utf8_lossy(&h.mock.received()[0].response_body).into_owned();
    let keepalives = text
        .strip_suffix(&upstream)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        !keepalives.is_empty() && keepalives.split(": keepalive\n\n").all(str::is_empty),
        "{keepalives:?}"
    );
}

#[tokio::test]
async fn a_kept_alive_stream_whose_attempts_all_fail_ends_with_an_error_event() {
    let mock = MockUpstream::builder()
        .first_byte_delay(Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    let extra = format!(
        "[scheduling]\nstream_keepalive_secs = 1\n{}",
        two("api_key")
    );
    let h = Harness::with_mock(mock, &extra).await;
    h.mock.set_default_faults(FaultPlan::Always(Fault::Status {
        status: 529,
        retry_after: None,
    }));
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", true))
        .await;
    assert_eq!(answer.status, 200);
    let text = answer.text();
    assert!(text.starts_with(": keepalive\n\n"), "{text}");
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\ndata: "),
        "{text}"
    );
    assert_eq!(h.mock.request_count(), 2, "both accounts were tried");
}

#[tokio::test]
async fn with_every_upstream_hanging_the_client_gets_its_error_by_the_deadline() {
    let extra = format!(
        "[scheduling]\nrequest_deadline_secs = 2\n{}",
        two("api_key")
    );
    let h = Harness::start(&extra).await;
    h.mock.set_default_faults(FaultPlan::Always(Fault::Hang));
    let started = std::time::Instant::now();
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 504, "{}", answer.text());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
        "{took:?}"
    );
    assert!(answer.text().contains("deadline"), "{}", answer.text());
}

#[tokio::test]
async fn the_exhausted_error_lists_skipped_accounts_too() {
    let mock = MockUpstream::start().await.unwrap();
    let (h, store) = Harness::with_store(mock, &two("api_key")).await;
    let second = AccountId::from("second");
    store
        .set_cooldown(
            &second,
            None,
            Duration::from_secs(60),
            tower_llm_relay::state::CooldownReason::RateLimited,
        )
        .await
        .unwrap();
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Always(Fault::Status {
            status: 500,
            retry_after: None,
        }),
    );
    let answer = h
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("first: 500"), "{message}");
    assert!(
        message.contains("second: skipped, cooling down (rate_limited"),
        "{message}"
    );
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn a_rate_limit_cools_the_account_for_that_model_only() {
    let mock = MockUpstream::start().await.unwrap();
    let (h, store) = Harness::with_store(mock, &two("api_key")).await;
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Sequence(vec![Fault::Status {
            status: 429,
            retry_after: Some(30),
        }]),
    );
    let opus = h
        .call("/v1/messages", &messages_body("claude-opus-4-1", false))
        .await;
    assert_eq!(opus.headers["x-relay-account"], "second");
    // Opus stays off `first` while it cools...
    let opus = h
        .call("/v1/messages", &messages_body("claude-opus-4-1", false))
        .await;
    assert_eq!(opus.headers["x-relay-account"], "second");
    // ...but other models still use it (a new conversation, so no sticky
    // binding to `second`).
    let body = serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "another"}]});
    let sonnet = h.call("/v1/messages", &body.to_string()).await;
    let first = AccountId::from("first");
    let load = &store
        .loads(&[&first], Some("claude-opus-4-1"))
        .await
        .unwrap()[0];
    assert!(load.cooldown.is_some(), "opus cools on first");
    let load = &store.loads(&[&first], None).await.unwrap()[0];
    assert!(load.cooldown.is_none(), "the account as a whole does not");
    assert_eq!(sonnet.headers["x-relay-account"], "first");
    assert_eq!(sonnet.headers["x-relay-attempts"], "1");
}

#[tokio::test]
async fn durations_meaning_never_do_not_overflow_a_deadline() {
    // Found by the config fuzz target: `request_deadline_secs =
    // 9223372036854775807` was accepted and the first request panicked
    // adding it to the clock. The config now refuses it; a library user
    // may still pass `Duration::MAX`, which must mean "never".
    let mock = MockUpstream::start().await.unwrap();
    let scheduling = tower_llm_relay::select::SchedulingConfig {
        request_deadline: Duration::MAX,
        sticky_ttl: Duration::MAX,
        sticky_wait_timeout: Duration::MAX,
        ..Default::default()
    };
    let builder = support::config_for(&mock, &two("api_key"))
        .relay_builder()
        .scheduling(scheduling);
    let h = Harness::serve(mock, builder).await;
    h.mock.set_faults(
        "cred-first",
        FaultPlan::Sequence(vec![Fault::Status {
            status: 529,
            retry_after: Some(u64::MAX / 2),
        }]),
    );
    for _ in 0..2 {
        let answer = h
            .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}
