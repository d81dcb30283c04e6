//! Micro-benchmarks of the request path's hot parts, each beside a baseline
//! measured in the same run.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tower_llm_relay::{Endpoint, ParsedRequest};

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
        "metadata": {"user_id": "user_abc_session_2f7c6e0e-1111-4a4a-9b9b-123456789abc"},
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
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
