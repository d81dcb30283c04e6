//! What replicas must share: sticky bindings, response affinity,
//! concurrency slots and waiters, cooldowns and RPM windows.
//!
//! [`StateStore`] is the one interface; every method is one round trip to
//! a remote store (Redis runs each as one script), so the hot path pays at
//! most a handful of them per request. [`MemoryStore`] keeps it all in this
//! process and is the default.
//!
//! Slots are leases: [`StateStore::try_acquire`] takes one if the account
//! has room, and the returned [`SlotGuard`] gives it back when dropped —
//! it rides in the response body, so a stream holds its slot until it ends.

mod memory;
#[cfg(feature = "redis")]
pub mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::account::AccountId;
use crate::oauth::RefreshedTokens;

/// The future of a store operation: either the answer, already at hand,
/// or the boxed work that will produce it.
///
/// A store answering from memory returns [`StoreFuture::ready`], which
/// allocates nothing: selection makes a few store calls per request, and a
/// box for each was a good part of its cost. A store that waits on I/O
/// returns [`StoreFuture::new`].
///
/// # Examples
///
/// ```
/// use tower_llm_relay::state::{StateError, StoreFuture};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let at_hand: StoreFuture<'_, u32> = StoreFuture::ready(Ok(7));
/// assert_eq!(at_hand.await.unwrap(), 7);
/// let later: StoreFuture<'_, u32> = StoreFuture::new(async {
///     tokio::task::yield_now().await;
///     Err(StateError::new("store unreachable"))
/// });
/// assert!(later.await.is_err());
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct StoreFuture<'a, T>(StoreFutureState<'a, T>);

enum StoreFutureState<'a, T> {
    /// The answer, until it is taken.
    Ready(Option<Result<T, StateError>>),
    Pending(Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// A future that resolves to `result` at its first poll.
    pub fn ready(result: Result<T, StateError>) -> Self {
        Self(StoreFutureState::Ready(Some(result)))
    }

    /// The (boxed) `future`.
    pub fn new(future: impl Future<Output = Result<T, StateError>> + Send + 'a) -> Self {
        Self(StoreFutureState::Pending(Box::pin(future)))
    }
}

// The answer is moved out, never pinned; the work is pinned in its box.
impl<T> Unpin for StoreFuture<'_, T> {}

impl<T> Future for StoreFuture<'_, T> {
    type Output = Result<T, StateError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            StoreFutureState::Ready(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err(StateError::new("store future polled after it ended"))),
            ),
            StoreFutureState::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            StoreFutureState::Ready(Some(_)) => "ready",
            StoreFutureState::Ready(None) => "taken",
            StoreFutureState::Pending(_) => "pending",
        };
        f.debug_tuple("StoreFuture").field(&state).finish()
    }
}

/// A future that resolves when a slot may have been freed on an account.
/// Spurious wake-ups are allowed: the waiter simply tries again.
pub type SlotSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The shared store could not answer.
#[derive(Debug, Clone)]
pub struct StateError(Arc<str>);

impl StateError {
    /// An error with a message (no credentials, no keys).
    pub fn new(message: impl Into<Arc<str>>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store: {}", self.0)
    }
}

impl std::error::Error for StateError {}

/// Why an account is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CooldownReason {
    /// The upstream rate-limited it (429).
    RateLimited,
    /// The upstream said it is overloaded (529, 503).
    Overloaded,
    /// A spend or usage cap was reached.
    UsageCap,
    /// It was refused access (403).
    AuthFailed,
    /// Its credentials were rejected (401): out until they change.
    CredentialsRejected,
    /// It failed too many times in a row: out for a back-off, then probed.
    Ejected,
    /// Server errors or transport failures.
    UpstreamError,
    /// An operator took it out.
    Manual,
}

impl CooldownReason {
    /// Whether the account is disabled rather than briefly cooling: such
    /// accounts are never waited for.
    pub fn disables(self) -> bool {
        matches!(
            self,
            Self::AuthFailed | Self::CredentialsRejected | Self::UsageCap | Self::Manual
        )
    }

