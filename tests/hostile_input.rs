//! Hostile clients against the real `examples/proxy` binary: oversized
//! heads, slowloris, bytes that are not header text, deep JSON, bodies
//! that lie about their length, HTTP/2 rapid reset and idle connections
//! past the cap. Each gets a clear error or a closed connection, nothing
//! of it reaches the upstream, and the proxy goes on serving others.
//!
//! Malformed HTTP/1 goes over raw TCP; HTTP/2 is written frame by frame
//! (h2c, prior knowledge) so the test, not a client library, decides
//! what goes on the wire.

mod support;

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_llm_relay::mock::MockUpstream;

use support::proxy_process::{ConfigFile, Proxy};
use support::{account, messages_body};

const KEY: &str = "sk-relay-hostile";
const UPSTREAM_KEY: &str = "sk-ant-hostile-1";

/// A proxy in front of `mock` whose config starts with `settings`
/// (top-level keys), with one client key and one account.
fn proxy(mock: &MockUpstream, settings: &str) -> (Proxy, ConfigFile) {
    let config = ConfigFile::new(&format!(
        "{settings}\n[[keys]]\nkey = \"{KEY}\"\nname = \"hostile\"\n{}",
        account(
            "claude-1",
            "anthropic",
            "api_key",
            UPSTREAM_KEY,
            &mock.base_url()
        )
    ));
    (Proxy::start(config.path(), &[]), config)
}

