//! What the scheduler learns from each served answer once its body ends.

use crate::usage::{UsageReport, UsageSink};

use super::scheduler::Scheduler;

/// The scheduler learns from usage reports: a stream's first-token time
/// feeds its account's TTFT EWMA (scored selection, sticky health), and an
/// OpenAI Responses id is bound to the account that made it, so a later
/// request naming it as `previous_response_id` goes back there (for the
/// sticky TTL).
///
/// The builder adds the scheduler to the usage layer's sinks; a hand-built
/// stack does the same:
///
/// ```
/// use tower_llm_relay::select::{AccountPool, Scheduler, SchedulingConfig};
/// use tower_llm_relay::usage::{TracingSink, UsageExtractLayer};
///
/// let scheduler = Scheduler::new(AccountPool::default(), SchedulingConfig::default());
/// let usage = UsageExtractLayer::new().sink((TracingSink::new(), scheduler.clone()));
/// # let _ = usage;
/// ```
impl UsageSink for Scheduler {
    fn record(&self, report: &UsageReport) {
        let Some(account) = &report.account else {
            return;
        };
        if let Some(ttft) = report.first_token {
            self.stats().report_first_token(account, ttft);
        }
        let Some(response_id) = report.response_id.clone() else {
            return;
        };
        // Sinks must not block; the store may be remote, so the binding is
        // written by a task of its own.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store().clone();
        let account = account.clone();
        let ttl = self.config().sticky_ttl;
        runtime.spawn(async move {
            if let Err(e) = store.response_set(&response_id, &account, ttl).await {
                tracing::warn!(error = %e, %account, "could not bind the response id to its account");
            }
        });
    }
}
