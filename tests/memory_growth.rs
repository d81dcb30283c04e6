//! The proxy binary's memory levels off: after a warm-up, tens of
//! thousands more requests (streamed and not) leave its RSS where it was.
//! A CI-sized version of the soak (`benches/soak/run.sh`); it catches
//! per-request leaks of about 70 bytes and up, like the histogram samples
//! that once queued until a `/metrics` scrape.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use support::account;
use support::proxy_process::{ConfigFile, Proxy};
use tower_llm_relay::mock::MockUpstream;

const KEY: &str = "sk-relay-memory";
const CONCURRENCY: usize = 16;

/// The process's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Sends `n` requests, `CONCURRENCY` at a time; every one must be served.
async fn load(proxy: &Arc<Proxy>, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (proxy, next) = (proxy.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let client = support::client();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let response = client
                    .request(proxy.messages(KEY, i % 2 == 0))
                    .await
                    .expect("an answer");
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("a whole body");
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a load worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_levels_off_across_tens_of_thousands_of_requests() {
    let per_phase: usize = std::env::var("MEMORY_GROWTH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(15_000);
    let mock = MockUpstream::start().await.expect("mock upstream");
    let config = ConfigFile::new(&format!(
        "[[keys]]\nkey = \"{KEY}\"\nname = \"memory\"\n{}",
        account(
            "claude-1",
            "anthropic",
            "api_key",
            "sk-ant-memory",
            &mock.base_url()
        )
    ));
    let proxy = Arc::new(Proxy::start(config.path(), &[]));
    let pid = proxy.child.id();

    let began = Instant::now();
    load(&proxy, per_phase).await;
    let warm = rss_kib(pid);
    load(&proxy, per_phase).await;
    let middle = rss_kib(pid);
    load(&proxy, per_phase).await;
    let end = rss_kib(pid);
    eprintln!(
        "memory: RSS {warm} KiB after {per_phase} requests, {middle} KiB after {}, {end} KiB after {} ({:?})",
        2 * per_phase,
        3 * per_phase,
        began.elapsed()
    );
    // A leak grows in both phases; a level set does not in the last. At
    // the default 15,000 requests a phase, 1 MiB is 70 bytes a request.
    let growth = end.saturating_sub(middle);
    assert!(
        growth < 1024,
        "RSS grew {growth} KiB over {per_phase} requests ({} B each): {warm} -> {middle} -> {end} KiB",
        growth * 1024 / per_phase as u64
    );
}
