use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::account::Credentials;
use crate::state::CooldownReason;

fn account(id: &str, kind: &str, priority: i32, concurrency: u32) -> Account {
    let secret = SecretString::from("k");
    let credentials = match kind {
        "oauth" => Credentials::SetupToken(secret),
        _ => Credentials::ApiKey(secret),
    };
    Account::builder(id, Platform::Anthropic, credentials)
        .priority(priority)
        .concurrency(concurrency)
        .models(["claude-*"])
        .build()
}

fn scheduler(accounts: Vec<Account>, config: SchedulingConfig) -> Scheduler {
    Scheduler::new(AccountPool::new(accounts), config)
}

fn request<'a>(session: Option<&'a str>, excluded: Option<&'a Excluded>) -> SelectRequest<'a> {
    SelectRequest {
        endpoint: Endpoint::Messages,
        model: "claude-sonnet-4-5",
        group: Some("default"),
        session,
        previous_response_id: None,
        excluded,
        pinned: None,
    }
}

async fn pick(s: &Scheduler, req: &SelectRequest<'_>) -> String {
    s.select(req).await.unwrap().account.id().to_string()
}

#[tokio::test(start_paused = true)]
async fn sticky_session_stays_then_moves_when_its_account_is_excluded() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 4), account("b", "api_key", 1, 4)],
        SchedulingConfig::default(),
    );
    let first = pick(&s, &request(Some("s1"), None)).await;
    for _ in 0..5 {
        // Free slots each time: the session keeps its account.
        assert_eq!(pick(&s, &request(Some("s1"), None)).await, first);
    }
    let excluded = Excluded([AccountId::from(first.as_str())].into_iter().collect());
    let moved = pick(&s, &request(Some("s1"), Some(&excluded))).await;
    assert_ne!(moved, first);
    // The session is now bound to its new account.
    assert_eq!(pick(&s, &request(Some("s1"), None)).await, moved);
    let metrics = s.metrics();
    assert_eq!(metrics.selects, 8);
    assert_eq!(metrics.sticky_hits, 6);
}

#[tokio::test(start_paused = true)]
async fn sticky_session_moves_when_its_account_cools_down() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 4), account("b", "api_key", 1, 4)],
        SchedulingConfig::default(),
    );
    let first = pick(&s, &request(Some("s1"), None)).await;
    let id = AccountId::from(first.as_str());
    s.store()
        .set_cooldown(
            &id,
            None,
            Duration::from_secs(60),
            CooldownReason::RateLimited,
        )
        .await
        .unwrap();
    let moved = pick(&s, &request(Some("s1"), None)).await;
    assert_ne!(moved, first);
    // Still on the new account after the cooldown ends: the binding moved.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(pick(&s, &request(Some("s1"), None)).await, moved);
}

#[tokio::test(start_paused = true)]
async fn sticky_session_moves_when_its_account_lacks_the_model() {
    let narrow = Account::builder(
        "narrow",
        Platform::Anthropic,
        Credentials::ApiKey(SecretString::from("k")),
    )
    .models(["claude-sonnet-*"])
    .build();
    let s = scheduler(
        vec![narrow, account("wide", "api_key", 2, 4)],
        SchedulingConfig::default(),
    );
    assert_eq!(pick(&s, &request(Some("s1"), None)).await, "narrow");
    let opus = SelectRequest {
        model: "claude-opus-4-1",
        ..request(Some("s1"), None)
    };
    assert_eq!(pick(&s, &opus).await, "wide");
    assert_eq!(pick(&s, &request(Some("s1"), None)).await, "wide");
}

#[tokio::test(start_paused = true)]
async fn sticky_session_moves_off_an_account_failing_far_more_than_the_pool() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 4), account("b", "api_key", 1, 4)],
        SchedulingConfig::default(),
    );
    let first = pick(&s, &request(Some("s1"), None)).await;
    let id = AccountId::from(first.as_str());
    for _ in 0..10 {
        s.stats().report(&id, false, None);
    }
    assert_ne!(pick(&s, &request(Some("s1"), None)).await, first);
}

