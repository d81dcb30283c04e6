//! Fuzz target: the Bedrock event-stream decoder, through
//! `EventStreamBody`, the body that turns a Bedrock stream into Anthropic
//! SSE (the decoder is crate-private; this body is its one user). On any
//! bytes in any split it never panics, and what the client gets (the SSE
//! bytes, and whether the body ends in an error) does not depend on the
//! split; what it sends is well-formed SSE; it reads no further into a
//! frame than the frame's announced length (16 MiB at most), so a broken
//! length cannot make it buffer without bound. Valid frames (made by
//! `encode_frame`) split anywhere give exactly the events they carry; a
//! corrupt checksum or a stream cut inside a frame ends the body with an
//! error after the events before it. See `support/fuzz.rs` for the driver
//! and its environment variables.

mod support;

use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use base64::Engine as _;
use bytes::Bytes;
use http_body::{Body, Frame};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::fuzz::fuzz;
use tower_llm_relay::bedrock::{encode_frame, EventStreamBody};
use tower_llm_relay::RelayBody;

/// The model the client asked for, named in `message_start`.
const MODEL: &str = "claude-sonnet-4-5";
/// AWS's cap on one message, which the decoder enforces.
const MAX_MESSAGE: u64 = 16 * 1024 * 1024;
/// Bedrock's metrics key, which the body removes.
const METRICS: &str = "amazon-bedrock-invocationMetrics";

// === driving the body ===

/// What the client got.
#[derive(Debug, PartialEq, Eq)]
struct Output {
    sse: Vec<u8>,
    failed: bool,
}

/// Reads `body` to its end (its inner body is never pending), checking
/// that it ends right after an error.
fn drain(body: EventStreamBody) -> Result<Output, TestCaseError> {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut sse = Vec::new();
    let mut polls = 0;
    loop {
        polls += 1;
        prop_assert!(polls < 1_000_000, "the body never ends");
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Pending => prop_assert!(false, "pending on a ready inner body"),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => sse.extend_from_slice(&data),
                Err(_) => prop_assert!(false, "a trailers frame"),
            },
            Poll::Ready(Some(Err(_))) => {
                prop_assert!(
                    matches!(body.as_mut().poll_frame(&mut cx), Poll::Ready(None)),
                    "the body goes on after its error"
                );
                return Ok(Output { sse, failed: true });
            }
            Poll::Ready(None) => {
                prop_assert!(body.is_end_stream());
                return Ok(Output { sse, failed: false });
            }
        }
    }
}

/// The body of `stream` arriving in pieces that end at `cuts`.
fn body_of(stream: &[u8], cuts: &[usize]) -> EventStreamBody {
    let stream = Bytes::copy_from_slice(stream);
    let mut pieces = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        let to = to.clamp(from, stream.len());
        pieces.push(Ok(stream.slice(from..to)));
        from = to;
    }
    EventStreamBody::new(RelayBody::from_frames(pieces), MODEL)
}

/// Checks that `sse` is a run of `event: <name>\ndata: <JSON>\n\n`
/// events, each on its own two lines.
fn well_formed(sse: &[u8]) -> Result<(), TestCaseError> {
    let text = std::str::from_utf8(sse).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    for event in text.split_terminator("\n\n") {
        let lines: Vec<&str> = event.split('\n').collect();
        prop_assert_eq!(
            lines.len(),
            2,
            "one event line and one data line: {:?}",
            event
        );
        let name = lines[0].strip_prefix("event: ");
        prop_assert!(
            name.is_some_and(|n| !n.is_empty() && !n.contains('\r')),
            "{event:?}"
        );
        let data = lines[1].strip_prefix("data: ");
        prop_assert!(data.is_some_and(|d| !d.contains('\r')), "{event:?}");
        let data = data.unwrap_or_default();
        let value: Result<Value, _> = serde_json::from_str(data);
        prop_assert!(value.is_ok(), "data is not JSON: {event:?}");
    }
    Ok(())
}

/// Checks the properties every input must have, and returns what the
/// client got from the unsplit stream.
fn any_split(stream: &[u8], cuts: &[usize]) -> Result<Output, TestCaseError> {
    let whole = drain(body_of(stream, &[]))?;
    let split = drain(body_of(stream, cuts))?;
    prop_assert_eq!(&whole, &split, "cuts at {:?}", cuts);
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    prop_assert_eq!(&whole, &drain(body_of(stream, &bytewise))?, "byte by byte");
    well_formed(&whole.sse)?;
    Ok(whole)
}

fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..12).prop_map(|mut cuts| {
        cuts.sort_unstable();
        cuts
    })
}

// === messages, and what each gives the client ===

/// One event-stream message, of the kinds Bedrock sends and a few it
/// does not.
#[derive(Debug, Clone)]
enum Message {
    /// A `chunk` event carrying an Anthropic event (JSON, mostly).
    Chunk { event: Vec<u8>, extra: bool },
    /// An exception: ends the stream with an error event.
    Exception { kind: &'static str, message: String },
    /// An event of another type, or a message of another type: nothing.
    Ignored {
        event_type: String,
        message_type: String,
    },
}

/// Anthropic-like events, some with Bedrock's metrics, some
/// pretty-printed (JSON may hold line breaks between its tokens), some
/// with a type no event has, some valid JSON but for the UTF-8 of a
/// field the relay does not read.
fn anthropic_event() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => anthropic_json().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>().prop_filter("in a JSON string", |b| {
            *b >= 0x20 && *b != b'"' && *b != b'\\'
        }), 0..8)
        .prop_map(|bytes| [br#"{"type":"ping","x":""#.as_slice(), &bytes, b"\"}"].concat()),
    ]
}

fn anthropic_json() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        4 => prop::sample::select(vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "ping",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    (kind, "\\PC{0,20}", any::<u32>(), any::<bool>(), 0..4u8).prop_map(
        |(kind, text, index, metrics, layout)| {
            let mut event = json!({
                "type": kind,
                "index": index,
                "delta": {"type": "text_delta", "text": text},
                "message": {"id": "msg_1", "model": "anthropic.claude-x-v1:0"},
            });
            if metrics {
                event[METRICS] = json!({"inputTokenCount": 3, "outputTokenCount": 5});
            }
            match layout {
                0 => serde_json::to_string_pretty(&event).unwrap(),
                1 => format!(" {event}\r\n"),
                _ => event.to_string(),
            }
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        6 => (anthropic_event(), any::<bool>())
            .prop_map(|(event, extra)| Message::Chunk { event, extra }),
        1 => (
            prop::sample::select(vec![
                "throttlingException",
                "modelStreamErrorException",
                "validationException",
                "serviceUnavailableException",
            ]),
            "\\PC{0,30}",
        )
            .prop_map(|(kind, message)| Message::Exception { kind, message }),
        1 => (
            prop_oneof![Just("chunk".to_owned()), "[a-zA-Z]{0,12}"],
            prop_oneof![Just("event".to_owned()), "[a-z]{0,8}"],
        )
            .prop_filter("neither a chunk event nor an error", |(e, m)| {
                (e != "chunk" || m != "event") && m != "exception" && m != "error"
            })
            .prop_map(|(event_type, message_type)| Message::Ignored {
                event_type,
                message_type
            }),
    ]
}

impl Message {
    fn encode(&self) -> Bytes {
        match self {
            Message::Chunk { event, extra } => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(event);
                // Bedrock adds a `p` padding field to hide lengths.
                let payload = if *extra {
                    json!({"bytes": b64, "p": "abcdefghij"})
                } else {
                    json!({"bytes": b64})
                };
                encode_frame(
                    &[
                        (":event-type", "chunk"),
                        (":content-type", "application/json"),
                        (":message-type", "event"),
                    ],
                    payload.to_string().as_bytes(),
                )
            }
            Message::Exception { kind, message } => encode_frame(
                &[
                    (":exception-type", kind),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                json!({ "message": message }).to_string().as_bytes(),
            ),
            Message::Ignored {
                event_type,
                message_type,
            } => encode_frame(
                &[(":event-type", event_type), (":message-type", message_type)],
                b"{}",
            ),
        }
    }

    /// What the client gets for this message, and whether it is the
    /// last; `None` when the body must fail on it.
    fn expected(&self) -> Option<(Vec<u8>, bool)> {
        let sse = |kind: &str, data: &str| format!("event: {kind}\ndata: {data}\n\n").into_bytes();
        match self {
            Message::Chunk { event, .. } => {
                // Not UTF-8 JSON: the body refuses it.
                let mut value: Value = serde_json::from_slice(event).ok()?;
                let kind = value["type"].as_str()?.to_owned();
                if kind.is_empty() || kind.contains(['\r', '\n']) {
                    // Not an SSE event name: the body refuses it.
                    return None;
                }
                let object = value.as_object_mut()?;
                object.remove(METRICS);
                if kind == "message_start" {
                    value["message"]["model"] = json!(MODEL);
                }
                // Compact JSON on one line; the body passes a compact
                // event as it came, which is the same text.
                Some((sse(&kind, &value.to_string()), false))
            }
            Message::Exception { kind, message } => {
                let kind = match *kind {
                    "throttlingException" => "rate_limit_error",
                    "serviceUnavailableException" => "overloaded_error",
                    "validationException" => "invalid_request_error",
                    _ => "api_error",
                };
                let data = json!({"type": "error", "error": {"type": kind, "message": message}});
                Some((sse("error", &data.to_string()), true))
            }
            Message::Ignored { .. } => Some((Vec::new(), false)),
        }
    }
}

/// What the client gets for `messages` followed by a failure at message
/// `fail_at` (a corrupt frame, a cut): the events before it, then the
/// failure unless a message before ended the stream.
fn expected(messages: &[Message], fail_at: Option<usize>) -> Output {
    let mut sse = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if fail_at == Some(i) {
            return Output { sse, failed: true };
        }
        let Some((event, last)) = message.expected() else {
            return Output { sse, failed: true };
        };
        sse.extend_from_slice(&event);
        if last {
            return Output { sse, failed: false };
        }
    }
    Output {
        sse,
        failed: fail_at.is_some(),
    }
}

