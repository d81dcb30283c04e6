//! The bundled mock upstream as a process of its own, for load benchmarks
//! (`benches/load/run.sh`) and for trying a proxy by hand.
//!
//! ```text
//! cargo run --release --example mock_upstream -- --listen 127.0.0.1:9001
//! cargo run --release --example mock_upstream -- --listen 127.0.0.1:9001 --events 200 --interval-ms 10 --stamp
//! ```
//!
//! It answers like Anthropic and OpenAI (see `tower_llm_relay::mock`), with
//! no artificial delay unless `--interval-ms` asks for one, and keeps no
//! record of the requests it served (so its memory stays flat under load).
//! It prints `listening on ADDR` once bound and runs until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tower_llm_relay::mock::MockUpstream;

/// Command line of the mock upstream.
#[derive(Debug, Parser)]
#[command(
    name = "mock_upstream",
    about = "An Anthropic/OpenAI-shaped mock upstream"
)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Text delta events per streamed answer.
    #[arg(long, default_value_t = 5)]
    events: usize,
    /// Milliseconds between two events of a stream (0: none).
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Put a `: sent_unix_ns=N` comment line before each streamed event.
    #[arg(long)]
    stamp: bool,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let mock = MockUpstream::builder()
        .bind(args.listen)
        .stream_deltas(args.events)
        .event_interval(Duration::from_millis(args.interval_ms))
        .stamp_events(args.stamp)
        .record_requests(false)
        .start()
        .await;
    let mock = match mock {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", mock.addr());
    shutdown_signal().await;
    drop(mock);
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