    /// The cooldown when the upstream gave no hint, before growth by the
    /// failure streak.
    pub fn default_duration(self) -> Duration {
        Duration::from_secs(match self {
            Self::RateLimited => 30,
            Self::Overloaded => 10,
            Self::UpstreamError => 5,
            Self::AuthFailed => 600,
            Self::CredentialsRejected => 86_400,
            Self::UsageCap => 3_600,
            Self::Ejected => 1,
            Self::Manual => 3_600,
        })
    }

    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::UsageCap => "usage_cap",
            Self::AuthFailed => "auth_failed",
            Self::CredentialsRejected => "credentials_rejected",
            Self::Ejected => "ejected",
            Self::UpstreamError => "upstream_error",
            Self::Manual => "manual",
        }
    }
}

/// An account's shared state at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountLoad {
    /// Requests in flight (slots held).
    pub in_flight: u32,
    /// Requests waiting for a slot.
    pub waiting: u32,
    /// Requests started in the current minute window.
    pub rpm_used: u32,
    /// Time left on a cooldown, and why.
    pub cooldown: Option<(Duration, CooldownReason)>,
}

/// What limits a slot acquisition checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// The most slots at once.
    pub concurrency: u32,
    /// The most requests per minute window, if limited.
    pub rpm: Option<u32>,
}

/// Gives a slot back when dropped. Dropping twice is impossible; releasing
/// is idempotent in every store.
pub struct SlotGuard {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
    account: AccountId,
}

impl SlotGuard {
    /// A guard that runs `release` once, when dropped.
    pub fn new(account: AccountId, release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
            account,
        }
    }

    /// The account the slot is on.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard")
            .field("account", &self.account)
            .finish()
    }
}

/// Leaves an account's wait queue when dropped (a client gone while
/// waiting leaves at once).
pub struct WaitTicket {
    leave: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl WaitTicket {
    /// A ticket that runs `leave` once, when dropped.
    pub fn new(leave: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            leave: Some(Box::new(leave)),
        }
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        if let Some(leave) = self.leave.take() {
            leave();
        }
    }
}

impl fmt::Debug for WaitTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitTicket")
    }
}

/// Holds an account's OAuth refresh lock; gives it back when dropped. A
/// lock also ends by itself when its TTL runs out (a crashed holder).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_llm_relay::state::{MemoryStore, StateStore};
/// use tower_llm_relay::AccountId;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new();
/// let account = AccountId::from("claude-max-1");
/// let ttl = Duration::from_secs(30);
/// let lock = store.refresh_lock(&account, ttl).await.unwrap();
/// assert!(lock.is_some());
/// // Held: nobody else refreshes now.
/// assert!(store.refresh_lock(&account, ttl).await.unwrap().is_none());
/// drop(lock);
/// assert!(store.refresh_lock(&account, ttl).await.unwrap().is_some());
/// # }
/// ```
pub struct RefreshLock {
    unlock: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl RefreshLock {
    /// A lock that runs `unlock` once, when dropped.
    pub fn new(unlock: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            unlock: Some(Box::new(unlock)),
        }
    }
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if let Some(unlock) = self.unlock.take() {
            unlock();
        }
    }
}

impl fmt::Debug for RefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshLock")
    }
}

