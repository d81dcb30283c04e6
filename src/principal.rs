//! Who is calling: the client key a request proved, and what it may do.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::glob::ModelGlobs;

/// The name of a client key: unique, safe to log, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for KeyId {
    fn from(name: &str) -> Self {
        Self(name.into())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-key limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// Requests in flight, if limited.
    pub concurrency: Option<u32>,
}

/// The authenticated caller (request extension set by the auth layer).
///
/// # Examples
///
/// ```
/// use tower_llm_relay::{ModelGlobs, Principal};
///
/// let alice = Principal::new("alice").group("team-a").models(ModelGlobs::new(["claude-*"]));
/// assert_eq!(alice.group_name(), "team-a");
/// assert!(alice.may_use("claude-sonnet-4-5"));
/// assert!(!alice.may_use("gpt-4o"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    id: KeyId,
    group: Arc<str>,
    models: ModelGlobs,
    limits: KeyLimits,
}

impl Principal {
    /// A principal in group `default`, allowed every model, unlimited.
    pub fn new(name: &str) -> Self {
        Self {
            id: KeyId::from(name),
            group: "default".into(),
            models: ModelGlobs::default(),
            limits: KeyLimits::default(),
        }
    }

    /// Sets the group whose accounts serve it.
    pub fn group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.group = group.into();
        self
    }

    /// Restricts the models it may use.
    pub fn models(mut self, models: ModelGlobs) -> Self {
        self.models = models;
        self
    }

    /// Sets its limits.
    pub fn limits(mut self, limits: KeyLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The key's name.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The group whose accounts serve it.
    pub fn group_name(&self) -> &str {
        &self.group
    }

    /// The models it may use.
    pub fn allowed_models(&self) -> &ModelGlobs {
        &self.models
    }

    /// Its limits.
    pub fn key_limits(&self) -> KeyLimits {
        self.limits
    }

    /// Whether it may use `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.models.allows(model)
    }
}

/// The client keys the relay accepts, each with its [`Principal`].
///
/// Lookup hashes the presented key with SHA-256 and finds the entry by
/// digest, then compares the full key in constant time: the time taken does
/// not depend on how much of a guessed key was right, and lookup stays O(1)
/// with thousands of keys.
///
/// # Examples
///
/// ```
/// use secrecy::SecretString;
/// use tower_llm_relay::{ClientKeys, Principal};
///
/// let mut keys = ClientKeys::new();
/// keys.insert(SecretString::from("sk-relay-alice"), Principal::new("alice"));
/// assert_eq!(keys.find("sk-relay-alice").map(|p| p.id().as_str()), Some("alice"));
/// assert!(keys.find("sk-relay-alicf").is_none());
/// ```
#[derive(Clone, Default)]
pub struct ClientKeys {
    by_digest: HashMap<[u8; 32], (SecretString, Principal)>,
}

impl ClientKeys {
    /// An empty set (every request is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `key` as `principal`. A key inserted twice keeps the last.
    pub fn insert(&mut self, key: SecretString, principal: Principal) {
        let digest = digest(key.expose_secret());
        self.by_digest.insert(digest, (key, principal));
    }

    /// The principal of a presented key.
    pub fn find(&self, presented: &str) -> Option<&Principal> {
        let (key, principal) = self.by_digest.get(&digest(presented))?;
        let same: bool = key
            .expose_secret()
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into();
        same.then_some(principal)
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The principals, in no particular order.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.by_digest.values().map(|(_, p)| p)
    }
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.by_digest.values().map(|(_, p)| p.id()))
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}
