//! The load of the soak run (`benches/soak/run.sh`): the fault campaign's
//! request mix against a running proxy for a while, printing every
//! interval what happened, latency percentiles, and the proxy's RSS and
//! open file descriptors (from `/proc/<pid>`).
//!
//! ```text
//! cargo run --release --example soak_load -- --url http://127.0.0.1:9200 \
//!     --key sk-soak --pid $(pgrep -n proxy) --duration-secs 600
//! ```
//!
//! The mix: 70% Anthropic Messages (servable: the pool has a healthy
//! account), 25% OpenAI Chat (only faulty accounts), 5% a model only a
//! dead account serves; half streamed, half in sessions of 2–8 requests;
//! 5% of clients hang up before the head, 5% after the first body frame.
//! It exits non-zero if any answer was malformed or a servable request
//! was refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The proxy's origin.
    #[arg(long)]
    url: String,
    /// The client key.
    #[arg(long)]
    key: String,
    /// The proxy's process id, for RSS and open file descriptors.
    #[arg(long)]
    pid: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// How often to report.
    #[arg(long, default_value_t = 30)]
    interval_secs: u64,
    /// The seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
    OpenAiDead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HangUp {
    Never,
    BeforeHead(u64),
    MidBody,
}

/// What the counters count, in report order.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Served,
    CutAfterCommit,
    Refused,
    HungUp,
    RefusedServable,
    Wrong,
}

const OUTCOMES: [&str; 6] = [
    "served",
    "cut",
    "refused",
    "hung_up",
    "refused_servable",
    "wrong",
];