/// The shared state behind scheduling; see the module docs.
///
/// Keys are scoped by `group` where a binding belongs to a client group.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// The account bound to a session, refreshing the binding's TTL on a hit.
    fn sticky_get<'a>(
        &'a self,
        group: &'a str,
        session: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<AccountId>>;

    /// Binds a session to an account for `ttl`.
    fn sticky_set<'a>(
        &'a self,
        group: &'a str,
        session: &'a str,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Removes a session's binding.
    fn sticky_clear<'a>(&'a self, group: &'a str, session: &'a str) -> StoreFuture<'a, ()>;

    /// The account that produced a response id (OpenAI Responses).
    fn response_get<'a>(&'a self, response_id: &'a str) -> StoreFuture<'a, Option<AccountId>>;

    /// Remembers which account produced a response id, for `ttl`.
    fn response_set<'a>(
        &'a self,
        response_id: &'a str,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// The load of each account, in order, in one round trip; with
    /// `model`, a cooldown of that (account, model) pair counts too.
    fn loads<'a>(
        &'a self,
        accounts: &'a [&'a AccountId],
        model: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<AccountLoad>>;

    /// Takes a slot on `account` if it has room under `limits`, counting
    /// the request in its RPM window.
    fn try_acquire<'a>(
        &'a self,
        account: &'a AccountId,
        limits: SlotLimits,
    ) -> StoreFuture<'a, Option<SlotGuard>>;

    /// Joins `account`'s wait queue unless `max_waiting` are already in it.
    fn enter_queue<'a>(
        &'a self,
        account: &'a AccountId,
        max_waiting: u32,
    ) -> StoreFuture<'a, Option<WaitTicket>>;

    /// A signal that fires when a slot on `account` is released after this
    /// call. Create it before trying to acquire, so no release is missed.
    fn slot_released(&self, account: &AccountId) -> SlotSignal;

    /// Cools `account` down for `duration` — for every model, or only for
    /// `model` when the failure was specific to it (seed 004). A longer
    /// cooldown already in force is kept.
    fn set_cooldown<'a>(
        &'a self,
        account: &'a AccountId,
        model: Option<&'a str>,
        duration: Duration,
        reason: CooldownReason,
    ) -> StoreFuture<'a, ()>;

    /// Ends `account`'s cooldowns now, model-specific ones included.
    fn clear_cooldown<'a>(&'a self, account: &'a AccountId) -> StoreFuture<'a, ()>;

    /// The OAuth tokens another replica (or this one) stored for
    /// `account` after a refresh. The default store shares none.
    fn tokens_get<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> StoreFuture<'a, Option<RefreshedTokens>> {
        let _ = account;
        StoreFuture::ready(Ok(None))
    }

    /// Stores `account`'s refreshed OAuth tokens for every replica.
    fn tokens_set<'a>(
        &'a self,
        account: &'a AccountId,
        tokens: &'a RefreshedTokens,
    ) -> StoreFuture<'a, ()> {
        let _ = (account, tokens);
        StoreFuture::ready(Ok(()))
    }

    /// Takes `account`'s refresh lock for at most `ttl`, so one replica at
    /// a time spends its refresh token; `None` while another holds it. The
    /// default store has one replica: the lock is always granted.
    fn refresh_lock<'a>(
        &'a self,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<RefreshLock>> {
        let _ = (account, ttl);
        StoreFuture::ready(Ok(Some(RefreshLock::new(|| {}))))
    }

    /// The cooldowns in force on single models of `account` (model, time
    /// left, reason), for operators; off the hot path. A store that cannot
    /// list them returns none (the default).
    fn model_cooldowns<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> StoreFuture<'a, Vec<(String, Duration, CooldownReason)>> {
        let _ = account;
        StoreFuture::ready(Ok(Vec::new()))
    }
}

/// `now + duration`, saturating at about thirty years ahead: a TTL,
/// cooldown or deadline of `Duration::MAX` means "never" and must not
/// panic on overflow.
pub(crate) fn later(now: tokio::time::Instant, duration: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(duration.min(FAR))
        .unwrap_or_else(|| now + Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_store_future_answers_once_and_then_errs() {
        let mut future = StoreFuture::ready(Ok(3_u8));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            Pin::new(&mut future).poll(&mut cx),
            Poll::Ready(Ok(3))
        ));
        assert!(matches!(
            Pin::new(&mut future).poll(&mut cx),
            Poll::Ready(Err(_))
        ));
        assert_eq!(format!("{future:?}"), "StoreFuture(\"taken\")");
    }
}
