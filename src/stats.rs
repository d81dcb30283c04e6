//! Per-replica runtime statistics of each account: error-rate and
//! first-token-time EWMAs (seed 001, α = 0.2) and recency of use. They feed
//! scored selection and the health check of sticky bindings; they may
//! differ between replicas by design.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::account::AccountId;

/// The EWMA smoothing factor.
pub const EWMA_ALPHA: f64 = 0.2;

/// What is known of one account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountStats {
    /// Error-rate EWMA, 0.0 to 1.0.
    pub error_rate: f64,
    /// First-token time EWMA in milliseconds, once a stream reported one.
    pub ttft_ms: Option<f64>,
    /// When it was last chosen, as a sequence number (0: never); higher is
    /// more recent.
    pub last_used: u64,
}

#[derive(Debug)]
pub(crate) struct Cell {
    error_rate: AtomicU64,
    ttft_ms: AtomicU64,
    last_used: AtomicU64,
}

impl Default for Cell {
    fn default() -> Self {
        Self {
            error_rate: AtomicU64::new(0f64.to_bits()),
            ttft_ms: AtomicU64::new(f64::NAN.to_bits()),
            last_used: AtomicU64::new(0),
        }
    }
}

fn update_ewma(cell: &AtomicU64, sample: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        let old = f64::from_bits(bits);
        let new = if old.is_nan() {
            sample
        } else {
            EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * old
        };
        Some(new.to_bits())
    });
}

/// Runtime statistics of every account; cheap to clone (shared).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_llm_relay::stats::RuntimeStats;
/// use tower_llm_relay::AccountId;
///
/// let stats = RuntimeStats::new();
/// let a = AccountId::from("a");
/// stats.report(&a, false, None);
/// assert!((stats.get(&a).error_rate - 0.2).abs() < 1e-9);
/// stats.report(&a, true, Some(Duration::from_millis(300)));
/// assert_eq!(stats.get(&a).ttft_ms, Some(300.0));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RuntimeStats {
    cells: Arc<RwLock<HashMap<AccountId, Arc<Cell>, RandomState>>>,
    clock: Arc<AtomicU64>,
}

impl RuntimeStats {
    /// No statistics yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to `account`'s statistics that reads them without a lookup.
    pub fn handle(&self, account: &AccountId) -> StatsHandle {
        StatsHandle(self.cell(account))
    }

    fn cell(&self, account: &AccountId) -> Arc<Cell> {
        if let Some(cell) = self
            .cells
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(account)
        {
            return cell.clone();
        }
        self.cells
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(account.clone())
            .or_default()
            .clone()
    }

    /// Records an attempt's outcome and, for streams, its first-token time.
    pub fn report(&self, account: &AccountId, success: bool, first_token: Option<Duration>) {
        let cell = self.cell(account);
        update_ewma(&cell.error_rate, if success { 0.0 } else { 1.0 });
        if let Some(ttft) = first_token.filter(|t| !t.is_zero()) {
            update_ewma(&cell.ttft_ms, ttft.as_secs_f64() * 1000.0);
        }
    }

    /// Records a first-token time alone (the answer's outcome was reported
    /// when it was committed; its first token comes later).
    pub fn report_first_token(&self, account: &AccountId, first_token: Duration) {
        if !first_token.is_zero() {
            update_ewma(
                &self.cell(account).ttft_ms,
                first_token.as_secs_f64() * 1000.0,
            );
        }
    }

    /// Marks `account` as just chosen.
    pub fn touch(&self, account: &AccountId) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        self.cell(account).last_used.store(now, Ordering::Relaxed);
    }

    /// What is known of `account`.
    pub fn get(&self, account: &AccountId) -> AccountStats {
        let cells = self
            .cells
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cells.get(account) {
            None => AccountStats {
                error_rate: 0.0,
                ttft_ms: None,
                last_used: 0,
            },
            Some(cell) => cell.snapshot(),
        }
    }
}

impl Cell {
    #[inline]
    fn snapshot(&self) -> AccountStats {
        let ttft = f64::from_bits(self.ttft_ms.load(Ordering::Relaxed));
        AccountStats {
            error_rate: f64::from_bits(self.error_rate.load(Ordering::Relaxed)),
            ttft_ms: (!ttft.is_nan()).then_some(ttft),
            last_used: self.last_used.load(Ordering::Relaxed),
        }
    }
}

/// One account's statistics, read without a map lookup (the scheduler
/// keeps one per pool account).
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Cell>);

impl StatsHandle {
    /// What is known now.
    #[inline]
    pub fn get(&self) -> AccountStats {
        self.0.snapshot()
    }

    /// When it was last chosen (see [`AccountStats::last_used`]): all that
    /// load-aware ranking reads.
    #[inline]
    pub fn last_used(&self) -> u64 {
        self.0.last_used.load(Ordering::Relaxed)
    }
}

/// A status code as a metric label: the codes a relay answers most often
/// without an allocation.
pub(crate) fn status_label(status: http::StatusCode) -> metrics::SharedString {
    let common = match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        _ => return status.as_str().to_owned().into(),
    };
    common.into()
}

#[cfg(test)]
mod tests {
    use super::status_label;

    #[test]
    fn every_code_labels_as_its_digits() {
        for code in 100..=999 {
            let status = http::StatusCode::from_u16(code).expect("a valid code");
            assert_eq!(&*status_label(status), status.as_str(), "{code}");
        }
    }
}