#[derive(Default)]
struct Tally {
    counts: [AtomicU64; 6],
    /// Milliseconds to the end of each served answer, this interval.
    latencies: Mutex<Vec<f64>>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn request(args: &Args, api: Api, stream: bool, session: Option<&str>) -> Request<Full<Bytes>> {
    let (path, body) = match api {
        Api::Anthropic => {
            let mut body = serde_json::json!({
                "model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
                "messages": [{"role": "user", "content": ""}],
            });
            if let Some(session) = session {
                body["metadata"] =
                    serde_json::json!({"user_id": format!("user_x_session_{session}")});
            }
            ("/v1/messages", body)
        }
        Api::OpenAi | Api::OpenAiDead => {
            let model = if api == Api::OpenAi {
                "gpt-4o"
            } else {
                "gpt-dead"
            };
            let body = serde_json::json!({
                "model": model, "stream": stream,
                "messages": [{"role": "user", "content": session.unwrap_or_default()}],
            });
            ("/v1/chat/completions", body)
        }
    };
    Request::post(format!("{}{path}", args.url))
        .header("x-api-key", &args.key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request builds")
}

async fn call(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    api: Api,
    stream: bool,
    hang_up: HangUp,
    tally: &Tally,
) -> Outcome {
    let started = Instant::now();
    let pending = client.request(req);
    let head = match hang_up {
        HangUp::BeforeHead(ms) => {
            match tokio::time::timeout(Duration::from_millis(ms), pending).await {
                Err(_) => return Outcome::HungUp,
                Ok(head) => head,
            }
        }
        _ => match tokio::time::timeout(Duration::from_secs(30), pending).await {
            Err(_) => return Outcome::Wrong,
            Ok(head) => head,
        },
    };
    let Ok(response) = head else {
        return Outcome::Wrong;
    };
    let status = response.status();
    let mut body = response.into_body();
    if hang_up == HangUp::MidBody && status == 200 {
        let _ = tokio::time::timeout(Duration::from_secs(30), body.frame()).await;
        return Outcome::HungUp;
    }
    let bytes = match tokio::time::timeout(Duration::from_secs(30), body.collect()).await {
        Err(_) => return Outcome::Wrong,
        // A JSON answer cut after its head went out.
        Ok(Err(_)) if status == 200 && !stream => return Outcome::CutAfterCommit,
        Ok(Err(_)) => return Outcome::Wrong,
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let text = String::from_utf8_lossy(&bytes);
    if status != 200 {
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let well_formed = json
            .as_ref()
            .is_some_and(|j| j["error"]["message"].is_string());
        return match (well_formed, api) {
            (false, _) => Outcome::Wrong,
            (true, Api::Anthropic) => Outcome::RefusedServable,
            (true, _) => Outcome::Refused,
        };
    }
    let served = if !stream {
        serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|j| j.get("error").is_none())
    } else if text.contains("event: error\n") || text.contains("\"error\"") {
        return Outcome::CutAfterCommit;
    } else {
        text.contains("event: message_stop") || text.contains("data: [DONE]")
    };
    if served {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tally
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ms);
        Outcome::Served
    } else {
        Outcome::Wrong
    }
}

async fn worker(args: Arc<Args>, client: HttpClient, tally: Arc<Tally>, seed: u64, until: Instant) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut job = 0u64;
    while Instant::now() < until {
        job += 1;
        let api = match rng.random_range(0..100) {
            0..70 => Api::Anthropic,
            70..95 => Api::OpenAi,
            _ => Api::OpenAiDead,
        };
        let session = rng
            .random_bool(0.5)
            .then(|| format!("{seed:08x}-0000-4000-8000-{job:012x}"));
        let len = if session.is_some() {
            rng.random_range(2..=8)
        } else {
            1
        };
        for _ in 0..len {
            let stream = rng.random_bool(0.5);
            let hang_up = match rng.random_range(0..100) {
                0..5 => HangUp::BeforeHead(rng.random_range(0..40)),
                5..10 => HangUp::MidBody,
                _ => HangUp::Never,
            };
            let req = request(&args, api, stream, session.as_deref());
            let outcome = call(&client, req, api, stream, hang_up, &tally).await;
            tally.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `VmRSS` in MiB and the number of open file descriptors of `pid`.
fn process_figures(pid: u32) -> (f64, usize) {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss_kib / 1024.0, fds)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_timer(TokioTimer::new())
        .build_http();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_secs);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let seed = args.seed.wrapping_mul(1_000_003) + i as u64;
            tokio::spawn(worker(
                args.clone(),
                client.clone(),
                tally.clone(),
                seed,
                until,
            ))
        })
        .collect();
    let mut previous = [0u64; 6];
    let mut ticker = tokio::time::interval(Duration::from_secs(args.interval_secs));
    ticker.tick().await;
    let last_report = Mutex::new(Instant::now());
    let report = |previous: &mut [u64; 6], final_line: bool| {
        let since = std::mem::replace(
            &mut *last_report.lock().unwrap_or_else(|e| e.into_inner()),
            Instant::now(),
        )
        .elapsed();
        let counts: Vec<u64> = tally
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let done: u64 = counts.iter().zip(previous.iter()).map(|(c, p)| c - p).sum();
        let mut latencies =
            std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        latencies.sort_by(f64::total_cmp);
        let (rss, fds) = args.pid.map_or((0.0, 0), process_figures);
        let elapsed = started.elapsed().as_secs();
        let outcomes: Vec<String> = OUTCOMES
            .iter()
            .zip(&counts)
            .map(|(n, c)| format!("{n}={c}"))
            .collect();
        println!(
            "{}t={elapsed}s req/s={:.0} rss_mib={rss:.1} fds={fds} served_ms p50={:.1} p90={:.1} p99={:.1} max={:.1} | total {}",
            if final_line { "final " } else { "" },
            done as f64 / since.as_secs_f64().max(0.001),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0),
            outcomes.join(" "),
        );
        previous.copy_from_slice(&counts);
    };
    while Instant::now() + Duration::from_secs(1) < until {
        ticker.tick().await;
        report(&mut previous, false);
    }
    for worker in workers {
        let _ = worker.await;
    }
    drop(client);
    // Let the proxy close what the client left, then look once more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    report(&mut previous, true);
    let bad = tally.counts[Outcome::Wrong as usize].load(Ordering::Relaxed)
        + tally.counts[Outcome::RefusedServable as usize].load(Ordering::Relaxed);
    if bad == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
