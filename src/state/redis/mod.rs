//! [`RedisStore`]: the shared state in Redis, so several relay replicas
//! behind one load balancer behave as one.
//!
//! # How it keeps state
//!
//! - **Slots are leases.** Each account has a sorted set of lease tokens
//!   scored by their expiry, in milliseconds of Redis `TIME` (replica clocks
//!   never matter). Acquire drops expired leases, checks the concurrency and
//!   RPM limits and adds one, in one script. Release removes the token (a
//!   second release does nothing) and publishes on the account's channel. A
//!   live replica renews its own leases every third of the lease TTL in a
//!   background task; a crashed one stops renewing, so its slots come back
//!   within the TTL (default 15 s).
//! - **Wait queues** are leases too (a sorted set of waiters per account),
//!   so a crashed replica's waiters do not fill the queue forever.
//! - **Waking waiters**: a release publishes on `<prefix>released:<account>`;
//!   each replica holds one pattern subscription and wakes one local waiter
//!   per message (the releasing replica wakes its own at once, without the
//!   round trip). The scheduler also looks again every 250 ms, so a lost
//!   message or a subscription being re-established costs latency, never a
//!   stranded waiter. Pub/sub rather than polling: a wake-up takes about one
//!   network hop instead of half a polling period, and idle waiters cost
//!   Redis nothing.
//! - **Keys** of one account share the hash tag `{<prefix>acct:<id>}`, so
//!   each script touches one Redis Cluster slot. [`StateStore::loads`] runs
//!   one script per account in a single pipeline: one round trip, and still
//!   one slot per script.
//! - **Sticky bindings** use `GETEX … PX` (get and refresh in one command),
//!   response affinity plain `SET … PX` / `GET`, cooldowns a hash per account
//!   (`*` for the whole account, `m:<model>` per model; the longest wins).
//! - **OAuth tokens** are a hash per account; the refresh lock is
//!   `SET NX PX` with a random holder token, released by compare-and-delete.
//!   The tokens are stored as they are: a Redis that holds them needs the
//!   same protection as the config file (a password, a private network).
//!
//! # When Redis fails
//!
//! Every call is bounded by a timeout (default 200 ms). A failure or a
//! timeout marks Redis down for half a second, during which calls do not
//! try it at all, so a dead Redis costs one request one timeout, not every
//! request. Then, per [`OnRedisError`]:
//! [`FailOpen`](OnRedisError::FailOpen) (the default) serves from this
//! replica's own [`MemoryStore`], logging the switch and counting each
//! fallback in the `relay_state_fallback_total` counter;
//! [`FailClosed`](OnRedisError::FailClosed) returns a [`StateError`], which
//! the relay answers with 503 in the API's format. The connection
//! reconnects with exponential back-off by itself.
//!
//! # Why the `redis` crate
//!
//! It is the most used and best kept Redis client for Rust; its
//! [`Script`] sends `EVALSHA` and loads the script again when the server
//! answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`), and its
//! `ConnectionManager` multiplexes one connection for every request and
//! reconnects with back-off, which is exactly the hot path's need.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower_llm_relay::state::redis::{OnRedisError, RedisStore};
//! use tower_llm_relay::RelayBuilder;
//!
//! # fn main() -> Result<(), tower_llm_relay::state::StateError> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379/0")
//!     .prefix("relay:")
//!     .timeout(Duration::from_millis(200))
//!     .on_error(OnRedisError::FailOpen)
//!     .build()?;
//! let builder = RelayBuilder::new().state(Arc::new(store));
//! # let _ = builder;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    AccountLoad, CooldownReason, MemoryStore, RefreshLock, SlotGuard, SlotLimits, SlotSignal,
    StateError, StateStore, StoreFuture, WaitTicket,
};
use crate::account::AccountId;
use crate::oauth::RefreshedTokens;

/// The default bound on every Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// The default lease TTL of slots and queue places.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// After a failure, Redis is not tried again for this long.
const DOWN_FOR: Duration = Duration::from_millis(500);
/// The RPM window: requests are counted per fixed minute.
const RPM_WINDOW: Duration = Duration::from_secs(60);
/// Stored OAuth tokens are kept this long after their last refresh (the
/// refresh token outlives the access token).
const TOKENS_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Subscription reconnects back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What [`RedisStore`] does when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisError {
    /// Serve from this replica's own memory and keep going (the default).
    #[default]
    FailOpen,
    /// Fail the operation: requests get 503 in the API's format.
    FailClosed,
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    on_error: OnRedisError,
    lease_ttl: Duration,
}

