//! The HTTP server around the relay: routes, connection limits, timeouts,
//! graceful shutdown.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower_llm_relay::config::Config;

use crate::front::Front;
use crate::idle::{Activity, FirstBytes};
use crate::refuse::Refusals;
use crate::reload::{ConnectionRelay, LiveRelay};
use crate::stop::{StopSender, Stopped};

/// hyper refuses read buffers smaller than this.
const MIN_HEADER_LIMIT: usize = 8192;

/// Binds the listen socket with the configured backlog.
pub(crate) fn bind(config: &Config) -> io::Result<TcpListener> {
    let socket = if config.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(config.listen)?;
    socket.listen(config.listen_backlog)
}

/// The proxy's routes: health, admin and metrics, then the relay for
/// everything else.
pub(crate) fn router(config: &Config, live: &LiveRelay) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::admin::routes(config.admin_key.clone(), live.clone()))
        .merge(crate::metrics::routes(
            config.metrics_key.clone(),
            live.clone(),
        ))
        .fallback_service(live.clone())
}

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish
/// within the grace period. With `reload_from`, `SIGHUP` re-reads that
/// file and swaps in its accounts, keys and settings.
pub(crate) async fn serve(
    listener: TcpListener,
    config: &Config,
    reload_from: Option<PathBuf>,
) -> io::Result<()> {
    let live = LiveRelay::new(config);
    if let Some(path) = reload_from {
        crate::reload::on_sighup(live.clone(), path);
    }
    let idle = config.idle_timeout;
    let router = router(config, &live);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper answers 431 when a request head outgrows its read buffer.
        .max_buf_size(config.header_limit_bytes.max(MIN_HEADER_LIMIT))
        // The head timer also runs while a keep-alive connection idles.
        .header_read_timeout(config.idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.header_limit_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(config.idle_timeout.max(Duration::from_secs(1))));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let refusals = Refusals::new();
    // Dropping the sender tells every connection to finish and close.
    let stopping = StopSender::new();
    let mut stop = std::pin::pin!(shutdown_signal());

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: max_connections reached");
            refusals.refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // hyper's head timer starts only once the protocol is known.
        let stream = FirstBytes::new(stream, idle);
        let activity = Activity::new();
        // A body that stops arriving is cut off as an idle connection is.
        let service = Front::new(
            router.clone(),
            ConnectionRelay::new(live.clone()),
            activity.clone(),
            idle,
        );
        let builder = builder.clone();
        let stopped = stopping.subscribe();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let graceful_shutdown = auto::UpgradeableConnection::graceful_shutdown;
            if let Err(e) =
                run_connection(connection, graceful_shutdown, &activity, idle, stopped).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    drop(stopping);
    tracing::info!(grace = ?config.shutdown_grace, "stopping: finishing in-flight requests");
    // Every connection holds a permit until it has closed.
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!("grace period over; closing remaining connections");
        }
    }
    Ok(())
}

/// Serves one connection until it ends; closes it gracefully (HTTP/2:
/// GOAWAY, then the requests in progress finish) when it has had no
/// request in progress for `idle`, or when the proxy stops.
async fn run_connection<C, E>(
    connection: C,
    graceful_shutdown: fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut stopped: Stopped,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    let mut check_at = Instant::now() + idle;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = &mut stopped, if !closing => {
                closing = true;
                graceful_shutdown(connection.as_mut());
            }
            () = tokio::time::sleep_until(check_at), if !closing => match activity.idle_for() {
                Some(quiet) if quiet >= idle => {
                    closing = true;
                    graceful_shutdown(connection.as_mut());
                }
                Some(quiet) => check_at = Instant::now() + idle.saturating_sub(quiet),
                None => check_at = Instant::now() + idle,
            },
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
