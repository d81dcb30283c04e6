use proptest::prelude::*;

use super::*;

/// An event as the tests compare it: name, data, start offset.
type Seen = (String, String, u64);

fn seen(event: &Event<'_>) -> Seen {
    (
        String::from_utf8_lossy(event.name()).into_owned(),
        String::from_utf8_lossy(event.data()).into_owned(),
        event.range().start,
    )
}

/// Scans `frames` with `scanner`, finishing the stream.
fn scan_with(mut scanner: SseScanner, frames: &[&[u8]]) -> Vec<Seen> {
    let mut out = Vec::new();
    for frame in frames {
        scanner.feed(frame, |e| out.push(seen(e)));
    }
    scanner.finish(|e| out.push(seen(e)));
    out
}

fn scan(frames: &[&[u8]]) -> Vec<Seen> {
    scan_with(SseScanner::new(), frames)
}

/// Name and data only.
fn nd(events: &[Seen]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|(n, d, _)| (n.as_str(), d.as_str()))
        .collect()
}

/// Every way to cut `stream` in two, and in single bytes.
fn every_split(stream: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut splits: Vec<Vec<&[u8]>> = (0..=stream.len())
        .map(|at| vec![&stream[..at], &stream[at..]])
        .collect();
    splits.push(stream.chunks(1).collect());
    splits
}

fn assert_split_invariant(stream: &[u8], expected: &[(&str, &str)]) {
    let whole = scan(&[stream]);
    assert_eq!(nd(&whole), expected, "{}", String::from_utf8_lossy(stream));
    for frames in every_split(stream) {
        assert_eq!(scan(&frames), whole, "split {frames:?}");
    }
}

#[test]
fn lf_events_are_found() {
    assert_split_invariant(
        b"event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\n",
        &[("message_start", "{\"a\":1}"), ("ping", "{}")],
    );
}

#[test]
fn crlf_events_are_found() {
    assert_split_invariant(
        b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
        &[("a", "1"), ("", "2")],
    );
}

#[test]
fn mixed_and_lone_cr_line_ends_are_found() {
    assert_split_invariant(
        b"event: a\r\ndata: 1\n\r\ndata: 2\r\rdata: 3\n\rdata: 4\r\n\n",
        &[("a", "1"), ("", "2"), ("", "3"), ("", "4")],
    );
}

#[test]
fn data_with_or_without_a_space() {
    // Exactly one space after the colon is dropped; more are data.
    assert_split_invariant(
        b"data:1\n\ndata: 2\n\ndata:  3\n\ndata\n\n",
        &[("", "1"), ("", "2"), ("", " 3"), ("", "")],
    );
}

#[test]
fn several_data_lines_are_joined_with_newlines() {
    assert_split_invariant(
        b"event: x\ndata: {\"a\":\ndata: 1}\ndata:\n\n",
        &[("x", "{\"a\":\n1}\n")],
    );
}

#[test]
fn comments_ids_and_unknown_fields_are_skipped() {
    assert_split_invariant(
        b": keep-alive\n\n:comment\ndata: a\nid: 7\nretry: 10\ndatax: no\neventx: no\n\n",
        &[("", "a")],
    );
}

#[test]
fn the_last_event_name_wins_and_names_do_not_leak() {
    assert_split_invariant(
        b"event: a\nevent: b\ndata: 1\n\ndata: 2\n\n",
        &[("b", "1"), ("", "2")],
    );
}

#[test]
fn events_without_data_are_not_dispatched() {
    assert_split_invariant(b"event: lonely\n\n\n\ndata: x\n\n", &[("", "x")]);
}

#[test]
fn a_final_event_without_a_blank_line_is_dispatched_at_the_end() {
    assert_split_invariant(b"data: 1\n\ndata: [DONE]\n", &[("", "1"), ("", "[DONE]")]);
    assert_split_invariant(
        b"data: 1\n\nevent: end\ndata: [DONE]",
        &[("", "1"), ("end", "[DONE]")],
    );
}

#[test]
fn nothing_is_dispatched_before_the_blank_line() {
    let mut scanner = SseScanner::new();
    let mut count = 0;
    scanner.feed(b"data: 1\n", |_| count += 1);
    assert_eq!(count, 0);
    assert_eq!(scanner.unfinished_len(), 8);
    scanner.feed(b"\n", |_| count += 1);
    assert_eq!(count, 1);
    assert_eq!(scanner.unfinished_len(), 0);
}

#[test]
fn events_that_fit_their_frame_are_borrowed_from_it() {
    let frame = b"event: e\ndata: payload\n\n";
    let mut scanner = SseScanner::new();
    let mut inside = false;
    scanner.feed(frame, |e| {
        let range = frame.as_ptr_range();
        inside = range.contains(&e.data().as_ptr()) && range.contains(&e.name().as_ptr());
    });
    assert!(inside);
}

