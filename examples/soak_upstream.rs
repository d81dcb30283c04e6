//! A mock upstream for the soak run (`benches/soak/run.sh`): serves
//! [`MockUpstream`] on a port with the fault campaign's mix, one
//! credential per fault, until killed. Requests are not recorded, so its
//! own memory stays flat however long it runs.
//!
//! ```text
//! cargo run --release --example soak_upstream -- --port 9100 [--seed 1]
//! ```
//!
//! Credentials (`cred-<id>`) and what goes wrong there:
//! `a-429` 429 with `retry-after: 1` (30%), `a-529` (30%), `a-500` (30%),
//! `a-reset` connection reset (30%), `a-hang` no answer (20%),
//! `a-sse-error` `event: error` first (30%), `a-cut` mid-stream cut (20%),
//! `a-slow` 30 ms between events (always), `a-healthy` never; `o-529`
//! (50%), `o-reset` (50%), `o-hang` (30%), `o-cut` (30%), `o-dead` 500
//! (always).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use tower_llm_relay::mock::{Fault, FaultPlan, MockUpstream};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The port to listen on, on 127.0.0.1.
    #[arg(long, default_value_t = 9100)]
    port: u16,
    /// The seed of the random fault plans.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn random(probability: f64, fault: Fault, seed: u64) -> FaultPlan {
    FaultPlan::Random {
        probability,
        fault,
        seed,
    }
}

fn status(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
    }
}

/// The campaign's fault mix, by account id.
fn plans(seed: u64) -> Vec<(&'static str, FaultPlan)> {
    let cut = Fault::MidStreamCut { after_events: 2 };
    vec![
        ("a-429", random(0.3, status(429, Some(1)), seed + 1)),
        ("a-529", random(0.3, status(529, None), seed + 2)),
        ("a-500", random(0.3, status(500, None), seed + 3)),
        ("a-reset", random(0.3, Fault::ConnectionReset, seed + 4)),
        ("a-hang", random(0.2, Fault::Hang, seed + 5)),
        ("a-sse-error", random(0.3, Fault::SseErrorFirst, seed + 6)),
        ("a-cut", random(0.2, cut.clone(), seed + 7)),
        (
            "a-slow",
            FaultPlan::Always(Fault::SlowStream {
                interval: Duration::from_millis(30),
            }),
        ),
        ("a-healthy", FaultPlan::Never),
        ("o-529", random(0.5, status(529, None), seed + 8)),
        ("o-reset", random(0.5, Fault::ConnectionReset, seed + 9)),
        ("o-hang", random(0.3, Fault::Hang, seed + 10)),
        ("o-cut", random(0.3, cut, seed + 11)),
        ("o-dead", FaultPlan::Always(status(500, None))),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mock = MockUpstream::builder()
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .recording(false)
        .start()
        .await?;
    for (id, plan) in plans(args.seed) {
        mock.set_faults(&format!("cred-{id}"), plan);
    }
    println!("soak upstream on {}", mock.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
