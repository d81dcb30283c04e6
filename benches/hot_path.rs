//! Micro-benchmarks of the request path's hot parts (parse and session
//! hash, account selection, header rules), each beside a baseline measured
//! in the same run where one makes sense.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use secrecy::SecretString;
use tower_llm_relay::select::{Scheduler, SchedulingConfig, SelectRequest, SelectionPolicy};
use tower_llm_relay::session_hash::SessionHash;
use tower_llm_relay::{Account, AccountPool, Credentials, Endpoint, ParsedRequest, Platform};

/// A realistic ~20 KB Messages body: a system prompt and a conversation.
fn messages_body() -> Vec<u8> {
    let turn =
        "Explain how the relay chooses an account and what happens when it fails. ".repeat(4);
    let messages: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            serde_json::json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": [{"type": "text", "text": format!("{i}: {turn}")}],
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": true,
        "system": [{"type": "text", "text": "You are a helpful assistant.", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "user_abc"},
        "messages": messages,
    }))
    .unwrap_or_default()
}

fn parse(c: &mut Criterion) {
    let body = messages_body();
    let mut group = c.benchmark_group("parse_20kb_messages");
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)))
    });
    group.bench_function("parsed_request", |b| {
        b.iter(|| ParsedRequest::parse(Endpoint::Messages, black_box(&body)))
    });
    group.bench_function("parsed_request_and_session_hash", |b| {
        b.iter(|| {
            let parsed = ParsedRequest::parse(Endpoint::Messages, black_box(&body));
            parsed.map(|p| SessionHash::from_request(&p, None))
        })
    });
    // Without a cache mark the hash reads every message looking for one.
    let unmarked = String::from_utf8_lossy(&body).replace("cache_control", "cache_note");
    group.bench_function("parsed_request_and_session_hash_unmarked", |b| {
        b.iter(|| {
            let parsed = ParsedRequest::parse(Endpoint::Messages, black_box(unmarked.as_bytes()));
            parsed.map(|p| SessionHash::from_request(&p, None))
        })
    });
    group.finish();
}

fn pool(n: usize) -> AccountPool {
    AccountPool::new((0..n).map(|i| {
        Account::builder(
            format!("acct-{i:04}"),
            Platform::Anthropic,
            Credentials::ApiKey(SecretString::from("k")),
        )
        .priority((i % 3) as i32)
        .concurrency(1_000_000)
        .build()
    }))
}

fn select(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut group = c.benchmark_group("select");
    for (policy, session) in [
        (SelectionPolicy::LoadAware, None),
        (SelectionPolicy::ScoredTopK, None),
        (
            SelectionPolicy::LoadAware,
            Some("5f0c6e1a9b2d4c3e8f7a6b5c4d3e2f10"),
        ),
    ] {
        for n in [10, 100, 1000] {
            let config = SchedulingConfig {
                anthropic_policy: policy,
                ..SchedulingConfig::default()
            };
            let scheduler = Scheduler::new(pool(n), config);
            let name = match session {
                Some(_) => format!("{policy:?}/sticky"),
                None => format!("{policy:?}/new_session"),
            };
            group.bench_with_input(BenchmarkId::new(name, n), &scheduler, |b, scheduler| {
                b.to_async(&runtime).iter(|| async {
                    let request = SelectRequest {
                        endpoint: Endpoint::Messages,
                        model: "claude-sonnet-4-5",
                        group: Some("default"),
                        session,
                        previous_response_id: None,
                        excluded: None,
                        pinned: None,
                    };
                    // Dropping the selection frees its slot for the next round.
                    scheduler
                        .select(black_box(&request))
                        .await
                        .map(|s| s.decision.candidates)
                })
            });
        }
    }
    group.finish();
}

/// The parts of one selection over 1,000 accounts, to see where it goes.
fn select_parts(c: &mut Criterion) {
    use tower_llm_relay::state::{MemoryStore, StateStore};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let pool = pool(1000);
    let store = MemoryStore::new();
    let mut group = c.benchmark_group("select_parts_1000");
    group.bench_function("pool_candidates", |b| {
        b.iter(|| {
            pool.indexed_candidates(
                Endpoint::Messages,
                black_box("claude-sonnet-4-5"),
                Some("default"),
            )
            .count()
        })
    });
    let ids: Vec<&tower_llm_relay::AccountId> = pool.accounts().iter().map(|a| a.id()).collect();
    let populated = MemoryStore::new();
    runtime.block_on(async {
        let limits = tower_llm_relay::state::SlotLimits {
            concurrency: 4,
            rpm: None,
        };
        for id in &ids {
            // Taken and given back: every account now has state.
            let _ = populated.try_acquire(id, limits).await;
        }
    });
    group.bench_function("memory_store_loads_populated", |b| {
        b.to_async(&runtime).iter(|| async {
            populated
                .loads(black_box(&ids), Some("claude-sonnet-4-5"))
                .await
                .map(|l| l.len())
        })
    });
    group.bench_function("memory_store_loads", |b| {
        b.to_async(&runtime).iter(|| async {
            store
                .loads(black_box(&ids), Some("claude-sonnet-4-5"))
                .await
                .map(|l| l.len())
        })
    });
    group.finish();
}

/// The headers Claude Code's SDK sends, plus what a load balancer in front
/// adds: 22 headers, most allowed, some denied.
fn client_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("host", "relay.example.com"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "*"),
        ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("anthropic-version", "2023-06-01"),
        ("authorization", "Bearer sk-relay-alice-0123456789abcdef0123456789abcdef"),
        ("connection", "keep-alive"),
        ("content-length", "20480"),
        ("content-type", "application/json"),
        ("user-agent", "claude-cli/2.0.14 (external, cli)"),
        ("x-app", "cli"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-helper-method", "stream"),
        ("x-stainless-lang", "js"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-package-version", "0.60.0"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-runtime", "node"),
        ("x-stainless-runtime-version", "v22.17.0"),
        ("x-stainless-timeout", "600"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-proto", "https"),
    ] {
        headers.append(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    headers
}

fn header_rules(c: &mut Criterion) {
    use criterion::BatchSize;
    use tower::{Layer, Service};
    use tower_llm_relay::header_whitelist::HeaderWhitelistLayer;

    let headers = client_headers();
    let request = || {
        let mut request = http::Request::post("/v1/messages")
            .body(bytes::Bytes::new())
            .unwrap_or_default();
        *request.headers_mut() = headers.clone();
        request
    };
    // The inner service only counts what is left, so the figure is the
    // layer's own work.
    let mut whitelist =
        HeaderWhitelistLayer::new().layer(tower::service_fn(|req: http::Request<bytes::Bytes>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(req.headers().len()))
        }));
    let mut group = c.benchmark_group("header_rules_24_headers");
    group.bench_function("baseline_clone_header_map", |b| {
        b.iter(|| black_box(&headers).clone())
    });
    group.bench_function("header_whitelist", |b| {
        b.iter_batched(
            request,
            |req| whitelist.call(req).into_inner(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse, select, select_parts, header_rules);
criterion_main!(benches);
