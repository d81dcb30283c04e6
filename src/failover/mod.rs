//! Fails over between accounts: never loses a request that another
//! account can still serve.
//!
//! For each attempt the inner stack (selection and below) runs with the
//! accounts that already failed excluded. The outcome is classified before
//! anything reaches the client ([`classify`]): the answer is returned, the
//! same account is retried (subscription 403s, with back-off), or the
//! account cools down — for as long as the upstream said, else a per-reason
//! default that grows with its failure streak — and the next account is
//! tried. A stream is peeked until its first event: an `event: error`
//! (e.g. overloaded) there is still a failover, and no byte of it reaches
//! the client.
//!
//! Once bytes go to the client the attempt is committed; an upstream
//! failure after that ends the stream with a well-formed SSE `error` event
//! (Anthropic or OpenAI shape). Output of two accounts is never spliced.
//!
//! Limits: `max_account_switches`, the request deadline, and a retry budget
//! shared by the whole service (tower's `TpsBudget`: extra attempts at
//! most a configured share of requests plus a small floor), so a dead pool
//! does not multiply its load. Accounts failing `eject_after_failures`
//! times in a row are ejected with a growing back-off and probed by one
//! request (see [`Scheduler::report_failure`]).
//!
//! With `stream_keepalive` set, a streaming request that waits longer than
//! that for its first event (a busy pool, a slow upstream) gets its 200
//! head at once and `: keepalive` SSE comments until the first event;
//! failover stays possible, and if every attempt fails the stream ends with
//! an SSE error event.
//!
//! The response carries `x-relay-attempts` and an [`Attempts`] trace. When
//! every attempt fails, the error follows seed 002's mapping (429 →
//! `rate_limit_error`, overload → 503 `overloaded_error`, auth and server
//! failures → 502 `upstream_error`) and lists the attempts by account id —
//! never a credential, never an upstream's raw 401/403 body.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use secrecy::SecretString;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_llm_relay::failover::FailoverLayer;
//! use tower_llm_relay::parse::ParseRequestLayer;
//! use tower_llm_relay::select::{AccountSelectLayer, Scheduler, SchedulingConfig};
//! use tower_llm_relay::{Account, AccountPool, Credentials, Platform, RelayBody, RelayError, SelectedAccount};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let key = || Credentials::ApiKey(SecretString::from("k"));
//! let pool = AccountPool::new([
//!     Account::builder("flaky", Platform::Anthropic, key()).priority(1).build(),
//!     Account::builder("steady", Platform::Anthropic, key()).priority(2).build(),
//! ]);
//! let scheduler = Scheduler::new(pool, SchedulingConfig::default());
//! // "flaky" answers 529; "steady" answers 200.
//! let upstream = service_fn(|req: Request<Bytes>| async move {
//!     let account = req.extensions().get::<SelectedAccount>().unwrap().id().to_string();
//!     let status = if account == "flaky" { 529 } else { 200 };
//!     let mut response = Response::new(RelayBody::full("{}"));
//!     *response.status_mut() = StatusCode::from_u16(status).unwrap();
//!     Ok::<_, RelayError>(response)
//! });
//! let stack = ParseRequestLayer::new().layer(
//!     FailoverLayer::new(scheduler.clone()).layer(AccountSelectLayer::new(scheduler).layer(upstream)),
//! );
//! let req = Request::post("/v1/messages")
//!     .body(Bytes::from_static(br#"{"model":"claude-sonnet-4-5","messages":[]}"#))
//!     .unwrap();
//! let response = stack.oneshot(req).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["x-relay-account"], "steady");
//! assert_eq!(response.headers()["x-relay-attempts"], "2");
//! # }
//! ```

mod body;
mod classify;
mod keepalive;

