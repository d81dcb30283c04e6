//! Scheduling settings (`[scheduling]` in the proxy's config).

use std::time::Duration;

/// An account selection policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionPolicy {
    /// Seed 002: sticky sessions, then the least loaded by priority.
    LoadAware,
    /// Seed 001: scored top-K with weighted random order.
    ScoredTopK,
}

/// `[scheduling.score_weights]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreWeights {
    /// Weight of priority.
    pub priority: f64,
    /// Weight of load.
    pub load: f64,
    /// Weight of queue length.
    pub queue: f64,
    /// Weight of the error-rate EWMA.
    pub error_rate: f64,
    /// Weight of the time-to-first-token EWMA.
    pub ttft: f64,
}

/// `[scheduling]`, with the seeds' defaults.
#[derive(Debug, Clone)]
pub struct SchedulingConfig {
    /// How long a session stays on its account (default 1 h).
    pub sticky_ttl: Duration,
    /// How long a request waits for its sticky account (default 45 s).
    pub sticky_wait_timeout: Duration,
    /// Waiters allowed on a sticky account (default 3).
    pub sticky_max_waiting: u32,
    /// How long a request waits for any account (default 30 s).
    pub fallback_wait_timeout: Duration,
    /// Waiters allowed for any account (default 100).
    pub fallback_max_waiting: u32,
    /// Subscription → API key → Bedrock tiers before priority (default off).
    pub tier_fallback_chain: bool,
    /// Fail over on compatibility 400s (default off).
    pub failover_on_400: bool,
    /// Account switches allowed per request (default 10).
    pub max_account_switches: u32,
    /// Wait for a cooling-down account only this long (default 5 s).
    pub cooldown_wait_max: Duration,
    /// Extra attempts as a share of requests, in percent (default 20).
    pub retry_budget_percent: f64,
    /// The policy for Anthropic requests (default load-aware).
    pub anthropic_policy: SelectionPolicy,
    /// The policy for OpenAI requests (default scored top-K).
    pub openai_policy: SelectionPolicy,
    /// K of top-K (default 7).
    pub top_k: usize,
    /// Score weights.
    pub score_weights: ScoreWeights,
    /// A client header that names the session first.
    pub session_header: Option<String>,
    /// SSE keep-alive comment interval; zero is off.
    pub stream_keepalive: Duration,
    /// A sticky binding moves when its account's error-rate EWMA exceeds
    /// the pool's mean by more than this (default 0.5).
    pub sticky_error_rate_margin: f64,
    /// A sticky binding moves when its account's first-token EWMA exceeds
    /// this multiple of the pool's median (default 3.0).
    pub sticky_ttft_factor: f64,
    /// Consecutive failures before ejection (default 5).
    pub eject_after_failures: u32,
    /// The deadline covering every attempt of a request (default 600 s).
    pub request_deadline: Duration,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            priority: 1.0,
            load: 1.0,
            queue: 0.7,
            error_rate: 0.8,
            ttft: 0.5,
        }
    }
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            sticky_ttl: Duration::from_secs(3600),
            sticky_wait_timeout: Duration::from_secs(45),
            sticky_max_waiting: 3,
            fallback_wait_timeout: Duration::from_secs(30),
            fallback_max_waiting: 100,
            tier_fallback_chain: false,
            failover_on_400: false,
            max_account_switches: 10,
            cooldown_wait_max: Duration::from_secs(5),
            retry_budget_percent: 20.0,
            anthropic_policy: SelectionPolicy::LoadAware,
            openai_policy: SelectionPolicy::ScoredTopK,
            top_k: 7,
            score_weights: ScoreWeights::default(),
            session_header: None,
            stream_keepalive: Duration::ZERO,
            sticky_error_rate_margin: 0.5,
            sticky_ttft_factor: 3.0,
            eject_after_failures: 5,
            request_deadline: Duration::from_secs(600),
        }
    }
}
