//! Upstream accounts: who the relay calls, with which credentials.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

use crate::endpoint::Endpoint;
use crate::glob::ModelGlobs;

/// A stable, unique account name, used in state, logs and the
/// `x-relay-account` response header. Not secret.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::AccountId;
///
/// let id = AccountId::from("claude-max-1");
/// assert_eq!(id.as_str(), "claude-max-1");
/// assert_eq!(id.to_string(), "claude-max-1");
/// ```
#[derive(Clone)]
pub struct AccountId {
    name: Arc<str>,
    // Hashed once: the scheduler looks accounts up on every request.
    hash: u64,
}

impl AccountId {
    fn new(name: Arc<str>) -> Self {
        // FNV-1a: stable, and cheap for short names.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Self { name, hash }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The shared text, for labels that keep it (no copy).
    pub(crate) fn shared(&self) -> Arc<str> {
        self.name.clone()
    }
}

impl PartialEq for AccountId {
    fn eq(&self, other: &Self) -> bool {
        // Ids are cloned from the pool, so most comparisons are one pointer.
        Arc::ptr_eq(&self.name, &other.name) || (self.hash == other.hash && self.name == other.name)
    }
}

impl Eq for AccountId {}

impl std::hash::Hash for AccountId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A hasher for maps keyed by [`AccountId`]: it passes the id's hash,
/// computed once when the id was made, straight through, so a lookup does
/// not hash again. Other keys fall back to FNV-1a over their bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccountIdHasher(u64);

impl Default for AccountIdHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for AccountIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`AccountIdHasher`]s.
pub(crate) type AccountIdHash = std::hash::BuildHasherDefault<AccountIdHasher>;

impl PartialOrd for AccountId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AccountId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AccountId").field(&self.name).finish()
    }
}

impl From<&str> for AccountId {
    fn from(id: &str) -> Self {
        Self::new(id.into())
    }
}

impl From<String> for AccountId {
    fn from(id: String) -> Self {
        Self::new(id.into())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The API family an account speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Anthropic Messages (`/v1/messages`), directly or through Bedrock.
    Anthropic,
    /// OpenAI Chat Completions and Responses.
    OpenAi,
}

impl Platform {
    /// The public origin of this platform's API.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Anthropic => "https://api.anthropic.com",
            Self::OpenAi => "https://api.openai.com",
        }
    }

    /// The platform's name as in config files (`anthropic`, `openai`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }
}

/// How an account authenticates upstream, which also decides its tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountType {
    /// An Anthropic subscription account with a refreshable OAuth token.
    OAuth,
    /// An Anthropic subscription account with a long-lived setup token.
    SetupToken,
    /// A plain API key (Anthropic `x-api-key`, OpenAI Bearer).
    ApiKey,
    /// AWS Bedrock, signed with SigV4.
    Bedrock,
}

impl AccountType {
    /// Whether the account is a subscription account that needs the OAuth
    /// beta flag and a Bearer token.
    pub fn is_subscription(self) -> bool {
        matches!(self, Self::OAuth | Self::SetupToken)
    }

    /// The type's name as in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth => "oauth",
            Self::SetupToken => "setup_token",
            Self::ApiKey => "api_key",
            Self::Bedrock => "bedrock",
        }
    }
}

/// What an account proves itself with. Every secret is a [`SecretString`],
/// whose `Debug` prints `[REDACTED]`, so a credential cannot reach a log by
/// accident.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// An API key.
    ApiKey(SecretString),
    /// A subscription OAuth token, refreshable when `refresh_token` is set.
    OAuth {
        /// The bearer token.
        access_token: SecretString,
        /// The refresh token, if the account can be refreshed.
        refresh_token: Option<SecretString>,
        /// Unix seconds when `access_token` expires.
        expires_at: Option<u64>,
        /// The OAuth token endpoint used for refreshing.
        token_url: Option<String>,
    },
    /// A long-lived subscription setup token (never refreshed).
    SetupToken(SecretString),
    /// AWS credentials for Bedrock.
    Bedrock {
        /// The AWS region, e.g. `us-east-1`.
        region: String,
        /// The access key id (treated as a secret too).
        access_key_id: SecretString,
        /// The secret access key.
        secret_access_key: SecretString,
        /// An optional STS session token.
        session_token: Option<SecretString>,
    },
}

impl Credentials {
    /// The account type these credentials make.
    pub fn account_type(&self) -> AccountType {
        match self {
            Self::ApiKey(_) => AccountType::ApiKey,
            Self::OAuth { .. } => AccountType::OAuth,
            Self::SetupToken(_) => AccountType::SetupToken,
            Self::Bedrock { .. } => AccountType::Bedrock,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials::{}([REDACTED])",
            self.account_type().as_str()
        )
    }
}

