use secrecy::SecretString;

use super::*;
use crate::account::{Credentials, Platform};
use crate::select::pool::AccountHot;
use crate::stats::AccountStats;

fn candidate(id: &str, priority: i32, in_flight: u32, last_used: u64) -> Candidate<'static> {
    let account = Account::builder(
        id,
        Platform::Anthropic,
        Credentials::ApiKey(SecretString::from("k")),
    )
    .priority(priority)
    .concurrency(10)
    .build();
    // Leaked: test candidates borrow their accounts for the whole test run.
    let account: &'static Arc<Account> = Box::leak(Box::new(Arc::new(account)));
    let load = AccountLoad {
        in_flight,
        ..AccountLoad::default()
    };
    let stats = AccountStats {
        error_rate: 0.0,
        ttft_ms: None,
        last_used,
    };
    let hot = AccountHot {
        priority: account.priority(),
        concurrency: account.concurrency(),
        rpm: account.rpm(),
    };
    Candidate::new(account, hot, load, stats)
}

fn ids(candidates: &[Candidate<'_>], order: &[usize]) -> Vec<String> {
    order
        .iter()
        .map(|&i| candidates[i].account.id().to_string())
        .collect()
}

#[test]
fn load_aware_orders_by_priority_then_load_then_least_recently_used() {
    let candidates = [
        candidate("p2-idle", 2, 0, 0),
        candidate("p1-busy", 1, 5, 0),
        candidate("p1-recent", 1, 1, 9),
        candidate("p1-old", 1, 1, 3),
        candidate("p1-never", 1, 1, 0),
    ];
    let order = load_aware_order(&candidates);
    assert_eq!(
        ids(&candidates, &order),
        ["p1-never", "p1-old", "p1-recent", "p1-busy", "p2-idle"]
    );
}

#[test]
fn scores_follow_the_weighted_factors() {
    let weights = ScoreWeights::default();
    let mut slow = candidate("slow", 1, 0, 0);
    slow.stats.ttft_ms = Some(900.0);
    let mut fast = candidate("fast", 1, 0, 0);
    fast.stats.ttft_ms = Some(100.0);
    let mut failing = candidate("failing", 1, 0, 0);
    failing.stats.error_rate = 1.0;
    let busy = candidate("busy", 1, 10, 0);
    let low_priority = candidate("low", 3, 0, 0);
    let s = scores(&[slow, fast, failing, busy, low_priority], &weights);
    // fast: every factor 1 → 1.0 + 1.0 + 0.7 + 0.8 + 0.5.
    assert!((s[1] - 4.0).abs() < 1e-9, "{s:?}");
    assert!((s[0] - 3.5).abs() < 1e-9, "{s:?}");
    // Unknown first-token time scores the neutral 0.5.
    assert!((s[2] - (4.0 - 0.8 - 0.25)).abs() < 1e-9, "{s:?}");
    assert!((s[3] - (4.0 - 1.0 - 0.25)).abs() < 1e-9, "{s:?}");
    assert!((s[4] - (4.0 - 1.0 - 0.25)).abs() < 1e-9, "{s:?}");
}

#[test]
fn the_load_aware_pick_is_the_first_with_room_in_load_aware_order() {
    // Priorities, loads and last uses with ties; some full (concurrency 10).
    let candidates: Vec<Candidate> = (0..60u32)
        .map(|i| {
            candidate(
                &format!("a{i:02}"),
                (i * 7 % 3) as i32,
                i * 11 % 12,
                u64::from(i * 5 % 4),
            )
        })
        .collect();
    let keys = candidates
        .iter()
        .map(|c| load_aware_key(&c.hot, &c.load, c.stats.last_used));
    let expected = load_aware_order(&candidates)
        .into_iter()
        .find(|&i| candidates[i].has_room());
    assert!(expected.is_some());
    assert_eq!(load_aware_first(keys), expected);
    let full: Vec<Candidate> = candidates
        .iter()
        .filter(|c| !c.has_room())
        .cloned()
        .collect();
    assert!(!full.is_empty());
    let keys = full
        .iter()
        .map(|c| load_aware_key(&c.hot, &c.load, c.stats.last_used));
    assert_eq!(load_aware_first(keys), None, "no room anywhere");
}

#[test]
fn scored_top_k_keeps_the_k_best() {
    let candidates: Vec<Candidate> = (0..20)
        .map(|i| candidate(&format!("a{i:02}"), 1, i, 0))
        .collect();
    let scored = scored_order(&candidates, &ScoreWeights::default(), 3, 42);
    assert_eq!(scored.top_k, 3);
    let mut kept = ids(&candidates, &scored.order);
    kept.sort();
    // The least loaded three.
    assert_eq!(kept, ["a00", "a01", "a02"]);
    assert_eq!(
        scored_order(&candidates, &ScoreWeights::default(), 3, 42),
        scored,
        "same seed, same order"
    );
}

#[test]
fn the_k_best_are_the_first_k_of_a_full_sort_for_small_and_large_k() {
    // Priorities, loads and queues with many ties, in a scrambled order.
    let candidates: Vec<Candidate> = (0..100u32)
        .map(|i| {
            let mut c = candidate(&format!("a{i:03}"), (i * 7 % 3) as i32, i * 13 % 9, 0);
            c.load.waiting = i * 5 % 4;
            c
        })
        .collect();
    let weights = ScoreWeights::default();
    let scale = ScoreScale::of(&candidates);
    let mut all: Vec<_> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| rank_key(c, scale.score(c, &weights), i))
        .collect();
    all.sort_unstable();
    for k in [1, 2, 5, SMALL_TOP_K, SMALL_TOP_K + 1, 99, 100] {
        let kept: Vec<_> = top_k_keys(&candidates, &weights, k)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(kept, all[..k], "k = {k}");
    }
}

