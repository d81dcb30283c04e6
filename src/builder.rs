//! Composes the default relay stack, and adds one method per layer to
//! [`tower::ServiceBuilder`].

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tower::layer::util::Stack;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::auth::AuthLayer;
use crate::bedrock::{BedrockAdaptLayer, CountTokensGateLayer};
use crate::beta_header::BetaHeaderLayer;
use crate::body::{BoxError, RelayBody};
use crate::body_limit::{BodyLimitLayer, DEFAULT_BODY_LIMIT};
use crate::client_limit::ClientLimitLayer;
use crate::credentials::CredentialsLayer;
use crate::error_response::ErrorResponseLayer;
use crate::failover::FailoverLayer;
use crate::header_whitelist::HeaderWhitelistLayer;
use crate::list_models::ListModelsLayer;
use crate::model_map::ModelMapLayer;
use crate::oauth::{CredentialSink, OAuthRefreshLayer, Refresher, TracingSink};
use crate::parse::ParseRequestLayer;
use crate::principal::ClientKeys;
use crate::request_id::RequestIdLayer;
use crate::select::{AccountPool, AccountSelectLayer, Scheduler, SchedulingConfig};
use crate::session_hash::SessionHashLayer;
use crate::state::{MemoryStore, StateStore};
use crate::stats::RuntimeStats;
use crate::trace::RequestTraceLayer;
use crate::upstream::{Upstream, UpstreamConfig};
use crate::usage::{MetricsSink, UsageExtractLayer, UsageSink, UsageTotals};

/// The relay as one service: any request body in, a [`RelayBody`] out,
/// never an error (errors are answered in the API's format).
pub type RelayService<B> = BoxCloneSyncService<Request<B>, Response<RelayBody>, Infallible>;

/// Builds the default relay stack.
///
/// The request passes, in order: request id, error answers, body limit,
/// auth, per-key limits, `GET /v1/models`, parsing, the Bedrock `count_tokens`
/// gate, session hash, failover,
/// account selection, model mapping, header allow-list, `anthropic-beta`,
/// credentials, OAuth refresh, usage extraction, Bedrock translation,
/// upstream. Usage goes to a
/// [`TracingSink`](crate::usage::TracingSink) unless
/// [`RelayBuilder::usage_sink`] says otherwise.
///
/// # Examples
///
/// ```
/// use http::{Request, StatusCode};
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use secrecy::SecretString;
/// use tower::ServiceExt;
/// use tower_llm_relay::{Account, AccountPool, ClientKeys, Credentials, Platform, Principal, RelayBuilder};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut keys = ClientKeys::new();
/// keys.insert(SecretString::from("sk-relay-alice"), Principal::new("alice"));
/// let accounts = AccountPool::new([Account::builder(
///     "claude-1",
///     Platform::Anthropic,
///     Credentials::ApiKey(SecretString::from("sk-ant-…")),
/// )
/// .build()]);
/// let relay = RelayBuilder::new().keys(keys).accounts(accounts).build::<Full<Bytes>>();
///
/// // No key: refused before anything goes upstream.
/// let req = Request::post("/v1/messages").body(Full::new(Bytes::from("{}"))).unwrap();
/// let response = relay.oneshot(req).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// assert!(response.headers().contains_key("x-relay-request-id"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    keys: Arc<ClientKeys>,
    pool: AccountPool,
    body_limit: usize,
    upstream: UpstreamConfig,
    beta_header: BetaHeaderLayer,
    header_whitelist: HeaderWhitelistLayer,
    scheduling: SchedulingConfig,
    store: Arc<dyn StateStore>,
    stats: RuntimeStats,
    refresher: Arc<Refresher>,
    scheduler: Option<Scheduler>,
    usage: UsageExtractLayer,
    usage_totals: UsageTotals,
}

