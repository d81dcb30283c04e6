//! Shared state on Redis: several relay replicas sharing one
//! `redis-server` behave as one. Each test starts its own `redis-server` on
//! a free loopback port (`.ci/run` installs it); without one on `PATH` the
//! tests fail, they never skip.

mod support;

use support::redis_server::RedisServer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use support::{
    account, accounts, eventually_async, messages_body, send, session_body, session_id, Answer,
    CLIENT_KEY,
};
use tokio::task::JoinHandle;
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};
use tower_llm_relay::state::redis::{OnRedisError, RedisStore};
use tower_llm_relay::state::{CooldownReason, MemoryStore, SlotLimits, StateStore};
use tower_llm_relay::{AccountId, RelayBuilder};

// === relay replicas ===

/// One relay replica served on 127.0.0.1.
struct Replica {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Replica {
    async fn serve(builder: RelayBuilder) -> Replica {
        let relay = builder.build::<axum::body::Body>();
        let app = axum::Router::new().fallback_service(relay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Replica { addr, server }
    }

    /// A replica in front of `mock` with the accounts in `extra` sharing
    /// `store`.
    async fn start(mock: &MockUpstream, extra: &str, store: &RedisStore) -> Replica {
        let builder = support::config_for(mock, extra)
            .relay_builder()
            .state(Arc::new(store.clone()));
        Self::serve(builder).await
    }

    async fn call(&self, path: &str, body: &str) -> Answer {
        let req = http::Request::post(format!("http://{}{path}", self.addr))
            .header("x-api-key", CLIENT_KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request builds");
        send(req).await
    }
}

async fn slow_upstream() -> MockUpstream {
    MockUpstream::builder()
        .stream_deltas(10)
        .event_interval(Duration::from_millis(20))
        .start()
        .await
        .expect("mock starts")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// === one behaviour suite, two stores ===

async fn in_flight(store: &dyn StateStore, id: &AccountId) -> u32 {
    store.loads(&[id], None).await.expect("loads")[0].in_flight
}

/// The `StateStore` contract, checked the same way for every store.
async fn conformance(store: Arc<dyn StateStore>) {
    let s = store.as_ref();
    let ttl = Duration::from_secs(60);
    let a = AccountId::from("conf-a");
    let b = AccountId::from("conf-b");

    // Sticky bindings: set, read, groups apart, clear.
    assert_eq!(s.sticky_get("g", "s1", ttl).await.unwrap(), None);
    s.sticky_set("g", "s1", &a, ttl).await.unwrap();
    assert_eq!(s.sticky_get("g", "s1", ttl).await.unwrap(), Some(a.clone()));
    assert_eq!(s.sticky_get("other", "s1", ttl).await.unwrap(), None);
    s.sticky_clear("g", "s1").await.unwrap();
    assert_eq!(s.sticky_get("g", "s1", ttl).await.unwrap(), None);
    // A binding expires with its TTL.
    s.sticky_set("g", "short", &a, Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(s.sticky_get("g", "short", ttl).await.unwrap(), None);

    // Response affinity.
    s.response_set("resp_1", &b, ttl).await.unwrap();
    assert_eq!(s.response_get("resp_1").await.unwrap(), Some(b.clone()));
    assert_eq!(s.response_get("resp_2").await.unwrap(), None);

    // Slots: the limit holds, a release frees one and wakes a signal made
    // before it, releasing is idempotent (one guard, one release).
    let limits = SlotLimits {
        concurrency: 2,
        rpm: None,
    };
    let one = s.try_acquire(&a, limits).await.unwrap().expect("room");
    let two = s.try_acquire(&a, limits).await.unwrap().expect("room");
    assert!(s.try_acquire(&a, limits).await.unwrap().is_none(), "full");
    assert_eq!(in_flight(s, &a).await, 2);
    assert_eq!(in_flight(s, &b).await, 0);
    let signal = s.slot_released(&a);
    drop(one);
    tokio::time::timeout(Duration::from_secs(1), signal)
        .await
        .expect("the release wakes the signal");
    assert!(
        eventually_async(Duration::from_secs(1), || async {
            in_flight(s, &a).await == 1
        })
        .await
    );
    let three = s.try_acquire(&a, limits).await.unwrap().expect("freed");
    drop((two, three));
    assert!(
        eventually_async(Duration::from_secs(1), || async {
            in_flight(s, &a).await == 0
        })
        .await
    );

    // RPM: the window counts every start, released or not.
    let rpm = SlotLimits {
        concurrency: 10,
        rpm: Some(2),
    };
    let c = AccountId::from("conf-c");
    drop(s.try_acquire(&c, rpm).await.unwrap().expect("1st"));
    drop(s.try_acquire(&c, rpm).await.unwrap().expect("2nd"));
    assert!(s.try_acquire(&c, rpm).await.unwrap().is_none(), "rpm");
    assert_eq!(s.loads(&[&c], None).await.unwrap()[0].rpm_used, 2);

    // Wait queue: bounded, a ticket leaves when dropped.
    let t1 = s.enter_queue(&b, 2).await.unwrap().expect("1st place");
    let t2 = s.enter_queue(&b, 2).await.unwrap().expect("2nd place");
    assert!(s.enter_queue(&b, 2).await.unwrap().is_none(), "full queue");
    assert_eq!(s.loads(&[&b], None).await.unwrap()[0].waiting, 2);
    drop(t1);
    assert!(
        eventually_async(Duration::from_secs(1), || async {
            s.loads(&[&b], None).await.unwrap()[0].waiting == 1
        })
        .await
    );
    drop(t2);

    // Cooldowns: the longest is kept, per model too, and cleared at once.
    s.set_cooldown(
        &a,
        None,
        Duration::from_secs(30),
        CooldownReason::RateLimited,
    )
    .await
    .unwrap();
    s.set_cooldown(&a, None, Duration::from_secs(5), CooldownReason::Overloaded)
        .await
        .unwrap();
    let (left, reason) = s.loads(&[&a], None).await.unwrap()[0]
        .cooldown
        .expect("cooling");
    assert_eq!(reason, CooldownReason::RateLimited);
    assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30));
    s.set_cooldown(
        &b,
        Some("claude-opus-4-1"),
        Duration::from_secs(10),
        CooldownReason::Overloaded,
    )
    .await
    .unwrap();
    let loads = s.loads(&[&a, &b], Some("claude-sonnet-4-5")).await.unwrap();
    assert!(loads[0].cooldown.is_some() && loads[1].cooldown.is_none());
    let listed = s.model_cooldowns(&b).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, "claude-opus-4-1");
    assert_eq!(listed[0].2, CooldownReason::Overloaded);
    assert!(listed[0].1 > Duration::from_secs(9) && listed[0].1 <= Duration::from_secs(10));
    let opus = s.loads(&[&b], Some("claude-opus-4-1")).await.unwrap();
    assert_eq!(
        opus[0].cooldown.map(|(_, r)| r),
        Some(CooldownReason::Overloaded)
    );
    s.clear_cooldown(&a).await.unwrap();
    s.clear_cooldown(&b).await.unwrap();
    let loads = s.loads(&[&a, &b], Some("claude-opus-4-1")).await.unwrap();
    assert!(loads.iter().all(|l| l.cooldown.is_none()), "{loads:?}");
    // A short cooldown ends by itself.
    s.set_cooldown(
        &c,
        None,
        Duration::from_millis(50),
        CooldownReason::UpstreamError,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(s.loads(&[&c], None).await.unwrap()[0].cooldown.is_none());

    // OAuth tokens and the refresh lock.
    assert!(s.tokens_get(&a).await.unwrap().is_none());
    let tokens = tower_llm_relay::oauth::RefreshedTokens {
        access_token: "at-1".into(),
        refresh_token: "rt-1".into(),
        expires_at: 4_000_000_000,
    };
    s.tokens_set(&a, &tokens).await.unwrap();
    let stored = s.tokens_get(&a).await.unwrap().expect("stored");
    assert_eq!(stored.expires_at, 4_000_000_000);
    use secrecy::ExposeSecret;
    assert_eq!(stored.refresh_token.expose_secret(), "rt-1");
    let held = s
        .refresh_lock(&a, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("free lock");
    assert!(s
        .refresh_lock(&a, Duration::from_secs(10))
        .await
        .unwrap()
        .is_none());
    drop(held);
    assert!(
        eventually_async(Duration::from_secs(1), || async {
            s.refresh_lock(&a, Duration::from_secs(10))
                .await
                .unwrap()
                .is_some()
        })
        .await,
        "a dropped lock is free again"
    );
}

#[tokio::test]
async fn memory_store_passes_the_state_store_suite() {
    conformance(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redis_store_passes_the_state_store_suite() {
    let redis = RedisServer::start();
    let store = redis.store();
    conformance(Arc::new(store.clone())).await;
    assert!(!store.is_degraded());
}

// === replicas behave as one ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_across_two_replicas() {
    let redis = RedisServer::start();
    let mock = slow_upstream().await;
    let extra = accounts(&["solo"], 2);
    let (store_a, store_b) = (redis.store(), redis.store());
    let a = Arc::new(Replica::start(&mock, &extra, &store_a).await);
    let b = Arc::new(Replica::start(&mock, &extra, &store_b).await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            replica
                .call("/v1/messages", &session_body(&session_id(i), true))
                .await
        }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(answer.text().contains("message_stop"));
    }
    assert_eq!(store_a.fallbacks() + store_b.fallbacks(), 0, "all in redis");
    let peak = mock.peak_in_flight("sk-ant-solo");
    assert!(peak <= 2, "{peak} in flight across replicas, limit 2");
    assert_eq!(peak, 2, "both slots were used");
    assert_eq!(mock.request_count(), 16);
}

#[tokio::test]
async fn a_session_bound_by_one_replica_is_honoured_by_the_other() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let extra = accounts(&["x1", "x2", "x3"], 4);
    let a = Replica::start(&mock, &extra, &redis.store()).await;
    let b = Replica::start(&mock, &extra, &redis.store()).await;
    for i in 0..6 {
        let body = session_body(&session_id(i), false);
        let first = a.call("/v1/messages", &body).await;
        assert_eq!(first.status, 200, "{}", first.text());
        for _ in 0..3 {
            let again = b.call("/v1/messages", &body).await;
            assert_eq!(again.served_by(), first.served_by(), "session {i}");
        }
    }
}

#[tokio::test]
async fn a_cooldown_set_by_one_replica_is_seen_by_the_other() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    // `hot` first: a lower priority number is tried first.
    let extra = account("hot", "anthropic", "api_key", "sk-ant-hot", "{base}")
        + "priority = 1\n"
        + &account("spare", "anthropic", "api_key", "sk-ant-spare", "{base}")
        + "priority = 5\n";
    mock.set_faults(
        "sk-ant-hot",
        FaultPlan::Always(Fault::Status {
            status: 429,
            retry_after: Some(30),
        }),
    );
    let a = Replica::start(&mock, &extra, &redis.store()).await;
    let b = Replica::start(&mock, &extra, &redis.store()).await;
    let first = a
        .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.served_by(), "spare");
    for _ in 0..3 {
        let answer = b
            .call("/v1/messages", &messages_body("claude-sonnet-4-5", false))
            .await;
        assert_eq!(answer.served_by(), "spare");
    }
    let to_hot = mock
        .received()
        .iter()
        .filter(|r| {
            r.headers
                .get("x-api-key")
                .is_some_and(|k| k == "sk-ant-hot")
        })
        .count();
    assert_eq!(to_hot, 1, "replica B never tried the account A cooled down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_one_replica_wakes_when_another_releases() {
    let redis = RedisServer::start();
    let releaser = redis.store();
    let waiter = redis.store();
    let id = AccountId::from("wake");
    let limits = SlotLimits {
        concurrency: 1,
        rpm: None,
    };
    // Let the waiter's subscription come up first.
    waiter.loads(&[&id], None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut delays = Vec::new();
    for _ in 0..40 {
        let slot = releaser
            .try_acquire(&id, limits)
            .await
            .unwrap()
            .expect("free");
        let signal = waiter.slot_released(&id);
        assert!(waiter.try_acquire(&id, limits).await.unwrap().is_none());
        let released = Instant::now();
        drop(slot);
        // As the scheduler waits: a wake-up may be spurious (a permit left
        // by an earlier release), so look, and wait again if still full.
        let mut signal = signal;
        let mine = loop {
            tokio::time::timeout(Duration::from_millis(200), signal)
                .await
                .expect("woken by pub/sub well before the 250 ms recheck");
            signal = waiter.slot_released(&id);
            if let Some(slot) = waiter.try_acquire(&id, limits).await.unwrap() {
                break slot;
            }
        };
        delays.push(released.elapsed());
        drop(mine);
        assert!(
            eventually_async(Duration::from_secs(1), || async {
                in_flight(&releaser, &id).await == 0
            })
            .await
        );
    }
    delays.sort();
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    println!("cross-replica wake-up (release on A to slot taken on B): p50 {p50:?}, p99 {p99:?}");
    // Every wake-up came within 200 ms (above); most within a few.
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}");
}

#[test]
fn a_crashed_replicas_leases_expire_and_a_live_ones_are_renewed() {
    let redis = RedisServer::start();
    let url = redis.url();
    let id = AccountId::from("crashy");
    let limits = SlotLimits {
        concurrency: 2,
        rpm: None,
    };
    let ttl = Duration::from_secs(1);
    // The crashed replica: its own runtime, its guards never dropped, then
    // the runtime gone (tasks included) as if the process died.
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let crashed = RedisStore::builder(url.as_str())
                .lease_ttl(ttl)
                .build()
                .unwrap();
            for _ in 0..2 {
                let slot = crashed.try_acquire(&id, limits).await.unwrap().unwrap();
                std::mem::forget(slot);
            }
        });
        runtime.shutdown_background();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let live = RedisStore::builder(url.as_str())
            .lease_ttl(ttl)
            .build()
            .unwrap();
        assert_eq!(in_flight(&live, &id).await, 2);
        assert!(live.try_acquire(&id, limits).await.unwrap().is_none());
        let crashed_at = Instant::now();
        assert!(
            eventually_async(ttl + Duration::from_secs(1), || async {
                in_flight(&live, &id).await == 0
            })
            .await,
            "the crashed replica's slots came back within the lease TTL + 1 s"
        );
        println!("crashed leases freed after {:?}", crashed_at.elapsed());
        // A live replica keeps its lease well past the TTL.
        let held = live.try_acquire(&id, limits).await.unwrap().expect("room");
        tokio::time::sleep(ttl * 3).await;
        assert_eq!(in_flight(&live, &id).await, 1, "renewed, not expired");
        drop(held);
        assert!(
            eventually_async(Duration::from_secs(1), || async {
                in_flight(&live, &id).await == 0
            })
            .await
        );
    });
}