#[test]
fn scored_first_picks_match_the_weights_over_10000_seeded_draws() {
    // Scores 4.0, 3.5 and 3.0 → weights 2.0, 1.5 and 1.0.
    let mut a = candidate("a", 1, 0, 0);
    a.stats.ttft_ms = Some(100.0);
    let mut b = candidate("b", 1, 0, 0);
    b.stats.ttft_ms = Some(1000.0);
    let mut c = candidate("c", 1, 0, 0);
    c.stats.ttft_ms = Some(1000.0);
    c.stats.error_rate = 0.625;
    let candidates = [a, b, c];
    let weights = ScoreWeights::default();
    let s = scores(&candidates, &weights);
    assert!(
        (s[0] - 4.0).abs() < 1e-9 && (s[1] - 3.5).abs() < 1e-9 && (s[2] - 3.0).abs() < 1e-9,
        "{s:?}"
    );
    let mut firsts = [0u32; 3];
    for seed in 0..10_000u64 {
        let order = scored_order(
            &candidates,
            &weights,
            7,
            selection_seed(&[Some(&seed.to_string())], None),
        )
        .order;
        firsts[order[0]] += 1;
    }
    let expected = [2.0 / 4.5, 1.5 / 4.5, 1.0 / 4.5];
    for (got, want) in firsts.iter().zip(expected) {
        let share = f64::from(*got) / 10_000.0;
        assert!(
            (share - want).abs() < 0.02,
            "first picks {firsts:?}, expected shares {expected:?}"
        );
    }
}

#[test]
fn the_selection_seed_depends_on_anchors_only_without_entropy() {
    let a = selection_seed(&[Some("session"), None, Some("model")], None);
    assert_eq!(
        a,
        selection_seed(&[Some("session"), None, Some("model")], None)
    );
    assert_ne!(
        a,
        selection_seed(&[Some("other"), None, Some("model")], None)
    );
    assert_ne!(
        a,
        selection_seed(&[Some("session"), None, Some("model")], Some(7))
    );
}

#[test]
fn tiers_put_subscriptions_first_and_bedrock_last() {
    assert_eq!(tier(AccountType::OAuth), 0);
    assert_eq!(tier(AccountType::SetupToken), 0);
    assert_eq!(tier(AccountType::ApiKey), 1);
    assert_eq!(tier(AccountType::Bedrock), 2);
}

#[test]
fn load_skew_is_the_standard_deviation_of_load_rates() {
    let candidates = [candidate("a", 1, 0, 0), candidate("b", 1, 10, 0)];
    assert!((load_skew(&candidates) - 50.0).abs() < 1e-9);
    assert_eq!(load_skew(&candidates[..1]), 0.0);
}
