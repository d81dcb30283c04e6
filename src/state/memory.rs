use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use foldhash::fast::RandomState;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    AccountLoad, CooldownReason, RefreshLock, SlotGuard, SlotLimits, SlotSignal, StateStore,
    StoreFuture, WaitTicket,
};
use crate::account::{AccountId, AccountIdHash};
use crate::oauth::RefreshedTokens;

/// The RPM window: requests are counted per fixed minute.
const RPM_WINDOW: Duration = Duration::from_secs(60);
/// Maps are swept for expired entries once they have doubled since the
/// last sweep, so a sweep's cost is paid by the inserts that grew them.
const MIN_SWEEP_LEN: usize = 1024;

/// Every piece of shared state, in this process; see [`StateStore`].
///
/// Cheap to clone (clones share the state).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_llm_relay::state::{MemoryStore, SlotLimits, StateStore};
/// use tower_llm_relay::AccountId;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new();
/// let account = AccountId::from("a1");
/// let limits = SlotLimits { concurrency: 1, rpm: None };
/// let slot = store.try_acquire(&account, limits).await.unwrap();
/// assert!(slot.is_some());
/// assert!(store.try_acquire(&account, limits).await.unwrap().is_none());
/// drop(slot);
/// assert!(store.try_acquire(&account, limits).await.unwrap().is_some());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    accounts: Mutex<HashMap<AccountId, Slots, AccountIdHash>>,
    sticky: Mutex<ExpiringMap<StickyKey>>,
    responses: Mutex<ExpiringMap<Arc<str>>>,
    tokens: Mutex<HashMap<AccountId, RefreshedTokens, RandomState>>,
    // Refresh locks held: a number per grant and when it lapses.
    refresh_locks: Mutex<HashMap<AccountId, (u64, Instant), RandomState>>,
    lock_grants: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Slots {
    in_flight: u32,
    waiting: u32,
    // When the current RPM window ends: compared, never subtracted, on
    // the hot path.
    window_end: Instant,
    window_count: u32,
    cooldown: Option<(Instant, CooldownReason)>,
    // Cooldowns of single models on this account (usually none).
    model_cooldowns: HashMap<Arc<str>, (Instant, CooldownReason), RandomState>,
    released: Arc<Notify>,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            in_flight: 0,
            waiting: 0,
            window_end: Instant::now(),
            window_count: 0,
            cooldown: None,
            model_cooldowns: HashMap::default(),
            released: Arc::new(Notify::new()),
        }
    }
}

impl Slots {
    fn rpm_used(&mut self, now: Instant) -> u32 {
        if self.window_count > 0 && now >= self.window_end {
            self.window_count = 0;
        }
        self.window_count
    }

    #[inline]
    fn cooldown_left(
        &mut self,
        now: Instant,
        model: Option<&str>,
    ) -> Option<(Duration, CooldownReason)> {
        if self.cooldown.is_none() && self.model_cooldowns.is_empty() {
            // The common case, decided without reading the clock.
            return None;
        }
        let account = match self.cooldown {
            Some((until, reason)) if until > now => Some((until - now, reason)),
            Some(_) => {
                self.cooldown = None;
                None
            }
            None => None,
        };
        if self.model_cooldowns.is_empty() {
            return account;
        }
        self.model_cooldowns.retain(|_, (until, _)| *until > now);
        let for_model = model
            .and_then(|m| self.model_cooldowns.get(m))
            .map(|(until, reason)| (*until - now, *reason));
        match (account, for_model) {
            (Some(a), Some(m)) => Some(if m.0 > a.0 { m } else { a }),
            (a, m) => a.or(m),
        }
    }
}

/// A sticky binding's key: a client group and a session.
#[derive(Debug)]
struct StickyKey {
    group: Box<str>,
    session: Box<str>,
}

/// A group and a session, owned in a [`StickyKey`] or borrowed as a pair:
/// bindings are looked up by the borrowed pair, without building a key.
trait GroupSession {
    fn pair(&self) -> (&str, &str);
}

impl GroupSession for StickyKey {
    fn pair(&self) -> (&str, &str) {
        (&self.group, &self.session)
    }
}

impl GroupSession for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        *self
    }
}

impl<'a> Borrow<dyn GroupSession + 'a> for StickyKey {
    fn borrow(&self) -> &(dyn GroupSession + 'a) {
        self
    }
}

// The owned key and the borrowed pair hash and compare alike, as `Borrow`
// requires: both by their pair.
impl Hash for dyn GroupSession + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pair().hash(state);
    }
}

impl PartialEq for dyn GroupSession + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn GroupSession + '_ {}

impl Hash for StickyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pair().hash(state);
    }
}