/// One upstream account.
///
/// # Examples
///
/// ```
/// use secrecy::SecretString;
/// use tower_llm_relay::{Account, Credentials, Platform};
///
/// let account = Account::builder("claude-1", Platform::Anthropic, Credentials::ApiKey(SecretString::from("sk-ant-…")))
///     .models(["claude-*"])
///     .map_model("claude-sonnet-4-5", "claude-sonnet-4-5-20250929")
///     .build();
/// assert!(account.serves_model("claude-sonnet-4-5"));
/// assert_eq!(account.upstream_model("claude-sonnet-4-5"), "claude-sonnet-4-5-20250929");
/// assert!(!format!("{account:?}").contains("sk-ant"));
///
/// let proxied = Account::builder("claude-2", Platform::Anthropic, Credentials::ApiKey(SecretString::from("k")))
///     .proxy(Some("http://egress:hunter2@127.0.0.1:3128"))
///     .build();
/// assert!(format!("{proxied:?}").contains("http://[REDACTED]@127.0.0.1:3128"));
/// assert!(!format!("{proxied:?}").contains("hunter2"));
/// ```
#[derive(Clone)]
pub struct Account {
    id: AccountId,
    platform: Platform,
    credentials: Credentials,
    group: Arc<str>,
    base_url: Arc<str>,
    // `base_url`'s scheme and authority when it has no path, so a request's
    // URI is built from parts rather than formatted and parsed each time.
    origin: Option<Origin>,
    // `id` as a header value, made once: every response names its account.
    id_header: Option<http::HeaderValue>,
    priority: i32,
    concurrency: u32,
    rpm: Option<u32>,
    models: ModelGlobs,
    model_mapping: HashMap<String, String>,
    proxy: Option<Arc<str>>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("platform", &self.platform)
            .field("credentials", &self.credentials)
            .field("group", &self.group)
            .field("base_url", &self.base_url)
            .field("priority", &self.priority)
            .field("concurrency", &self.concurrency)
            .field("rpm", &self.rpm)
            .field("models", &self.models)
            .field("model_mapping", &self.model_mapping)
            // The egress proxy URL may carry a password.
            .field("proxy", &self.proxy.as_deref().map(redact_user_info))
            .finish()
    }
}

/// `scheme://[REDACTED]@host` for a URL with user info; others as they are.
pub(crate) fn redact_user_info(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[REDACTED]{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl Account {
    /// Starts an account with defaults: group `default`, the platform's
    /// public base URL, priority 1, concurrency 4, no RPM limit, every model.
    pub fn builder(
        id: impl Into<AccountId>,
        platform: Platform,
        credentials: Credentials,
    ) -> AccountBuilder {
        let base_url = match &credentials {
            Credentials::Bedrock { region, .. } => {
                format!("https://bedrock-runtime.{region}.amazonaws.com").into()
            }
            _ => platform.default_base_url().into(),
        };
        AccountBuilder {
            account: Account {
                id: id.into(),
                platform,
                credentials,
                group: "default".into(),
                base_url,
                origin: None,
                id_header: None,
                priority: 1,
                concurrency: 4,
                rpm: None,
                models: ModelGlobs::default(),
                model_mapping: HashMap::new(),
                proxy: None,
            },
        }
    }

    /// The account's id.
    pub fn id(&self) -> &AccountId {
        &self.id
    }

    /// The API family it speaks.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// Its type, from its credentials.
    pub fn account_type(&self) -> AccountType {
        self.credentials.account_type()
    }

    /// Its credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The group of client keys it serves.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Its origin, without a trailing slash or `/v1`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Its id as a header value; `None` when the id cannot be one.
    pub(crate) fn id_header(&self) -> Option<http::HeaderValue> {
        self.id_header.clone()
    }

    /// The URI of `path` at its origin, built from parts; `None` when its
    /// base URL has a path of its own (then join the two as text).
    pub(crate) fn uri_of(&self, path: &'static str) -> Option<http::Uri> {
        let origin = self.origin.as_ref()?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(origin.scheme.clone());
        parts.authority = Some(origin.authority.clone());
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static(path));
        http::Uri::from_parts(parts).ok()
    }

    /// Lower is tried first.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The most requests it may have in flight.
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Its requests-per-minute limit, if any.
    pub fn rpm(&self) -> Option<u32> {
        self.rpm
    }

    /// The models it may serve (empty: any).
    pub fn models(&self) -> &ModelGlobs {
        &self.models
    }

    /// Client model name → upstream model name.
    pub fn model_mapping(&self) -> &HashMap<String, String> {
        &self.model_mapping
    }

    /// Its egress proxy, if any.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref()
    }

    /// Whether it may serve `model` (the client's name): allowed by its
    /// list, or named in its mapping. Bedrock accounts serve only models
    /// their mapping names: Bedrock needs its own model id.
    pub fn serves_model(&self, model: &str) -> bool {
        if self.account_type() == AccountType::Bedrock {
            return self.model_mapping.contains_key(model);
        }
        self.models.allows(model) || self.model_mapping.contains_key(model)
    }

    /// The model name to send upstream for the client's `model`.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_mapping
            .get(model)
            .map(String::as_str)
            .unwrap_or(model)
    }

    /// Whether the account can serve `endpoint`: the platform must match,
    /// and Bedrock accounts serve only Messages (Bedrock has no token
    /// counting; see [`crate::bedrock`]).
    pub fn serves_endpoint(&self, endpoint: Endpoint) -> bool {
        self.platform == endpoint.platform()
            && (self.account_type() != AccountType::Bedrock || endpoint == Endpoint::Messages)
    }
}

