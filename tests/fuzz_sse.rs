//! Fuzz target: the SSE scanner. On any bytes it never panics, its
//! buffers stay within the event cap, and the events it finds (name, data,
//! byte range) and the events it skips are the same however the stream is
//! split into frames. See `support/fuzz.rs` for the driver and its
//! environment variables.

mod support;

use proptest::prelude::*;
use support::fuzz::fuzz;
use tower_llm_relay::sse::{SseScanner, DEFAULT_MAX_EVENT};

/// What one run of the scanner saw.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    events: Vec<(Vec<u8>, Vec<u8>, std::ops::Range<u64>)>,
    overflows: u64,
}

/// Feeds `stream` in frames ending at `cuts` (then `finish`), checking
/// the buffer bound after every frame.
fn scan(stream: &[u8], cuts: &[usize], max_event: usize) -> Result<Seen, TestCaseError> {
    let mut scanner = SseScanner::with_max_event(max_event);
    let mut events = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        let to = to.clamp(from, stream.len());
        scanner.feed(&stream[from..to], |e| {
            events.push((e.name().to_vec(), e.data().to_vec(), e.range()))
        });
        from = to;
        // What it keeps of an unfinished event: at most the cap, plus the
        // line end that closed its last line.
        prop_assert!(
            scanner.unfinished_len() <= max_event as u64 + 2,
            "{} bytes kept with a cap of {max_event}",
            scanner.unfinished_len()
        );
        prop_assert_eq!(scanner.position(), to as u64);
    }
    scanner.finish(|e| events.push((e.name().to_vec(), e.data().to_vec(), e.range())));
    for (_, _, range) in &mut events {
        prop_assert!(range.start <= range.end && range.end <= stream.len() as u64);
        // Documented (`Event::range`): a `\r\n` split between two frames
        // ends the event at the `\r`, as the `\n` is not known yet when
        // the event is handed out. Count it in, to compare with the
        // unsplit stream.
        let end = range.end as usize;
        if end > 0
            && cuts.contains(&end)
            && stream[end - 1] == b'\r'
            && stream.get(end) == Some(&b'\n')
        {
            range.end += 1;
        }
    }
    Ok(Seen {
        events,
        overflows: scanner.overflows(),
    })
}

/// SSE-ish pieces, so generated streams are mostly events, with every
/// kind of line end and field spelling.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event:".to_vec()),
        Just(b"event: message_delta".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"retry: 10".to_vec()),
        Just(br#"{"type":"message_delta","usage":{"output_tokens":5}}"#.to_vec()),
        Just(b"[DONE]".to_vec()),
        "[a-z:{}\" ]{0,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..16),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..600),
        3 => prop::collection::vec(piece(), 0..60).prop_map(|p| p.concat()),
    ]
}

fn case() -> impl Strategy<Value = (Vec<u8>, Vec<usize>, usize)> {
    stream().prop_flat_map(|stream| {
        let len = stream.len();
        (
            Just(stream),
            prop::collection::vec(0..=len, 0..12).prop_map(|mut cuts| {
                cuts.sort_unstable();
                cuts
            }),
            // A small cap makes overflows common; the default, rare.
            prop_oneof![0..64usize, Just(DEFAULT_MAX_EVENT)],
        )
    })
}

#[test]
fn fuzz_sse_scanner() {
    fuzz("sse_scanner", case(), |(stream, cuts, max_event)| {
        let whole = scan(&stream, &[], max_event)?;
        let split = scan(&stream, &cuts, max_event)?;
        prop_assert_eq!(&whole, &split, "cuts at {:?}", cuts);
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        let byte_by_byte = scan(&stream, &bytewise, max_event)?;
        prop_assert_eq!(&whole, &byte_by_byte, "byte by byte");
        Ok(())
    });
}
