//! The SSE scanner's throughput on a realistic Anthropic stream, beside
//! plain `memchr` over the same bytes in the same run; and the time the
//! usage body wrapper adds to each frame.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use tower_llm_relay::sse::SseScanner;

/// One SSE event.
fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A realistic Anthropic Messages stream, one event per frame as the API
/// sends them: a start, `deltas` text deltas of a few words each, the
/// closing events.
fn anthropic_frames(deltas: usize) -> Vec<Bytes> {
    let words = [
        "The relay",
        " picks an",
        " account",
        " by priority,",
        " then",
        " sends",
        " the request",
        " upstream;",
        " when it",
        " fails,",
        " the next",
        " account",
        " is tried.",
    ];
    let mut frames = vec![event(
        "message_start",
        &json!({"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":1800,"output_tokens":1}}}),
    )];
    frames.push(event(
        "content_block_start",
        &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ));
    frames.push(event("ping", &json!({"type": "ping"})));
    for i in 0..deltas {
        frames.push(event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":words[i % words.len()]}}),
        ));
    }
    frames.push(event(
        "content_block_stop",
        &json!({"type":"content_block_stop","index":0}),
    ));
    frames.push(event(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":deltas}}),
    ));
    frames.push(event("message_stop", &json!({"type": "message_stop"})));
    frames
}

/// The same bytes re-cut into `size`-byte frames (a fast upstream's TCP
/// reads coalesce events).
fn recut(frames: &[Bytes], size: usize) -> Vec<Bytes> {
    let all: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    all.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn scanner(c: &mut Criterion) {
    let per_event = anthropic_frames(10_000);
    let coalesced = recut(&per_event, 16 * 1024);
    let bytes: u64 = per_event.iter().map(|f| f.len() as u64).sum();
    for (label, frames) in [("event_frames", &per_event), ("16k_frames", &coalesced)] {
        let mut group = c.benchmark_group(format!("sse_anthropic_stream/{label}"));
        group.throughput(Throughput::Bytes(bytes));
        // The baseline: find every line end with plain `memchr`, the least
        // any line-based scanner must do.
        group.bench_function("baseline_memchr_line_ends", |b| {
            b.iter(|| {
                let mut sum = 0usize;
                for frame in frames {
                    for at in memchr::memchr_iter(b'\n', black_box(frame)) {
                        sum = sum.wrapping_add(at);
                    }
                }
                sum
            })
        });
        // For reference: memchr's SIMD count, which never stops at a match.
        group.bench_function("reference_memchr_count", |b| {
            b.iter(|| {
                let mut lines = 0usize;
                for frame in frames {
                    lines += memchr::memchr_iter(b'\n', black_box(frame)).count();
                }
                lines
            })
        });
        group.bench_function("sse_scanner", |b| {
            b.iter(|| {
                let mut scanner = SseScanner::new();
                let mut events = 0usize;
                for frame in frames {
                    scanner.feed(black_box(frame), |event| {
                        events += event.data().len() & 1;
                    });
                }
                events
            })
        });
        group.finish();
    }
}

criterion_group!(benches, scanner);
criterion_main!(benches);
