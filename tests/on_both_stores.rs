//! The scheduling and failover suite, once per state store: each scenario
//! is written once, as an async fn taking the store, and runs twice — on a
//! [`MemoryStore`] and on a [`RedisStore`] backed by a `redis-server` of the
//! test's own (`.ci/run` installs it; without it on `PATH` the Redis
//! variants fail, they never skip).
//!
//! Test names are `<scenario>::on_memory` and `<scenario>::on_redis`, so
//! `cargo test --test on_both_stores on_redis` runs one store's half.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::redis_server::RedisServer;
use support::{account, accounts, eventually_async, session_body, session_id, Answer, Harness};
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
use tower_llm_relay::state::{AccountLoad, CooldownReason, MemoryStore, RedisStore, StateStore};
use tower_llm_relay::AccountId;

const MODEL: &str = "claude-sonnet-4-5";
/// The group of the test client key, which scopes its sticky bindings.
const GROUP: &str = "default";

// === the stores ===

/// The store a relay runs on, and a view of the same state for the
/// scenario's checks. On Redis the view is a second client, as another
/// replica would be: a check passes only on what really reached Redis.
struct Stores {
    relay: Arc<dyn StateStore>,
    view: Arc<dyn StateStore>,
}

impl Stores {
    /// A relay on these stores in front of `mock` with the accounts in
    /// `extra`.
    async fn serve(&self, mock: MockUpstream, extra: &str) -> Harness {
        Harness::with_state(mock, extra, self.relay.clone()).await
    }

    /// `id`'s load now, with `model`'s cooldowns counted.
    async fn load(&self, id: &str, model: Option<&str>) -> AccountLoad {
        let id = AccountId::from(id);
        let mut loads = self.view.loads(&[&id], model).await.expect("loads");
        loads.remove(0)
    }

    /// The account `session` is bound to.
    async fn bound(&self, session: &str) -> Option<String> {
        let ttl = Duration::from_secs(3600);
        let id = self.view.sticky_get(GROUP, session, ttl).await;
        id.expect("sticky_get").map(|id| id.as_str().to_owned())
    }

    /// Asserts that every slot and queue place of `ids` comes back within
    /// 5 s (well inside the Redis lease TTL's renewals: a leaked guard
    /// would be renewed, never expire).
    async fn assert_settled(&self, ids: &[&str]) {
        let idle = || async {
            let mut idle = true;
            for id in ids {
                let load = self.load(id, None).await;
                idle &= load.in_flight == 0 && load.waiting == 0;
            }
            idle
        };
        if !eventually_async(Duration::from_secs(5), idle).await {
            let mut held = Vec::new();
            for id in ids {
                held.push((*id, self.load(id, None).await));
            }
            panic!("slots or queue places held: {held:?}");
        }
    }
}

async fn on_memory<F, Fut>(scenario: F)
where
    F: FnOnce(Stores) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let view = store.clone();
    scenario(Stores { relay: store, view }).await;
}

async fn on_redis<F, Fut>(scenario: F)
where
    F: FnOnce(Stores) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let redis = RedisServer::start();
    let (relay, view): (RedisStore, RedisStore) = (redis.store(), redis.store());
    let stores = Stores {
        relay: Arc::new(relay.clone()),
        view: Arc::new(view.clone()),
    };
    scenario(stores).await;
    // A store that fell back to its own memory would pass the scenario
    // without testing Redis at all.
    assert_eq!(relay.fallbacks(), 0, "the relay's calls all reached redis");
    assert_eq!(view.fallbacks(), 0, "the checks' calls all reached redis");
}

/// `<scenario>::on_memory` and `<scenario>::on_redis` for each scenario.
macro_rules! on_both_stores {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_memory() {
                super::on_memory(super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis() {
                super::on_redis(super::$scenario).await;
            }
        }
    )+};
}

on_both_stores!(
    the_concurrency_limit_holds_under_32_concurrent_streams,
    a_session_stays_on_its_account,
    a_rate_limited_account_fails_over_and_cools_down,
    a_session_moves_with_its_failing_account_and_stays_moved,
    waiters_are_served_one_slot_at_a_time,
    no_slot_is_held_after_clients_leave_mid_stream,
);

// === helpers ===

/// Sessions move only when their account fails: a starved CI machine can
/// make one account's first tokens look three times slower than the
/// other's, which would move a session too.
const NO_SLOW_MOVES: &str = "[scheduling]\nsticky_ttft_factor = 1000.0\n";

/// Streams of 6 deltas 15 ms apart: about 100 ms each.
async fn slow_mock() -> MockUpstream {
    MockUpstream::builder()
        .stream_deltas(6)
        .event_interval(Duration::from_millis(15))
        .start()
        .await
        .expect("mock starts")
}

