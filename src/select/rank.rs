//! The policies' orderings, as pure functions of a candidate snapshot, so
//! each is tested alone and deterministic given its seed.

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::account::{Account, AccountType};
use crate::state::AccountLoad;
use crate::stats::AccountStats;

use super::config::ScoreWeights;
use super::pool::AccountHot;

/// One candidate account with what the scheduler knows of it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate<'a> {
    pub(crate) account: &'a Arc<Account>,
    // The account's ranking fields, copied in: ranking reads them for
    // every candidate, and the `Account`s are scattered on the heap.
    pub(crate) hot: AccountHot,
    pub(crate) load: AccountLoad,
    pub(crate) stats: AccountStats,
    load_rate: u32,
}

impl<'a> Candidate<'a> {
    pub(crate) fn new(
        account: &'a Arc<Account>,
        hot: AccountHot,
        load: AccountLoad,
        stats: AccountStats,
    ) -> Self {
        // Computed once: a division per comparison adds up over 1,000
        // accounts. Idle accounts, the common case, need none.
        let load_rate = match load.in_flight {
            0 => 0,
            n => n.saturating_mul(100) / hot.concurrency.max(1),
        };
        Self {
            account,
            hot,
            load,
            stats,
            load_rate,
        }
    }

    /// Slots in use, in percent of the account's concurrency.
    pub(crate) fn load_rate(&self) -> u32 {
        self.load_rate
    }

    /// Whether it may take a request now (slots and RPM; not cooling).
    pub(crate) fn has_room(&self) -> bool {
        self.load.cooldown.is_none()
            && self.load.in_flight < self.hot.concurrency
            && self.hot.rpm.is_none_or(|rpm| self.load.rpm_used < rpm)
    }
}

/// The tier of the fallback chain (seed 000): subscriptions first, then API
/// keys, then Bedrock.
pub(crate) fn tier(kind: AccountType) -> u8 {
    match kind {
        AccountType::OAuth | AccountType::SetupToken => 0,
        AccountType::ApiKey => 1,
        AccountType::Bedrock => 2,
    }
}

/// Load-aware order (seed 002): priority, then load rate, then least
/// recently used (never used first); ties keep the pool's order.
pub(crate) fn load_aware_order(candidates: &[Candidate<'_>]) -> Vec<usize> {
    // Keys computed once and sorted in one contiguous buffer: the index
    // breaks ties, so an unstable sort keeps the pool's order.
    let mut keys: Vec<(i32, u32, u64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hot.priority, c.load_rate(), c.stats.last_used, i))
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(|(.., i)| i).collect()
}

/// The first candidate with room in load-aware order, found in one pass;
/// the full order is needed only when taking its slot fails.
pub(crate) fn load_aware_first(candidates: &[Candidate<'_>]) -> Option<usize> {
    // Priority and load rate packed into one integer (the priority offset
    // to sort as unsigned): one comparison per candidate, not a tuple's
    // four. A strict `<` keeps the first of equals, the pool's order.
    let mut best = (u64::MAX, u64::MAX);
    let mut best_index = None;
    for (i, c) in candidates.iter().enumerate() {
        if !c.has_room() {
            continue;
        }
        let rank = (u64::from(c.hot.priority.wrapping_sub(i32::MIN) as u32) << 32)
            | u64::from(c.load_rate());
        let key = (rank, c.stats.last_used);
        if key < best || best_index.is_none() {
            best = key;
            best_index = Some(i);
        }
    }
    best_index
}

/// What scored selection decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scored {
    /// Candidate indexes in the order to try.
    pub(crate) order: Vec<usize>,
    /// How many were kept.
    pub(crate) top_k: usize,
    /// The standard deviation of the candidates' load rates.
    pub(crate) load_skew: f64,
}

