use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::body::{BoxError, RelayBody};
use crate::endpoint::Endpoint;
use crate::error::RelayError;
use crate::parse::ParsedRequest;

fn frames(parts: &[Bytes]) -> RelayBody {
    RelayBody::from_frames(parts.iter().cloned().map(Ok))
}

const ANTHROPIC: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-served\",\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":300,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

const CHAT: &[&str] = &[
    "data: {\"id\":\"c1\",\"model\":\"gpt-served\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-served\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-served\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"gpt-served\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n",
    "data: [DONE]\n\n",
];

fn stream_of(events: &[&str]) -> Vec<Bytes> {
    events.iter().map(|e| Bytes::from(e.to_string())).collect()
}

/// A request as the layers above would hand it on.
fn request(endpoint: Endpoint, body: &str) -> Request<Bytes> {
    let mut req = Request::post(endpoint.upstream_path())
        .body(Bytes::from(body.to_owned()))
        .unwrap_or_default();
    if let Ok(parsed) = ParsedRequest::parse(endpoint, body.as_bytes()) {
        req.extensions_mut().insert(parsed);
    }
    req
}

/// Calls a usage layer over an upstream answering `body` with `content_type`.
async fn call<B>(
    layer: UsageExtractLayer,
    req: Request<Bytes>,
    content_type: &'static str,
    body: B,
) -> (
    Response<RelayBody>,
    Arc<std::sync::Mutex<Option<Request<Bytes>>>>,
)
where
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_by_upstream = seen.clone();
    let body = std::sync::Mutex::new(Some(RelayBody::new(body)));
    let upstream = service_fn(move |req: Request<Bytes>| {
        *seen_by_upstream.lock().unwrap_or_else(|e| e.into_inner()) = Some(req);
        let body = body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        async move {
            Ok::<_, RelayError>(
                Response::builder()
                    .header("content-type", content_type)
                    .body(body)
                    .unwrap_or_default(),
            )
        }
    });
    let response = layer.layer(upstream).oneshot(req).await;
    (response.unwrap_or_default(), seen)
}

/// Reads every frame of `body`.
async fn drain(mut body: RelayBody) -> (Vec<Bytes>, Option<BoxError>) {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => out.extend(frame.into_data().ok()),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn handle(response: &Response<RelayBody>) -> UsageHandle {
    response
        .extensions()
        .get::<UsageHandle>()
        .cloned()
        .unwrap_or_else(|| panic!("no usage handle"))
}

#[tokio::test]
async fn anthropic_stream_frames_pass_as_the_same_bytes_and_usage_is_read() {
    let input = stream_of(ANTHROPIC);
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::Messages,
            r#"{"model":"claude-asked","stream":true,"messages":[]}"#,
        ),
        "text/event-stream",
        frames(&input),
    )
    .await;
    let handle = handle(&response);
    let (out, error) = drain(response.into_body()).await;
    assert!(error.is_none());
    assert_eq!(out.len(), input.len());
    for (sent, got) in input.iter().zip(&out) {
        // The very same buffer: no copy, no re-cut.
        assert_eq!(sent.as_ptr(), got.as_ptr());
        assert_eq!(sent.len(), got.len());
    }
    let report = reports.recv().await.unwrap_or_default();
    assert_eq!(
        report.usage,
        Usage {
            input_tokens: 21,
            output_tokens: 2,
            cache_creation_input_tokens: 5,
            cache_read_input_tokens: 300
        }
    );
    assert_eq!(report.client_model.as_deref(), Some("claude-asked"));
    assert_eq!(report.served_model.as_deref(), Some("claude-served"));
    assert!(report.stream && report.complete);
    assert_eq!(report.end, BodyEnd::Finished);
    assert_eq!(report.endpoint, Some(Endpoint::Messages));
    assert_eq!(handle.get(), Some(report));
    // Exactly once.
    assert!(reports.try_recv().is_none());
}

#[tokio::test(start_paused = true)]
async fn first_token_time_runs_from_the_call_to_the_first_content_event() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let body = ChannelBody(rx);
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::Messages,
            r#"{"model":"m","stream":true,"messages":[]}"#,
        ),
        "text/event-stream",
        body,
    )
    .await;
    let mut body = response.into_body();
    for (i, event) in ANTHROPIC.iter().enumerate() {
        tokio::time::advance(Duration::from_millis(if i == 3 { 250 } else { 10 })).await;
        let _ = tx.send(Bytes::from(event.to_string())).await;
        let _ = body.frame().await;
    }
    drop(tx);
    assert!(body.frame().await.is_none());
    let report = reports.recv().await.unwrap_or_default();
    // Three events of 10 ms, then 250 ms to the first delta.
    assert_eq!(report.first_token, Some(Duration::from_millis(280)));
    assert_eq!(report.duration, Duration::from_millis(320));
}