/// Requests to the mock that carried `credential`.
fn sent_with(h: &Harness, credential: &str) -> usize {
    h.mock
        .received()
        .iter()
        .filter(|r| r.credential.as_deref() == Some(credential))
        .count()
}

fn attempts(answer: &Answer) -> &str {
    answer.headers["x-relay-attempts"].to_str().expect("ascii")
}

/// Concurrent requests, one per session in `sessions`, each read to its
/// end.
async fn concurrently(
    h: &Arc<Harness>,
    sessions: std::ops::Range<u64>,
    stream: bool,
) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for i in sessions {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.call("/v1/messages", &session_body(&session_id(i), stream))
                .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

// === scenarios ===

async fn the_concurrency_limit_holds_under_32_concurrent_streams(stores: Stores) {
    let h = Arc::new(
        stores
            .serve(slow_mock().await, &accounts(&["a1", "a2"], 3))
            .await,
    );
    for answer in concurrently(&h, 0..32, true).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(answer.text().contains("message_stop"), "{}", answer.text());
    }
    let peaks = ["sk-ant-a1", "sk-ant-a2"].map(|key| h.mock.peak_in_flight(key));
    assert!(
        peaks.iter().all(|&p| p <= 3),
        "in flight {peaks:?}, limit 3"
    );
    assert!(
        peaks.iter().all(|&p| p >= 1),
        "both accounts served: {peaks:?}"
    );
    assert_eq!(
        peaks.iter().max(),
        Some(&3),
        "32 streams on 6 slots fill an account"
    );
    assert_eq!(h.mock.request_count(), 32, "no request was tried twice");
    stores.assert_settled(&["a1", "a2"]).await;
}

async fn a_session_stays_on_its_account(stores: Stores) {
    let h = stores
        .serve(
            MockUpstream::start().await.unwrap(),
            &(NO_SLOW_MOVES.to_owned() + &accounts(&["a1", "a2"], 4)),
        )
        .await;
    let sessions: Vec<String> = (0..6).map(session_id).collect();
    let mut bound = Vec::new();
    for session in &sessions {
        let first = h.call("/v1/messages", &session_body(session, false)).await;
        assert_eq!(first.status, 200, "{}", first.text());
        bound.push(first.served_by().to_owned());
    }
    // New sessions spread (least recently used first), so stickiness below
    // is not just every request landing on one account.
    assert!(
        bound.iter().any(|a| a == "a1") && bound.iter().any(|a| a == "a2"),
        "{bound:?}"
    );
    for round in 0..3 {
        for (session, account) in sessions.iter().zip(&bound) {
            let again = h.call("/v1/messages", &session_body(session, false)).await;
            assert_eq!(again.status, 200, "{}", again.text());
            assert_eq!(again.served_by(), account, "round {round}, {session}");
        }
    }
    for (session, account) in sessions.iter().zip(&bound) {
        assert_eq!(stores.bound(session).await.as_deref(), Some(&**account));
    }
    let to_a1 = bound.iter().filter(|a| *a == "a1").count();
    assert_eq!(sent_with(&h, "sk-ant-a1"), to_a1 * 4);
    assert_eq!(sent_with(&h, "sk-ant-a2"), (sessions.len() - to_a1) * 4);
}

async fn a_rate_limited_account_fails_over_and_cools_down(stores: Stores) {
    // `first` is tried first: a lower priority number wins.
    let extra = account("first", "anthropic", "api_key", "sk-ant-first", "{base}")
        + "priority = 1\n"
        + &account("second", "anthropic", "api_key", "sk-ant-second", "{base}")
        + "priority = 2\n";
    let h = stores
        .serve(MockUpstream::start().await.unwrap(), &extra)
        .await;
    h.mock.set_faults(
        "sk-ant-first",
        FaultPlan::Always(Fault::Status {
            status: 429,
            retry_after: Some(30),
        }),
    );
    let answer = h
        .call("/v1/messages", &session_body(&session_id(0), true))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("message_stop"));
    assert_eq!(answer.served_by(), "second");
    assert_eq!(attempts(&answer), "2");

    let (left, reason) = stores
        .load("first", Some(MODEL))
        .await
        .cooldown
        .expect("first cools down");
    assert_eq!(reason, CooldownReason::RateLimited);
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "retry-after 30 s, {left:?} left"
    );
    let second = stores.load("second", Some(MODEL)).await;
    assert_eq!(
        second.cooldown, None,
        "the account that served is not cooling"
    );

    // While it cools, requests go straight to the second account: new
    // sessions, so no sticky binding to `second` decides it.
    for i in 1..5 {
        let answer = h
            .call("/v1/messages", &session_body(&session_id(i), false))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.served_by(), "second");
        assert_eq!(attempts(&answer), "1");
    }
    assert_eq!(sent_with(&h, "sk-ant-first"), 1, "first was tried once");
    stores.assert_settled(&["first", "second"]).await;
}

