//! Who is calling: the client key a request proved, and what it may do.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::glob::ModelGlobs;

/// The name of a client key: unique, safe to log, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text, for labels that keep it (no copy).
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
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
/// Only a SHA-256 digest of each key is kept (the [`SecretString`] given to
/// [`insert`](Self::insert) is zeroized when it drops). [`find`](Self::find)
/// hashes the presented key and compares its digest with *every* configured
/// digest, with no early exit and a constant-time select of the match: the
/// time taken does not depend on whether the key is known, which key it is,
/// how much of a guess was right or how long the configured keys are. It
/// grows with the number of keys, by a few nanoseconds per key.
///
/// A map keyed by the presented key (or by its plain digest) would answer an
/// unknown key sooner than a known one and compare stored bytes with an
/// early exit, which is why there is none here.
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
    entries: Vec<([u64; 4], Principal)>,
}

impl ClientKeys {
    /// An empty set (every request is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `key` as `principal`. A key inserted twice keeps the last.
    pub fn insert(&mut self, key: SecretString, principal: Principal) {
        let digest = digest(key.expose_secret());
        match self.entries.iter_mut().find(|(d, _)| *d == digest) {
            Some(entry) => entry.1 = principal,
            None => self.entries.push((digest, principal)),
        }
    }

    /// The principal of a presented key.
    pub fn find(&self, presented: &str) -> Option<&Principal> {
        let wanted = digest(presented);
        let mut found = Choice::from(0);
        let mut at = 0u64;
        // Every entry, every time: no early exit on a match.
        for (i, (digest, _)) in self.entries.iter().enumerate() {
            let diff = digest
                .iter()
                .zip(&wanted)
                .fold(0u64, |acc, (a, b)| acc | (a ^ b));
            let same = diff.ct_eq(&0);
            at.conditional_assign(&(i as u64), same);
            found |= same;
        }
        // Only the outcome, which the answer shows anyway, takes a branch.
        bool::from(found).then(|| &self.entries[at as usize].1)
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principals, in no particular order.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.entries.iter().map(|(_, p)| p)
    }
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(_, p)| p.id()))
            .finish()
    }
}

/// SHA-256 of `key`, as four words to compare quickly.
pub(crate) fn digest(key: &str) -> [u64; 4] {
    let bytes: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        *word = u64::from_le_bytes(eight);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_keys() -> ClientKeys {
        let mut keys = ClientKeys::new();
        for name in ["alice", "bob", "carol"] {
            keys.insert(
                SecretString::from(format!("sk-relay-{name}-0123456789")),
                Principal::new(name),
            );
        }
        keys
    }

    fn who<'a>(keys: &'a ClientKeys, presented: &str) -> Option<&'a str> {
        keys.find(presented).map(|p| p.id().as_str())
    }

    #[test]
    fn every_configured_key_finds_its_own_principal() {
        let keys = three_keys();
        for name in ["alice", "bob", "carol"] {
            assert_eq!(
                who(&keys, &format!("sk-relay-{name}-0123456789")),
                Some(name)
            );
        }
    }

    #[test]
    fn near_misses_of_a_known_key_are_unknown() {
        let keys = three_keys();
        let known = "sk-relay-bob-0123456789";
        for presented in [
            "",
            "sk-relay-bob-012345678",   // a prefix
            "sk-relay-bob-01234567890", // longer
            "sk-relay-bob-0123456788",  // last byte wrong
            "tk-relay-bob-0123456789",  // first byte wrong
            "SK-RELAY-BOB-0123456789",  // case
            "sk-relay-bob-0123456789\0",
            "sk-relay-dave-0123456789", // never configured
        ] {
            assert_ne!(presented, known);
            assert_eq!(who(&keys, presented), None, "{presented:?}");
        }
    }

    #[test]
    fn a_key_inserted_twice_keeps_the_last_principal() {
        let mut keys = three_keys();
        keys.insert(
            SecretString::from("sk-relay-bob-0123456789"),
            Principal::new("robert"),
        );
        assert_eq!(keys.len(), 3);
        assert_eq!(who(&keys, "sk-relay-bob-0123456789"), Some("robert"));
        assert_eq!(who(&keys, "sk-relay-carol-0123456789"), Some("carol"));
    }

    #[test]
    fn no_keys_find_nothing_and_debug_shows_names_only() {
        assert_eq!(who(&ClientKeys::new(), ""), None);
        let printed = format!("{:?}", three_keys());
        assert!(printed.contains("alice"), "{printed}");
        assert!(!printed.contains("0123456789"), "{printed}");
    }
}