/// A body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn a_stream_cut_before_message_delta_reports_what_it_saw_as_incomplete() {
    let mut parts: VecDeque<Result<Bytes, BoxError>> =
        stream_of(&ANTHROPIC[..4]).into_iter().map(Ok).collect();
    parts.push_back(Err("cut".into()));
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::Messages,
            r#"{"model":"m","stream":true,"messages":[]}"#,
        ),
        "text/event-stream",
        RelayBody::from_frames(parts),
    )
    .await;
    let (_, error) = drain(response.into_body()).await;
    assert!(error.is_some());
    let report = reports.recv().await.unwrap_or_default();
    assert_eq!(report.usage.input_tokens, 21);
    assert_eq!(report.usage.output_tokens, 1);
    assert!(report.first_token.is_some());
    assert!(!report.complete);
    assert_eq!(report.end, BodyEnd::UpstreamError);
    assert!(reports.try_recv().is_none());
}

#[tokio::test]
async fn a_client_that_leaves_gets_what_was_seen_reported_once() {
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::Messages,
            r#"{"model":"m","stream":true,"messages":[]}"#,
        ),
        "text/event-stream",
        frames(&stream_of(ANTHROPIC)),
    )
    .await;
    let mut body = response.into_body();
    let _ = body.frame().await;
    drop(body);
    let report = reports.recv().await.unwrap_or_default();
    assert_eq!(report.end, BodyEnd::ClientGone);
    assert!(!report.complete);
    assert_eq!(report.usage.input_tokens, 21);
    assert!(reports.try_recv().is_none());
}

#[tokio::test]
async fn a_body_dropped_unpolled_reports_nothing() {
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(Endpoint::Messages, r#"{"model":"m","messages":[]}"#),
        "application/json",
        frames(&[Bytes::from_static(
            br#"{"usage":{"input_tokens":1,"output_tokens":1}}"#,
        )]),
    )
    .await;
    let handle = handle(&response);
    drop(response);
    assert_eq!(handle.report().await, None);
    assert!(reports.try_recv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_came_before_the_end_get_the_report() {
    let (response, _) = call(
        UsageExtractLayer::new(),
        request(Endpoint::Messages, r#"{"model":"m","messages":[]}"#),
        "application/json",
        frames(&[Bytes::from_static(
            br#"{"model":"m","usage":{"input_tokens":4,"output_tokens":9}}"#,
        )]),
    )
    .await;
    let handle = handle(&response);
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.report().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(handle.get().is_none(), "nothing before the body is read");
    response.into_body().collect().await.unwrap();
    for waiter in waiters {
        let report = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("every waiter is woken")
            .unwrap()
            .expect("a report");
        assert_eq!(report.usage.output_tokens, 9);
    }
    assert_eq!(handle.get().map(|r| r.usage.input_tokens), Some(4));
}

#[tokio::test]
async fn a_discarded_attempt_reports_nothing_even_when_read() {
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::Messages,
            r#"{"model":"m","stream":true,"messages":[]}"#,
        ),
        "text/event-stream",
        frames(&stream_of(ANTHROPIC)),
    )
    .await;
    let handle = handle(&response);
    let mut body = response.into_body();
    // A failover layer peeks at the first event, then tries elsewhere.
    let _ = body.frame().await;
    handle.discard();
    drop(body);
    assert_eq!(handle.report().await, None);
    assert!(reports.try_recv().is_none());
}

#[tokio::test]
async fn json_answers_are_read_whole_and_forwarded_untouched() {
    let doc = r#"{"id":"chatcmpl-1","model":"gpt-served","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#;
    let input = [
        Bytes::from(doc[..50].to_owned()),
        Bytes::from(doc[50..].to_owned()),
    ];
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, _) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::ChatCompletions,
            r#"{"model":"gpt","messages":[]}"#,
        ),
        "application/json",
        frames(&input),
    )
    .await;
    let (out, _) = drain(response.into_body()).await;
    assert_eq!(out, input);
    let report = reports.recv().await.unwrap_or_default();
    assert_eq!(
        report.usage,
        Usage {
            input_tokens: 10,
            output_tokens: 3,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 2
        }
    );
    assert!(!report.stream && report.complete);
    assert_eq!(report.first_token, None);
}

#[tokio::test]
async fn error_statuses_are_reported_without_usage() {
    let upstream = service_fn(|_: Request<Bytes>| async {
        let body = RelayBody::full(r#"{"type":"error","error":{"type":"overloaded_error"}}"#);
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(529).unwrap_or_default();
        Ok::<_, RelayError>(response)
    });
    let (sink, mut reports) = ChannelSink::new(8);
    let service = UsageExtractLayer::new().sink(sink).layer(upstream);
    let response = service
        .oneshot(request(
            Endpoint::Messages,
            r#"{"model":"m","messages":[]}"#,
        ))
        .await
        .unwrap_or_default();
    let _ = drain(response.into_body()).await;
    let report = reports.recv().await.unwrap_or_default();
    assert_eq!(report.status.as_u16(), 529);
    assert!(report.usage.is_zero());
}

#[tokio::test]
async fn chat_streams_get_include_usage_upstream_and_lose_the_extra_chunk() {
    let input = stream_of(CHAT);
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, seen) = call(
        UsageExtractLayer::new().sink(sink),
        request(
            Endpoint::ChatCompletions,
            r#"{"model":"gpt","stream":true,"messages":[]}"#,
        ),
        "text/event-stream",
        frames(&input),
    )
    .await;
    let sent = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|r| r.into_body())
        .unwrap_or_default();
    assert_eq!(
        &sent[..],
        br#"{"stream_options":{"include_usage":true},"model":"gpt","stream":true,"messages":[]}"#
    );
    let (out, _) = drain(response.into_body()).await;
    let text: String = out.iter().map(|b| String::from_utf8_lossy(b)).collect();
    let expected: String = [CHAT[0], CHAT[1], CHAT[2], CHAT[4]].concat();
    assert_eq!(text, expected);
    let report = reports.recv().await.unwrap_or_default();
    assert_eq!(report.usage.input_tokens, 8);
    assert_eq!(report.usage.cache_read_input_tokens, 32);
    assert!(report.complete);
}