impl RedisStoreBuilder {
    /// The prefix of every key and channel (default `relay:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest any Redis call may take (default 200 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails (default: fail open).
    pub fn on_error(mut self, on_error: OnRedisError) -> Self {
        self.on_error = on_error;
        self
    }

    /// How long a slot or queue place outlives its replica (default 15 s);
    /// live replicas renew theirs every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// The store. Connects lazily, on first use; fails only when the URL
    /// is not a Redis URL.
    pub fn build(self) -> Result<RedisStore, StateError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| StateError::new(format!("invalid redis url ({:?})", e.kind())))?;
        let replica = format!("{:016x}", rand::random::<u64>());
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                conn: OnceLock::new(),
                started: OnceLock::new(),
                keys: Keys {
                    prefix: self.prefix,
                },
                timeout: self.timeout,
                on_error: self.on_error,
                lease_ttl: self.lease_ttl,
                replica,
                next_token: AtomicU64::new(0),
                fallback: MemoryStore::new(),
                held: Mutex::new(HashMap::new()),
                signals: Mutex::new(HashMap::new()),
                down_until: Mutex::new(None),
                down: AtomicBool::new(false),
                fallbacks: AtomicU64::new(0),
                scripts: Scripts::new(),
            }),
        })
    }
}

/// Shared state in Redis; see the module docs.
///
/// Cheap to clone (clones share the connection and the leases). Each store
/// made by [`RedisStoreBuilder::build`] is one replica: its own leases,
/// subscription and fallback memory.
///
/// # Examples
///
/// Building does not connect (the first call does), so a bad URL is the
/// only error, and it never echoes the URL's password:
///
/// ```
/// use tower_llm_relay::state::RedisStore;
///
/// let store = RedisStore::builder("redis://:hunter2@10.0.0.5:6379/0")
///     .prefix("team-a:")
///     .build()
///     .unwrap();
/// assert!(!format!("{store:?}").contains("hunter2"));
/// assert!(RedisStore::builder("http://example.com").build().is_err());
/// ```
///
/// Two replicas sharing one Redis see each other's slots:
///
/// ```no_run
/// use tower_llm_relay::state::{RedisStore, SlotLimits, StateStore};
/// use tower_llm_relay::AccountId;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let a = RedisStore::builder("redis://127.0.0.1:6379/0").build().unwrap();
/// let b = RedisStore::builder("redis://127.0.0.1:6379/0").build().unwrap();
/// let account = AccountId::from("claude-max-1");
/// let limits = SlotLimits { concurrency: 1, rpm: None };
/// let slot = a.try_acquire(&account, limits).await.unwrap();
/// assert!(slot.is_some());
/// assert!(b.try_acquire(&account, limits).await.unwrap().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: never shown.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix)
            .field("timeout", &self.inner.timeout)
            .field("on_error", &self.inner.on_error)
            .field("lease_ttl", &self.inner.lease_ttl)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    acquire: Script,
    release: Script,
    renew: Script,
    enter_queue: Script,
    load: Script,
    set_cooldown: Script,
    unlock: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            acquire: Script::new(include_str!("scripts/acquire.lua")),
            release: Script::new(include_str!("scripts/release.lua")),
            renew: Script::new(include_str!("scripts/renew.lua")),
            enter_queue: Script::new(include_str!("scripts/enter_queue.lua")),
            load: Script::new(include_str!("scripts/load.lua")),
            set_cooldown: Script::new(include_str!("scripts/set_cooldown.lua")),
            unlock: Script::new(include_str!("scripts/unlock.lua")),
        }
    }
}

/// Key names.
struct Keys {
    prefix: String,
}

impl Keys {
    /// A key of one account: every one shares the account's hash tag.
    fn account(&self, id: &AccountId, what: &str) -> String {
        format!("{{{}acct:{}}}:{what}", self.prefix, id)
    }

    fn sticky(&self, group: &str, session: &str) -> String {
        // The group's length keeps `a:b` + `c` apart from `a` + `b:c`.
        format!("{}sticky:{}:{group}:{session}", self.prefix, group.len())
    }

    fn response(&self, id: &str) -> String {
        format!("{}resp:{id}", self.prefix)
    }

    fn channel_prefix(&self) -> String {
        format!("{}released:", self.prefix)
    }

