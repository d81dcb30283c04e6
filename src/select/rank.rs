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
    #[inline]
    pub(crate) fn new(
        account: &'a Arc<Account>,
        hot: AccountHot,
        load: AccountLoad,
        stats: AccountStats,
    ) -> Self {
        Self {
            account,
            hot,
            load_rate: load_rate(&hot, &load),
            load,
            stats,
        }
    }

    /// Slots in use, in percent of the account's concurrency.
    pub(crate) fn load_rate(&self) -> u32 {
        self.load_rate
    }

    /// Whether it may take a request now (slots and RPM; not cooling).
    pub(crate) fn has_room(&self) -> bool {
        has_room(&self.hot, &self.load)
    }
}

/// Slots in use, in percent of the account's concurrency.
#[inline]
pub(crate) fn load_rate(hot: &AccountHot, load: &AccountLoad) -> u32 {
    // Idle accounts, the common case, need no division.
    match load.in_flight {
        0 => 0,
        n => n.saturating_mul(100) / hot.concurrency.max(1),
    }
}

/// Whether an account may take a request now (slots and RPM; not cooling).
#[inline]
pub(crate) fn has_room(hot: &AccountHot, load: &AccountLoad) -> bool {
    load.cooldown.is_none()
        && load.in_flight < hot.concurrency
        && hot.rpm.is_none_or(|rpm| load.rpm_used < rpm)
}

