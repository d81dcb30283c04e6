use std::collections::HashMap;
use std::sync::Arc;

use crate::account::{Account, AccountId};
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
    // Group name → indexes into `accounts`, so a request scans only its
    // group's accounts.
    by_group: Arc<HashMap<Arc<str>, Vec<usize>>>,
}

impl AccountPool {
    /// A pool of these accounts.
    pub fn new(accounts: impl IntoIterator<Item = Account>) -> Self {
        let mut accounts: Vec<Arc<Account>> = accounts.into_iter().map(Arc::new).collect();
        // A stable sort keeps the given order among equal priorities.
        accounts.sort_by_key(|a| a.priority());
        let mut by_group: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, account) in accounts.iter().enumerate() {
            by_group.entry(account.group().into()).or_default().push(i);
        }
        Self {
            accounts: accounts.into(),
            by_group: Arc::new(by_group),
        }
    }

    /// Every account, in trial order.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.accounts
    }

    /// The account with this id.
    pub fn get(&self, id: &AccountId) -> Option<&Arc<Account>> {
        self.accounts.iter().find(|a| a.id() == id)
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