impl Default for RelayBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayBuilder {
    /// No keys, no accounts, default limits.
    pub fn new() -> Self {
        Self {
            keys: Arc::new(ClientKeys::new()),
            pool: AccountPool::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            upstream: UpstreamConfig::default(),
            beta_header: BetaHeaderLayer::new(),
            header_whitelist: HeaderWhitelistLayer::new(),
            scheduling: SchedulingConfig::default(),
            store: Arc::new(MemoryStore::new()),
            stats: RuntimeStats::new(),
            refresher: Arc::new(Refresher::new(
                Arc::new(TracingSink),
                std::time::Duration::from_secs(300),
            )),
            scheduler: None,
            usage: UsageExtractLayer::new(),
            usage_totals: UsageTotals::new(),
        }
    }

    /// Where refreshed OAuth tokens are reported (default: a log line).
    pub fn credential_sink(mut self, sink: Arc<dyn CredentialSink>) -> Self {
        self.refresher = Arc::new(
            Refresher::new(sink, std::time::Duration::from_secs(300))
                .with_store(self.store.clone()),
        );
        self
    }

    /// Refreshes OAuth tokens with `refresher`, e.g. the one of a relay
    /// this one replaces, so tokens it refreshed carry over.
    pub fn with_refresher(mut self, refresher: Arc<Refresher>) -> Self {
        self.refresher = refresher;
        self
    }

    /// Adds usage to `totals`, e.g. those of a relay this one replaces.
    pub fn with_usage_totals(mut self, totals: UsageTotals) -> Self {
        self.usage_totals = totals;
        self
    }

    /// The scheduling settings.
    pub fn scheduling(mut self, config: SchedulingConfig) -> Self {
        self.scheduling = config;
        self
    }

    /// The shared state store (default: in memory).
    pub fn state(mut self, store: Arc<dyn StateStore>) -> Self {
        // Refreshed OAuth tokens are shared through the same store.
        self.refresher = Arc::new(self.refresher.for_store(store.clone()));
        self.store = store;
        self
    }

    /// The runtime statistics to feed and read (default: fresh).
    pub fn stats(mut self, stats: RuntimeStats) -> Self {
        self.stats = stats;
        self
    }

    /// The scheduler the built relay uses: the one given to
    /// [`RelayBuilder::with_scheduler`], else one made from this builder's
    /// pool, settings, store and stats. Keep a clone to watch the relay
    /// (loads, cooldowns, decisions).
    pub fn scheduler(&self) -> Scheduler {
        match &self.scheduler {
            Some(scheduler) => scheduler.clone(),
            None => Scheduler::with_state(
                self.pool.clone(),
                self.scheduling.clone(),
                self.store.clone(),
                self.stats.clone(),
            ),
        }
    }

    /// Builds with this scheduler (its pool and settings replace the
    /// builder's for selection and failover).
    pub fn with_scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// The OAuth token refresher the built relay uses.
    pub fn refresher(&self) -> &Arc<Refresher> {
        &self.refresher
    }

    /// The client keys accepted.
    pub fn keys(mut self, keys: ClientKeys) -> Self {
        self.keys = Arc::new(keys);
        self
    }

    /// The upstream accounts.
    pub fn accounts(mut self, pool: AccountPool) -> Self {
        self.pool = pool;
        self
    }

    /// The request body limit in bytes (default 32 MiB).
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// The upstream client's timeouts and pool.
    pub fn upstream_config(mut self, config: UpstreamConfig) -> Self {
        self.upstream = config;
        self
    }

    /// The `anthropic-beta` rules.
    pub fn beta_header(mut self, layer: BetaHeaderLayer) -> Self {
        self.beta_header = layer;
        self
    }

    /// The request header allow-lists.
    pub fn header_whitelist(mut self, layer: HeaderWhitelistLayer) -> Self {
        self.header_whitelist = layer;
        self
    }

