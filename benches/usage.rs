//! The SSE scanner's throughput on a realistic Anthropic stream, beside
//! plain `memchr` over the same bytes in the same run; and the time the
//! usage body wrapper adds to each frame, beside the same frames forwarded
//! without it.

use std::future::Ready;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use tower::{Layer, Service};
use tower_llm_relay::sse::SseScanner;
use tower_llm_relay::usage::{UsageExtractLayer, UsageReport, UsageSink};
use tower_llm_relay::{RelayBody, RelayError};

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

/// A sink that drops every report: the bench measures the wrapper, not
/// where its reports go.
struct Discard;

impl UsageSink for Discard {
    fn record(&self, report: &UsageReport) {
        black_box(report);
    }
}

/// An upstream that answers every request with the same SSE stream.
fn upstream(
    frames: Arc<Vec<Bytes>>,
) -> impl Service<
    Request<Bytes>,
    Response = Response<RelayBody>,
    Error = RelayError,
    Future = Ready<Result<Response<RelayBody>, RelayError>>,
> + Clone {
    tower::service_fn(move |_req: Request<Bytes>| {
        // Always ready, like a fast upstream.
        let body = RelayBody::from_frames(frames.iter().cloned().map(Ok));
        let mut response = Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        std::future::ready(Ok(response))
    })
}

/// Sends one request through `service` and reads the body to its end,
/// frame by frame, as the server would.
async fn drain<S>(service: &mut S) -> usize
where
    S: Service<Request<Bytes>, Response = Response<RelayBody>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::post("/v1/messages")
        .body(Bytes::new())
        .unwrap_or_default();
    let response = match service.call(request).await {
        Ok(response) => response,
        Err(e) => panic!("upstream: {e:?}"),
    };
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            bytes += data.len();
        }
    }
    bytes
}

/// The usage body wrapper over one 200-delta Anthropic stream, one event a
/// frame, beside the same stream read without it.
fn usage_body(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let frames = Arc::new(anthropic_frames(200));
    let mut group = c.benchmark_group("usage_body/anthropic_stream_206_frames");
    group.throughput(Throughput::Elements(frames.len() as u64));
    let bare = upstream(frames.clone());
    group.bench_function("baseline_forward_frames", |b| {
        b.to_async(&runtime).iter(|| {
            let mut service = bare.clone();
            async move { drain(&mut service).await }
        })
    });
    let wrapped = UsageExtractLayer::new()
        .sink(Discard)
        .layer(upstream(frames.clone()));
    group.bench_function("usage_extract_body", |b| {
        b.to_async(&runtime).iter(|| {
            let mut service = wrapped.clone();
            async move { drain(&mut service).await }
        })
    });
    group.finish();
}

criterion_group!(benches, scanner, usage_body);
criterion_main!(benches);
