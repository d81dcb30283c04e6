//! Running usage totals per client key and per account, for operators.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::sink::UsageSink;
use super::types::{Usage, UsageReport};
use crate::account::{AccountId, AccountIdHash};
use crate::principal::KeyId;

/// What one key or one account has used since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Answers reported (served requests).
    pub requests: u64,
    /// Of those, answers not read whole (cut streams, clients gone).
    pub incomplete: u64,
    /// Tokens, summed.
    pub usage: Usage,
    /// When the last answer ended.
    pub last_seen: Option<SystemTime>,
}

impl Totals {
    fn add(&mut self, report: &UsageReport, now: SystemTime) {
        self.requests += 1;
        self.incomplete += u64::from(!report.complete);
        let (sum, one) = (&mut self.usage, &report.usage);
        sum.input_tokens = sum.input_tokens.saturating_add(one.input_tokens);
        sum.output_tokens = sum.output_tokens.saturating_add(one.output_tokens);
        sum.cache_creation_input_tokens = sum
            .cache_creation_input_tokens
            .saturating_add(one.cache_creation_input_tokens);
        sum.cache_read_input_tokens = sum
            .cache_read_input_tokens
            .saturating_add(one.cache_read_input_tokens);
        self.last_seen = Some(now);
    }
}

/// Account ids carry their hash ([`AccountIdHash`] passes it through);
/// key names are short, where FNV-1a beats SipHash's set-up.
#[derive(Debug, Default)]
struct Tables {
    by_key: HashMap<KeyId, Totals, AccountIdHash>,
    by_account: HashMap<AccountId, Totals, AccountIdHash>,
}

/// A [`UsageSink`] that keeps running totals per client key and per
/// account, in this process. Cheap to clone (shared); the tables grow with
/// the number of keys and accounts, not with requests.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::usage::{Usage, UsageReport, UsageSink, UsageTotals};
/// use tower_llm_relay::AccountId;
///
/// let totals = UsageTotals::new();
/// let mut report = UsageReport::default();
/// report.account = Some(AccountId::from("claude-1"));
/// report.usage = Usage { input_tokens: 10, output_tokens: 4, ..Usage::default() };
/// report.complete = true;
/// totals.record(&report);
/// totals.record(&report);
/// let claude = totals.account(&AccountId::from("claude-1"));
/// assert_eq!(claude.requests, 2);
/// assert_eq!(claude.usage.output_tokens, 8);
/// assert_eq!(claude.incomplete, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct UsageTotals {
    tables: Arc<Mutex<Tables>>,
}

impl UsageTotals {
    /// Empty totals.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The totals of one key (zero when it has used nothing).
    pub fn key(&self, key: &KeyId) -> Totals {
        self.tables().by_key.get(key).copied().unwrap_or_default()
    }

    /// The totals of one account (zero when it has served nothing).
    pub fn account(&self, account: &AccountId) -> Totals {
        self.tables()
            .by_account
            .get(account)
            .copied()
            .unwrap_or_default()
    }

    /// Every key's totals, by name.
    pub fn keys(&self) -> Vec<(KeyId, Totals)> {
        let mut all: Vec<_> = self
            .tables()
            .by_key
            .iter()
            .map(|(k, t)| (k.clone(), *t))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl UsageSink for UsageTotals {
    fn record(&self, report: &UsageReport) {
        let now = SystemTime::now();
        let mut tables = self.tables();
        if let Some(key) = &report.key {
            // Both ids are reference-counted: the clone is a count bump.
            tables
                .by_key
                .entry(key.clone())
                .or_default()
                .add(report, now);
        }
        if let Some(account) = &report.account {
            tables
                .by_account
                .entry(account.clone())
                .or_default()
                .add(report, now);
        }
    }
}
