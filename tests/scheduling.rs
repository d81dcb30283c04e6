//! Scheduling through the whole stack against the mock: concurrency limits
//! hold, sessions stick, waiting works, and no slot leaks when clients go
//! away.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::{Rng, SeedableRng};
use support::{account, Harness};
use tower_llm_relay::mock::MockUpstream;
use tower_llm_relay::state::MemoryStore;
use tower_llm_relay::AccountId;

fn two_accounts(concurrency: u32) -> String {
    let mut toml = String::new();
    for (id, key) in [("a1", "sk-ant-a1"), ("a2", "sk-ant-a2")] {
        toml += &account(id, "anthropic", "api_key", key, "{base}");
        toml += &format!("concurrency = {concurrency}\n");
    }
    toml
}

async fn slow_mock() -> MockUpstream {
    MockUpstream::builder()
        .stream_deltas(10)
        .event_interval(Duration::from_millis(15))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_never_exceed_their_concurrency_under_64_concurrent_requests() {
    let h = Arc::new(Harness::with_mock(slow_mock().await, &two_accounts(3)).await);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct sessions, so stickiness does not pile them up.
            let body = serde_json::json!({
                "model": "claude-sonnet-4-5",
                "stream": true,
                "metadata": {"user_id": format!("session_{i:036x}")},
                "messages": [{"role": "user", "content": format!("hello {i}")}],
            });
            h.call("/v1/messages", &body.to_string()).await
        }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(answer.text().contains("message_stop"));
    }
    for key in ["sk-ant-a1", "sk-ant-a2"] {
        let peak = h.mock.peak_in_flight(key);
        assert!(peak <= 3, "{key} had {peak} in flight, limit 3");
        assert!(
            peak >= 2,
            "{key} was never busy ({peak}): load did not spread"
        );
        // Waiters spread too: when they all queued on the first account,
        // it served ~60 of the 64 while the other's slots sat free.
        let served = h
            .mock
            .received()
            .iter()
            .filter(|r| r.credential.as_deref() == Some(key))
            .count();
        assert!(
            (20..=44).contains(&served),
            "{key} served {served} of 64: the waiters piled onto one account"
        );
    }
    assert_eq!(h.mock.request_count(), 64);
}