    /// The usage extraction settings (sink, `include_usage`).
    pub fn usage_extract(mut self, layer: UsageExtractLayer) -> Self {
        self.usage = layer;
        self
    }

    /// Where usage reports go (default: a
    /// [`TracingSink`](crate::usage::TracingSink)).
    pub fn usage_sink(mut self, sink: impl UsageSink) -> Self {
        self.usage = self.usage.sink(sink);
        self
    }

    /// The running usage totals per key and account of the built relay.
    pub fn usage_totals(&self) -> &UsageTotals {
        &self.usage_totals
    }

    /// The account pool in use.
    pub fn pool(&self) -> &AccountPool {
        &self.pool
    }

    /// The relay service for request bodies of type `B`.
    pub fn build<B>(self) -> RelayService<B>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let upstream = Upstream::with_config(self.upstream.clone());
        let scheduler = self.scheduler();
        let session_header = self
            .scheduling
            .session_header
            .as_deref()
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok());
        let service = ServiceBuilder::new()
            .relay_request_id()
            .relay_trace()
            .relay_error_response()
            .relay_body_limit(self.body_limit)
            .relay_auth(self.keys.clone())
            .relay_client_limit(&self.keys)
            .relay_list_models(self.pool.clone())
            .relay_parse_request()
            .layer(CountTokensGateLayer::new(scheduler.pool().clone()))
            .layer(SessionHashLayer::new().header(session_header))
            .layer(FailoverLayer::new(scheduler.clone()))
            .relay_account_select(scheduler.clone())
            .relay_model_map()
            .layer(self.header_whitelist)
            .layer(self.beta_header)
            .relay_credentials()
            .layer(OAuthRefreshLayer::with_refresher(self.refresher.clone()))
            .layer(
                // Beside the configured sink: the scheduler learns TTFT and
                // response ids, metrics count tokens, totals feed the admin.
                self.usage
                    .also(scheduler.clone())
                    .also(MetricsSink::new())
                    .also(self.usage_totals.clone()),
            )
            // Below usage, so usage reads Bedrock answers as Anthropic SSE.
            .relay_bedrock()
            .service(upstream);
        BoxCloneSyncService::new(service)
    }
}