#[test]
fn ranges_tile_the_stream() {
    let stream = b": hi\n\nevent: a\ndata: 1\n\ndata: 2\r\n\r\n";
    let mut ranges = Vec::new();
    SseScanner::new().feed(stream, |e| ranges.push(e.range()));
    assert_eq!(ranges, [6..24, 24..stream.len() as u64]);
    assert_eq!(&stream[6..24], b"event: a\ndata: 1\n\n");
}

#[test]
fn an_oversized_event_is_skipped_and_scanning_resumes() {
    let stream = b"data: 1\n\ndata: 0123456789abcdef\n\ndata: 2\n\n";
    let scanner = || SseScanner::with_max_event(16);
    let whole = scan_with(scanner(), &[stream]);
    assert_eq!(nd(&whole), [("", "1"), ("", "2")]);
    for frames in every_split(stream) {
        assert_eq!(scan_with(scanner(), &frames), whole, "{frames:?}");
    }
    let mut counted = scanner();
    counted.feed(stream, |_| {});
    assert_eq!(counted.overflows(), 1);
}

#[test]
fn a_line_that_never_ends_is_not_buffered_past_the_cap() {
    let mut scanner = SseScanner::with_max_event(1024);
    let junk = vec![b'x'; 4096];
    for _ in 0..1000 {
        scanner.feed(&junk, |_| panic!("no event"));
    }
    assert_eq!(scanner.unfinished_len(), 0);
    assert!(scanner.buffered_capacity() <= 64 * 1024);
    // It recovers at the next event boundary.
    let mut got = Vec::new();
    scanner.feed(b"\n\ndata: ok\n\n", |e| got.push(e.data().to_vec()));
    assert_eq!(got, [b"ok".to_vec()]);
}

#[test]
fn finish_readies_the_scanner_for_a_new_stream() {
    let mut scanner = SseScanner::new();
    scanner.feed(b"data: partial", |_| {});
    scanner.finish(|_| {});
    let mut got = Vec::new();
    scanner.feed(b"data: next\n\n", |e| got.push(e.range()));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], 0..12);
}

// === property tests ===

/// One line of a generated stream.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.]{1,16}".prop_map(|n| format!("event: {n}")),
        "[ -~]{0,40}".prop_map(|d| format!("data: {d}")),
        "[ -~]{0,40}".prop_map(|d| format!("data:{d}")),
        "[ -~]{0,20}".prop_map(|c| format!(":{c}")),
        Just(String::new()),
        Just("id: 1".to_owned()),
    ]
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("\n"), 2 => Just("\r\n"), 1 => Just("\r")]
}

/// A stream of plausible SSE lines with mixed line ends.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((line(), line_end()), 0..40).prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|(l, end)| format!("{l}{end}").into_bytes())
            .collect()
    })
}

/// Cut points for a stream of `len` bytes.
fn cuts(stream: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
    points.iter_mut().for_each(|p| *p %= stream.len() + 1);
    points.sort_unstable();
    let mut frames = Vec::new();
    let mut at = 0;
    for p in points {
        frames.push(&stream[at..p]);
        at = p;
    }
    frames.push(&stream[at..]);
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_of_a_stream_yields_the_same_events(
        stream in sse_stream(),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = scan(&[&stream]);
        prop_assert_eq!(scan(&cuts(&stream, points)), whole);
    }

    /// Fuzz-style: arbitrary bytes (biased towards the bytes that matter),
    /// arbitrary splits, a small cap so overflows happen.
    #[test]
    fn any_split_of_random_bytes_yields_the_same_events(
        stream in prop::collection::vec(
            prop_oneof![
                3 => Just(b'\n'), 2 => Just(b'\r'), 2 => Just(b':'), 1 => Just(b' '),
                2 => prop::sample::select(b"dataevnt".to_vec()), 3 => any::<u8>(),
            ],
            0..400,
        ),
        points in prop::collection::vec(any::<usize>(), 0..16),
        cap in 1usize..64,
    ) {
        let whole = scan_with(SseScanner::with_max_event(cap), &[&stream]);
        let split = scan_with(SseScanner::with_max_event(cap), &cuts(&stream, points));
        prop_assert_eq!(split, whole);
    }
}

#[test]
fn unnamed_events_are_typed_by_their_leading_type_member() {
    let mut types = Vec::new();
    SseScanner::new().feed(
        b"event: ping\ndata: {}\n\ndata: { \"type\" : \"message_start\",\"x\":1}\n\ndata: {\"a\":{\"type\":\"no\"}}\n\n",
        |e| types.push(String::from_utf8_lossy(event_type(e)).into_owned()),
    );
    assert_eq!(types, ["ping", "message_start", ""]);
}
