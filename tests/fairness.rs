//! One client key flooding the relay gets no more than its own limits;
//! another key on the same accounts keeps its latency.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::{chat_body, messages_body, send, Answer, Harness};
use tower_llm_relay::config::Config;
use tower_llm_relay::mock::MockUpstream;

const FLOOD_KEY: &str = "sk-relay-flood";
const CALM_KEY: &str = "sk-relay-calm";

/// Two keys on one shared account with room for both: the flooding key
/// may hold 2 requests in flight, the account 6.
fn two_keys(flood_limits: &str) -> String {
    format!(
        "[[keys]]\nkey = \"{FLOOD_KEY}\"\nname = \"flood\"\n{flood_limits}\n\
         [[keys]]\nkey = \"{CALM_KEY}\"\nname = \"calm\"\nconcurrency = 4\n\
         [[accounts]]\nid = \"shared\"\nplatform = \"anthropic\"\ntype = \"api_key\"\n\
         api_key = \"sk-ant-shared\"\nbase_url = \"{{base}}\"\nconcurrency = 6\n"
    )
}

async fn start(mock: MockUpstream, flood_limits: &str) -> Harness {
    let toml = two_keys(flood_limits).replace("{base}", &mock.base_url());
    let config = Config::from_toml(&toml, "test.toml", |_| None).expect("test config is valid");
    Harness::serve(mock, config.relay_builder()).await
}

fn request(h: &Harness, path: &str, key: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(h.url(path))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request builds")
}

/// A 429 in Anthropic's format with a `retry-after` of 1 s or more.
fn assert_anthropic_429(answer: &Answer) {
    assert_eq!(answer.status, 429, "{}", answer.text());
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    let json = answer.json();
    assert_eq!(json["type"], "error", "{json}");
    assert_eq!(json["error"]["type"], "rate_limit_error", "{json}");
}

/// The calm key's latency for `n` non-stream requests, one after another.
async fn calm_latencies(h: &Harness, n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = send(request(
            h,
            "/v1/messages",
            CALM_KEY,
            messages_body("claude-sonnet-4-5", false),
        ))
        .await;
        latencies.push(started.elapsed());
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    latencies
}

fn p50(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_key_gets_its_concurrency_and_the_other_keeps_its_latency() {
    // Streams of about 1.5 s; non-stream answers at once.
    let mock = MockUpstream::builder()
        .event_interval(Duration::from_millis(150))
        .start()
        .await
        .expect("mock upstream starts");
    let h = Arc::new(start(mock, "concurrency = 2").await);
    let alone = calm_latencies(&h, 20).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for _ in 0..40 {
        let (h, stop, served, refused) = (h.clone(), stop.clone(), served.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            // One client (and its kept-alive connections) per worker.
            let client = support::client();
            while !stop.load(Ordering::SeqCst) {
                let req = request(
                    &h,
                    "/v1/messages",
                    FLOOD_KEY,
                    messages_body("claude-sonnet-4-5", true),
                );
                let response = tokio::time::timeout(Duration::from_secs(20), client.request(req))
                    .await
                    .expect("an answer within 20 s")
                    .expect("the request succeeds");
                if response.status() == 200 {
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .expect("a whole stream");
                    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                    assert!(text.contains("message_stop"), "{text}");
                    served.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let (parts, body) = response.into_parts();
                let body = body.collect().await.expect("a whole body").to_bytes();
                assert_anthropic_429(&Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                });
                refused.fetch_add(1, Ordering::SeqCst);
                // Hammer, ignoring retry-after, but leave the cores some air.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Streams at the mock are the flooding key's alone (the calm key
    // sends none): sample them for the whole flood.
    let peak_streams = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (h, stop, peak) = (h.clone(), stop.clone(), peak_streams.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(h.mock.open_streams(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    assert!(
        support::eventually(|| h.mock.open_streams() == 2 && refused.load(Ordering::SeqCst) >= 80)
            .await,
        "the flood holds its 2 streams and is being refused"
    );

    let flooded = calm_latencies(&h, 30).await;
    stop.store(true, Ordering::SeqCst);
    for worker in flood {
        worker.await.expect("a flood worker");
    }
    sampler.await.expect("the sampler");

    let (served, refused) = (
        served.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    assert!(served >= 2, "{served} flood streams served");
    assert!(refused >= 80, "{refused} flood requests refused");
    assert_eq!(
        peak_streams.load(Ordering::SeqCst),
        2,
        "flood streams in flight at most"
    );
    assert!(
        h.mock.peak_in_flight("sk-ant-shared") <= 3,
        "upstream in flight: 2 streams plus one calm request"
    );
    let (alone, flooded) = (p50(&alone), p50(&flooded));
    eprintln!(
        "calm p50 {alone:?} alone, {flooded:?} flooded; flood: {served} served, {refused} refused"
    );
    assert!(
        flooded < alone * 3 + Duration::from_millis(100),
        "calm p50 {flooded:?} under the flood, {alone:?} alone"
    );
}

#[tokio::test]
async fn the_request_past_a_keys_rpm_gets_429_in_its_apis_format() {
    let h = start(MockUpstream::start().await.expect("mock"), "rpm = 5").await;
    let message = || {
        request(
            &h,
            "/v1/messages",
            FLOOD_KEY,
            messages_body("claude-sonnet-4-5", false),
        )
    };
    for n in 1..=5 {
        let answer = send(message()).await;
        assert_eq!(answer.status, 200, "request {n}: {}", answer.text());
    }
    assert_anthropic_429(&send(message()).await);

    let chat = send(request(
        &h,
        "/v1/chat/completions",
        FLOOD_KEY,
        chat_body("gpt-4o", false),
    ))
    .await;
    assert_eq!(chat.status, 429, "{}", chat.text());
    assert!(chat.headers.contains_key("retry-after"));
    let json = chat.json();
    assert_eq!(json["error"]["code"], "rate_limit_exceeded", "{json}");
    assert!(json.get("type").is_none(), "OpenAI format: {json}");

    // Another key is not held to it.
    let calm = send(request(
        &h,
        "/v1/messages",
        CALM_KEY,
        messages_body("claude-sonnet-4-5", false),
    ))
    .await;
    assert_eq!(calm.status, 200, "{}", calm.text());
    assert_eq!(
        h.mock.request_count(),
        6,
        "refused requests never went upstream"
    );
}
