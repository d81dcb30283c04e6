use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::account::{Account, AccountId, Platform};
use crate::endpoint::Endpoint;
use crate::error::RelayError;
use crate::state::{CooldownReason, MemoryStore, SlotGuard, SlotLimits, StateError, StateStore};
use crate::stats::{RuntimeStats, StatsHandle};

use super::config::{SchedulingConfig, SelectionPolicy};
use super::decision::{Counters, Decision, DecisionLayer, SchedulerMetrics};
use super::pool::AccountPool;
use super::rank::{self, Candidate};

/// Cooldowns grow with a failure streak up to this.
const MAX_GROWN_COOLDOWN: Duration = Duration::from_secs(300);
/// Ejection back-off grows from 1 s to this.
const MAX_EJECTION: Duration = Duration::from_secs(60);
/// While a probe runs on an ejected account, others keep away this long.
const PROBE_WINDOW: Duration = Duration::from_secs(10);

/// While waiting for a slot, look again this often even without a signal:
/// a release on another replica or a missed wake-up cannot strand a waiter.
const WAIT_RECHECK: Duration = Duration::from_millis(250);

/// Accounts that already failed this request (request extension, kept up
/// to date by failover); selection skips them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excluded(pub HashSet<AccountId>);

/// Restricts the next selection to this account (request extension):
/// failover's same-account retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAccount(pub AccountId);

/// What a selection needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct SelectRequest<'a> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The model the client asked for.
    pub model: &'a str,
    /// The caller's group (`None`: any account).
    pub group: Option<&'a str>,
    /// The session, when one was derived.
    pub session: Option<&'a str>,
    /// `previous_response_id`, for Responses affinity.
    pub previous_response_id: Option<&'a str>,
    /// Accounts not to choose.
    pub excluded: Option<&'a Excluded>,
    /// The only account to choose, when set.
    pub pinned: Option<&'a AccountId>,
}

/// An account chosen for a request, with its slot.
#[derive(Debug)]
pub struct Selection {
    /// The account.
    pub account: Arc<Account>,
    /// Its concurrency slot; dropping it frees the slot.
    pub slot: SlotGuard,
    /// Why it was chosen.
    pub decision: Decision,
}

/// Chooses accounts: previous-response affinity, session stickiness, then
/// the configured policy (load-aware or scored top-K, optionally tier by
/// tier), with wait plans when every candidate is busy.
///
/// Cheap to clone (shared).
///
/// # Examples
///
/// ```
/// use secrecy::SecretString;
/// use tower_llm_relay::select::{Scheduler, SchedulingConfig, SelectRequest};
/// use tower_llm_relay::{Account, AccountPool, Credentials, Endpoint, Platform};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let key = || Credentials::ApiKey(SecretString::from("k"));
/// let pool = AccountPool::new([
///     Account::builder("a", Platform::Anthropic, key()).concurrency(1).build(),
///     Account::builder("b", Platform::Anthropic, key()).concurrency(1).build(),
/// ]);
/// let scheduler = Scheduler::new(pool, SchedulingConfig::default());
/// let request = SelectRequest {
///     endpoint: Endpoint::Messages,
///     model: "claude-sonnet-4-5",
///     group: Some("default"),
///     session: None,
///     previous_response_id: None,
///     excluded: None,
///     pinned: None,
/// };
/// let first = scheduler.select(&request).await.unwrap();
/// let second = scheduler.select(&request).await.unwrap();
/// // `a` is full: the second request goes to `b`.
/// assert_ne!(first.account.id(), second.account.id());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: AccountPool,
    store: Arc<dyn StateStore>,
    stats: RuntimeStats,
    // One per pool account, in pool order: reads without a lookup.
    handles: Vec<StatsHandle>,
    config: SchedulingConfig,
    counters: Counters,
    // Per account: consecutive failures and ejections (per replica).
    streaks: Mutex<HashMap<AccountId, Streak>>,
    // Whether `streaks` may hold an entry: a success then has one to end.
    // Read without the lock, so the common success (no streak anywhere)
    // takes no lock that every core shares.
    any_streak: AtomicBool,
    // Per account: the last few failures, newest last, for operators.
    recent_errors: Mutex<HashMap<AccountId, VecDeque<RecentError>>>,
}