impl PartialEq for StickyKey {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for StickyKey {}

/// A map whose entries expire, reclaimed as it grows.
#[derive(Debug)]
struct ExpiringMap<K> {
    entries: HashMap<K, (AccountId, Instant), RandomState>,
    len_after_sweep: usize,
}

impl<K> Default for ExpiringMap<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::default(),
            len_after_sweep: 0,
        }
    }
}

impl<K: Hash + Eq> ExpiringMap<K> {
    fn get_refresh<Q>(&mut self, key: &Q, now: Instant, ttl: Option<Duration>) -> Option<AccountId>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (account, expires) = self.entries.get_mut(key)?;
        if *expires <= now {
            self.entries.remove(key);
            return None;
        }
        if let Some(ttl) = ttl {
            *expires = super::later(now, ttl);
        }
        Some(account.clone())
    }

    fn insert(&mut self, key: K, account: AccountId, now: Instant, ttl: Duration) {
        self.entries.insert(key, (account, super::later(now, ttl)));
        if self.entries.len() >= MIN_SWEEP_LEN.max(self.len_after_sweep * 2) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            self.len_after_sweep = self.entries.len();
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    StoreFuture::ready(Ok(value))
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sticky bindings held (expired ones not yet reclaimed included).
    pub fn sticky_len(&self) -> usize {
        lock(&self.inner.sticky).len()
    }

    /// Slots held on `account`.
    pub fn in_flight(&self, account: &AccountId) -> u32 {
        lock(&self.inner.accounts)
            .get(account)
            .map_or(0, |s| s.in_flight)
    }

    /// Requests waiting on `account`.
    pub fn waiting(&self, account: &AccountId) -> u32 {
        lock(&self.inner.accounts)
            .get(account)
            .map_or(0, |s| s.waiting)
    }
}

impl Inner {
    fn release(&self, account: &AccountId) {
        let mut accounts = lock(&self.accounts);
        if let Some(slots) = accounts.get_mut(account) {
            slots.in_flight = slots.in_flight.saturating_sub(1);
            // One waiter per freed slot, first come first served.
            slots.released.notify_one();
        }
    }

    fn leave_queue(&self, account: &AccountId) {
        if let Some(slots) = lock(&self.accounts).get_mut(account) {
            slots.waiting = slots.waiting.saturating_sub(1);
        }
    }
}

impl StateStore for MemoryStore {
    fn sticky_get<'a>(
        &'a self,
        group: &'a str,
        session: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<AccountId>> {
        let key: &dyn GroupSession = &(group, session);
        ready(lock(&self.inner.sticky).get_refresh(key, Instant::now(), Some(ttl)))
    }