/// How a valid stream is broken.
#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    /// One bit of message `frame` flipped (CRC32 sees every one-bit error).
    FlipBit {
        frame: usize,
        bit: usize,
    },
    /// The stream cut inside message `frame`.
    Cut {
        frame: usize,
        at: usize,
    },
}

fn valid_case() -> impl Strategy<Value = (Vec<Message>, Damage, Vec<usize>)> {
    (
        prop::collection::vec(message(), 1..8),
        prop_oneof![
            Just(Damage::None),
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(f, b)| {
                Damage::FlipBit {
                    frame: f.index(usize::MAX),
                    bit: b.index(usize::MAX),
                }
            }),
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(f, a)| {
                Damage::Cut {
                    frame: f.index(usize::MAX),
                    at: a.index(usize::MAX),
                }
            }),
        ],
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    )
        .prop_map(|(messages, damage, cuts)| {
            let frame_of = |i: usize| i % messages.len();
            let damage = match damage {
                Damage::FlipBit { frame, bit } => Damage::FlipBit {
                    frame: frame_of(frame),
                    bit,
                },
                Damage::Cut { frame, at } => Damage::Cut {
                    frame: frame_of(frame),
                    at,
                },
                Damage::None => Damage::None,
            };
            // Cut positions are resolved against the stream's length later.
            let cuts = cuts.into_iter().map(|c| c.index(usize::MAX)).collect();
            (messages, damage, cuts)
        })
}

// === the targets ===