    fn channel(&self, id: &AccountId) -> String {
        format!("{}{id}", self.channel_prefix())
    }

    fn channel_pattern(&self) -> String {
        let mut pattern = String::new();
        for c in self.channel_prefix().chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

struct Inner {
    client: redis::Client,
    // Made on first use, inside the runtime (it spawns a task).
    conn: OnceLock<Option<ConnectionManager>>,
    started: OnceLock<()>,
    keys: Keys,
    timeout: Duration,
    on_error: OnRedisError,
    lease_ttl: Duration,
    // Tells this replica's releases from others' on the channel.
    replica: String,
    next_token: AtomicU64,
    fallback: MemoryStore,
    // Leases this replica holds, per sorted-set key: renewed in the background.
    held: Mutex<HashMap<String, HashSet<String>>>,
    signals: Mutex<HashMap<AccountId, Arc<Notify>>>,
    down_until: Mutex<Option<Instant>>,
    down: AtomicBool,
    fallbacks: AtomicU64,
    scripts: Scripts,
}

/// Why a Redis call did not answer.
enum Failure {
    Down,
    Timeout,
    Redis(RedisError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Down => f.write_str("redis is down (retrying shortly)"),
            Self::Timeout => f.write_str("redis did not answer in time"),
            Self::Redis(e) => write!(f, "redis error: {e}"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn reason_from(name: &str) -> CooldownReason {
    [
        CooldownReason::RateLimited,
        CooldownReason::Overloaded,
        CooldownReason::UsageCap,
        CooldownReason::AuthFailed,
        CooldownReason::CredentialsRejected,
        CooldownReason::Ejected,
        CooldownReason::UpstreamError,
        CooldownReason::Manual,
    ]
    .into_iter()
    .find(|r| r.as_str() == name)
    .unwrap_or(CooldownReason::UpstreamError)
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port/db`, or
    /// `rediss://` for TLS when the `redis` crate is built with it).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "relay:".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            on_error: OnRedisError::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// The replica-local store used while Redis is unreachable (fail open).
    pub fn fallback(&self) -> &MemoryStore {
        &self.inner.fallback
    }

    /// Whether the last Redis call failed (Redis is treated as down).
    pub fn is_degraded(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    /// How many operations this store served from replica memory because
    /// Redis failed (also counted in `relay_state_fallback_total`).
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// The lease TTL of slots and queue places.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }
}

// === impl Inner ===

impl Inner {
    /// Spawns the subscriber and the lease renewer once, inside the runtime.
    fn start(self: &Arc<Self>) {
        self.started.get_or_init(|| {
            tokio::spawn(subscribe(Arc::downgrade(self)));
            tokio::spawn(renew(Arc::downgrade(self)));
        });
    }

    /// The connection, unless Redis is marked down.
    fn conn(self: &Arc<Self>) -> Option<ConnectionManager> {
        self.start();
        if let Some(until) = *lock(&self.down_until) {
            if Instant::now() < until {
                return None;
            }
        }
        self.any_conn()
    }

    /// The connection, even while Redis is marked down (background work).
    fn any_conn(&self) -> Option<ConnectionManager> {
        self.conn
            .get_or_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(MAX_BACKOFF);
                match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
                    Ok(conn) => Some(conn),
                    Err(e) => {
                        tracing::error!(error = ?e.kind(), "cannot set up the redis connection");
                        None
                    }
                }
            })
            .clone()
    }

    /// Runs `call` within the timeout.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis reachable again: shared state restored");
                }
                Ok(value)
            }
            Ok(Err(e)) => Err(Failure::Redis(e)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Records a failure of `op`: `Ok` to fall back to memory (fail open),
    /// the error to return otherwise.
    fn failed(&self, op: &'static str, failure: Failure) -> Result<(), StateError> {
        if !matches!(failure, Failure::Down) {
            *lock(&self.down_until) = Some(Instant::now() + DOWN_FOR);
            if !self.down.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %failure,
                    on_error = ?self.on_error,
                    "redis unreachable: {}",
                    match self.on_error {
                        OnRedisError::FailOpen => "serving from this replica's own state",
                        OnRedisError::FailClosed => "refusing requests until it is back",
                    }
                );
            }
        }
        match self.on_error {
            OnRedisError::FailOpen => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("relay_state_fallback_total", "op" => op).increment(1);
                tracing::debug!(op, error = %failure, "state from replica memory");
                Ok(())
            }
            OnRedisError::FailClosed => Err(StateError::new(failure.to_string())),
        }
    }

    fn token(&self) -> String {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.replica)
    }

    fn hold(&self, key: &str, token: &str) {
        lock(&self.held)
            .entry(key.to_owned())
            .or_default()
            .insert(token.to_owned());
    }

    fn unhold(&self, key: &str, token: &str) {
        let mut held = lock(&self.held);
        if let Some(tokens) = held.get_mut(key) {
            tokens.remove(token);
            if tokens.is_empty() {
                held.remove(key);
            }
        }
    }

    fn signal(&self, account: &AccountId) -> Arc<Notify> {
        lock(&self.signals)
            .entry(account.clone())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    fn wake_one(&self, account: &AccountId) {
        let notify = lock(&self.signals).get(account).cloned();
        if let Some(notify) = notify {
            notify.notify_one();
        }
    }

    fn wake_all(&self) {
        for notify in lock(&self.signals).values() {
            notify.notify_waiters();
        }
    }

    /// Gives a lease back in the background (from a guard's drop).
    fn release_later(self: Arc<Self>, account: AccountId, key: String, token: String) {
        self.unhold(&key, &token);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left: the lease ends with its TTL.
            return;
        };
        runtime.spawn(async move {
            let conn = self.any_conn();
            if let Some(mut conn) = conn {
                let channel = self.keys.channel(&account);
                let mut call = self.scripts.release.key(&key);
                call.arg(&token).arg(&channel).arg(&self.replica);
                if let Err(e) = self.timed(call.invoke_async::<i64>(&mut conn)).await {
                    tracing::debug!(%account, error = %e, "lease release failed; it ends with its TTL");
                }
            }
            // Our own waiters learn at once (their messages are skipped).
            self.wake_one(&account);
        });
    }

    /// Ends a queue place in the background (from a ticket's drop).
    fn leave_later(self: Arc<Self>, key: String, token: String) {
        self.unhold(&key, &token);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(mut conn) = self.any_conn() {
                let call = redis::cmd("ZREM").arg(&key).arg(&token).to_owned();
                let _ = self.timed(call.query_async::<i64>(&mut conn)).await;
            }
        });
    }

    async fn load_all(
        &self,
        conn: &mut ConnectionManager,
        accounts: &[&AccountId],
        model: &str,
    ) -> Result<Vec<(u32, u32, u32, i64, String)>, RedisError> {
        let pipe = || {
            let mut pipe = redis::pipe();
            for id in accounts {
                pipe.cmd("EVALSHA")
                    .arg(self.scripts.load.get_hash())
                    .arg(4)
                    .arg(self.keys.account(id, "slots"))
                    .arg(self.keys.account(id, "waiters"))
                    .arg(self.keys.account(id, "rpm"))
                    .arg(self.keys.account(id, "cooldown"))
                    .arg(model);
            }
            pipe
        };
        match pipe().query_async(conn).await {
            Err(e) if is_noscript(&e) => {
                // Redis restarted or flushed its scripts: load, then again.
                self.scripts.load.load_async(conn).await?;
                pipe().query_async(conn).await
            }
            other => other,
        }
    }
}