/// Builds an [`Account`]; see [`Account::builder`].
#[derive(Debug, Clone)]
pub struct AccountBuilder {
    account: Account,
}

impl AccountBuilder {
    /// Sets the client-key group it serves.
    pub fn group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.account.group = group.into();
        self
    }

    /// Sets its origin; a trailing `/` is removed.
    pub fn base_url(mut self, base_url: impl AsRef<str>) -> Self {
        self.account.base_url = base_url.as_ref().trim_end_matches('/').into();
        self
    }

    /// Sets its priority (lower is tried first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.account.priority = priority;
        self
    }

    /// Sets its in-flight limit.
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.account.concurrency = concurrency;
        self
    }

    /// Sets its requests-per-minute limit.
    pub fn rpm(mut self, rpm: Option<u32>) -> Self {
        self.account.rpm = rpm;
        self
    }

    /// Restricts the models it serves to these globs.
    pub fn models<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.account.models = ModelGlobs::new(globs);
        self
    }

    /// Maps a client model name to the name sent upstream.
    pub fn map_model(mut self, client: impl Into<String>, upstream: impl Into<String>) -> Self {
        self.account
            .model_mapping
            .insert(client.into(), upstream.into());
        self
    }

    /// Sends its traffic through an HTTP `CONNECT` egress proxy.
    pub fn proxy(mut self, proxy: Option<impl Into<Arc<str>>>) -> Self {
        self.account.proxy = proxy.map(Into::into);
        self
    }

    /// Finishes the account.
    pub fn build(mut self) -> Account {
        self.account.origin = Origin::of(&self.account.base_url);
        self.account.id_header = http::HeaderValue::from_str(self.account.id.as_str()).ok();
        self.account
    }
}

/// A base URL's scheme and authority, parsed once.
#[derive(Debug, Clone)]
struct Origin {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Origin {
    /// `base_url`'s origin when it is nothing more (no path, no query).
    fn of(base_url: &str) -> Option<Self> {
        let uri: http::Uri = base_url.parse().ok()?;
        let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        // Parsed back from `scheme://authority`, it must be the same text.
        let parts = uri.into_parts();
        let origin = Self {
            scheme: parts.scheme?,
            authority: parts.authority?,
        };
        (bare && format!("{}://{}", origin.scheme, origin.authority) == base_url).then_some(origin)
    }
}

/// The account the relay chose for this request (request extension).
///
/// Later layers (model mapping, headers, credentials, upstream) read it.
#[derive(Debug, Clone)]
pub struct SelectedAccount(pub Arc<Account>);

impl std::ops::Deref for SelectedAccount {
    type Target = Account;

    fn deref(&self) -> &Account {
        &self.0
    }
}

/// The account that served a response (response extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy(pub AccountId);

#[cfg(test)]
mod tests {
    use super::*;

    fn account(base_url: &str) -> Account {
        Account::builder(
            "a",
            Platform::Anthropic,
            Credentials::ApiKey(SecretString::from("sk")),
        )
        .base_url(base_url)
        .build()
    }

    #[test]
    fn uris_built_from_parts_are_the_joined_text() {
        for base in [
            "http://127.0.0.1:9",
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "http://[::1]:8080",
            "http://user@host:1",
        ] {
            let account = account(base);
            let built = account.uri_of("/v1/messages").expect("an origin");
            let joined: http::Uri = format!("{}/v1/messages", account.base_url())
                .parse()
                .unwrap();
            assert_eq!(built, joined, "{base}");
            assert_eq!(built.to_string(), joined.to_string(), "{base}");
        }
    }

    #[test]
    fn base_urls_with_a_path_are_joined_as_text() {
        for base in [
            "https://gateway.example/anthropic",
            "http://h:1/a/b",
            "http://h:1?x=1",
        ] {
            assert!(account(base).uri_of("/v1/messages").is_none(), "{base}");
        }
    }
}