// === Redis failures ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_serving_through_a_redis_restart_and_converges() {
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let shared = RedisStore::builder(redis.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let replica = Arc::new(Replica::start(&mock, &accounts(&["r1", "r2"], 4), &shared).await);
    let body = messages_body("claude-sonnet-4-5", false);
    assert_eq!(replica.call("/v1/messages", &body).await.status, 200);

    // Four clients keep calling while redis dies and comes back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (replica, stop, body) = (replica.clone(), stop.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let (mut served, mut slowest) = (0, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let answer = replica.call("/v1/messages", &body).await;
                slowest = slowest.max(started.elapsed());
                assert_eq!(answer.status, 200, "{}", answer.text());
                served += 1;
            }
            (served, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(shared.is_degraded());
    assert!(shared.fallbacks() > 0, "counted");
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    for worker in workers {
        let (n, worst) = worker.await.unwrap();
        served += n;
        slowest = slowest.max(worst);
    }
    println!("{served} requests served through a redis restart; slowest {slowest:?}");
    // A request pays at most one 200 ms timeout (Redis is then skipped
    // for a while); none waits longer.
    assert!(slowest < Duration::from_millis(700), "{slowest:?}");

    redis.restart();
    let id = AccountId::from("r1");
    let limits = SlotLimits {
        concurrency: 4,
        rpm: None,
    };
    let back = eventually_async(Duration::from_secs(10), || async {
        let _ = shared.loads(&[&id], None).await;
        !shared.is_degraded()
    })
    .await;
    assert!(back, "reconnected after the restart");
    // The state is Redis's again: a slot taken here is seen by another replica.
    let slot = shared
        .try_acquire(&id, limits)
        .await
        .unwrap()
        .expect("room");
    let other = redis.store();
    assert_eq!(in_flight(&other, &id).await, 1);
    drop(slot);
    for _ in 0..5 {
        assert_eq!(replica.call("/v1/messages", &body).await.status, 200);
    }
}