/// Bytes that look like event streams more often than random ones do:
/// valid frames, damaged frames, preludes with a valid checksum and any
/// lengths, and noise.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => message().prop_map(|m| m.encode().to_vec()),
        1 => (message(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(m, at, x)| {
            let mut frame = m.encode().to_vec();
            let at = at.index(frame.len());
            frame[at] ^= x;
            frame
        }),
        1 => (any::<u32>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(total, headers, rest)| {
                let mut prelude = total.to_be_bytes().to_vec();
                prelude.extend_from_slice(&headers.to_be_bytes());
                prelude.extend_from_slice(&crc32(&prelude).to_be_bytes());
                prelude.extend_from_slice(&rest);
                prelude
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[test]
fn fuzz_eventstream_any_bytes() {
    let stream = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        3 => prop::collection::vec(piece(), 0..8).prop_map(|p| p.concat()),
    ];
    let case = stream.prop_flat_map(|s| {
        let len = s.len();
        (Just(s), cuts(len))
    });
    fuzz("eventstream_any_bytes", case, |(stream, cuts)| {
        any_split(&stream, &cuts)?;
        Ok(())
    });
}

#[test]
fn fuzz_eventstream_valid_frames_split_anywhere() {
    fuzz(
        "eventstream_valid_frames",
        valid_case(),
        |(messages, damage, cuts)| {
            let frames: Vec<Vec<u8>> = messages.iter().map(|m| m.encode().to_vec()).collect();
            let mut stream: Vec<u8> = Vec::new();
            let mut fail_at = None;
            for (i, mut frame) in frames.into_iter().enumerate() {
                match damage {
                    Damage::FlipBit { frame: f, bit } if f == i => {
                        let bit = bit % (frame.len() * 8);
                        frame[bit / 8] ^= 1 << (bit % 8);
                        fail_at = Some(i);
                    }
                    Damage::Cut { frame: f, at } if f == i => {
                        // Inside the frame: at least one byte in, one short.
                        frame.truncate(1 + at % (frame.len() - 1));
                        stream.extend_from_slice(&frame);
                        fail_at = Some(i);
                        break;
                    }
                    _ => {}
                }
                stream.extend_from_slice(&frame);
            }
            let cuts: Vec<usize> = {
                let mut c: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
                c.sort_unstable();
                c
            };
            let got = any_split(&stream, &cuts)?;
            let want = expected(&messages, fail_at);
            prop_assert_eq!(
                String::from_utf8_lossy(&got.sse),
                String::from_utf8_lossy(&want.sse)
            );
            prop_assert_eq!(got.failed, want.failed, "failed");
            Ok(())
        },
    );
}

/// An upstream that sends one prelude, then zeros (endless as far as a
/// frame is concerned: it stops past twice the largest), counting the
/// bytes taken from it.
struct Endless {
    prelude: Option<Bytes>,
    chunk: Bytes,
    taken: Arc<AtomicUsize>,
}

const ENDLESS: usize = 2 * MAX_MESSAGE as usize;

impl Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.taken.load(Ordering::Relaxed) > ENDLESS {
            return Poll::Ready(None);
        }
        let data = self.prelude.take().unwrap_or_else(|| self.chunk.clone());
        self.taken.fetch_add(data.len(), Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

#[test]
fn fuzz_eventstream_reads_no_further_than_a_frame() {
    let total = prop_oneof![
        2 => 0..1024u32,
        1 => (MAX_MESSAGE as u32 - 2)..=(MAX_MESSAGE as u32 + 2),
        1 => any::<u32>(),
    ];
    let case = (
        total,
        prop_oneof![0..64u32, any::<u32>()],
        any::<bool>(),
        prop_oneof![1..64usize, 4096..=ZEROS.len()],
    );
    fuzz(
        "eventstream_bounded",
        case,
        |(total, headers_len, good_crc, chunk)| {
            let mut prelude = total.to_be_bytes().to_vec();
            prelude.extend_from_slice(&headers_len.to_be_bytes());
            let crc = crc32(&prelude) ^ u32::from(!good_crc);
            prelude.extend_from_slice(&crc.to_be_bytes());
            // A frame this long would take millions of 1-byte reads.
            let chunk = if total > 1 << 20 {
                chunk.max(4096)
            } else {
                chunk
            };
            let taken = Arc::new(AtomicUsize::new(0));
            let upstream = Endless {
                prelude: Some(Bytes::from(prelude)),
                chunk: Bytes::from_static(&ZEROS[..chunk]),
                taken: taken.clone(),
            };
            let body = EventStreamBody::new(RelayBody::new(upstream), MODEL);
            let got = drain(body)?;
            // Zeros never make a valid message: its checksum would have to
            // be zero too.
            prop_assert!(got.failed && got.sse.is_empty(), "{got:?}");
            let (total, headers_len) = (u64::from(total), u64::from(headers_len));
            let trusted =
                good_crc && (16..=MAX_MESSAGE).contains(&total) && headers_len <= total - 16;
            // Refused on its prelude alone, or read to the frame's end.
            let needed = if trusted { total } else { 12 };
            let taken = taken.load(Ordering::Relaxed) as u64;
            prop_assert!(
                taken < needed.max(12) + chunk as u64,
                "read {taken} bytes for a frame of {needed}"
            );
            Ok(())
        },
    );
}