impl Inner {
    /// The streak map; a panic while it was held left nothing half-written.
    fn lock_streaks(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Streak>> {
        self.streaks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How many failures per account [`Scheduler::recent_errors`] keeps.
pub const RECENT_ERRORS: usize = 5;

/// One failed attempt, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RecentError {
    /// Unix seconds when it failed.
    pub at: u64,
    /// Why, as a cooldown reason (`rate_limited`, `overloaded`, …).
    pub reason: &'static str,
}

#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    failures: u32,
    ejections: u32,
}

fn state_error(e: StateError) -> RelayError {
    RelayError::State(e)
}

impl Scheduler {
    /// A scheduler over `pool` with in-memory state.
    pub fn new(pool: AccountPool, config: SchedulingConfig) -> Self {
        Self::with_state(
            pool,
            config,
            Arc::new(MemoryStore::new()),
            RuntimeStats::new(),
        )
    }

    /// A scheduler sharing `store` and `stats` (e.g. with failover).
    pub fn with_state(
        pool: AccountPool,
        config: SchedulingConfig,
        store: Arc<dyn StateStore>,
        stats: RuntimeStats,
    ) -> Self {
        let handles = pool
            .accounts()
            .iter()
            .map(|a| stats.handle(a.id()))
            .collect();
        Self {
            inner: Arc::new(Inner {
                pool,
                store,
                handles,
                stats,
                config,
                counters: Counters::default(),
                streaks: Mutex::new(HashMap::new()),
                any_streak: AtomicBool::new(false),
                recent_errors: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The accounts.
    pub fn pool(&self) -> &AccountPool {
        &self.inner.pool
    }

    /// The shared state.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.store
    }

    /// The runtime statistics.
    pub fn stats(&self) -> &RuntimeStats {
        &self.inner.stats
    }

    /// The settings.
    pub fn config(&self) -> &SchedulingConfig {
        &self.inner.config
    }

    /// Counters over every decision so far.
    pub fn metrics(&self) -> SchedulerMetrics {
        self.inner.counters.snapshot()
    }

    /// The accounts that could serve `model` at `endpoint` for `group` but
    /// are cooling down: id, reason, time left.
    pub async fn cooling_candidates(
        &self,
        endpoint: Endpoint,
        model: &str,
        group: Option<&str>,
    ) -> Vec<(AccountId, CooldownReason, Duration)> {
        let accounts: Vec<&AccountId> = self
            .inner
            .pool
            .candidates(endpoint, model, group)
            .map(|a| a.id())
            .collect();
        let Ok(loads) = self.inner.store.loads(&accounts, Some(model)).await else {
            return Vec::new();
        };
        accounts
            .into_iter()
            .zip(loads)
            .filter_map(|(id, load)| {
                load.cooldown
                    .map(|(left, reason)| (id.clone(), reason, left))
            })
            .collect()
    }

    /// Counts an account switch (called by failover).
    pub fn record_switch(&self) {
        self.inner.counters.record_switch();
    }

    fn streak(&self, account: &AccountId) -> Streak {
        self.inner
            .lock_streaks()
            .get(account)
            .copied()
            .unwrap_or_default()
    }

    /// Failures in a row of `account` (per replica).
    pub fn failure_streak(&self, account: &AccountId) -> u32 {
        self.streak(account).failures
    }

    /// Whether `account` is ejected (its failure streak reached the limit):
    /// its next request is a probe.
    pub fn is_ejected(&self, account: &AccountId) -> bool {
        self.streak(account).failures >= self.inner.config.eject_after_failures
    }

    /// Reports a served attempt: the streak ends, a probe's success
    /// readmits the account, and the EWMAs learn.
    pub async fn report_success(&self, account: &AccountId, first_token: Option<Duration>) {
        self.inner.stats.report(account, true, first_token);
        if !self.inner.any_streak.load(Ordering::Acquire) {
            return;
        }
        let was_ejected = {
            let mut streaks = self.inner.lock_streaks();
            let ended = streaks.remove(account);
            if streaks.is_empty() {
                self.inner.any_streak.store(false, Ordering::Release);
            }
            ended.is_some_and(|s| s.failures >= self.inner.config.eject_after_failures)
        };
        if was_ejected {
            if let Err(e) = self.inner.store.clear_cooldown(account).await {
                tracing::warn!(error = %e, %account, "could not readmit the account");
            }
            tracing::info!(%account, "probe succeeded: account readmitted");
        }
    }

    fn remember_error(&self, account: &AccountId, reason: CooldownReason) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut all = self
            .inner
            .recent_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let recent = all.entry(account.clone()).or_default();
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(RecentError {
            at,
            reason: reason.as_str(),
        });
    }

    /// The last [`RECENT_ERRORS`] failures of `account` on this replica,
    /// oldest first.
    pub fn recent_errors(&self, account: &AccountId) -> Vec<RecentError> {
        self.inner
            .recent_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Reports a failed attempt: the EWMAs learn, the streak grows, and the
    /// account cools down — for `hinted` when the upstream said how long,
    /// else the reason's default doubled per failure in the streak (capped
    /// at 300 s) — only for `model` when the failure was specific to it. A
    /// streak of `eject_after_failures` ejects the whole account with a
    /// back-off from 1 s to 60 s (with jitter); its next request probes it.
    /// Returns the cooldown applied.
    pub async fn report_failure(
        &self,
        account: &AccountId,
        model: Option<&str>,
        reason: CooldownReason,
        hinted: Option<Duration>,
    ) -> Duration {
        self.inner.stats.report(account, false, None);
        self.remember_error(account, reason);
        let config = &self.inner.config;
        let streak = {
            let mut streaks = self.inner.lock_streaks();
            let streak = streaks.entry(account.clone()).or_default();
            self.inner.any_streak.store(true, Ordering::Release);
            streak.failures = streak.failures.saturating_add(1);
            if streak.failures >= config.eject_after_failures {
                streak.ejections = streak.ejections.saturating_add(1);
            }
            *streak
        };
        let grown = || {
            let base = reason.default_duration();
            if reason.disables() {
                return base;
            }
            let factor = 1u32 << streak.failures.saturating_sub(1).min(16);
            base.saturating_mul(factor).min(MAX_GROWN_COOLDOWN)
        };
        let mut cooldown = hinted.unwrap_or_else(grown);
        let mut reason = reason;
        let mut model = model;
        if streak.failures >= config.eject_after_failures {
            let backoff = Duration::from_secs(1)
                .saturating_mul(1 << (streak.ejections - 1).min(6))
                .min(MAX_EJECTION);
            // ±20% jitter, so ejected accounts do not all return at once.
            let jitter = 0.8 + 0.4 * rand::random::<f64>();
            let ejection = backoff.mul_f64(jitter);
            if ejection > cooldown {
                cooldown = ejection;
                reason = CooldownReason::Ejected;
            }
            // Ejection takes the whole account out.
            model = None;
            tracing::warn!(%account, failures = streak.failures, ?cooldown, "account ejected");
        }
        if !cooldown.is_zero() {
            if let Err(e) = self
                .inner
                .store
                .set_cooldown(account, model, cooldown, reason)
                .await
            {
                tracing::warn!(error = %e, %account, "could not record a cooldown");
            }
        }
        cooldown
    }

    fn policy(&self, endpoint: Endpoint) -> SelectionPolicy {
        match endpoint.platform() {
            Platform::Anthropic => self.inner.config.anthropic_policy,
            Platform::OpenAi => self.inner.config.openai_policy,
        }
    }

    /// Chooses an account for `req` and takes a slot on it, waiting per the
    /// wait plan when every candidate is busy.
    pub async fn select(&self, req: &SelectRequest<'_>) -> Result<Selection, RelayError> {
        let started = Instant::now();
        let inner = &self.inner;
        let group = req.group.unwrap_or("");
        let excluded = |id: &AccountId| req.excluded.is_some_and(|e| e.0.contains(id));
        let all = inner.pool.accounts();
        let mut indexes = inner
            .pool
            .candidate_indexes(req.endpoint, req.model, req.group);
        // Most requests exclude nothing and pin nothing: they use the
        // cached list as it is.
        let excludes = req.excluded.is_some_and(|e| !e.0.is_empty());
        if excludes || req.pinned.is_some() {
            indexes = indexes
                .iter()
                .copied()
                .filter(|&i| !excluded(all[i].id()))
                .filter(|&i| req.pinned.is_none_or(|p| all[i].id() == p))
                .collect();
        }
        if indexes.is_empty() {
            return Err(RelayError::NoAccount {
                model: req.model.to_owned(),
            });
        }
        let ids: Vec<&AccountId> = indexes.iter().map(|&i| all[i].id()).collect();
        let loads = inner
            .store
            .loads(&ids, Some(req.model))
            .await
            .map_err(state_error)?;
        let policy = self.policy(req.endpoint);
        let n = indexes.len();
        // The k-th candidate alone: the common paths (a sticky hit, the
        // load-aware pick) need one, and the full list costs a copy of
        // every account's state.
        let candidate = |k: usize| {
            let i = indexes[k];
            Candidate::new(
                &all[i],
                inner.pool.hot(i),
                loads[k].clone(),
                inner.handles[i].get(),
            )
        };
        let load_skew = || {
            rank::load_skew_of(
                indexes
                    .iter()
                    .zip(&loads)
                    .map(|(&i, load)| rank::load_rate(&inner.pool.hot(i), load)),
            )
        };
        let position = |id: &AccountId| {
            let at = inner.pool.index_of(id)?;
            indexes.iter().position(|&i| i == at)
        };

        // Layer 1 (scored policy): the account that made the previous response.
        if policy == SelectionPolicy::ScoredTopK {
            if let Some(previous) = req.previous_response_id {
                let bound = inner
                    .store
                    .response_get(previous)
                    .await
                    .map_err(state_error)?;
                if let Some(c) = bound.and_then(|id| position(&id)).map(candidate) {
                    if let Some(selection) = self
                        .take_or_wait(
                            req,
                            &c,
                            (n, load_skew()),
                            DecisionLayer::PreviousResponse,
                            started,
                            true,
                        )
                        .await?
                    {
                        if let Some(session) = req.session {
                            let _ = inner
                                .store
                                .sticky_set(group, session, c.account.id(), inner.config.sticky_ttl)
                                .await;
                        }
                        return Ok(selection);
                    }
                }
            }
        }

        // Layer 2: the session's sticky account, while it is healthy.
        if let Some(session) = req.session {
            let ttl = inner.config.sticky_ttl;
            if let Some(id) = inner
                .store
                .sticky_get(group, session, ttl)
                .await
                .map_err(state_error)?
            {
                match position(&id) {
                    Some(k) if self.healthy(&candidate(k), indexes[k], &indexes) => {
                        if let Some(selection) = self
                            .take_or_wait(
                                req,
                                &candidate(k),
                                (n, load_skew()),
                                DecisionLayer::Sticky,
                                started,
                                true,
                            )
                            .await?
                        {
                            return Ok(selection);
                        }
                    }
                    // Excluded by failover: the new account's binding will
                    // replace it. Otherwise it is unhealthy or gone.
                    _ if excluded(&id) => {}
                    _ => {
                        tracing::debug!(account = %id, "sticky binding dropped: account unhealthy or unfit");
                        inner
                            .store
                            .sticky_clear(group, session)
                            .await
                            .map_err(state_error)?;
                    }
                }
            }
        }

        // Layer 3: the policy's order, tier by tier when the chain is on.
        // Load-aware without tiers tries its best account first, found in
        // one pass over the loads; the candidate list and the full order
        // are built only if that slot is gone.
        let tiered =
            inner.config.tier_fallback_chain && req.endpoint.platform() == Platform::Anthropic;
        if policy == SelectionPolicy::LoadAware && !tiered {
            let keys = indexes.iter().zip(&loads).map(|(&i, load)| {
                rank::load_aware_key(&inner.pool.hot(i), load, inner.handles[i].last_used())
            });
            if let Some(c) = rank::load_aware_first(keys).map(candidate) {
                if let Some(slot) = self.try_take(&c).await? {
                    return Ok(self
                        .finish(
                            req,
                            &c,
                            slot,
                            DecisionLayer::LoadBalance,
                            n,
                            n,
                            load_skew(),
                            None,
                            started,
                        )
                        .await);
                }
            }
        }
        let candidates: Vec<Candidate> = (0..n).map(candidate).collect();
        let (order, top_k, load_skew) = self.order(req, &candidates, policy);
        for &i in &order {
            let c = &candidates[i];
            if !c.has_room() {
                continue;
            }
            if let Some(slot) = self.try_take(c).await? {
                return Ok(self
                    .finish(
                        req,
                        c,
                        slot,
                        DecisionLayer::LoadBalance,
                        candidates.len(),
                        top_k,
                        load_skew,
                        None,
                        started,
                    )
                    .await);
            }
        }

        // Every candidate is busy or cooling down.
        let waitable: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| candidates[i].load.cooldown.is_none())
            .collect();
        // Wait where the queue is shortest for the account's size (within
        // the first tier and priority): a burst's waiters spread over the
        // accounts instead of all queueing on the first one while the
        // others' slots free up unused.
        let best = waitable
            .iter()
            .enumerate()
            .min_by_key(|&(at, &i)| {
                let c = &candidates[i];
                let tier = if tiered {
                    rank::tier(c.account.account_type())
                } else {
                    0
                };
                let queued = c.load.in_flight.saturating_add(c.load.waiting);
                let queue_rate = queued.saturating_mul(100) / c.hot.concurrency.max(1);
                (tier, c.hot.priority, queue_rate, at)
            })
            .map(|(_, &i)| i);
        let Some(best) = best else {
            return self.cooling(req, &candidates).await;
        };
        let c = &candidates[best];
        let config = &inner.config;
        let wait_started = Instant::now();
        let slot = self
            .wait(c, config.fallback_wait_timeout, config.fallback_max_waiting)
            .await?
            .ok_or(RelayError::Overloaded {
                retry_after: Some(Duration::from_secs(1)),
            })?;
        Ok(self
            .finish(
                req,
                c,
                slot,
                DecisionLayer::LoadBalance,
                candidates.len(),
                top_k,
                load_skew,
                Some(wait_started.elapsed()),
                started,
            )
            .await)
    }

    /// Every candidate cools down: wait for the soonest if it ends soon
    /// enough, else answer at once with `retry-after`.
    async fn cooling(
        &self,
        req: &SelectRequest<'_>,
        candidates: &[Candidate<'_>],
    ) -> Result<Selection, RelayError> {
        let soonest_of = |waitable: bool| {
            candidates
                .iter()
                .filter_map(|c| c.load.cooldown)
                .filter(|(_, reason)| !waitable || !reason.disables())
                .min_by_key(|(left, _)| *left)
        };
        // Accounts disabled for auth or spend caps are never waited for.
        let waitable = soonest_of(true);
        let (soonest, reason) = waitable
            .or(soonest_of(false))
            .unwrap_or((Duration::ZERO, CooldownReason::Overloaded));
        if waitable.is_some() && soonest <= self.inner.config.cooldown_wait_max {
            tokio::time::sleep(soonest).await;
            return Box::pin(self.select(req)).await;
        }
        Err(RelayError::CoolingDown {
            model: req.model.to_owned(),
            retry_after: soonest,
            rate_limited: matches!(
                reason,
                CooldownReason::RateLimited | CooldownReason::UsageCap
            ),
        })
    }

    /// Whether a sticky account (`c`, at pool position `own`) is still fit
    /// to keep its sessions: its error rate and first-token time are not
    /// far worse than those of the other candidates (pool positions
    /// `indexes`).
    fn healthy(&self, c: &Candidate<'_>, own: usize, indexes: &[usize]) -> bool {
        if c.load.cooldown.is_some() {
            return false;
        }
        let inner = &self.inner;
        let config = &inner.config;
        // Compared with the others: a lone account is never "worse".
        let others = indexes.len().saturating_sub(1);
        if others == 0 {
            return true;
        }
        let mut total_error = 0.0;
        // Collected only when there is a first-token time to compare.
        let mut ttfts = Vec::new();
        for &i in indexes.iter().filter(|&&i| i != own) {
            let stats = inner.handles[i].get();
            total_error += stats.error_rate;
            if let (Some(_), Some(t)) = (c.stats.ttft_ms, stats.ttft_ms) {
                ttfts.push(t);
            }
        }
        if c.stats.error_rate > total_error / others as f64 + config.sticky_error_rate_margin {
            return false;
        }
        if let (Some(own), false) = (c.stats.ttft_ms, ttfts.is_empty()) {
            let mid = ttfts.len() / 2;
            let (_, median, _) = ttfts.select_nth_unstable_by(mid, f64::total_cmp);
            if own > *median * config.sticky_ttft_factor {
                return false;
            }
        }
        true
    }

    /// The candidates in the order the policy tries them.
    fn order(
        &self,
        req: &SelectRequest<'_>,
        candidates: &[Candidate],
        policy: SelectionPolicy,
    ) -> (Vec<usize>, usize, f64) {
        let config = &self.inner.config;
        let order_of = |subset: &[Candidate<'_>]| -> (Vec<usize>, usize, f64) {
            match policy {
                SelectionPolicy::LoadAware => (
                    rank::load_aware_order(subset),
                    subset.len(),
                    rank::load_skew(subset),
                ),
                SelectionPolicy::ScoredTopK => {
                    let anchored = req.session.is_some() || req.previous_response_id.is_some();
                    let entropy = (!anchored).then(rand::random::<u64>);
                    let seed = rank::selection_seed(
                        &[
                            req.session,
                            req.previous_response_id,
                            Some(req.model),
                            req.group,
                        ],
                        entropy,
                    );
                    let scored =
                        rank::scored_order(subset, &config.score_weights, config.top_k, seed);
                    (scored.order, scored.top_k, scored.load_skew)
                }
            }
        };
        let tiered = config.tier_fallback_chain && req.endpoint.platform() == Platform::Anthropic;
        if !tiered {
            return order_of(candidates);
        }
        let mut order = Vec::with_capacity(candidates.len());
        let mut top_k = 0;
        for tier in 0..=2u8 {
            let members: Vec<usize> = (0..candidates.len())
                .filter(|&i| rank::tier(candidates[i].account.account_type()) == tier)
                .collect();
            if members.is_empty() {
                continue;
            }
            let subset: Vec<Candidate> = members.iter().map(|&i| candidates[i].clone()).collect();
            let (tier_order, k, _) = order_of(&subset);
            order.extend(tier_order.into_iter().map(|j| members[j]));
            top_k += k;
        }
        (order, top_k, rank::load_skew(candidates))
    }

    async fn try_take(&self, c: &Candidate<'_>) -> Result<Option<SlotGuard>, RelayError> {
        let limits = SlotLimits {
            concurrency: c.hot.concurrency,
            rpm: c.hot.rpm,
        };
        self.inner
            .store
            .try_acquire(c.account.id(), limits)
            .await
            .map_err(state_error)
    }

    /// Takes a slot on a bound account (previous response or sticky), or
    /// waits for one when its queue is short; `None` lets the next layer
    /// choose.
    async fn take_or_wait(
        &self,
        req: &SelectRequest<'_>,
        c: &Candidate<'_>,
        (candidates, load_skew): (usize, f64),
        layer: DecisionLayer,
        started: Instant,
        may_wait: bool,
    ) -> Result<Option<Selection>, RelayError> {
        if c.hot.rpm.is_some_and(|rpm| c.load.rpm_used >= rpm) {
            return Ok(None);
        }
        if let Some(slot) = self.try_take(c).await? {
            return Ok(Some(
                self.finish(
                    req, c, slot, layer, candidates, candidates, load_skew, None, started,
                )
                .await,
            ));
        }
        let config = &self.inner.config;
        if !may_wait || c.load.waiting >= config.sticky_max_waiting {
            return Ok(None);
        }
        let wait_started = Instant::now();
        // A queue that filled up meanwhile lets load balancing choose.
        let Some(slot) = self
            .wait(c, config.sticky_wait_timeout, config.sticky_max_waiting)
            .await?
        else {
            return Ok(None);
        };
        let waited = Some(wait_started.elapsed());
        Ok(Some(
            self.finish(
                req, c, slot, layer, candidates, candidates, load_skew, waited, started,
            )
            .await,
        ))
    }

    /// Waits in `c`'s queue for a slot, up to `timeout`: `None` when the
    /// queue is full, an overloaded error when the wait times out.
    async fn wait(
        &self,
        c: &Candidate<'_>,
        timeout: Duration,
        max_waiting: u32,
    ) -> Result<Option<SlotGuard>, RelayError> {
        let store = &self.inner.store;
        let id = c.account.id();
        let overloaded = RelayError::Overloaded {
            retry_after: Some(Duration::from_secs(1)),
        };
        let Some(ticket) = store
            .enter_queue(id, max_waiting)
            .await
            .map_err(state_error)?
        else {
            return Ok(None);
        };
        let deadline = crate::state::later(Instant::now(), timeout);
        loop {
            let released = store.slot_released(id);
            if let Some(slot) = self.try_take(c).await? {
                drop(ticket);
                return Ok(Some(slot));
            }
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(WAIT_RECHECK) => {}
                () = tokio::time::sleep_until(deadline) => return Err(overloaded),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        req: &SelectRequest<'_>,
        c: &Candidate<'_>,
        slot: SlotGuard,
        layer: DecisionLayer,
        candidates: usize,
        top_k: usize,
        load_skew: f64,
        waited: Option<Duration>,
        started: Instant,
    ) -> Selection {
        let inner = &self.inner;
        let id = c.account.id();
        inner.stats.touch(id);
        if self.is_ejected(id) {
            // This request probes an ejected account: keep others away
            // until it tells whether the account recovered.
            let _ = inner
                .store
                .set_cooldown(id, None, PROBE_WINDOW, CooldownReason::Ejected)
                .await;
        }
        if let (Some(session), DecisionLayer::LoadBalance) = (req.session, layer) {
            // A failed binding costs stickiness, not the request.
            let group = req.group.unwrap_or("");
            if let Err(e) = inner
                .store
                .sticky_set(group, session, id, inner.config.sticky_ttl)
                .await
            {
                tracing::warn!(error = %e, "could not bind the session");
            }
        }
        let tiered =
            inner.config.tier_fallback_chain && req.endpoint.platform() == Platform::Anthropic;
        let decision = Decision {
            account: id.clone(),
            layer,
            tier: tiered.then(|| rank::tier(c.account.account_type())),
            candidates,
            top_k,
            load_skew,
            waited,
            latency: started.elapsed(),
        };
        inner.counters.record(&decision);
        tracing::debug!(
            account = %id,
            layer = layer.as_str(),
            candidates,
            top_k,
            load_skew,
            waited_ms = waited.map(|w| w.as_millis() as u64),
            "account selected"
        );
        Selection {
            account: c.account.clone(),
            slot,
            decision,
        }
    }
}

#[cfg(test)]
mod tests;