#[tokio::test]
async fn chat_streams_that_asked_for_usage_pass_untouched() {
    let input = stream_of(CHAT);
    let body =
        r#"{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let (sink, mut reports) = ChannelSink::new(8);
    let (response, seen) = call(
        UsageExtractLayer::new().sink(sink),
        request(Endpoint::ChatCompletions, body),
        "text/event-stream",
        frames(&input),
    )
    .await;
    let sent = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|r| r.into_body())
        .unwrap_or_default();
    assert_eq!(&sent[..], body.as_bytes());
    let (out, _) = drain(response.into_body()).await;
    assert_eq!(out, input);
    assert_eq!(
        reports
            .recv()
            .await
            .unwrap_or_default()
            .usage
            .cache_read_input_tokens,
        32
    );
}

#[tokio::test]
async fn include_usage_is_not_injected_when_turned_off() {
    let body = r#"{"model":"gpt","stream":true,"messages":[]}"#;
    let (_, seen) = call(
        UsageExtractLayer::new().include_usage(IncludeUsage::AsRequested),
        request(Endpoint::ChatCompletions, body),
        "text/event-stream",
        frames(&stream_of(CHAT)),
    )
    .await;
    let sent = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|r| r.into_body())
        .unwrap_or_default();
    assert_eq!(&sent[..], body.as_bytes());
}

// === any split ===

/// Cuts `stream` at `points`.
fn cut(stream: &[u8], mut points: Vec<usize>) -> Vec<Bytes> {
    points.iter_mut().for_each(|p| *p %= stream.len() + 1);
    points.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(Bytes::copy_from_slice(&stream[at..p]));
        at = p;
    }
    out.push(Bytes::copy_from_slice(&stream[at..]));
    out
}

/// Runs `frames` through the layer; returns the bytes out and the report.
fn run_split(
    endpoint: Endpoint,
    request_body: &str,
    frames_in: Vec<Bytes>,
) -> (Vec<u8>, UsageReport) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let Ok(runtime) = runtime else {
        panic!("runtime");
    };
    runtime.block_on(async {
        let (sink, mut reports) = ChannelSink::new(8);
        let (response, _) = call(
            UsageExtractLayer::new().sink(sink),
            request(endpoint, request_body),
            "text/event-stream",
            frames(&frames_in),
        )
        .await;
        let (out, _) = drain(response.into_body()).await;
        let report = reports.recv().await.unwrap_or_default();
        (out.concat(), report)
    })
}

/// The parts of a report that do not depend on timing.
fn essentials(r: &UsageReport) -> (Usage, Option<String>, bool, bool, Option<String>) {
    (
        r.usage,
        r.served_model.clone(),
        r.complete,
        r.first_token.is_some(),
        r.response_id.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_of_an_anthropic_stream_gives_the_same_usage_and_bytes(
        points in prop::collection::vec(any::<usize>(), 0..24),
        crlf in any::<bool>(),
    ) {
        let mut whole = ANTHROPIC.concat();
        if crlf {
            whole = whole.replace('\n', "\r\n");
        }
        let body = r#"{"model":"m","stream":true,"messages":[]}"#;
        let (out, report) = run_split(Endpoint::Messages, body, vec![Bytes::from(whole.clone())]);
        prop_assert_eq!(&out, whole.as_bytes());
        prop_assert_eq!(report.usage.output_tokens, 2);
        let (split_out, split_report) = run_split(Endpoint::Messages, body, cut(whole.as_bytes(), points));
        prop_assert_eq!(&split_out, whole.as_bytes());
        prop_assert_eq!(essentials(&split_report), essentials(&report));
    }

    #[test]
    fn any_split_of_a_chat_stream_strips_exactly_the_usage_chunk(
        points in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let whole = CHAT.concat();
        let expected = [CHAT[0], CHAT[1], CHAT[2], CHAT[4]].concat();
        let body = r#"{"model":"gpt","stream":true,"messages":[]}"#;
        let (out, report) = run_split(Endpoint::ChatCompletions, body, cut(whole.as_bytes(), points));
        prop_assert_eq!(String::from_utf8_lossy(&out), expected);
        prop_assert_eq!(report.usage.cache_read_input_tokens, 32);
        prop_assert!(report.complete);
    }
}