async fn a_session_moves_with_its_failing_account_and_stays_moved(stores: Stores) {
    let h = stores
        .serve(
            MockUpstream::start().await.unwrap(),
            &(NO_SLOW_MOVES.to_owned() + &accounts(&["a1", "a2"], 4)),
        )
        .await;
    let session = session_id(100);
    let body = session_body(&session, true);
    let first = h.call("/v1/messages", &body).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let old = first.served_by().to_owned();
    let new = if old == "a1" { "a2" } else { "a1" };
    assert_eq!(stores.bound(&session).await.as_deref(), Some(&*old));

    h.mock.set_faults(
        &format!("sk-ant-{old}"),
        FaultPlan::Always(Fault::Status {
            status: 500,
            retry_after: None,
        }),
    );
    let moved = h.call("/v1/messages", &body).await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_eq!(moved.served_by(), new);
    assert_eq!(attempts(&moved), "2", "tried its account first");
    assert_eq!(stores.bound(&session).await.as_deref(), Some(new));

    // The old account recovers. Least recently used, it is the one a new
    // session would get; the session stays where it moved all the same.
    h.mock
        .set_faults(&format!("sk-ant-{old}"), FaultPlan::Never);
    stores
        .view
        .clear_cooldown(&AccountId::from(&*old))
        .await
        .expect("clear_cooldown");
    for _ in 0..3 {
        let again = h.call("/v1/messages", &body).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.served_by(), new);
        assert_eq!(attempts(&again), "1");
    }
    let other = h
        .call("/v1/messages", &session_body(&session_id(101), true))
        .await;
    assert_eq!(
        other.served_by(),
        old,
        "a new session takes the idle account"
    );
    assert_eq!(sent_with(&h, &format!("sk-ant-{old}")), 3);
}

async fn waiters_are_served_one_slot_at_a_time(stores: Stores) {
    let h = Arc::new(
        stores
            .serve(slow_mock().await, &accounts(&["solo"], 1))
            .await,
    );
    let requests = 6;
    let run = tokio::spawn({
        let h = h.clone();
        async move { concurrently(&h, 0..requests, true).await }
    });
    // Watch the queue while the requests run.
    let (mut most_in_flight, mut most_waiting) = (0, 0);
    while !run.is_finished() {
        let load = stores.load("solo", None).await;
        most_in_flight = most_in_flight.max(load.in_flight);
        most_waiting = most_waiting.max(load.waiting);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for answer in run.await.expect("requests") {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(answer.text().contains("message_stop"), "{}", answer.text());
    }
    assert_eq!(h.mock.peak_in_flight("sk-ant-solo"), 1, "one at a time");
    assert_eq!(h.mock.request_count(), requests as usize);
    assert!(most_in_flight <= 1, "{most_in_flight} slots of 1 held");
    assert!(
        (1..requests as u32).contains(&most_waiting),
        "{most_waiting} waited at most"
    );
    stores.assert_settled(&["solo"]).await;
}

async fn no_slot_is_held_after_clients_leave_mid_stream(stores: Stores) {
    // Streams of about 2 s: they are far from their end when dropped.
    let mock = MockUpstream::builder()
        .stream_deltas(200)
        .event_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let h = Arc::new(stores.serve(mock, &accounts(&["a1", "a2"], 4)).await);
    let streams = 6;
    let mut open = Vec::new();
    for i in 0..streams {
        let req = h
            .post("/v1/messages")
            .body(Full::new(Bytes::from(session_body(&session_id(i), true))))
            .expect("request builds");
        let response = support::open(req).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let frame = body.frame().await.expect("a first frame").expect("data");
        assert!(frame.is_data());
        open.push(body);
    }
    // The slots ride in the response bodies.
    let held = stores.load("a1", None).await.in_flight + stores.load("a2", None).await.in_flight;
    assert_eq!(held, streams as u32, "one slot per open stream");

    drop(open);
    stores.assert_settled(&["a1", "a2"]).await;
    let cancelled = support::eventually(|| h.mock.cancelled_streams() == streams as usize).await;
    assert!(
        cancelled,
        "{} upstream streams cancelled",
        h.mock.cancelled_streams()
    );

    // Every slot is usable again: 8 new sessions on the 8 slots.
    for answer in concurrently(&h, 100..108, false).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    stores.assert_settled(&["a1", "a2"]).await;
}