#[tokio::test]
async fn a_session_stays_on_its_account() {
    let h = Harness::start(&two_accounts(4)).await;
    let mut served = Vec::new();
    for _ in 0..6 {
        let body = serde_json::json!({
            "model": "claude-sonnet-4-5",
            "system": "You are the same conversation every time.",
            "messages": [{"role": "user", "content": "hi"}],
        });
        let answer = h.call("/v1/messages", &body.to_string()).await;
        served.push(
            answer.headers["x-relay-account"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(served.iter().all(|a| *a == served[0]), "{served:?}");
}

#[tokio::test]
async fn new_sessions_share_accounts_of_equal_priority() {
    let h = Harness::start(&two_accounts(4)).await;
    let mut served = std::collections::HashSet::new();
    for i in 0..8 {
        let body = serde_json::json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": format!("conversation {i}")}],
        });
        let answer = h.call("/v1/messages", &body.to_string()).await;
        served.insert(
            answer.headers["x-relay-account"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        served.len(),
        2,
        "least recently used spreads new sessions: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_slot_leaks_after_1000_requests_with_random_client_drops() {
    let mock = MockUpstream::builder()
        .stream_deltas(8)
        .event_interval(Duration::from_millis(2))
        .start()
        .await
        .unwrap();
    let store = MemoryStore::new();
    let config = support::config_for(&mock, &two_accounts(4));
    let builder = config.relay_builder().state(Arc::new(store.clone()));
    let h = Arc::new(Harness::serve(mock, builder).await);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..1000 {
        let drop_after: Option<usize> = rng.random_bool(0.4).then(|| rng.random_range(0..6));
        let stream = rng.random_bool(0.7);
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let body = serde_json::json!({
                "model": "claude-sonnet-4-5",
                "stream": stream,
                "messages": [{"role": "user", "content": format!("n{i}")}],
            });
            let req = h
                .post("/v1/messages")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let response = support::open(req).await;
            let mut body = response.into_body();
            let mut frames = 0;
            while let Some(Ok(_)) = body.frame().await {
                frames += 1;
                if drop_after.is_some_and(|n| frames > n) {
                    // The client goes away mid-answer.
                    return false;
                }
            }
            true
        }));
    }
    let mut completed = 0;
    for task in tasks {
        completed += usize::from(task.await.unwrap());
    }
    assert!(completed > 300, "{completed} completed");
    let accounts = [AccountId::from("a1"), AccountId::from("a2")];
    let settled = support::eventually(|| {
        accounts
            .iter()
            .all(|a| store.in_flight(a) == 0 && store.waiting(a) == 0)
    })
    .await;
    let held: Vec<_> = accounts
        .iter()
        .map(|a| (store.in_flight(a), store.waiting(a)))
        .collect();
    assert!(settled, "slots or waiters leaked: {held:?}");
    println!("1000 requests, {completed} read to the end, 0 slots held after");
}

#[tokio::test]
async fn per_key_rpm_and_concurrency_limits_answer_429_in_format() {
    let mock = slow_mock().await;
    let toml = format!(
        "[[keys]]\nkey = \"sk-relay-rpm\"\nname = \"rpm\"\nrpm = 2\n[[keys]]\nkey = \"sk-relay-one\"\nname = \"one\"\nconcurrency = 1\n{}",
        account("a1", "anthropic", "api_key", "k", &mock.base_url())
    );
    let config = tower_llm_relay::config::Config::from_toml(&toml, "t.toml", |_| None).unwrap();
    let h = Harness::serve(mock, config.relay_builder()).await;
    let send = |key: &str| request(&h, key, false);
    assert_eq!(support::send(send("sk-relay-rpm")).await.status, 200);
    assert_eq!(support::send(send("sk-relay-rpm")).await.status, 200);
    let limited = support::send(send("sk-relay-rpm")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // One stream open: a second request of the same key is refused...
    let open = support::open(request(&h, "sk-relay-one", true)).await;
    assert_eq!(open.status(), 200);
    let refused = support::send(send("sk-relay-one")).await;
    assert_eq!(refused.status, 429);
    // ...until the stream ends.
    open.into_body().collect().await.unwrap();
    assert_eq!(support::send(send("sk-relay-one")).await.status, 200);
}

fn request(h: &Harness, key: &str, stream: bool) -> http::Request<Full<Bytes>> {
    http::Request::post(h.url("/v1/messages"))
        .header("x-api-key", key)
        .body(Full::new(Bytes::from(support::messages_body(
            "claude-sonnet-4-5",
            stream,
        ))))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_real_proxy_binary_concurrency_limits_hold_under_64_requests() {
    use support::proxy_process::{ConfigFile, Proxy};
    let mock = slow_mock().await;
    let config = ConfigFile::new(&format!(
        "[[keys]]\nkey = \"sk-relay-bin\"\nname = \"bin\"\n{}",
        two_accounts(3).replace("{base}", &mock.base_url())
    ));
    let proxy = Arc::new(Proxy::start(config.path(), &[]));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let url = proxy.url("/v1/messages");
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({
                "model": "claude-sonnet-4-5",
                "stream": true,
                "messages": [{"role": "user", "content": format!("conversation {i}")}],
            });
            let req = http::Request::post(url)
                .header("x-api-key", "sk-relay-bin")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            support::send(req).await
        }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    for key in ["sk-ant-a1", "sk-ant-a2"] {
        let peak = mock.peak_in_flight(key);
        assert!(
            (2..=3).contains(&peak),
            "{key}: peak {peak} in flight, limit 3"
        );
    }
    assert_eq!(mock.request_count(), 64);
}
