//! A client for the load benchmark (`benches/load/run.sh`) that measures
//! streams, not requests.
//!
//! ```text
//! # each event's one-way delay (the mock runs with --stamp)
//! stream_probe delay --url http://127.0.0.1:9002/v1/messages --key sk-relay-bench --streams 10
//! # hold 2,000 streams open at once, until stdin closes or --hold-secs pass
//! stream_probe hold --url http://127.0.0.1:9002/v1/messages --key sk-relay-bench --streams 2000
//! ```
//!
//! `delay` opens `--streams` Anthropic streams at once against a mock
//! upstream started with `--stamp`, so each event is preceded by
//! `: sent_unix_ns=N`, the wall-clock time it left the mock. For every
//! event it subtracts that from the time the event's frame arrived, and
//! prints one line: `events=… p50_us=… p90_us=… p99_us=… max_us=…`.
//! Run once direct and once through a proxy, the difference is what the
//! proxy adds to each event. Both ends read the same clock, so it only
//! works on one machine.
//!
//! `hold` opens `--streams` streams, waits until each has received its
//! first bytes, prints `open N` and keeps reading them for `--hold-secs`,
//! so the caller can read a proxy's memory while they are held (the mock
//! should stream for longer than that); then it prints `closed` and exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Barrier;

/// Command line of the stream probe.
#[derive(Debug, Parser)]
#[command(name = "stream_probe", about = "Measures streams through a relay")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Each event's one-way delay, from the mock's stamp to arrival.
    Delay(Target),
    /// Hold many streams open at once.
    Hold {
        #[command(flatten)]
        target: Target,
        /// How long to hold them.
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
}

/// Where to send the streams, and how many.
#[derive(Debug, clap::Args)]
struct Target {
    /// The Messages URL, e.g. `http://127.0.0.1:9002/v1/messages`.
    #[arg(long)]
    url: http::Uri,
    /// The client key, sent as `x-api-key`.
    #[arg(long, default_value = "sk-bench")]
    key: String,
    /// Streams open at once.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// The model asked for.
    #[arg(long, default_value = "claude-sonnet-4-5")]
    model: String,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.mode {
            Mode::Delay(target) => delay(target).await,
            Mode::Hold { target, hold_secs } => hold(target, Duration::from_secs(hold_secs)).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn client(streams: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(streams)
        .build(connector)
}

/// Stream `n`'s request; each asks something else, so each is a session
/// of its own to the relay (as many users would be).
fn request(target: &Target, n: usize) -> Result<Request<Full<Bytes>>, BoxError> {
    let body = format!(
        r#"{{"model":"{}","max_tokens":1024,"stream":true,"messages":[{{"role":"user","content":"Tell me story number {n}."}}]}}"#,
        target.model
    );
    Ok(Request::post(target.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", &target.key)
        .body(Full::new(Bytes::from(body)))?)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// The stamps of the complete lines in `pending`; the unfinished last
/// line stays in `pending` for the next frame.
fn take_stamps(pending: &mut Vec<u8>, stamps: &mut Vec<u128>) {
    const PREFIX: &[u8] = b": sent_unix_ns=";
    let Some(last_newline) = pending.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    for line in pending[..last_newline].split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(PREFIX) {
            let value = std::str::from_utf8(value).unwrap_or_default().trim();
            if let Ok(sent) = value.parse() {
                stamps.push(sent);
            }
        }
    }
    pending.drain(..=last_newline);
}

/// One stream: the delay of each stamped event, in microseconds.
async fn one_stream(
    client: HttpClient,
    request: Request<Full<Bytes>>,
) -> Result<Vec<f64>, BoxError> {
    let response = client.request(request).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let mut stamps = Vec::new();
    let mut delays = Vec::new();
    while let Some(frame) = body.frame().await {
        let arrived = unix_nanos();
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        take_stamps(&mut pending, &mut stamps);
        for sent in stamps.drain(..) {
            delays.push(arrived.saturating_sub(sent) as f64 / 1000.0);
        }
    }
    Ok(delays)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn delay(target: Target) -> Result<(), BoxError> {
    let client = client(target.streams);
    let mut tasks = Vec::new();
    for n in 0..target.streams {
        tasks.push(tokio::spawn(one_stream(
            client.clone(),
            request(&target, n)?,
        )));
    }
    let mut delays = Vec::new();
    for task in tasks {
        delays.extend(task.await??);
    }
    if delays.is_empty() {
        return Err("no stamped events arrived (is the mock running with --stamp?)".into());
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "events={} p50_us={:.0} p90_us={:.0} p99_us={:.0} max_us={:.0}",
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 90.0),
        percentile(&delays, 99.0),
        delays[delays.len() - 1],
    );
    Ok(())
}

async fn hold(target: Target, hold_for: Duration) -> Result<(), BoxError> {
    let client = client(target.streams);
    let all_open = Arc::new(Barrier::new(target.streams + 1));
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for n in 0..target.streams {
        let client = client.clone();
        let request = request(&target, n)?;
        let all_open = all_open.clone();
        let mut released = released.clone();
        tasks.push(tokio::spawn(async move {
            let result: Result<(), BoxError> = async {
                let response = client.request(request).await?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status()).into());
                }
                let mut body = response.into_body();
                // The stream is open once its first bytes are here.
                body.frame().await.ok_or("stream ended at once")??;
                Ok(body)
            }
            .await
            .map(|mut body| {
                // Read as a client would, until released or the end.
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            frame = body.frame() => match frame {
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                            _ = released.wait_for(|r| *r) => break,
                        }
                    }
                });
            });
            all_open.wait().await;
            result
        }));
    }
    all_open.wait().await;
    let mut failed = 0usize;
    let mut first_error = None;
    for task in tasks {
        if let Err(e) = task.await? {
            failed += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    println!("open {}", target.streams - failed);
    if let Some(e) = first_error {
        eprintln!("{failed} streams failed to open, the first: {e}");
    }
    tokio::time::sleep(hold_for).await;
    let _ = release.send(true);
    println!("closed");
    Ok(())
}