/// One method per relay layer on [`tower::ServiceBuilder`], as tower-http's
/// `ServiceBuilderExt` does.
///
/// # Examples
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_llm_relay::ServiceBuilderExt;
///
/// let layers = ServiceBuilder::new()
///     .relay_request_id()
///     .relay_error_response()
///     .relay_body_limit(1024)
///     .relay_parse_request();
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// See [`crate::request_id`].
    fn relay_request_id(self) -> ServiceBuilder<Stack<RequestIdLayer, L>>;
    /// See [`crate::trace`].
    fn relay_trace(self) -> ServiceBuilder<Stack<RequestTraceLayer, L>>;
    /// See [`crate::error_response`].
    fn relay_error_response(self) -> ServiceBuilder<Stack<ErrorResponseLayer, L>>;
    /// See [`crate::body_limit`].
    fn relay_body_limit(self, limit: usize) -> ServiceBuilder<Stack<BodyLimitLayer, L>>;
    /// See [`crate::auth`].
    fn relay_auth(self, keys: Arc<ClientKeys>) -> ServiceBuilder<Stack<AuthLayer, L>>;
    /// See [`crate::client_limit`].
    fn relay_client_limit(self, keys: &ClientKeys) -> ServiceBuilder<Stack<ClientLimitLayer, L>>;
    /// See [`crate::list_models`].
    fn relay_list_models(self, pool: AccountPool) -> ServiceBuilder<Stack<ListModelsLayer, L>>;
    /// See [`crate::parse`].
    fn relay_parse_request(self) -> ServiceBuilder<Stack<ParseRequestLayer, L>>;
    /// See [`crate::session_hash`].
    fn relay_session_hash(self) -> ServiceBuilder<Stack<SessionHashLayer, L>>;
    /// See [`crate::select`].
    fn relay_account_select(
        self,
        scheduler: Scheduler,
    ) -> ServiceBuilder<Stack<AccountSelectLayer, L>>;
    /// See [`crate::model_map`].
    fn relay_model_map(self) -> ServiceBuilder<Stack<ModelMapLayer, L>>;
    /// See [`crate::header_whitelist`].
    fn relay_header_whitelist(self) -> ServiceBuilder<Stack<HeaderWhitelistLayer, L>>;
    /// See [`crate::beta_header`].
    fn relay_beta_header(self) -> ServiceBuilder<Stack<BetaHeaderLayer, L>>;
    /// See [`crate::credentials`].
    fn relay_credentials(self) -> ServiceBuilder<Stack<CredentialsLayer, L>>;
    /// See [`crate::usage`].
    fn relay_usage_extract(self) -> ServiceBuilder<Stack<UsageExtractLayer, L>>;
    /// See [`crate::bedrock`].
    fn relay_bedrock(self) -> ServiceBuilder<Stack<BedrockAdaptLayer, L>>;
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn relay_request_id(self) -> ServiceBuilder<Stack<RequestIdLayer, L>> {
        self.layer(RequestIdLayer::new())
    }

    fn relay_trace(self) -> ServiceBuilder<Stack<RequestTraceLayer, L>> {
        self.layer(RequestTraceLayer::new())
    }

    fn relay_error_response(self) -> ServiceBuilder<Stack<ErrorResponseLayer, L>> {
        self.layer(ErrorResponseLayer::new())
    }

    fn relay_body_limit(self, limit: usize) -> ServiceBuilder<Stack<BodyLimitLayer, L>> {
        self.layer(BodyLimitLayer::new(limit))
    }

    fn relay_auth(self, keys: Arc<ClientKeys>) -> ServiceBuilder<Stack<AuthLayer, L>> {
        self.layer(AuthLayer::new(keys))
    }

    fn relay_client_limit(self, keys: &ClientKeys) -> ServiceBuilder<Stack<ClientLimitLayer, L>> {
        self.layer(ClientLimitLayer::new(keys.principals()))
    }

    fn relay_list_models(self, pool: AccountPool) -> ServiceBuilder<Stack<ListModelsLayer, L>> {
        self.layer(ListModelsLayer::new(pool))
    }

    fn relay_parse_request(self) -> ServiceBuilder<Stack<ParseRequestLayer, L>> {
        self.layer(ParseRequestLayer::new())
    }

    fn relay_session_hash(self) -> ServiceBuilder<Stack<SessionHashLayer, L>> {
        self.layer(SessionHashLayer::new())
    }

    fn relay_account_select(
        self,
        scheduler: Scheduler,
    ) -> ServiceBuilder<Stack<AccountSelectLayer, L>> {
        self.layer(AccountSelectLayer::new(scheduler))
    }

    fn relay_model_map(self) -> ServiceBuilder<Stack<ModelMapLayer, L>> {
        self.layer(ModelMapLayer::new())
    }

    fn relay_header_whitelist(self) -> ServiceBuilder<Stack<HeaderWhitelistLayer, L>> {
        self.layer(HeaderWhitelistLayer::new())
    }

    fn relay_beta_header(self) -> ServiceBuilder<Stack<BetaHeaderLayer, L>> {
        self.layer(BetaHeaderLayer::new())
    }

    fn relay_credentials(self) -> ServiceBuilder<Stack<CredentialsLayer, L>> {
        self.layer(CredentialsLayer::new())
    }

    fn relay_usage_extract(self) -> ServiceBuilder<Stack<UsageExtractLayer, L>> {
        self.layer(UsageExtractLayer::new())
    }

    fn relay_bedrock(self) -> ServiceBuilder<Stack<BedrockAdaptLayer, L>> {
        self.layer(BedrockAdaptLayer::new())
    }
}