/// A normal request on a fresh connection is answered 200 by the upstream.
async fn assert_serves(proxy: &Proxy) {
    let answer = support::send(proxy.messages(KEY, false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// An HTTP/1.1 POST to /v1/messages: `headers` are whole lines without
/// their CRLF, and content-length is the body's unless given there.
fn post(headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut req = b"POST /v1/messages HTTP/1.1\r\nhost: relay\r\n".to_vec();
    let mut has_length = false;
    for line in headers {
        has_length |= line.to_ascii_lowercase().starts_with(b"content-length:");
        req.extend_from_slice(line);
        req.extend_from_slice(b"\r\n");
    }
    if !has_length {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

/// Reads until the proxy closes (EOF or reset) or `within` passes.
/// Returns the bytes and whether it closed.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// Sends `bytes` on a new connection (a write the proxy cuts short is
/// fine) and reads what comes back until it closes.
async fn exchange(proxy: &Proxy, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy.addr.as_str())
        .await
        .expect("connect");
    let _ = stream.write_all(bytes).await;
    let (got, closed) = read_to_close(&mut stream, Duration::from_secs(15)).await;
    assert!(closed, "the proxy left the connection open: {}", text(&got));
    got
}

/// The status codes of every response in `raw`, in order.
fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, m)| text[at + m.len()..].get(..3)?.parse().ok())
        .collect()
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[tokio::test]
async fn a_request_head_past_header_limit_bytes_is_431() {
    let mock = MockUpstream::start().await.unwrap();
    // 8 KiB: far under hyper's own ~400 KB, so a 431 shows the setting works.
    let (proxy, _config) = proxy(&mock, "header_limit_bytes = 8192");
    let body = messages_body("claude-sonnet-4-5", false);
    let key = format!("x-api-key: {KEY}");
    let big = format!("x-padding: {}", "a".repeat(16 * 1024));

    let raw = exchange(
        &proxy,
        &post(&[key.as_bytes(), big.as_bytes()], body.as_bytes()),
    )
    .await;
    // hyper writes its 431 before closing; the reset that may follow
    // (our unread bytes) comes after the answer on the wire.
    assert_eq!(statuses(&raw), [431], "{}", text(&raw));

    // Many small headers: past hyper's count of 100, also 431.
    let many: Vec<String> = (0..400)
        .map(|i| format!("x-h{i}: {}", "b".repeat(40)))
        .collect();
    let mut lines: Vec<&[u8]> = vec![key.as_bytes()];
    lines.extend(many.iter().map(|l| l.as_bytes()));
    let raw = exchange(&proxy, &post(&lines, body.as_bytes())).await;
    assert_eq!(statuses(&raw), [431], "{}", text(&raw));

    // HTTP/2: the header list past SETTINGS_MAX_HEADER_LIST_SIZE.
    let mut h2 = H2::connect(&proxy).await;
    let value = "c".repeat(10 * 1024);
    h2.send_headers(
        1,
        &[
            ("x-api-key", KEY.as_bytes()),
            ("x-padding", value.as_bytes()),
        ],
        true,
    )
    .await;
    let answer = h2.answer(1).await;
    assert!(
        matches!(
            answer,
            H2Answer::Reset | H2Answer::GoAway | H2Answer::Closed
        ) || matches!(answer, H2Answer::Headers(ref block) if block.first() != Some(&0x88)),
        "an oversized HTTP/2 header list was answered {answer:?}"
    );

    assert_eq!(
        mock.request_count(),
        0,
        "an oversized head reached the upstream"
    );
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn slowloris_is_cut_off_at_the_idle_timeout_while_others_are_served() {
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(&mock, "idle_timeout_secs = 1");
    let addr = proxy.addr.clone();

    // One header byte every 200 ms, forever; one that never sends a byte;
    // one that sends the start of the HTTP/2 preface, then nothing.
    let dripping = tokio::spawn(trickle(
        addr.clone(),
        b"POST /v1/messages HTTP/1.1\r\nx-a: ".to_vec(),
        true,
    ));
    let silent = tokio::spawn(trickle(addr.clone(), Vec::new(), false));
    let preface = tokio::spawn(trickle(addr.clone(), b"PRI * HT".to_vec(), false));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_serves(&proxy).await;

    for (name, client) in [
        ("dripping", dripping),
        ("silent", silent),
        ("preface", preface),
    ] {
        let (cut_after, sent) = client.await.unwrap();
        let cut_after = cut_after.unwrap_or_else(|| panic!("{name}: never cut off"));
        assert!(
            cut_after >= Duration::from_millis(900),
            "{name}: cut off after {cut_after:?}, before the 1 s timeout"
        );
        assert!(
            cut_after <= Duration::from_secs(6),
            "{name}: cut off only after {cut_after:?}"
        );
        if name == "dripping" {
            assert!(sent >= 3, "{name}: only {sent} bytes went out");
        }
    }
    assert_eq!(
        mock.request_count(),
        1,
        "only the normal request went upstream"
    );
    assert_serves(&proxy).await;
}

/// Sends `start`, then (with `drip`) one byte every 200 ms, until the
/// proxy closes or 10 s pass. Returns when it closed (from connect) and
/// how many dripped bytes went out.
async fn trickle(addr: String, start: Vec<u8>, drip: bool) -> (Option<Duration>, usize) {
    let began = Instant::now();
    let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
    stream.write_all(&start).await.expect("first bytes");
    let (mut reader, mut writer) = stream.split();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    while began.elapsed() < Duration::from_secs(10) {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (Some(began.elapsed()), sent),
                // hyper answers nothing to a head timeout; anything else
                // is read past and the close awaited.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if drip {
                    if writer.write_all(b"a").await.is_err() {
                        return (Some(began.elapsed()), sent);
                    }
                    sent += 1;
                }
            }
        }
    }
    (None, sent)
}