pub use body::CommittedBody;
pub use classify::{
    classify, reset_hint, Action, ClassifyPolicy, Cooldown, Outcome, MAX_HINTED_COOLDOWN,
};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::account::{AccountId, AccountType, ServedBy};
use crate::body::RelayBody;
use crate::endpoint::ApiFormat;
use crate::error::{Exhausted, RelayError, UpstreamErrorKind};
use crate::metric_handles::HandleCache;
use crate::parse::ParsedRequest;
use crate::principal::Principal;
use crate::select::{attempts_value, Excluded, PinnedAccount, Scheduler, ATTEMPTS_HEADER};
use crate::state::CooldownReason;
use crate::usage::UsageHandle;

use body::{peek_first_event, Peeked};

/// The most of an upstream error body read to classify it.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Same-account retries a subscription 403 gets before failing over.
const MAX_SAME_ACCOUNT_RETRIES: u32 = 3;

/// One attempt of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The account tried.
    pub account: AccountId,
    /// What happened: a status (`429`), a transport error, a stream error.
    pub outcome: String,
    /// What the relay did next.
    pub action: AttemptAction,
    /// How long the attempt took.
    pub duration: Duration,
}

/// What the relay did after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptAction {
    /// Its answer went to the client.
    Served,
    /// Tried the same account again.
    Retried,
    /// Cooled the account down and tried another.
    FailedOver,
    /// Not tried: it was cooling down.
    Skipped,
}

/// Every attempt of a request, in order (response extension).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts(pub Vec<Attempt>);

/// Applies [`Failover`]: see the module docs.
#[derive(Debug, Clone)]
pub struct FailoverLayer {
    scheduler: Scheduler,
    budget: Arc<TpsBudget>,
}

impl FailoverLayer {
    /// Fails over among `scheduler`'s accounts, with the retry budget and
    /// limits of its configuration.
    pub fn new(scheduler: Scheduler) -> Self {
        let percent = scheduler.config().retry_budget_percent;
        // Deposits count for 10 s; 10 retries a second are always allowed.
        let budget = TpsBudget::new(Duration::from_secs(10), 10, (percent / 100.0) as f32);
        Self {
            scheduler,
            budget: Arc::new(budget),
        }
    }
}

impl<S> Layer<S> for FailoverLayer {
    type Service = Failover<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Failover {
            inner,
            scheduler: self.scheduler.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// Middleware that fails over between accounts; see the module docs.
#[derive(Debug, Clone)]
pub struct Failover<S> {
    inner: S,
    scheduler: Scheduler,
    budget: Arc<TpsBudget>,
}

impl<S> Failover<S> {
    /// A layer for this middleware.
    pub fn layer(scheduler: Scheduler) -> FailoverLayer {
        FailoverLayer::new(scheduler)
    }

    inner_accessors!();
}

/// Response future of [`Failover`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<RelayBody>, RelayError>> + Send>>;

impl<S> Service<Request<Bytes>> for Failover<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<RelayBody>;
    type Error = RelayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let keepalive = self.scheduler.config().stream_keepalive;
        let stream = req
            .extensions()
            .get::<ParsedRequest>()
            .is_some_and(ParsedRequest::is_stream);
        let format = ApiFormat::of(&req);
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let run = Run {
            inner,
            scheduler: self.scheduler.clone(),
            budget: self.budget.clone(),
            format: ApiFormat::of(&req),
            route: req
                .extensions()
                .get::<ParsedRequest>()
                .map_or("other", |p| p.endpoint().upstream_path()),
            attempts: Vec::new(),
            excluded: Excluded::default(),
            last_failure: None,
            pinned: None,
            same_account_retries: 0,
        };
        let (parts, body) = req.into_parts();
        let run: ResponseFuture = Box::pin(run.run(parts, body));
        if stream && !keepalive.is_zero() {
            return Box::pin(keepalive::with_keepalive(run, keepalive, format));
        }
        run
    }
}

/// The last failure, which decides the status when every attempt failed.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Status(StatusCode, Option<Duration>),
    Overloaded,
    Transport(UpstreamErrorKind),
}

