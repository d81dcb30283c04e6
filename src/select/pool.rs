use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::account::{Account, AccountId, AccountIdHash};
use crate::endpoint::Endpoint;

/// The upstream accounts, in the order they are tried: by priority (lower
/// first), then in the order given.
///
/// # Examples
///
/// ```
/// use secrecy::SecretString;
/// use tower_llm_relay::{Account, AccountPool, Credentials, Endpoint, Platform};
///
/// let key = || Credentials::ApiKey(SecretString::from("k"));
/// let pool = AccountPool::new([
///     Account::builder("backup", Platform::Anthropic, key()).priority(2).build(),
///     Account::builder("main", Platform::Anthropic, key()).priority(1).build(),
///     Account::builder("oai", Platform::OpenAi, key()).build(),
/// ]);
/// let first = pool.candidates(Endpoint::Messages, "claude-sonnet-4-5", Some("default")).next();
/// assert_eq!(first.map(|a| a.id().as_str()), Some("main"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct AccountPool {
    accounts: Arc<[Arc<Account>]>,
    // What selection compares, per account in pool order, side by side:
    // a scan over 1,000 accounts then touches a few cache lines, not 1,000
    // `Account`s.
    hot: Arc<[AccountHot]>,
    // Group name → indexes into `accounts`, so a request scans only its
    // group's accounts.
    by_group: Arc<HashMap<Arc<str>, Vec<usize>>>,
    by_id: Arc<HashMap<AccountId, usize, AccountIdHash>>,
    // The candidates of each (endpoint, group, model) asked for so far: the
    // pool never changes, so each answer is computed once.
    cache: Arc<RwLock<CandidateCache>>,
}

/// The fields of an account that ranking reads for every candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountHot {
    pub(crate) priority: i32,
    pub(crate) concurrency: u32,
    pub(crate) rpm: Option<u32>,
}

/// Endpoint → group (`None`: any) → model → candidate indexes.
type CandidateCache = HashMap<(Endpoint, Option<Arc<str>>), HashMap<Box<str>, Arc<[usize]>>>;

/// Past this many cached lists the cache starts over: model names come
/// from clients, and a client must not grow it without bound.
const MAX_CACHED_LISTS: usize = 4096;

impl AccountPool {
    /// A pool of these accounts.
    pub fn new(accounts: impl IntoIterator<Item = Account>) -> Self {
        let mut accounts: Vec<Arc<Account>> = accounts.into_iter().map(Arc::new).collect();
        // A stable sort keeps the given order among equal priorities.
        accounts.sort_by_key(|a| a.priority());
        let mut by_group: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        let mut by_id = HashMap::with_capacity_and_hasher(accounts.len(), AccountIdHash::default());
        for (i, account) in accounts.iter().enumerate() {
            by_group.entry(account.group().into()).or_default().push(i);
            by_id.entry(account.id().clone()).or_insert(i);
        }
        let hot = accounts
            .iter()
            .map(|a| AccountHot {
                priority: a.priority(),
                concurrency: a.concurrency(),
                rpm: a.rpm(),
            })
            .collect();
        Self {
            accounts: accounts.into(),
            hot,
            by_group: Arc::new(by_group),
            by_id: Arc::new(by_id),
            cache: Arc::default(),
        }
    }

    /// The ranking fields of the account at `index`.
    #[inline]
    pub(crate) fn hot(&self, index: usize) -> AccountHot {
        self.hot[index]
    }

    /// The indexes of the accounts that can serve `model` at `endpoint` for
    /// a caller in `group`, in trial order; computed once per question.
    pub(crate) fn candidate_indexes(
        &self,
        endpoint: Endpoint,
        model: &str,
        group: Option<&str>,
    ) -> Arc<[usize]> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        // Looked up without allocating: the outer maps are tiny, so a scan
        // for the (endpoint, group) pair costs less than building its key.
        let by_model = cache
            .iter()
            .find(|((e, g), _)| *e == endpoint && g.as_deref() == group)
            .map(|(_, by_model)| by_model);
        if let Some(found) = by_model.and_then(|m| m.get(model)) {
            return found.clone();
        }
        drop(cache);
        let found: Arc<[usize]> = self
            .indexed_candidates(endpoint, model, group)
            .map(|(i, _)| i)
            .collect();
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        let cached: usize = cache.values().map(HashMap::len).sum();
        if cached >= MAX_CACHED_LISTS {
            cache.clear();
        }
        cache
            .entry((endpoint, group.map(Arc::from)))
            .or_default()
            .insert(model.into(), found.clone());
        found
    }

    /// Every account, in trial order.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.accounts
    }

    /// The account with this id.
    pub fn get(&self, id: &AccountId) -> Option<&Arc<Account>> {
        self.by_id.get(id).map(|&i| &self.accounts[i])
    }

    /// The pool position of the account with this id.
    pub(crate) fn index_of(&self, id: &AccountId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Accounts that can serve `model` at `endpoint` for a caller in
    /// `group` (`None`: any group), in trial order.
    pub fn candidates<'a>(
        &'a self,
        endpoint: Endpoint,
        model: &'a str,
        group: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<Account>> + 'a {
        self.indexed_candidates(endpoint, model, group)
            .map(|(_, a)| a)
    }

    /// As [`AccountPool::candidates`], with each account's index in
    /// [`AccountPool::accounts`].
    pub fn indexed_candidates<'a>(
        &'a self,
        endpoint: Endpoint,
        model: &'a str,
        group: Option<&'a str>,
    ) -> impl Iterator<Item = (usize, &'a Arc<Account>)> + 'a {
        let indexes: Box<dyn Iterator<Item = usize> + 'a> = match group {
            Some(group) => match self.by_group.get(group) {
                Some(members) => Box::new(members.iter().copied()),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(0..self.accounts.len()),
        };
        indexes
            .map(|i| (i, &self.accounts[i]))
            .filter(move |(_, a)| a.serves_endpoint(endpoint) && a.serves_model(model))
    }
}