    fn sticky_set<'a>(
        &'a self,
        group: &'a str,
        session: &'a str,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let now = Instant::now();
        let mut sticky = lock(&self.inner.sticky);
        let pair: &dyn GroupSession = &(group, session);
        if let Some((bound, expires)) = sticky.entries.get_mut(pair) {
            // A rebinding keeps the key it has.
            account.clone_into(bound);
            *expires = super::later(now, ttl);
        } else {
            let key = StickyKey {
                group: group.into(),
                session: session.into(),
            };
            sticky.insert(key, account.clone(), now, ttl);
        }
        ready(())
    }

    fn sticky_clear<'a>(&'a self, group: &'a str, session: &'a str) -> StoreFuture<'a, ()> {
        let key: &dyn GroupSession = &(group, session);
        lock(&self.inner.sticky).entries.remove(key);
        ready(())
    }

    fn response_get<'a>(&'a self, response_id: &'a str) -> StoreFuture<'a, Option<AccountId>> {
        ready(lock(&self.inner.responses).get_refresh(response_id, Instant::now(), None))
    }

    fn response_set<'a>(
        &'a self,
        response_id: &'a str,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        lock(&self.inner.responses).insert(
            Arc::from(response_id),
            account.clone(),
            Instant::now(),
            ttl,
        );
        ready(())
    }

    fn loads<'a>(
        &'a self,
        accounts: &'a [&'a AccountId],
        model: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<AccountLoad>> {
        let now = Instant::now();
        let mut state = lock(&self.inner.accounts);
        let loads = accounts
            .iter()
            .map(|id| match state.get_mut(*id) {
                Some(slots) => AccountLoad {
                    in_flight: slots.in_flight,
                    waiting: slots.waiting,
                    rpm_used: slots.rpm_used(now),
                    cooldown: slots.cooldown_left(now, model),
                },
                None => AccountLoad::default(),
            })
            .collect();
        ready(loads)
    }

    fn try_acquire<'a>(
        &'a self,
        account: &'a AccountId,
        limits: SlotLimits,
    ) -> StoreFuture<'a, Option<SlotGuard>> {
        let now = Instant::now();
        let mut state = lock(&self.inner.accounts);
        let slots = state.entry(account.clone()).or_default();
        let rpm_full = limits.rpm.is_some_and(|rpm| slots.rpm_used(now) >= rpm);
        if slots.in_flight >= limits.concurrency || rpm_full {
            return ready(None);
        }
        if slots.window_count == 0 {
            // A window starts with its first request.
            slots.window_end = now + RPM_WINDOW;
        }
        slots.in_flight += 1;
        slots.window_count += 1;
        drop(state);
        let inner = self.inner.clone();
        let id = account.clone();
        ready(Some(SlotGuard::new(account.clone(), move || {
            inner.release(&id)
        })))
    }

    fn enter_queue<'a>(
        &'a self,
        account: &'a AccountId,
        max_waiting: u32,
    ) -> StoreFuture<'a, Option<WaitTicket>> {
        let mut state = lock(&self.inner.accounts);
        let slots = state.entry(account.clone()).or_default();
        if slots.waiting >= max_waiting {
            return ready(None);
        }
        slots.waiting += 1;
        drop(state);
        let inner = self.inner.clone();
        let id = account.clone();
        ready(Some(WaitTicket::new(move || inner.leave_queue(&id))))
    }

    fn slot_released(&self, account: &AccountId) -> SlotSignal {
        let notify = lock(&self.inner.accounts)
            .entry(account.clone())
            .or_default()
            .released
            .clone();
        let mut notified = Box::pin(notify.notified_owned());
        // Registered now: a release between this call and the first poll
        // still wakes this waiter.
        notified.as_mut().enable();
        notified
    }

    fn set_cooldown<'a>(
        &'a self,
        account: &'a AccountId,
        model: Option<&'a str>,
        duration: Duration,
        reason: CooldownReason,
    ) -> StoreFuture<'a, ()> {
        let until = super::later(Instant::now(), duration);
        let mut state = lock(&self.inner.accounts);
        let slots = state.entry(account.clone()).or_default();
        let current = match model {
            None => &mut slots.cooldown,
            Some(model) => {
                let entry = slots.model_cooldowns.entry(Arc::from(model));
                let slot = entry.or_insert((until, reason));
                if slot.0 < until {
                    *slot = (until, reason);
                }
                return ready(());
            }
        };
        if current.is_none_or(|(at, _)| at < until) {
            *current = Some((until, reason));
        }
        ready(())
    }

    fn clear_cooldown<'a>(&'a self, account: &'a AccountId) -> StoreFuture<'a, ()> {
        if let Some(slots) = lock(&self.inner.accounts).get_mut(account) {
            slots.cooldown = None;
            slots.model_cooldowns.clear();
        }
        ready(())
    }

    fn tokens_get<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> StoreFuture<'a, Option<RefreshedTokens>> {
        ready(lock(&self.inner.tokens).get(account).cloned())
    }

    fn tokens_set<'a>(
        &'a self,
        account: &'a AccountId,
        tokens: &'a RefreshedTokens,
    ) -> StoreFuture<'a, ()> {
        lock(&self.inner.tokens).insert(account.clone(), tokens.clone());
        ready(())
    }

    fn refresh_lock<'a>(
        &'a self,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<RefreshLock>> {
        let now = Instant::now();
        let mut locks = lock(&self.inner.refresh_locks);
        if locks.get(account).is_some_and(|(_, until)| *until > now) {
            return ready(None);
        }
        let grant = self
            .inner
            .lock_grants
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        locks.insert(account.clone(), (grant, now + ttl));
        drop(locks);
        let inner = self.inner.clone();
        let id = account.clone();
        ready(Some(RefreshLock::new(move || {
            let mut locks = lock(&inner.refresh_locks);
            // Only this grant's lock: one that lapsed and was taken again
            // belongs to its new holder.
            if locks.get(&id).is_some_and(|(g, _)| *g == grant) {
                locks.remove(&id);
            }
        })))
    }

    fn model_cooldowns<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> StoreFuture<'a, Vec<(String, Duration, CooldownReason)>> {
        let now = Instant::now();
        let mut all: Vec<_> = lock(&self.inner.accounts)
            .get(account)
            .map(|slots| {
                slots
                    .model_cooldowns
                    .iter()
                    .filter(|(_, (until, _))| *until > now)
                    .map(|(model, (until, reason))| (model.to_string(), *until - now, *reason))
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        ready(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AccountId {
        AccountId::from(s)
    }

    #[tokio::test(start_paused = true)]
    async fn sticky_bindings_expire_and_refresh_on_hit() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        store.sticky_set("g", "s", &id("a"), ttl).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(
            store.sticky_get("g", "s", ttl).await.unwrap(),
            Some(id("a"))
        );
        // The hit refreshed the TTL: 8 s later it is still there.
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(
            store.sticky_get("g", "s", ttl).await.unwrap(),
            Some(id("a"))
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.sticky_get("g", "s", ttl).await.unwrap(), None);
        // Groups do not share bindings.
        store.sticky_set("g", "s", &id("a"), ttl).await.unwrap();
        assert_eq!(store.sticky_get("other", "s", ttl).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sticky_keys_keep_group_and_session_apart_and_rebind_in_place() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        store.sticky_set("ab", "c", &id("a"), ttl).await.unwrap();
        store.sticky_set("a", "bc", &id("b"), ttl).await.unwrap();
        assert_eq!(
            store.sticky_get("ab", "c", ttl).await.unwrap(),
            Some(id("a"))
        );
        assert_eq!(
            store.sticky_get("a", "bc", ttl).await.unwrap(),
            Some(id("b"))
        );
        assert_eq!(store.sticky_get("abc", "", ttl).await.unwrap(), None);
        // A rebinding replaces the account and the expiry, not the entry.
        tokio::time::advance(Duration::from_secs(8)).await;
        store.sticky_set("ab", "c", &id("c"), ttl).await.unwrap();
        assert_eq!(store.sticky_len(), 2);
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(
            store.sticky_get("ab", "c", ttl).await.unwrap(),
            Some(id("c"))
        );
        assert_eq!(store.sticky_get("a", "bc", ttl).await.unwrap(), None);
        store.sticky_clear("ab", "c").await.unwrap();
        assert_eq!(store.sticky_get("ab", "c", ttl).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_million_expired_sessions_are_reclaimed() {
        let store = MemoryStore::new();
        let short = Duration::from_secs(1);
        for i in 0..1_000_000u32 {
            if i % 100_000 == 0 {
                tokio::time::advance(Duration::from_secs(2)).await;
            }
            store
                .sticky_set("g", &i.to_string(), &id("a"), short)
                .await
                .unwrap();
        }
        // Only entries from the last stretch can be live; sweeps bound the
        // map to about twice that.
        assert!(
            store.sticky_len() <= 2 * 100_000 + MIN_SWEEP_LEN,
            "{}",
            store.sticky_len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_windows_limit_and_reset() {
        let store = MemoryStore::new();
        let limits = SlotLimits {
            concurrency: 10,
            rpm: Some(2),
        };
        let a = id("a");
        let s1 = store.try_acquire(&a, limits).await.unwrap();
        let s2 = store.try_acquire(&a, limits).await.unwrap();
        assert!(s1.is_some() && s2.is_some());
        drop((s1, s2));
        assert!(store.try_acquire(&a, limits).await.unwrap().is_none());
        assert_eq!(store.loads(&[&a], None).await.unwrap()[0].rpm_used, 2);
        tokio::time::advance(RPM_WINDOW).await;
        assert!(store.try_acquire(&a, limits).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn cooldowns_keep_the_longest_and_expire() {
        let store = MemoryStore::new();
        let a = id("a");
        store
            .set_cooldown(
                &a,
                None,
                Duration::from_secs(30),
                CooldownReason::RateLimited,
            )
            .await
            .unwrap();
        store
            .set_cooldown(&a, None, Duration::from_secs(5), CooldownReason::Overloaded)
            .await
            .unwrap();
        let load = &store.loads(&[&a], None).await.unwrap()[0];
        assert_eq!(
            load.cooldown,
            Some((Duration::from_secs(30), CooldownReason::RateLimited))
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(store.loads(&[&a], None).await.unwrap()[0].cooldown, None);
    }

    #[tokio::test]
    async fn queue_is_bounded_and_tickets_leave_on_drop() {
        let store = MemoryStore::new();
        let a = id("a");
        let t1 = store.enter_queue(&a, 2).await.unwrap();
        let t2 = store.enter_queue(&a, 2).await.unwrap();
        assert!(t1.is_some() && t2.is_some());
        assert!(store.enter_queue(&a, 2).await.unwrap().is_none());
        assert_eq!(store.waiting(&a), 2);
        drop(t1);
        assert_eq!(store.waiting(&a), 1);
    }

    #[tokio::test]
    async fn a_release_wakes_a_signal_made_before_it() {
        let store = MemoryStore::new();
        let a = id("a");
        let limits = SlotLimits {
            concurrency: 1,
            rpm: None,
        };
        let slot = store.try_acquire(&a, limits).await.unwrap();
        let signal = store.slot_released(&a);
        drop(slot);
        tokio::time::timeout(Duration::from_secs(1), signal)
            .await
            .unwrap();
        assert_eq!(store.in_flight(&a), 0);
    }
}