/// What one attempt came to.
enum Examined {
    /// Its answer goes to the client.
    Commit(Response<RelayBody>),
    /// It failed; `action` says what next.
    Failed {
        account: AccountId,
        action: Action,
        outcome: String,
        failure: Failure,
    },
}

pin_project! {
    /// What an attempt came to: an answer still to examine, or a failure
    /// already known. A future of its own, so awaiting it moves it whole.
    #[project = SettleProj]
    enum Settle<F> {
        Examining {
            #[pin]
            examine: F,
        },
        Settled {
            examined: Option<Examined>,
        },
    }
}

impl<F: Future<Output = Examined>> Future for Settle<F> {
    type Output = Examined;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Examined> {
        match self.project() {
            SettleProj::Examining { examine } => examine.poll(cx),
            SettleProj::Settled { examined } => Poll::Ready(examined.take().unwrap_or_else(
                // Polled again after it ended: nothing more to say.
                || Examined::Failed {
                    account: AccountId::from("-"),
                    action: Action::Return,
                    outcome: "settled twice".to_owned(),
                    failure: Failure::Overloaded,
                },
            )),
        }
    }
}

/// The metrics of every served answer, by route, status and account.
struct ServedMetrics {
    upstream_seconds: Histogram,
    requests: Counter,
    attempts: Histogram,
}

