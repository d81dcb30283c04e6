//! The relay as it is configured now, replaced whole on `SIGHUP`.
//!
//! A reload builds a new relay from the re-read config (accounts, keys,
//! scheduling, upstream settings) on the same state store, statistics,
//! OAuth refresher and usage totals, and swaps it in. Requests already in
//! flight keep the relay they started on, so a stream on an account that
//! the new config removed runs to its end (the account drains); new
//! requests see the new pool at once. The listener, its limits and the
//! admin and metrics keys are read once at start.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;
use axum::body::Body;
use http::{Request, Response};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};
use tower_llm_relay::config::Config;
use tower_llm_relay::oauth::Refresher;
use tower_llm_relay::select::Scheduler;
use tower_llm_relay::state::StateStore;
use tower_llm_relay::stats::RuntimeStats;
use tower_llm_relay::usage::{TracingSink, UsageTotals};
use tower_llm_relay::{RelayBody, RelayService};

use crate::admin::AdminView;

/// One generation of the relay.
pub(crate) struct Live {
    relay: RelayService<Body>,
    pub(crate) view: AdminView,
}

/// What every generation shares.
struct Shared {
    store: Arc<dyn StateStore>,
    stats: RuntimeStats,
    refresher: Arc<Refresher>,
    totals: UsageTotals,
}

/// The current relay; cheap to clone, and a [`Service`] that sends each
/// request to the generation current when it arrives.
#[derive(Clone)]
pub(crate) struct LiveRelay {
    current: Arc<ArcSwap<Live>>,
    shared: Arc<Shared>,
}

impl LiveRelay {
    /// The first generation, from `config`.
    pub(crate) fn new(config: &Config) -> Self {
        let builder = config.relay_builder();
        let scheduler = builder.scheduler();
        let shared = Shared {
            store: scheduler.store().clone(),
            stats: scheduler.stats().clone(),
            refresher: builder.refresher().clone(),
            totals: builder.usage_totals().clone(),
        };
        let live = build(config, &shared);
        Self {
            current: Arc::new(ArcSwap::from_pointee(live)),
            shared: Arc::new(shared),
        }
    }

    /// The generation serving new requests now.
    pub(crate) fn current(&self) -> Arc<Live> {
        self.current.load_full()
    }

    /// Swaps in a relay built from `config`.
    pub(crate) fn replace(&self, config: &Config) {
        self.current.store(Arc::new(build(config, &self.shared)));
    }

    /// Re-reads `path` and swaps in the new relay; a bad file is logged and
    /// the running relay kept.
    pub(crate) fn reload_from(&self, path: &Path) {
        match Config::load(path) {
            Ok(config) => {
                self.replace(&config);
                tracing::info!(
                    accounts = config.accounts.accounts().len(),
                    keys = config.keys.len(),
                    "config reloaded"
                );
            }
            Err(e) => tracing::error!(error = %e, "config not reloaded; keeping the running one"),
        }
    }
}

fn build(config: &Config, shared: &Shared) -> Live {
    let builder = config
        .relay_builder()
        .state(shared.store.clone())
        .stats(shared.stats.clone())
        .with_refresher(shared.refresher.clone())
        .with_usage_totals(shared.totals.clone());
    let scheduler: Scheduler = builder.scheduler();
    let mut keys: Vec<_> = config
        .keys
        .principals()
        .map(|p| (p.id().clone(), p.group_name().to_owned()))
        .collect();
    keys.sort();
    let view = AdminView {
        scheduler: scheduler.clone(),
        refresher: shared.refresher.clone(),
        totals: shared.totals.clone(),
        keys: keys.into(),
    };
    // One `tower_llm_relay::usage` log line per served request, with its
    // tokens, first-token time and duration.
    let relay = builder
        .usage_sink(TracingSink::new())
        .with_scheduler(scheduler)
        .build::<Body>();
    Live { relay, view }
}

/// A connection's copy of the current relay stack: a request on it needs
/// no clone of the stack (a box, and some twenty reference counts that
/// every core touches). The copy is taken again when a reload has swapped
/// in a new generation; until its next request, an idle connection keeps
/// the generation it last served (at most for the idle timeout).
pub(crate) struct ConnectionRelay {
    live: LiveRelay,
    generation: Arc<Live>,
    relay: RelayService<Body>,
}

impl ConnectionRelay {
    /// The copy for a new connection.
    pub(crate) fn new(live: LiveRelay) -> Self {
        let generation = live.current();
        let relay = generation.relay.clone();
        Self {
            live,
            generation,
            relay,
        }
    }

    /// Starts `req` on the current generation.
    pub(crate) fn call(
        &mut self,
        req: Request<Body>,
    ) -> <RelayService<Body> as Service<Request<Body>>>::Future {
        let current = self.live.current.load();
        if !Arc::ptr_eq(&current, &self.generation) {
            self.generation = Arc::clone(&current);
            self.relay = current.relay.clone();
        }
        // Every layer of the stack is always ready (it answers errors in
        // the API's format), so this never waits; should one ever not be,
        // a clone of the stack waits for it instead of this connection.
        let mut cx = Context::from_waker(Waker::noop());
        match self.relay.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => self.relay.call(req),
            Poll::Pending => Box::pin(self.relay.clone().oneshot(req)),
        }
    }
}

impl Service<Request<Body>> for LiveRelay {
    type Response = Response<RelayBody>;
    type Error = Infallible;
    type Future = Oneshot<RelayService<Body>, Request<Body>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The relay is always ready (it answers errors in the API's format).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.current.load().relay.clone().oneshot(req)
    }
}

/// Reloads from `path` on every `SIGHUP`, until the process ends.
#[cfg(unix)]
pub(crate) fn on_sighup(live: LiveRelay, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; config reload is off");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            live.reload_from(&path);
        }
    });
}

/// No `SIGHUP` off Unix: the config is read once.
#[cfg(not(unix))]
pub(crate) fn on_sighup(_live: LiveRelay, _path: PathBuf) {}