#[tokio::test(start_paused = true)]
async fn accounts_never_exceed_their_concurrency_and_load_spreads() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 2), account("b", "api_key", 1, 2)],
        SchedulingConfig::default(),
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(s.select(&request(None, None)).await.unwrap());
    }
    let on_a = held
        .iter()
        .filter(|h| h.account.id().as_str() == "a")
        .count();
    assert_eq!(on_a, 2, "two on each account");
    // A fifth must wait: it times out with overloaded.
    let config = s.config().fallback_wait_timeout;
    let started = Instant::now();
    let error = s.select(&request(None, None)).await.unwrap_err();
    assert!(matches!(error, RelayError::Overloaded { .. }), "{error:?}");
    assert!(started.elapsed() >= config);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_order_as_slots_free() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 1)],
        SchedulingConfig::default(),
    );
    let holder = s.select(&request(None, None)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..3 {
        let s = s.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let selection = s.select(&request(None, None)).await.unwrap();
            let _ = tx.send(n);
            // Hold the slot a moment so the next waiter has to wait for it.
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(selection);
        }));
        // Let each waiter join the queue before the next.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let store = s.store().clone();
    assert_eq!(
        store.loads(&[&AccountId::from("a")], None).await.unwrap()[0].waiting,
        3
    );
    drop(holder);
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(rx.recv().await.unwrap());
    }
    assert_eq!(served, [0, 1, 2]);
    for task in tasks {
        task.await.unwrap();
    }
    let load = &store.loads(&[&AccountId::from("a")], None).await.unwrap()[0];
    assert_eq!((load.in_flight, load.waiting), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_refused_at_once_and_a_gone_waiter_leaves_it() {
    let config = SchedulingConfig {
        fallback_max_waiting: 1,
        ..SchedulingConfig::default()
    };
    let s = scheduler(vec![account("a", "api_key", 1, 1)], config);
    let _holder = s.select(&request(None, None)).await.unwrap();
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.select(&request(None, None)).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let started = Instant::now();
    let refused = s.select(&request(None, None)).await.unwrap_err();
    assert!(matches!(refused, RelayError::Overloaded { .. }));
    assert!(
        started.elapsed() < Duration::from_millis(1),
        "a full queue must not wait"
    );
    // The waiting client goes away: its place is freed at once.
    waiter.abort();
    let _ = waiter.await;
    let load = &s
        .store()
        .loads(&[&AccountId::from("a")], None)
        .await
        .unwrap()[0];
    assert_eq!(load.waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn all_cooling_waits_for_a_short_cooldown_and_refuses_a_long_one() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 1)],
        SchedulingConfig::default(),
    );
    let id = AccountId::from("a");
    s.store()
        .set_cooldown(
            &id,
            None,
            Duration::from_secs(2),
            CooldownReason::Overloaded,
        )
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(pick(&s, &request(None, None)).await, "a");
    assert!(started.elapsed() >= Duration::from_secs(2));

    s.store()
        .set_cooldown(
            &id,
            None,
            Duration::from_secs(120),
            CooldownReason::RateLimited,
        )
        .await
        .unwrap();
    let error = s.select(&request(None, None)).await.unwrap_err();
    match error {
        RelayError::CoolingDown { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(120))
        }
        other => panic!("expected CoolingDown, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_tier_chain_goes_subscription_then_api_key_and_honours_stickiness() {
    let config = SchedulingConfig {
        tier_fallback_chain: true,
        ..SchedulingConfig::default()
    };
    // The API key has the better priority, but tiers come first.
    let s = scheduler(
        vec![
            account("key", "api_key", 1, 1),
            account("sub", "oauth", 5, 1),
        ],
        config,
    );
    let first = s.select(&request(None, None)).await.unwrap();
    assert_eq!(first.account.id().as_str(), "sub");
    assert_eq!(first.decision.tier, Some(0));
    // The subscription is full: the next tier serves.
    let second = s.select(&request(Some("s1"), None)).await.unwrap();
    assert_eq!(second.account.id().as_str(), "key");
    assert_eq!(second.decision.tier, Some(1));
    drop((first, second));
    // The session stays on its API-key account even with the subscription free.
    let again = s.select(&request(Some("s1"), None)).await.unwrap();
    assert_eq!(again.account.id().as_str(), "key");
    assert_eq!(again.decision.layer, DecisionLayer::Sticky);
}

#[tokio::test(start_paused = true)]
async fn no_candidate_is_a_no_account_error() {
    let s = scheduler(
        vec![account("a", "api_key", 1, 1)],
        SchedulingConfig::default(),
    );
    let gpt = SelectRequest {
        model: "gpt-4o",
        ..request(None, None)
    };
    assert!(matches!(
        s.select(&gpt).await.unwrap_err(),
        RelayError::NoAccount { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn previous_response_affinity_wins_for_the_scored_policy() {
    let key = || Credentials::ApiKey(SecretString::from("k"));
    let pool = AccountPool::new([
        Account::builder("o1", Platform::OpenAi, key()).build(),
        Account::builder("o2", Platform::OpenAi, key()).build(),
    ]);
    let s = Scheduler::new(pool, SchedulingConfig::default());
    s.store()
        .response_set("resp_1", &AccountId::from("o2"), Duration::from_secs(60))
        .await
        .unwrap();
    let req = SelectRequest {
        endpoint: Endpoint::Responses,
        model: "gpt-4o",
        previous_response_id: Some("resp_1"),
        ..request(None, None)
    };
    for _ in 0..10 {
        let selection = s.select(&req).await.unwrap();
        assert_eq!(selection.account.id().as_str(), "o2");
        assert_eq!(selection.decision.layer, DecisionLayer::PreviousResponse);
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_the_streak_and_readmits_an_ejected_account() {
    let config = SchedulingConfig {
        eject_after_failures: 2,
        ..SchedulingConfig::default()
    };
    let s = scheduler(
        vec![account("a", "api_key", 1, 4), account("b", "api_key", 1, 4)],
        config,
    );
    let (a, b) = (AccountId::from("a"), AccountId::from("b"));
    // No streak anywhere: a success has nothing to end.
    s.report_success(&a, None).await;
    assert_eq!(s.failure_streak(&a), 0);
    for _ in 0..2 {
        s.report_failure(&a, None, CooldownReason::UpstreamError, None)
            .await;
    }
    s.report_failure(&b, None, CooldownReason::UpstreamError, None)
        .await;
    assert!(s.is_ejected(&a));
    s.report_success(&a, None).await;
    assert!(!s.is_ejected(&a));
    assert_eq!(s.failure_streak(&a), 0);
    // Another account's streak is its own.
    assert_eq!(s.failure_streak(&b), 1);
    s.report_success(&b, None).await;
    assert_eq!(s.failure_streak(&b), 0);
    // A streak after every earlier one ended still counts.
    s.report_failure(&b, None, CooldownReason::UpstreamError, None)
        .await;
    assert_eq!(s.failure_streak(&b), 1);
    s.report_success(&b, None).await;
    assert_eq!(s.failure_streak(&b), 0);
}
