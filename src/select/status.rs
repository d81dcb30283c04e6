use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::account::AccountId;
use crate::state::AccountLoad;

use super::scheduler::{RecentError, Scheduler};

/// One account's state now, for operators (`/admin/accounts`) and
/// library users alike. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountStatus {
    /// The account id.
    pub id: String,
    /// `anthropic` or `openai`.
    pub platform: &'static str,
    /// `oauth`, `setup_token`, `api_key` or `bedrock`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its client group.
    pub group: String,
    /// Its priority (lower first).
    pub priority: i32,
    /// Requests in flight.
    pub in_flight: u32,
    /// Its concurrency limit.
    pub concurrency: u32,
    /// Requests waiting for a slot.
    pub waiting: u32,
    /// Requests in the current minute window.
    pub rpm_used: u32,
    /// Its RPM limit, if any.
    pub rpm: Option<u32>,
    /// Unix seconds when its cooldown ends, if cooling down.
    pub cooldown_until: Option<u64>,
    /// Why it cools down.
    pub cooldown_reason: Option<&'static str>,
    /// Error-rate EWMA, 0 to 1.
    pub error_rate: f64,
    /// First-token time EWMA in ms, once known.
    pub ttft_ms: Option<f64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Whether it is ejected (its next request is a probe).
    pub ejected: bool,
    /// Its last few failures on this replica, oldest first.
    pub recent_errors: Vec<RecentError>,
    /// Cooldowns of single models (a 429 for one model leaves the others
    /// usable).
    pub model_cooldowns: Vec<ModelCooldown>,
}

/// A cooldown of one model on one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCooldown {
    /// The model (as the upstream names it).
    pub model: String,
    /// Unix seconds when it ends.
    pub until: u64,
    /// Why.
    pub reason: &'static str,
}

impl Scheduler {
    /// Every account's state now, in pool order (one store round trip).
    ///
    /// # Examples
    ///
    /// ```
    /// use secrecy::SecretString;
    /// use tower_llm_relay::select::{Scheduler, SchedulingConfig};
    /// use tower_llm_relay::{Account, AccountPool, Credentials, Platform};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = AccountPool::new([Account::builder("a", Platform::Anthropic, Credentials::ApiKey(SecretString::from("k"))).build()]);
    /// let status = Scheduler::new(pool, SchedulingConfig::default()).status().await;
    /// assert_eq!(status[0].id, "a");
    /// assert_eq!(status[0].in_flight, 0);
    /// # }
    /// ```
    pub async fn status(&self) -> Vec<AccountStatus> {
        let accounts = self.pool().accounts();
        let ids: Vec<&AccountId> = accounts.iter().map(|a| a.id()).collect();
        let loads = match self.store().loads(&ids, None).await {
            Ok(loads) => loads,
            Err(e) => {
                tracing::warn!(error = %e, "account status without loads");
                vec![AccountLoad::default(); ids.len()]
            }
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let mut model_cooldowns = Vec::with_capacity(accounts.len());
        for account in accounts.iter() {
            let listed = self
                .store()
                .model_cooldowns(account.id())
                .await
                .unwrap_or_default();
            model_cooldowns.push(
                listed
                    .into_iter()
                    .map(|(model, left, reason)| ModelCooldown {
                        model,
                        until: (unix_now + left).as_secs_f64().ceil() as u64,
                        reason: reason.as_str(),
                    })
                    .collect::<Vec<_>>(),
            );
        }
        accounts
            .iter()
            .zip(loads)
            .zip(model_cooldowns)
            .map(|((account, load), model_cooldowns)| {
                let stats = self.stats().get(account.id());
                AccountStatus {
                    id: account.id().to_string(),
                    platform: account.platform().as_str(),
                    kind: account.account_type().as_str(),
                    group: account.group().to_owned(),
                    priority: account.priority(),
                    in_flight: load.in_flight,
                    concurrency: account.concurrency(),
                    waiting: load.waiting,
                    rpm_used: load.rpm_used,
                    rpm: account.rpm(),
                    cooldown_until: load
                        .cooldown
                        .map(|(left, _)| (unix_now + left).as_secs_f64().ceil() as u64),
                    cooldown_reason: load.cooldown.map(|(_, reason)| reason.as_str()),
                    error_rate: stats.error_rate,
                    ttft_ms: stats.ttft_ms,
                    consecutive_failures: self.failure_streak(account.id()),
                    ejected: self.is_ejected(account.id()),
                    recent_errors: self.recent_errors(account.id()),
                    model_cooldowns,
                }
            })
            .collect()
    }
}