fn clamp01(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

/// The candidates' scores (seed 001): a weighted sum of priority, load,
/// queue, error-rate and first-token factors, each in 0..=1, higher better.
pub(crate) fn scores(candidates: &[Candidate<'_>], weights: &ScoreWeights) -> Vec<f64> {
    let Some(first) = candidates.first() else {
        return Vec::new();
    };
    let (mut min_p, mut max_p) = (first.hot.priority, first.hot.priority);
    let mut max_waiting = 1u32;
    let (mut min_ttft, mut max_ttft) = (f64::INFINITY, f64::NEG_INFINITY);
    for c in candidates {
        min_p = min_p.min(c.hot.priority);
        max_p = max_p.max(c.hot.priority);
        max_waiting = max_waiting.max(c.load.waiting);
        if let Some(t) = c.stats.ttft_ms.filter(|t| *t > 0.0) {
            min_ttft = min_ttft.min(t);
            max_ttft = max_ttft.max(t);
        }
    }
    candidates
        .iter()
        .map(|c| {
            let priority = if max_p > min_p {
                1.0 - f64::from(c.hot.priority - min_p) / f64::from(max_p - min_p)
            } else {
                1.0
            };
            let load = 1.0 - clamp01(f64::from(c.load_rate()) / 100.0);
            let queue = 1.0 - clamp01(f64::from(c.load.waiting) / f64::from(max_waiting));
            let error = 1.0 - clamp01(c.stats.error_rate);
            // Unknown first-token time is neither good nor bad.
            let ttft = match c.stats.ttft_ms {
                Some(t) if max_ttft > min_ttft => {
                    1.0 - clamp01((t - min_ttft) / (max_ttft - min_ttft))
                }
                _ => 0.5,
            };
            weights.priority * priority
                + weights.load * load
                + weights.queue * queue
                + weights.error_rate * error
                + weights.ttft * ttft
        })
        .collect()
}

/// The sort key of candidate `i`: score (higher first), then priority,
/// load, queue, and pool order for a total order. Plain integers, so the
/// partial selection over 1,000 candidates compares without following a
/// pointer or comparing strings.
fn rank_key(c: &Candidate<'_>, score: f64, i: usize) -> (i64, i32, u32, u32, usize) {
    // `total_cmp`'s order as an integer, inverted so that higher scores
    // sort first.
    let bits = score.to_bits() as i64;
    let total = bits ^ ((((bits >> 63) as u64) >> 1) as i64);
    (!total, c.hot.priority, c.load_rate(), c.load.waiting, i)
}

/// Scored top-K order (seed 001): the K best by score, then drawn without
/// replacement with weights `score - min + 1` from an RNG seeded by
/// `seed`, so a session's requests agree and load still spreads.
///
/// The top K are found with a partial selection (`select_nth_unstable`),
/// O(n) rather than a heap's O(n log k).
pub(crate) fn scored_order(
    candidates: &[Candidate<'_>],
    weights: &ScoreWeights,
    top_k: usize,
    seed: u64,
) -> Scored {
    let scores = scores(candidates, weights);
    let mut keys: Vec<_> = candidates
        .iter()
        .zip(&scores)
        .enumerate()
        .map(|(i, (c, &score))| rank_key(c, score, i))
        .collect();
    let k = top_k
        .clamp(1, candidates.len().max(1))
        .min(candidates.len());
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    keys.sort_unstable();
    let ranked: Vec<usize> = keys.into_iter().map(|(.., i)| i).collect();
    let min = ranked
        .iter()
        .map(|&i| scores[i])
        .fold(f64::INFINITY, f64::min);
    let mut pool: Vec<(usize, f64)> = ranked
        .iter()
        .map(|&i| {
            let w = scores[i] - min + 1.0;
            (i, if w.is_finite() && w > 0.0 { w } else { 1.0 })
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut order = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let total: f64 = pool.iter().map(|(_, w)| w).sum();
        let mut roll = rng.random::<f64>() * total;
        let mut pick = pool.len() - 1;
        for (at, (_, w)) in pool.iter().enumerate() {
            if roll < *w {
                pick = at;
                break;
            }
            roll -= w;
        }
        order.push(pool.remove(pick).0);
    }
    Scored {
        order,
        top_k: k,
        load_skew: load_skew(candidates),
    }
}

/// The standard deviation of the load rates.
pub(crate) fn load_skew(candidates: &[Candidate<'_>]) -> f64 {
    if candidates.len() < 2 {
        return 0.0;
    }
    let n = candidates.len() as f64;
    let (sum, squares) = candidates.iter().fold((0.0, 0.0), |(s, q), c| {
        let r = f64::from(c.load_rate());
        (s + r, q + r * r)
    });
    let mean = sum / n;
    (squares / n - mean * mean).max(0.0).sqrt()
}

/// FNV-1a over the selection's anchors: one session (or previous response)
/// gets the same order each time.
pub(crate) fn selection_seed(anchors: &[Option<&str>], entropy: Option<u64>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for anchor in anchors.iter().flatten() {
        for byte in anchor.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash ^ entropy.unwrap_or(0)
}

#[cfg(test)]
mod tests;