// === background tasks ===

/// Keeps one pattern subscription to every account's release channel,
/// reconnecting with back-off, and wakes a local waiter per release made by
/// another replica.
async fn subscribe(store: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(inner) = store.upgrade() else { return };
        let client = inner.client.clone();
        let pattern = inner.keys.channel_pattern();
        let channel_prefix = inner.keys.channel_prefix();
        let replica = inner.replica.clone();
        drop(inner);
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(MAX_BACKOFF, connect).await {
            Ok(Ok(pubsub)) => pubsub,
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // Releases may have been missed while unsubscribed: look again.
        match store.upgrade() {
            Some(inner) => inner.wake_all(),
            None => return,
        }
        let mut messages = pubsub.into_on_message();
        loop {
            // Wakes now and then to notice a dropped store on a quiet channel.
            let message = tokio::select! {
                message = messages.next() => message,
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if store.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            let Some(message) = message else { break };
            let Some(inner) = store.upgrade() else { return };
            let from: String = message.get_payload().unwrap_or_default();
            if from == replica {
                continue;
            }
            if let Some(account) = message.get_channel_name().strip_prefix(&channel_prefix) {
                inner.wake_one(&AccountId::from(account));
            }
        }
        tracing::debug!("redis subscription lost; reconnecting");
    }
}

/// Renews this replica's leases every third of the lease TTL.
async fn renew(store: Weak<Inner>) {
    let period = match store.upgrade() {
        Some(inner) => inner.lease_ttl / 3,
        None => return,
    };
    // Off the request path: a renewal may take as long as its period.
    let patience = period.max(Duration::from_millis(10));
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        wait = period;
        let Some(inner) = store.upgrade() else { return };
        let held: Vec<(String, Vec<String>)> = lock(&inner.held)
            .iter()
            .map(|(key, tokens)| (key.clone(), tokens.iter().cloned().collect()))
            .collect();
        if held.is_empty() {
            continue;
        }
        let Some(mut conn) = inner.any_conn() else {
            continue;
        };
        let ttl = millis(inner.lease_ttl);
        for (key, tokens) in held {
            let mut call = inner.scripts.renew.key(&key);
            call.arg(ttl).arg(&tokens);
            match tokio::time::timeout(patience, call.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {}
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::debug!(%error, "lease renewal failed; trying again soon");
                    // Several tries fit in one TTL before a lease lapses.
                    wait = period / 4;
                }
            }
        }
    }
}