/// A served answer's labels: route, status and account.
type ServedLabels = (&'static str, StatusCode, Arc<str>);

/// Kept handles: see [`HandleCache`].
static SERVED_METRICS: LazyLock<HandleCache<ServedLabels, ServedMetrics>> =
    LazyLock::new(HandleCache::default);

/// One request's way through its attempts.
struct Run<S> {
    inner: S,
    scheduler: Scheduler,
    budget: Arc<TpsBudget>,
    format: ApiFormat,
    // The endpoint's path, as a metrics label.
    route: &'static str,
    attempts: Vec<Attempt>,
    excluded: Excluded,
    last_failure: Option<Failure>,
    pinned: Option<AccountId>,
    same_account_retries: u32,
}

impl<S> Run<S>
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>, Error = RelayError>,
{
    /// The request's way through its attempts, from its head and body.
    ///
    /// A function returning an `async` block, not an `async fn`: an
    /// `async fn` keeps its arguments twice in its future (as arguments
    /// and as the locals they are moved to), and this future is allocated
    /// and written for every request.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in its future"
    )]
    fn run(
        mut self,
        parts: http::request::Parts,
        body: Bytes,
    ) -> impl Future<Output = Result<Response<RelayBody>, RelayError>> {
        async move {
            // The three settings it reads, not a clone of the whole config:
            // that would sit in this future for the request's life.
            let config = self.scheduler.config();
            let (max_switches, failover_on_400) =
                (config.max_account_switches as usize, config.failover_on_400);
            let deadline = crate::state::later(Instant::now(), config.request_deadline);
            // A clone shares the parsed fields: the model name is borrowed from it.
            let parsed = parts.extensions.get::<ParsedRequest>().cloned();
            let model = parsed.as_ref().map_or("", ParsedRequest::model);
            self.budget.deposit();
            loop {
                if !self.attempts.is_empty() {
                    let switches = self
                        .attempts
                        .iter()
                        .filter(|a| a.action == AttemptAction::FailedOver)
                        .count();
                    if switches > max_switches {
                        return Err(self.exhausted("too many account switches", None));
                    }
                    if !self.budget.withdraw() {
                        return Err(
                            self.exhausted("retry budget spent", Some(Duration::from_secs(1)))
                        );
                    }
                }
                // In a block of its own, so the attempt's room in this future
                // is not kept past its move into `called`.
                let called = {
                    let mut attempt = Request::from_parts(parts.clone(), body.clone());
                    // Selection reads no entry as nothing excluded: the first
                    // attempt spares the clone and the room in the extensions.
                    if !self.excluded.0.is_empty() {
                        attempt.extensions_mut().insert(self.excluded.clone());
                    }
                    if let Some(account) = &self.pinned {
                        attempt
                            .extensions_mut()
                            .insert(PinnedAccount(account.clone()));
                    }
                    let inner = &mut self.inner;
                    async move { inner.ready().await?.call(attempt).await }
                };
                let started = Instant::now();
                // The attempt's outcome is settled in a block, so what it
                // came with is out of this future before `examine` runs.
                let examining = {
                    let Ok(result) = tokio::time::timeout_at(deadline, called).await else {
                        self.last_failure = Some(Failure::Transport(UpstreamErrorKind::Timeout));
                        return Err(self.exhausted("request deadline reached", None));
                    };
                    match result {
                        Ok(response) => {
                            let (parts, body) = response.into_parts();
                            Settle::Examining {
                                examine: self.examine(parts, body, started, failover_on_400),
                            }
                        }
                        Err(RelayError::Upstream(e)) => {
                            let kind = e.kind();
                            Settle::Settled {
                                examined: Some(Examined::Failed {
                                    account: e.account().clone(),
                                    action: classify(
                                        Outcome::Transport(kind),
                                        AccountType::ApiKey,
                                        self.policy(false),
                                    ),
                                    outcome: kind.code().to_owned(),
                                    failure: Failure::Transport(kind),
                                }),
                            }
                        }
                        Err(
                            e @ (RelayError::NoAccount { .. }
                            | RelayError::CoolingDown { .. }
                            | RelayError::Overloaded { .. }),
                        ) if !self.attempts.is_empty() => {
                            let retry_after = e.retry_after();
                            self.note_skipped(&parts.extensions).await;
                            return Err(
                                self.exhausted("no other account could take it", retry_after)
                            );
                        }
                        Err(e) => return Err(e),
                    }
                };
                let examined = examining.await;
                let (account, action, outcome) = match examined {
                    Examined::Commit(response) => return Ok(response),
                    Examined::Failed {
                        account,
                        action,
                        outcome,
                        failure,
                    } => {
                        self.last_failure = Some(failure);
                        (account, action, outcome)
                    }
                };
                let duration = started.elapsed();
                match action {
                    Action::RetrySameAccount { after } => {
                        self.attempts.push(Attempt {
                            account: account.clone(),
                            outcome,
                            action: AttemptAction::Retried,
                            duration,
                        });
                        self.same_account_retries += 1;
                        self.pinned = Some(account);
                        // Jitter, so retries of many requests do not line up.
                        tokio::time::sleep(after.mul_f64(0.5 + rand::random::<f64>())).await;
                    }
                    // `examine` commits returned answers itself.
                    Action::Return | Action::Failover { .. } => {
                        let cooldown = match action {
                            Action::Failover { cooldown } => cooldown,
                            _ => Cooldown {
                                reason: CooldownReason::UpstreamError,
                                hinted: None,
                                per_model: false,
                            },
                        };
                        self.attempts.push(Attempt {
                            account: account.clone(),
                            outcome,
                            action: AttemptAction::FailedOver,
                            duration,
                        });
                        self.scheduler
                            .report_failure(
                                &account,
                                cooldown.per_model.then_some(model),
                                cooldown.reason,
                                cooldown.hinted,
                            )
                            .await;
                        self.scheduler.record_switch();
                        metrics::counter!("relay_account_switches_total", "account" => account.shared())
                        .increment(1);
                        tracing::info!(%account, reason = cooldown.reason.as_str(), "failing over");
                        self.excluded.0.insert(account);
                        self.pinned = None;
                        self.same_account_retries = 0;
                    }
                }
            }
        }
    }

    fn policy(&self, failover_on_400: bool) -> ClassifyPolicy {
        ClassifyPolicy {
            failover_on_400,
            same_account_retries: self.same_account_retries,
            max_same_account_retries: MAX_SAME_ACCOUNT_RETRIES,
        }
    }

    /// Classifies an answer; streams are peeked up to their first event.
    ///
    /// A function returning an `async` block, for the reason `run` is one.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would keep its arguments twice in its future"
    )]
    fn examine(
        &mut self,
        parts: http::response::Parts,
        body: RelayBody,
        started: Instant,
        failover_on_400: bool,
    ) -> impl Future<Output = Examined> + '_ {
        async move {
            let account = parts
                .extensions
                .get::<ServedBy>()
                .map_or_else(|| AccountId::from("-"), |s| s.0.clone());
            let status = parts.status;
            // A failed attempt is not the request's answer: its usage report
            // (if a usage layer below made one) must not count.
            let discard = || {
                if let Some(usage) = parts.extensions.get::<UsageHandle>() {
                    usage.discard();
                }
            };
            if status.is_success() {
                let is_stream = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/event-stream"));
                if !is_stream {
                    self.scheduler.report_success(&account, None).await;
                    return Examined::Commit(
                        self.commit(parts, None, body, account, started, false),
                    );
                }
                return match peek_first_event(body).await {
                    Ok(Peeked::Content { prefix, rest }) => {
                        self.scheduler.report_success(&account, None).await;
                        Examined::Commit(self.commit(
                            parts,
                            Some(prefix),
                            rest,
                            account,
                            started,
                            true,
                        ))
                    }
                    Ok(Peeked::Error(kind)) => {
                        discard();
                        let failure = if kind.contains("rate_limit") {
                            Failure::Status(StatusCode::TOO_MANY_REQUESTS, None)
                        } else {
                            Failure::Overloaded
                        };
                        let action = classify(
                            Outcome::StreamError { kind: &kind },
                            AccountType::ApiKey,
                            self.policy(failover_on_400),
                        );
                        Examined::Failed {
                            account,
                            action,
                            outcome: format!("stream error: {kind}"),
                            failure,
                        }
                    }
                    Err(_) => {
                        discard();
                        Examined::Failed {
                            account,
                            action: classify(
                                Outcome::Transport(UpstreamErrorKind::Io),
                                AccountType::ApiKey,
                                self.policy(false),
                            ),
                            outcome: "stream failed before its first event".to_owned(),
                            failure: Failure::Transport(UpstreamErrorKind::Io),
                        }
                    }
                };
            }
            // An error answer spent no tokens; reading it here must not report
            // it as the request's usage, whether it goes back or not.
            discard();
            // Boxed: this path is rare, and its state would otherwise take room
            // in every request's future.
            let bytes = Box::pin(read_bounded(body)).await;
            let message = error_message(&bytes);
            let kind = self
                .scheduler
                .pool()
                .get(&account)
                .map_or(AccountType::ApiKey, |a| a.account_type());
            let outcome = Outcome::Status {
                status,
                message: &message,
                headers: &parts.headers,
            };
            match classify(outcome, kind, self.policy(failover_on_400)) {
                Action::Return => {
                    let body = RelayBody::full(bytes);
                    Examined::Commit(self.commit(parts, None, body, account, started, false))
                }
                action => Examined::Failed {
                    failure: Failure::Status(status, reset_hint(&parts.headers, true)),
                    account,
                    action,
                    outcome: status.as_u16().to_string(),
                },
            }
        }
    }

    /// Sends this attempt's answer to the client: the commit point.
    ///
    /// Not `async`: its arguments would be copied into a future of their
    /// own. A success is reported to the scheduler before it is called.
    fn commit(
        &mut self,
        mut parts: http::response::Parts,
        prefix: Option<Bytes>,
        body: RelayBody,
        account: AccountId,
        started: Instant,
        stream: bool,
    ) -> Response<RelayBody> {
        let duration = started.elapsed();
        let served = SERVED_METRICS.get((self.route, parts.status, account.shared()), |labels| {
            let (route, status, account) = labels.clone();
            ServedMetrics {
                upstream_seconds: metrics::histogram!("relay_upstream_response_seconds", "account" => account.clone()),
                requests: metrics::counter!(
                    "relay_requests_total",
                    "route" => route,
                    "status" => crate::stats::status_label(status),
                    "account" => account,
                    "outcome" => "served",
                ),
                attempts: metrics::histogram!("relay_attempts_per_request"),
            }
        });
        served.upstream_seconds.record(duration.as_secs_f64());
        served.requests.increment(1);
        served.attempts.record((self.attempts.len() + 1) as f64);
        self.attempts.push(Attempt {
            account,
            outcome: parts.status.as_u16().to_string(),
            action: AttemptAction::Served,
            duration,
        });
        parts
            .headers
            .insert(ATTEMPTS_HEADER, attempts_value(self.attempts.len()));
        parts
            .extensions
            .insert(Attempts(std::mem::take(&mut self.attempts)));
        let error_event = stream.then_some(self.format);
        let body = CommittedBody::new(prefix, body, error_event);
        Response::from_parts(parts, RelayBody::new(body))
    }

    /// Adds the accounts that could have served but were cooling down to
    /// the attempts (seed 004: the exhausted error lists skipped ones too).
    async fn note_skipped(&mut self, extensions: &http::Extensions) {
        let Some(parsed) = extensions.get::<ParsedRequest>() else {
            return;
        };
        let group = extensions.get::<Principal>().map(Principal::group_name);
        let skipped = self
            .scheduler
            .cooling_candidates(parsed.endpoint(), parsed.model(), group)
            .await;
        for (account, reason, left) in skipped {
            if self.excluded.0.contains(&account) {
                continue;
            }
            self.attempts.push(Attempt {
                account,
                outcome: format!(
                    "skipped, cooling down ({}, {} s left)",
                    reason.as_str(),
                    left.as_secs()
                ),
                action: AttemptAction::Skipped,
                duration: Duration::ZERO,
            });
        }
    }

    /// The error when no attempt could be served.
    fn exhausted(&self, why: &'static str, retry_after: Option<Duration>) -> RelayError {
        let (status, kind, hint) = match self.last_failure {
            Some(Failure::Status(status, hint)) => match status.as_u16() {
                429 => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", hint),
                503 | 529 => (StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", hint),
                400 => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
                _ => (StatusCode::BAD_GATEWAY, "upstream_error", None),
            },
            Some(Failure::Overloaded) => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", None)
            }
            Some(Failure::Transport(UpstreamErrorKind::Timeout)) => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_error", None)
            }
            Some(Failure::Transport(_)) | None => (StatusCode::BAD_GATEWAY, "upstream_error", None),
        };
        let attempts = self
            .attempts
            .iter()
            .map(|a| (a.account.clone(), a.outcome.clone()))
            .collect();
        metrics::counter!(
            "relay_requests_total",
            "route" => self.route,
            "status" => crate::stats::status_label(status),
            "account" => "",
            "outcome" => "exhausted",
        )
        .increment(1);
        metrics::histogram!("relay_attempts_per_request").record(self.attempts.len() as f64);
        RelayError::Exhausted(Exhausted::new(
            status,
            kind,
            retry_after.or(hint),
            attempts,
            why,
        ))
    }
}

/// Reads at most [`MAX_ERROR_BODY`] of an error answer.
async fn read_bounded(body: RelayBody) -> Bytes {
    match http_body_util::Limited::new(body, MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

/// The message of an upstream error body (Anthropic or OpenAI shape, or a
/// JSON document nested in the message, as some relays send).
fn error_message(body: &[u8]) -> String {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).chars().take(512).collect();
    };
    let message = json
        .pointer("/error/message")
        .or_else(|| json.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    if message.trim_start().starts_with('{') {
        if let Ok(inner) = serde_json::from_str::<serde_json::Value>(message) {
            if let Some(nested) = inner.pointer("/error/message").and_then(|m| m.as_str()) {
                return nested.to_owned();
            }
        }
    }
    message.to_owned()
}