#[tokio::test]
async fn fail_closed_answers_503_in_format_within_the_timeout() {
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let closed = RedisStore::builder(redis.url())
        .on_error(OnRedisError::FailClosed)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let extra = accounts(&["c1"], 4) + &account("oa", "openai", "api_key", "sk-openai", "{base}");
    let replica = Replica::start(&mock, &extra, &closed).await;
    let body = messages_body("claude-sonnet-4-5", false);
    assert_eq!(replica.call("/v1/messages", &body).await.status, 200);

    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = replica.call("/v1/messages", &body).await;
        let took = started.elapsed();
        assert_eq!(answer.status, 503, "{}", answer.text());
        let json = answer.json();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["type"], "api_error");
        assert!(!answer.text().contains("redis://"), "{}", answer.text());
        assert!(took < Duration::from_millis(600), "{took:?}");
    }
    let chat = serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
    });
    let answer = replica
        .call("/v1/chat/completions", &chat.to_string())
        .await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "state_unavailable");

    redis.restart();
    let ok = eventually_async(Duration::from_secs(10), || async {
        replica.call("/v1/messages", &body).await.status == 200
    })
    .await;
    assert!(ok, "serving again once redis is back");
}

// === OAuth across replicas ===

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_refreshing_one_account_spend_its_refresh_token_once() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    // Expires within the refresh margin: every replica wants to refresh.
    let extra = format!(
        "[[accounts]]\nid = \"max-1\"\nplatform = \"anthropic\"\ntype = \"oauth\"\naccess_token = \"sk-ant-oat-old\"\nrefresh_token = \"sk-ant-ort-old\"\nexpires_at = {}\ntoken_url = \"{{base}}/v1/oauth/token\"\nbase_url = \"{{base}}\"\n",
        unix_now() + 60
    );
    let replicas = [
        Arc::new(Replica::start(&mock, &extra, &redis.store()).await),
        Arc::new(Replica::start(&mock, &extra, &redis.store()).await),
        Arc::new(Replica::start(&mock, &extra, &redis.store()).await),
    ];
    let mut tasks = Vec::new();
    for i in 0..30 {
        let replica = replicas[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": format!("n{i}")}],
            });
            replica.call("/v1/messages", &body.to_string()).await
        }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(mock.token_refreshes(), 1, "one refresh for all replicas");
    let bearers: std::collections::HashSet<String> = mock
        .received()
        .iter()
        .filter(|r| r.path_and_query == "/v1/messages")
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        bearers.into_iter().collect::<Vec<_>>(),
        ["Bearer sk-ant-oat-refreshed-1"]
    );
}