// === impl StateStore ===

impl StateStore for RedisStore {
    fn sticky_get<'a>(
        &'a self,
        group: &'a str,
        session: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<AccountId>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("GETEX")
                        .arg(inner.keys.sticky(group, session))
                        .arg("PX")
                        .arg(millis(ttl))
                        .to_owned();
                    match inner
                        .timed(call.query_async::<Option<String>>(&mut conn))
                        .await
                    {
                        Ok(found) => return Ok(found.map(AccountId::from)),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("sticky_get", failure)?;
            inner.fallback.sticky_get(group, session, ttl).await
        })
    }

    fn sticky_set<'a>(
        &'a self,
        group: &'a str,
        session: &'a str,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("SET")
                        .arg(inner.keys.sticky(group, session))
                        .arg(account.as_str())
                        .arg("PX")
                        .arg(millis(ttl))
                        .to_owned();
                    match inner.timed(call.query_async::<()>(&mut conn)).await {
                        Ok(()) => return Ok(()),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("sticky_set", failure)?;
            inner
                .fallback
                .sticky_set(group, session, account, ttl)
                .await
        })
    }

    fn sticky_clear<'a>(&'a self, group: &'a str, session: &'a str) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("DEL")
                        .arg(inner.keys.sticky(group, session))
                        .to_owned();
                    match inner.timed(call.query_async::<()>(&mut conn)).await {
                        Ok(()) => return Ok(()),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("sticky_clear", failure)?;
            inner.fallback.sticky_clear(group, session).await
        })
    }

    fn response_get<'a>(&'a self, response_id: &'a str) -> StoreFuture<'a, Option<AccountId>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("GET")
                        .arg(inner.keys.response(response_id))
                        .to_owned();
                    match inner
                        .timed(call.query_async::<Option<String>>(&mut conn))
                        .await
                    {
                        Ok(found) => return Ok(found.map(AccountId::from)),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("response_get", failure)?;
            inner.fallback.response_get(response_id).await
        })
    }

    fn response_set<'a>(
        &'a self,
        response_id: &'a str,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("SET")
                        .arg(inner.keys.response(response_id))
                        .arg(account.as_str())
                        .arg("PX")
                        .arg(millis(ttl))
                        .to_owned();
                    match inner.timed(call.query_async::<()>(&mut conn)).await {
                        Ok(()) => return Ok(()),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("response_set", failure)?;
            inner.fallback.response_set(response_id, account, ttl).await
        })
    }

    fn loads<'a>(
        &'a self,
        accounts: &'a [&'a AccountId],
        model: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<AccountLoad>> {
        StoreFuture::new(async move {
            if accounts.is_empty() {
                return Ok(Vec::new());
            }
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = inner.load_all(&mut conn, accounts, model.unwrap_or(""));
                    match inner.timed(call).await {
                        Ok(rows) => {
                            return Ok(rows
                                .into_iter()
                                .map(|(in_flight, waiting, rpm_used, left, reason)| AccountLoad {
                                    in_flight,
                                    waiting,
                                    rpm_used,
                                    cooldown: (left > 0).then(|| {
                                        (
                                            Duration::from_millis(left.unsigned_abs()),
                                            reason_from(&reason),
                                        )
                                    }),
                                })
                                .collect())
                        }
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("loads", failure)?;
            inner.fallback.loads(accounts, model).await
        })
    }

    fn try_acquire<'a>(
        &'a self,
        account: &'a AccountId,
        limits: SlotLimits,
    ) -> StoreFuture<'a, Option<SlotGuard>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let key = inner.keys.account(account, "slots");
                    let token = inner.token();
                    let mut call = inner.scripts.acquire.key(&key);
                    call.key(inner.keys.account(account, "rpm"))
                        .arg(&token)
                        .arg(limits.concurrency)
                        .arg(limits.rpm.unwrap_or(0))
                        .arg(millis(inner.lease_ttl))
                        .arg(millis(RPM_WINDOW));
                    // Held before the call: a lease taken by a call that
                    // then times out is still renewed, then released.
                    inner.hold(&key, &token);
                    match inner.timed(call.invoke_async::<i64>(&mut conn)).await {
                        Ok(1) => {
                            let store = inner.clone();
                            let id = account.clone();
                            return Ok(Some(SlotGuard::new(account.clone(), move || {
                                store.release_later(id, key, token);
                            })));
                        }
                        Ok(_) => {
                            inner.unhold(&key, &token);
                            return Ok(None);
                        }
                        Err(failure) => {
                            // Maybe taken, maybe not: give it back.
                            inner.clone().release_later(account.clone(), key, token);
                            failure
                        }
                    }
                }
                None => Failure::Down,
            };
            inner.failed("try_acquire", failure)?;
            inner.fallback.try_acquire(account, limits).await
        })
    }

    fn enter_queue<'a>(
        &'a self,
        account: &'a AccountId,
        max_waiting: u32,
    ) -> StoreFuture<'a, Option<WaitTicket>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let key = inner.keys.account(account, "waiters");
                    let token = inner.token();
                    let mut call = inner.scripts.enter_queue.key(&key);
                    call.arg(&token)
                        .arg(max_waiting)
                        .arg(millis(inner.lease_ttl));
                    inner.hold(&key, &token);
                    match inner.timed(call.invoke_async::<i64>(&mut conn)).await {
                        Ok(1) => {
                            let store = inner.clone();
                            return Ok(Some(WaitTicket::new(move || {
                                store.leave_later(key, token);
                            })));
                        }
                        Ok(_) => {
                            inner.unhold(&key, &token);
                            return Ok(None);
                        }
                        Err(failure) => {
                            inner.clone().leave_later(key, token);
                            failure
                        }
                    }
                }
                None => Failure::Down,
            };
            inner.failed("enter_queue", failure)?;
            inner.fallback.enter_queue(account, max_waiting).await
        })
    }

    fn slot_released(&self, account: &AccountId) -> SlotSignal {
        self.inner.start();
        let mut shared = Box::pin(self.inner.signal(account).notified_owned());
        // Registered now: a release before the first poll still counts.
        shared.as_mut().enable();
        let local = self.inner.fallback.slot_released(account);
        Box::pin(async move {
            tokio::select! {
                () = shared => {}
                () = local => {}
            }
        })
    }

    fn set_cooldown<'a>(
        &'a self,
        account: &'a AccountId,
        model: Option<&'a str>,
        duration: Duration,
        reason: CooldownReason,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let field = model.map_or_else(|| "*".to_owned(), |m| format!("m:{m}"));
                    let mut call = inner
                        .scripts
                        .set_cooldown
                        .key(inner.keys.account(account, "cooldown"));
                    call.arg(field).arg(millis(duration)).arg(reason.as_str());
                    match inner.timed(call.invoke_async::<i64>(&mut conn)).await {
                        Ok(_) => return Ok(()),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("set_cooldown", failure)?;
            inner
                .fallback
                .set_cooldown(account, model, duration, reason)
                .await
        })
    }

    fn clear_cooldown<'a>(&'a self, account: &'a AccountId) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            // The replica's own cooldowns (from a fail-open period) end too.
            inner.fallback.clear_cooldown(account).await?;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("DEL")
                        .arg(inner.keys.account(account, "cooldown"))
                        .to_owned();
                    match inner.timed(call.query_async::<()>(&mut conn)).await {
                        Ok(()) => return Ok(()),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("clear_cooldown", failure)
        })
    }

    fn model_cooldowns<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> StoreFuture<'a, Vec<(String, Duration, CooldownReason)>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    // Redis's clock and the cooldowns in one round trip.
                    let mut pipe = redis::pipe();
                    pipe.cmd("TIME")
                        .cmd("HGETALL")
                        .arg(inner.keys.account(account, "cooldown"));
                    type Answer = ((u64, u64), HashMap<String, String>);
                    match inner.timed(pipe.query_async::<Answer>(&mut conn)).await {
                        Ok(((secs, micros), fields)) => {
                            let now = secs * 1000 + micros / 1000;
                            let mut all: Vec<_> = fields
                                .into_iter()
                                .filter_map(|(field, value)| {
                                    let model = field.strip_prefix("m:")?.to_owned();
                                    let (until, reason) = value.split_once(':')?;
                                    let left = until.parse::<u64>().ok()?.checked_sub(now)?;
                                    (left > 0).then(|| {
                                        (model, Duration::from_millis(left), reason_from(reason))
                                    })
                                })
                                .collect();
                            all.sort_by(|a, b| a.0.cmp(&b.0));
                            return Ok(all);
                        }
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("model_cooldowns", failure)?;
            inner.fallback.model_cooldowns(account).await
        })
    }

    fn tokens_get<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> StoreFuture<'a, Option<RefreshedTokens>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let call = redis::cmd("HMGET")
                        .arg(inner.keys.account(account, "oauth"))
                        .arg("access")
                        .arg("refresh")
                        .arg("expires_at")
                        .to_owned();
                    type Fields = (Option<String>, Option<String>, Option<u64>);
                    match inner.timed(call.query_async::<Fields>(&mut conn)).await {
                        Ok((Some(access), Some(refresh), Some(expires_at))) => {
                            return Ok(Some(RefreshedTokens {
                                access_token: SecretString::from(access),
                                refresh_token: SecretString::from(refresh),
                                expires_at,
                            }))
                        }
                        Ok(_) => return Ok(None),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("tokens_get", failure)?;
            inner.fallback.tokens_get(account).await
        })
    }

    fn tokens_set<'a>(
        &'a self,
        account: &'a AccountId,
        tokens: &'a RefreshedTokens,
    ) -> StoreFuture<'a, ()> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            // Kept here too, so a fail-open period still knows them.
            inner.fallback.tokens_set(account, tokens).await?;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let key = inner.keys.account(account, "oauth");
                    let mut pipe = redis::pipe();
                    pipe.atomic()
                        .cmd("HSET")
                        .arg(&key)
                        .arg("access")
                        .arg(tokens.access_token.expose_secret())
                        .arg("refresh")
                        .arg(tokens.refresh_token.expose_secret())
                        .arg("expires_at")
                        .arg(tokens.expires_at)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(millis(TOKENS_TTL))
                        .ignore();
                    match inner.timed(pipe.query_async::<()>(&mut conn)).await {
                        Ok(()) => return Ok(()),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("tokens_set", failure)
        })
    }

    fn refresh_lock<'a>(
        &'a self,
        account: &'a AccountId,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<RefreshLock>> {
        StoreFuture::new(async move {
            let inner = &self.inner;
            let failure = match inner.conn() {
                Some(mut conn) => {
                    let key = inner.keys.account(account, "refresh_lock");
                    let holder = format!("{}:{:016x}", inner.token(), rand::random::<u64>());
                    let call = redis::cmd("SET")
                        .arg(&key)
                        .arg(&holder)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(ttl))
                        .to_owned();
                    match inner
                        .timed(call.query_async::<Option<String>>(&mut conn))
                        .await
                    {
                        Ok(Some(_)) => {
                            let store = inner.clone();
                            return Ok(Some(RefreshLock::new(move || {
                                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                                    return;
                                };
                                runtime.spawn(async move {
                                    if let Some(mut conn) = store.any_conn() {
                                        let mut call = store.scripts.unlock.key(&key);
                                        call.arg(&holder);
                                        let _ =
                                            store.timed(call.invoke_async::<i64>(&mut conn)).await;
                                    }
                                });
                            })));
                        }
                        Ok(None) => return Ok(None),
                        Err(failure) => failure,
                    }
                }
                None => Failure::Down,
            };
            inner.failed("refresh_lock", failure)?;
            inner.fallback.refresh_lock(account, ttl).await
        })
    }
}

#[cfg(test)]
mod tests;