#[tokio::test]
async fn header_values_that_are_not_text_never_reach_the_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(&mock, "");
    let body = messages_body("claude-sonnet-4-5", false);
    let body = body.as_bytes();
    let key = format!("x-api-key: {KEY}");
    let key = key.as_bytes();

    // A key that is not UTF-8, in either header: 401 in Anthropic format.
    for line in [
        &b"x-api-key: sk-relay-\xff\xfe"[..],
        b"authorization: Bearer sk-relay-\xc3\x28",
        b"x-api-key: \xffsk-relay-hostile",
    ] {
        let raw = exchange(&proxy, &post(&[line, b"connection: close"], body)).await;
        assert_eq!(statuses(&raw), [401], "{}", text(&raw));
        assert!(
            text(&raw).contains("authentication_error"),
            "{}",
            text(&raw)
        );
    }

    // Bytes hyper refuses in a head (a bare CR, a NUL, an obsolete folded
    // line): 400 or closed, even with a good key.
    for line in [
        &b"x-note: a\rx-injected: 1"[..],
        b"x-note: a\x00b",
        b"x-note: a\r\n x-injected: 1",
        b"x-api-key: sk-relay-\rhostile",
    ] {
        let raw = exchange(&proxy, &post(&[key, line], body)).await;
        let got = statuses(&raw);
        assert!(got.is_empty() || got == [400], "{got:?}: {}", text(&raw));
    }
    assert_eq!(mock.request_count(), 0, "a bad head reached the upstream");

    // HTTP/2 carries bytes as they are: CR LF and NUL inside a value of a
    // header the allow-list would forward.
    for value in [&b"a\r\nx-injected: 1"[..], b"a\x00b", b"a\nb"] {
        let mut h2 = H2::connect(&proxy).await;
        h2.send_headers(
            1,
            &[("x-api-key", KEY.as_bytes()), ("user-agent", value)],
            false,
        )
        .await;
        h2.send_data(1, body, true).await;
        let answer = h2.answer(1).await;
        assert!(
            matches!(
                answer,
                H2Answer::Reset | H2Answer::GoAway | H2Answer::Closed
            ),
            "{value:?} was answered {answer:?}"
        );
    }
    assert_eq!(
        mock.request_count(),
        0,
        "a bad HTTP/2 header reached the upstream"
    );

    // A bare LF ends a line (RFC 9112 lets servers accept it): the
    // "injected" header is a header of its own, which the allow-list
    // keeps from the upstream.
    let raw = exchange(
        &proxy,
        &post(
            &[key, b"user-agent: a\nx-injected: 1", b"connection: close"],
            body,
        ),
    )
    .await;
    assert_eq!(statuses(&raw), [200], "{}", text(&raw));
    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert!(!received[0].headers.contains_key("x-injected"));
    assert_eq!(received[0].credential.as_deref(), Some(UPSTREAM_KEY));
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn json_nested_ten_thousand_deep_is_a_400_in_anthropic_format() {
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(&mock, "");
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":{}1{}}}]}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let answer = support::send(
        Request::post(proxy.url("/v1/messages"))
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "invalid_request_error", "{json}");
    assert_eq!(mock.request_count(), 0);
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_never_reaches_the_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(&mock, "idle_timeout_secs = 1");
    let body = messages_body("claude-sonnet-4-5", false);
    let key = format!("x-api-key: {KEY}");
    let head = post(
        &[key.as_bytes(), b"content-length: 100000"],
        &body.as_bytes()[..20],
    );

    // The client gives up: half of the body, then its end of the stream.
    let mut closing = TcpStream::connect(proxy.addr.as_str()).await.unwrap();
    closing.write_all(&head).await.unwrap();
    closing.shutdown().await.unwrap();
    let (raw, closed) = read_to_close(&mut closing, Duration::from_secs(10)).await;
    assert!(closed, "{}", text(&raw));
    let got = statuses(&raw);
    assert!(got.is_empty() || got == [400], "{got:?}: {}", text(&raw));

    // The client stalls: the body's idle limit ends it, others are served.
    let began = Instant::now();
    let mut stalled = TcpStream::connect(proxy.addr.as_str()).await.unwrap();
    stalled.write_all(&head).await.unwrap();
    assert_serves(&proxy).await;
    let (raw, closed) = read_to_close(&mut stalled, Duration::from_secs(8)).await;
    assert!(closed, "a stalled body kept its connection: {}", text(&raw));
    assert_eq!(statuses(&raw), [400], "{}", text(&raw));
    assert!(
        text(&raw).contains("invalid_request_error"),
        "{}",
        text(&raw)
    );
    assert!(began.elapsed() >= Duration::from_millis(900));

    // The same over HTTP/2: the stream is answered 400 (static index 12).
    let mut h2 = H2::connect(&proxy).await;
    h2.send_headers(1, &[("x-api-key", KEY.as_bytes())], false)
        .await;
    h2.send_data(1, &body.as_bytes()[..20], false).await;
    let answer = h2.answer(1).await;
    assert!(
        matches!(answer, H2Answer::Headers(ref block) if block.first() == Some(&0x8c)),
        "a stalled HTTP/2 body was answered {answer:?}"
    );

    assert_eq!(
        mock.request_count(),
        1,
        "only the normal request went upstream"
    );
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn bytes_past_content_length_are_a_request_of_their_own_and_must_authenticate() {
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(&mock, "");
    let body = messages_body("claude-sonnet-4-5", false);
    let key = format!("x-api-key: {KEY}");

    // A second request, without a key, hidden after the first's body.
    let smuggled = post(&[&b"connection: close"[..]], body.as_bytes());
    let mut both = body.clone().into_bytes();
    both.extend_from_slice(&smuggled);
    let length = format!("content-length: {}", body.len());
    let raw = exchange(&proxy, &post(&[key.as_bytes(), length.as_bytes()], &both)).await;
    assert_eq!(statuses(&raw), [200, 401], "{}", text(&raw));
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.received()[0].body, body.as_bytes());

    // A length that cuts the JSON: the cut body is a 400, and the rest
    // (ended as a head would be) is no request at all.
    let length = format!("content-length: {}", body.len() - 10);
    let rest = format!("{body}\r\n\r\n");
    let raw = exchange(
        &proxy,
        &post(&[key.as_bytes(), length.as_bytes()], rest.as_bytes()),
    )
    .await;
    let got = statuses(&raw);
    assert_eq!(got.first(), Some(&400), "{}", text(&raw));
    assert!(got.iter().all(|s| *s >= 400), "{got:?}: {}", text(&raw));
    assert_eq!(mock.request_count(), 1, "a cut body reached the upstream");
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn http2_rapid_reset_leaves_the_proxy_serving_and_the_upstream_unloaded() {
    const STREAMS: u32 = 400;
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(&mock, "");
    let body = messages_body("claude-sonnet-4-5", false);

    // Each stream: a whole request, then at once RST_STREAM(CANCEL); all
    // in one write. 400 small bodies stay inside the initial 64 KiB
    // connection window.
    let mut h2 = H2::connect(&proxy).await;
    let mut burst = Vec::new();
    for i in 0..STREAMS {
        let id = 1 + 2 * i;
        let block = header_block(&h2.authority, &[("x-api-key", KEY.as_bytes())]);
        burst.extend(frame(HEADERS, END_HEADERS, id, &block));
        burst.extend(frame(DATA, END_STREAM, id, body.as_bytes()));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let _ = h2.stream.write_all(&burst).await;
    let ended = h2.drain(Duration::from_secs(3)).await;

    assert_serves(&proxy).await;
    let upstream = mock.request_count() - 1;
    eprintln!(
        "rapid reset: {upstream} of {STREAMS} reached the upstream; connection ended by {ended:?}"
    );
    assert!(
        upstream <= STREAMS as usize / 4,
        "{upstream} of {STREAMS} cancelled streams reached the upstream"
    );
    assert!(
        support::eventually(|| mock.in_flight(UPSTREAM_KEY) == 0).await,
        "cancelled requests still in flight upstream"
    );
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn connections_past_max_connections_are_refused_and_room_comes_back() {
    const CAP: usize = 50;
    let mock = MockUpstream::start().await.unwrap();
    let (proxy, _config) = proxy(
        &mock,
        &format!("max_connections = {CAP}\nidle_timeout_secs = 60"),
    );

    let mut idle = Vec::new();
    for _ in 0..CAP + 10 {
        idle.push(
            TcpStream::connect(proxy.addr.as_str())
                .await
                .expect("the kernel accepts"),
        );
    }
    // The ten past the cap are answered "overloaded" in their API's format
    // and closed; a silent one is closed with nothing sent.
    let began = Instant::now();
    let (silent, asking) = idle[CAP..].split_first_mut().expect("ten past the cap");
    for (i, stream) in asking.iter_mut().enumerate() {
        let openai = i % 2 == 1;
        let path: &[u8] = if openai {
            b"POST /v1/chat/completions HTTP/1.1\r\n"
        } else {
            b"POST /v1/messages HTTP/1.1\r\n"
        };
        let mut request = path.to_vec();
        request.extend_from_slice(b"host: relay\r\ncontent-length: 2\r\n\r\n{}");
        stream.write_all(&request).await.expect("send");
        let (raw, closed) = read_to_close(stream, Duration::from_secs(5)).await;
        assert!(closed, "a refused connection stayed open: {}", text(&raw));
        let raw = text(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("retry-after: 1"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
        if openai {
            assert!(head.starts_with("http/1.1 503"), "{head}");
            assert_eq!(json["error"]["code"], "overloaded", "{json}");
        } else {
            assert!(head.starts_with("http/1.1 529"), "{head}");
            assert_eq!(json["type"], "error", "{json}");
            assert_eq!(json["error"]["type"], "overloaded_error", "{json}");
        }
    }
    let (raw, closed) = read_to_close(silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection past the cap stayed open");
    assert!(raw.is_empty(), "{}", text(&raw));
    assert!(began.elapsed() < Duration::from_secs(5));
    // The first fifty are still open (the proxy took them before those).
    for stream in &mut idle[..CAP] {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "an idle connection under the cap ended: {read:?}"
        );
    }
    // A client arriving now is refused at once, not left waiting.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        support::send(proxy.messages(KEY, false)),
    )
    .await
    .expect("a refusal, not a wait");
    assert_eq!(refused.status, 529, "{}", refused.text());
    assert_eq!(refused.json()["error"]["type"], "overloaded_error");

    drop(idle);
    let proxy = &proxy;
    let served = support::eventually_async(Duration::from_secs(10), || async move {
        matches!(
            support::client().request(proxy.messages(KEY, false)).await,
            Ok(response) if response.status() == 200
        )
    })
    .await;
    assert!(served, "no room after the idle connections closed");
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn an_http2_connection_without_requests_is_closed_at_the_idle_timeout_though_it_answers_pings(
) {
    // Streams of about 2.4 s: longer than the idle timeout.
    let mock = MockUpstream::builder()
        .event_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let (proxy, _config) = proxy(&mock, "idle_timeout_secs = 1");

    // A client that never sends a request but answers every ping.
    let mut quiet = H2::connect(&proxy).await;
    let began = Instant::now();
    let ended = quiet.keep_alive_until_closed(Duration::from_secs(6)).await;
    assert!(
        matches!(ended, H2Answer::GoAway),
        "an idle HTTP/2 connection was not closed with GOAWAY: {ended:?}"
    );
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?} for a 1 s idle timeout"
    );

    // A stream that outlasts the idle timeout is not cut: the connection
    // is idle only once it ends.
    let mut busy = H2::connect(&proxy).await;
    let block_headers: &[(&str, &[u8])] = &[("x-api-key", KEY.as_bytes())];
    let body = messages_body("claude-sonnet-4-5", true);
    busy.send_headers(1, block_headers, false).await;
    busy.send_data(1, body.as_bytes(), true).await;
    let began = Instant::now();
    let mut received = Vec::new();
    let mut stream_ended = None;
    let mut goaway = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while goaway.is_none() {
        match tokio::time::timeout_at(deadline, busy.read_frame()).await {
            Ok(Ok((DATA, flags, 1, payload))) => {
                received.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    stream_ended = Some(began.elapsed());
                }
            }
            Ok(Ok((PING, 0, _, payload))) => busy.send_frame(PING, ACK, 0, &payload).await,
            Ok(Ok((SETTINGS, 0, _, _))) => busy.send_frame(SETTINGS, ACK, 0, &[]).await,
            Ok(Ok((GOAWAY, ..))) | Ok(Err(_)) => goaway = Some(began.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection stayed open 1 s after its stream"),
        }
    }
    let stream_ended = stream_ended.expect("the stream ended before the connection closed");
    assert!(
        stream_ended > Duration::from_secs(2),
        "the stream took {stream_ended:?}"
    );
    assert!(
        text(&received).contains("message_stop"),
        "{}",
        text(&received)
    );
    assert!(
        goaway.unwrap_or_default() >= stream_ended,
        "closed at {goaway:?}, before the stream ended at {stream_ended:?}"
    );
}

// === HTTP/2 by hand ===

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame fits");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with a `prefix_bits` prefix, OR-ed into `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut n: usize) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// An HPACK string literal, not Huffman-coded.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// The header block of `POST /v1/messages` plus `headers`, every field a
/// literal that is not indexed, so each block stands alone.
fn header_block(authority: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    // :method POST and :scheme http from the static table.
    let mut b = vec![0x83, 0x86];
    // :path (static name 4) and :authority (static name 1), literal values.
    hpack_int(&mut b, 0x00, 4, 4);
    hpack_str(&mut b, b"/v1/messages");
    hpack_int(&mut b, 0x00, 4, 1);
    hpack_str(&mut b, authority.as_bytes());
    for (name, value) in [("content-type", &b"application/json"[..])]
        .iter()
        .chain(headers)
    {
        b.push(0x00);
        hpack_str(&mut b, name.as_bytes());
        hpack_str(&mut b, value);
    }
    b
}

/// How the proxy answered a stream.
#[derive(Debug)]
enum H2Answer {
    /// A HEADERS frame: its raw (HPACK) block.
    Headers(Vec<u8>),
    Reset,
    GoAway,
    Closed,
    Nothing,
}

/// A raw HTTP/2 client connection.
struct H2 {
    stream: TcpStream,
    authority: String,
}

impl H2 {
    async fn connect(proxy: &Proxy) -> H2 {
        let mut stream = TcpStream::connect(proxy.addr.as_str())
            .await
            .expect("connect");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.expect("preface");
        H2 {
            stream,
            authority: proxy.addr.clone(),
        }
    }

    async fn send_headers(&mut self, id: u32, headers: &[(&str, &[u8])], end_stream: bool) {
        let block = header_block(&self.authority, headers);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        let _ = self
            .stream
            .write_all(&frame(HEADERS, flags, id, &block))
            .await;
    }

    async fn send_data(&mut self, id: u32, data: &[u8], end_stream: bool) {
        let flags = if end_stream { END_STREAM } else { 0 };
        let _ = self.stream.write_all(&frame(DATA, flags, id, data)).await;
    }

    /// The next frame: kind, flags, stream, payload.
    async fn read_frame(&mut self) -> io::Result<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).await?;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Ok((head[3], head[4], id, payload))
    }

    /// The first answer on stream `id`, within 10 s.
    async fn answer(&mut self, id: u32) -> H2Answer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Err(_) => return H2Answer::Nothing,
                Ok(Err(_)) => return H2Answer::Closed,
                Ok(Ok((GOAWAY, ..))) => return H2Answer::GoAway,
                Ok(Ok((RST_STREAM, _, s, _))) if s == id => return H2Answer::Reset,
                Ok(Ok((HEADERS, _, s, block))) if s == id => return H2Answer::Headers(block),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn send_frame(&mut self, kind: u8, flags: u8, id: u32, payload: &[u8]) {
        let _ = self
            .stream
            .write_all(&frame(kind, flags, id, payload))
            .await;
    }

    /// Acknowledges settings and pings, as a live client does, until the
    /// proxy says GOAWAY or closes, or `within` passes.
    async fn keep_alive_until_closed(&mut self, within: Duration) -> H2Answer {
        self.read_until_closed(within, true).await
    }

    /// Reads frames for `within`; says how the connection ended, if it did.
    async fn drain(&mut self, within: Duration) -> H2Answer {
        self.read_until_closed(within, false).await
    }

    /// Reads frames until GOAWAY, a close, or `within`; acknowledges
    /// settings and pings when `ack` is set.
    async fn read_until_closed(&mut self, within: Duration, ack: bool) -> H2Answer {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Err(_) => return H2Answer::Nothing,
                Ok(Err(_)) => return H2Answer::Closed,
                Ok(Ok((GOAWAY, ..))) => return H2Answer::GoAway,
                Ok(Ok((PING, 0, _, payload))) if ack => {
                    self.send_frame(PING, ACK, 0, &payload).await
                }
                Ok(Ok((SETTINGS, 0, _, _))) if ack => self.send_frame(SETTINGS, ACK, 0, &[]).await,
                Ok(Ok(_)) => {}
            }
        }
    }
}
