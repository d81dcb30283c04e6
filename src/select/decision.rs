use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::account::AccountId;

/// Which layer of the scheduler chose the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionLayer {
    /// The account that produced `previous_response_id`.
    PreviousResponse,
    /// The session's sticky account.
    Sticky,
    /// Load balancing over the candidates.
    LoadBalance,
}

impl DecisionLayer {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreviousResponse => "previous_response",
            Self::Sticky => "sticky",
            Self::LoadBalance => "load_balance",
        }
    }
}

/// What the scheduler decided for one request (response extension, and a
/// `tracing` event).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The account chosen.
    pub account: AccountId,
    /// The layer that chose it.
    pub layer: DecisionLayer,
    /// The tier it came from, when the tier chain is on.
    pub tier: Option<u8>,
    /// Candidates considered.
    pub candidates: usize,
    /// Candidates kept by scored top-K (all, for load-aware).
    pub top_k: usize,
    /// Standard deviation of the candidates' load rates, in percent.
    pub load_skew: f64,
    /// How long the request waited for a slot, if it had to.
    pub waited: Option<Duration>,
    /// How long the decision took, waiting included.
    pub latency: Duration,
}

/// Counters over every decision (seed 001's metrics snapshot).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    selects: AtomicU64,
    previous_hits: AtomicU64,
    sticky_hits: AtomicU64,
    waits: AtomicU64,
    switches: AtomicU64,
    // Sum of load skews, in hundredths, for the average.
    skew_centi_sum: AtomicU64,
}

impl Counters {
    pub(crate) fn record(&self, decision: &Decision) {
        self.selects.fetch_add(1, Ordering::Relaxed);
        match decision.layer {
            DecisionLayer::PreviousResponse => self.previous_hits.fetch_add(1, Ordering::Relaxed),
            DecisionLayer::Sticky => self.sticky_hits.fetch_add(1, Ordering::Relaxed),
            DecisionLayer::LoadBalance => 0,
        };
        if decision.waited.is_some() {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        let centi = (decision.load_skew * 100.0).round().max(0.0) as u64;
        self.skew_centi_sum.fetch_add(centi, Ordering::Relaxed);
    }

    pub(crate) fn record_switch(&self) {
        self.switches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SchedulerMetrics {
        let selects = self.selects.load(Ordering::Relaxed);
        let ratio = |n: u64| {
            if selects == 0 {
                0.0
            } else {
                n as f64 / selects as f64
            }
        };
        let previous = self.previous_hits.load(Ordering::Relaxed);
        let sticky = self.sticky_hits.load(Ordering::Relaxed);
        SchedulerMetrics {
            selects,
            previous_response_hits: previous,
            sticky_hits: sticky,
            waits: self.waits.load(Ordering::Relaxed),
            switches: self.switches.load(Ordering::Relaxed),
            sticky_hit_ratio: ratio(previous + sticky),
            switch_rate: ratio(self.switches.load(Ordering::Relaxed)),
            average_load_skew: ratio(self.skew_centi_sum.load(Ordering::Relaxed)) / 100.0,
        }
    }
}

/// A snapshot of the scheduler's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerMetrics {
    /// Selections made.
    pub selects: u64,
    /// Selections by previous response id.
    pub previous_response_hits: u64,
    /// Selections by session stickiness.
    pub sticky_hits: u64,
    /// Selections that had to wait for a slot.
    pub waits: u64,
    /// Account switches reported by failover.
    pub switches: u64,
    /// (previous-response + sticky hits) / selections.
    pub sticky_hit_ratio: f64,
    /// Switches / selections.
    pub switch_rate: f64,
    /// Mean load skew over selections.
    pub average_load_skew: f64,
}