/// Load-aware's key, smaller first: priority and load rate packed into one
/// integer (the priority offset to sort as unsigned), then last use (never
/// used first). `None` when the account has no room.
#[inline]
pub(crate) fn load_aware_key(
    hot: &AccountHot,
    load: &AccountLoad,
    last_used: u64,
) -> Option<(u64, u64)> {
    if !has_room(hot, load) {
        return None;
    }
    let rank = (u64::from(hot.priority.wrapping_sub(i32::MIN) as u32) << 32)
        | u64::from(load_rate(hot, load));
    Some((rank, last_used))
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

/// The position of the first key in load-aware order, found in one pass
/// (the full order is needed only when taking its slot fails). Keys come
/// from [`load_aware_key`]: from candidates, or straight from the store's
/// loads when no candidate list is built.
pub(crate) fn load_aware_first(
    keys: impl IntoIterator<Item = Option<(u64, u64)>>,
) -> Option<usize> {
    // A strict `<` keeps the first of equals, the pool's order.
    let mut best = (u64::MAX, u64::MAX);
    let mut best_index = None;
    for (i, key) in keys.into_iter().enumerate() {
        if let Some(key) = key {
            if key < best || best_index.is_none() {
                best = key;
                best_index = Some(i);
            }
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

/// What a score is relative to: the candidates' ranges of priority,
/// queue length and first-token time, gathered in one pass.
struct ScoreScale {
    min_priority: i32,
    max_priority: i32,
    max_waiting: u32,
    min_ttft: f64,
    max_ttft: f64,
}

impl ScoreScale {
    fn of(candidates: &[Candidate<'_>]) -> Self {
        let first = candidates.first().map_or(0, |c| c.hot.priority);
        let mut scale = Self {
            min_priority: first,
            max_priority: first,
            max_waiting: 1,
            min_ttft: f64::INFINITY,
            max_ttft: f64::NEG_INFINITY,
        };
        for c in candidates {
            scale.min_priority = scale.min_priority.min(c.hot.priority);
            scale.max_priority = scale.max_priority.max(c.hot.priority);
            scale.max_waiting = scale.max_waiting.max(c.load.waiting);
            if let Some(t) = c.stats.ttft_ms.filter(|t| *t > 0.0) {
                scale.min_ttft = scale.min_ttft.min(t);
                scale.max_ttft = scale.max_ttft.max(t);
            }
        }
        scale
    }

    /// Seed 001's score: a weighted sum of priority, load, queue,
    /// error-rate and first-token factors, each in 0..=1, higher better.
    fn score(&self, c: &Candidate<'_>, weights: &ScoreWeights) -> f64 {
        let priority = if self.max_priority > self.min_priority {
            1.0 - f64::from(c.hot.priority - self.min_priority)
                / f64::from(self.max_priority - self.min_priority)
        } else {
            1.0
        };
        let load = 1.0 - clamp01(f64::from(c.load_rate()) / 100.0);
        let queue = 1.0 - clamp01(f64::from(c.load.waiting) / f64::from(self.max_waiting));
        let error = 1.0 - clamp01(c.stats.error_rate);
        // Unknown first-token time is neither good nor bad.
        let ttft = match c.stats.ttft_ms {
            Some(t) if self.max_ttft > self.min_ttft => {
                1.0 - clamp01((t - self.min_ttft) / (self.max_ttft - self.min_ttft))
            }
            _ => 0.5,
        };
        weights.priority * priority
            + weights.load * load
            + weights.queue * queue
            + weights.error_rate * error
            + weights.ttft * ttft
    }
}

/// The candidates' scores (seed 001), in their order.
#[cfg(test)]
pub(crate) fn scores(candidates: &[Candidate<'_>], weights: &ScoreWeights) -> Vec<f64> {
    let scale = ScoreScale::of(candidates);
    candidates.iter().map(|c| scale.score(c, weights)).collect()
}

/// Score (inverted), priority, load rate, queue, position.
type RankKey = (i64, i32, u32, u32, usize);

/// The sort key of candidate `i`: score (higher first), then priority,
/// load, queue, and pool order for a total order. Plain integers, so
/// ranking 1,000 candidates compares without following a pointer or
/// comparing strings.
fn rank_key(c: &Candidate<'_>, score: f64, i: usize) -> RankKey {
    // `total_cmp`'s order as an integer, inverted so that higher scores
    // sort first.
    let bits = score.to_bits() as i64;
    let total = bits ^ ((((bits >> 63) as u64) >> 1) as i64);
    (!total, c.hot.priority, c.load_rate(), c.load.waiting, i)
}

/// Up to this K the best are kept in a sorted array while scanning; past
/// it a partial selection over all keys is cheaper than the insertions.
const SMALL_TOP_K: usize = 32;

/// The `k` best (smallest) keys with their scores, best first.
fn top_k_keys(
    candidates: &[Candidate<'_>],
    weights: &ScoreWeights,
    k: usize,
) -> Vec<(RankKey, f64)> {
    let scale = ScoreScale::of(candidates);
    let keyed = candidates.iter().enumerate().map(|(i, c)| {
        let score = scale.score(c, weights);
        (rank_key(c, score, i), score)
    });
    if k > SMALL_TOP_K {
        let mut keys: Vec<_> = keyed.collect();
        if k < keys.len() {
            keys.select_nth_unstable_by(k - 1, |a, b| a.0.cmp(&b.0));
            keys.truncate(k);
        }
        keys.sort_unstable_by_key(|&(key, _)| key);
        return keys;
    }
    // One pass and no list of all keys: most candidates lose to the
    // current K-th best on one comparison.
    let mut best: Vec<(RankKey, f64)> = Vec::with_capacity(k + 1);
    for (key, score) in keyed {
        if best.len() == k {
            if best.last().is_some_and(|(worst, _)| key >= *worst) {
                continue;
            }
            best.pop();
        }
        let at = best.partition_point(|(b, _)| *b < key);
        best.insert(at, (key, score));
    }
    best
}

/// Scored top-K order (seed 001): the K best by score, then drawn without
/// replacement with weights `score - min + 1` from an RNG seeded by
/// `seed`, so a session's requests agree and load still spreads.
pub(crate) fn scored_order(
    candidates: &[Candidate<'_>],
    weights: &ScoreWeights,
    top_k: usize,
    seed: u64,
) -> Scored {
    let k = top_k
        .clamp(1, candidates.len().max(1))
        .min(candidates.len());
    let best = top_k_keys(candidates, weights, k);
    let min = best
        .iter()
        .map(|&(_, score)| score)
        .fold(f64::INFINITY, f64::min);
    let mut pool: Vec<(usize, f64)> = best
        .iter()
        .map(|&((.., i), score)| {
            let w = score - min + 1.0;
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

/// The standard deviation of the candidates' load rates.
pub(crate) fn load_skew(candidates: &[Candidate<'_>]) -> f64 {
    load_skew_of(candidates.iter().map(Candidate::load_rate))
}

/// The standard deviation of these load rates (0 for fewer than two).
pub(crate) fn load_skew_of(rates: impl IntoIterator<Item = u32>) -> f64 {
    let (mut n, mut sum, mut squares) = (0u32, 0.0, 0.0);
    for rate in rates {
        let r = f64::from(rate);
        n += 1;
        sum += r;
        squares += r * r;
    }
    if n < 2 {
        return 0.0;
    }
    let n = f64::from(n);
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