// === selection round trip: Redis against memory ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_round_trip_latency_redis_against_memory() {
    let redis = RedisServer::start();
    let ids: Vec<AccountId> = (0..8)
        .map(|i| AccountId::from(format!("lat-{i}")))
        .collect();
    let refs: Vec<&AccountId> = ids.iter().collect();
    let limits = SlotLimits {
        concurrency: 4,
        rpm: None,
    };
    let memory: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let shared: Arc<dyn StateStore> = Arc::new(redis.store());
    for (name, s) in [("memory", memory), ("redis", shared)] {
        let mut times = Vec::new();
        for i in 0..300 {
            let started = Instant::now();
            let loads = s.loads(&refs, Some("claude-sonnet-4-5")).await.unwrap();
            let best = loads
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| l.in_flight)
                .map_or(0, |(j, _)| j);
            let slot = s
                .try_acquire(refs[(best + i) % refs.len()], limits)
                .await
                .unwrap();
            drop(slot);
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{name}: loads(8) + acquire + release: p50 {:?}, p99 {:?}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

// === a real proxy process, killed ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_proxys_slots_come_back_within_the_lease_ttl() {
    use support::proxy_process::{ConfigFile, Proxy};
    let redis = RedisServer::start();
    let mock = MockUpstream::builder()
        .stream_deltas(500)
        .event_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let toml = format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nlease_ttl_secs = 1\n\n[[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"test\"\n{}concurrency = 3\n",
        redis.url(),
        account("held", "anthropic", "api_key", "sk-ant-held", &mock.base_url()),
    );
    let config = ConfigFile::new(&toml);
    let mut proxy = Proxy::start(config.path(), &[]);
    let mut streams = Vec::new();
    for i in 0..3 {
        let req = http::Request::post(proxy.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(session_body(&session_id(i), true))))
            .unwrap();
        let response = support::open(req).await;
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let observer = redis.store();
    let id = AccountId::from("held");
    assert_eq!(
        in_flight(&observer, &id).await,
        3,
        "the proxy holds 3 slots"
    );
    proxy.child.kill().expect("SIGKILL");
    let _ = proxy.child.wait();
    let killed = Instant::now();
    drop(streams);
    let freed = eventually_async(Duration::from_secs(2), || async {
        in_flight(&observer, &id).await == 0
    })
    .await;
    println!(
        "slots of the killed proxy freed after {:?}",
        killed.elapsed()
    );
    assert!(freed, "slots back within the lease TTL (1 s) + 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_holds_no_request_past_the_timeout() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let shared = RedisStore::builder(redis.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let replica = Replica::start(&mock, &accounts(&["f1"], 4), &shared).await;
    let body = messages_body("claude-sonnet-4-5", false);
    assert_eq!(replica.call("/v1/messages", &body).await.status, 200);
    // SIGSTOP: connections stay open, nothing answers (a hung server).
    redis.signal("STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = replica.call("/v1/messages", &body).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    redis.signal("CONT");
    println!("slowest request while redis was frozen: {slowest:?}");
    assert!(slowest < Duration::from_millis(700), "{slowest:?}");
    assert!(shared.fallbacks() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_keeps_serving_and_counts_fallbacks_when_redis_dies() {
    use support::proxy_process::{ConfigFile, Proxy};
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\n\n[[keys]]\nkey = \"{CLIENT_KEY}\"\nname = \"test\"\n{}",
        redis.url(),
        account("p1", "anthropic", "api_key", "sk-ant-p1", &mock.base_url()),
    );
    let config = ConfigFile::new(&toml);
    let proxy = Proxy::start(config.path(), &[]);
    let call = || {
        let req = http::Request::post(proxy.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .body(Full::new(Bytes::from(messages_body(
                "claude-sonnet-4-5",
                false,
            ))))
            .unwrap();
        send(req)
    };
    assert_eq!(call().await.status, 200);
    redis.kill();
    for _ in 0..3 {
        assert_eq!(call().await.status, 200);
    }
    let metrics = send(
        http::Request::get(proxy.url("/metrics"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("relay_state_fallback_total{")),
        "{metrics}"
    );
}
