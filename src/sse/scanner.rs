use std::ops::Range;

use memchr::memchr2;

/// The default cap on one event's size (8 MiB): far above any usage-bearing
/// event (an OpenAI `response.completed` repeats the whole answer, so it can
/// be large), far below what would hurt the relay.
pub const DEFAULT_MAX_EVENT: usize = 8 * 1024 * 1024;

/// One server-sent event, borrowed from the frame it came in or, when it
/// spanned frames, from the scanner's buffers.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::sse::SseScanner;
///
/// let mut scanner = SseScanner::new();
/// scanner.feed(b"event: ping\ndata: {}\n\n", |event| {
///     assert_eq!(event.name(), b"ping");
///     assert_eq!(event.data(), b"{}");
///     assert_eq!(event.range(), 0..22);
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    name: &'a [u8],
    data: &'a [u8],
    start: u64,
    end: u64,
}

impl<'a> Event<'a> {
    /// The value of the last `event:` field, empty when there was none (the
    /// SSE spec calls such an event `message`).
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The `data:` fields' values joined with `\n`.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Where the event lies in the stream, as byte offsets from the first
    /// byte fed: from just after the blank line that ended the previous
    /// event to the end of the blank line that ends this one. A `\r\n` split
    /// between two frames ends the event at the `\r`.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }
}

/// Where a field of the event being read lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    None,
    /// In the scanner's own buffer (the event spanned frames).
    Owned,
    /// In the current frame, at this range.
    Chunk(usize, usize),
}

fn resolve<'a>(field: Field, owned: &'a [u8], chunk: &'a [u8]) -> &'a [u8] {
    match field {
        Field::None => &[],
        Field::Owned => owned,
        Field::Chunk(s, e) => &chunk[s..e],
    }
}

/// What a line is.
enum Line {
    Data(usize),
    Event(usize),
    Other,
}

/// Classifies a non-empty line: the field it sets and where its value
/// starts (after the colon and one optional space).
#[inline]
fn classify(line: &[u8]) -> Line {
    let value_at = |name_len: usize| match line.get(name_len) {
        None => Some(name_len),
        Some(b':') if line.get(name_len + 1) == Some(&b' ') => Some(name_len + 2),
        Some(b':') => Some(name_len + 1),
        Some(_) => None,
    };
    match line.first() {
        Some(b'd') if line.starts_with(b"data") => value_at(4).map_or(Line::Other, Line::Data),
        Some(b'e') if line.starts_with(b"event") => value_at(5).map_or(Line::Other, Line::Event),
        // Comments (`:`), `id`, `retry` and unknown fields carry nothing
        // the relay reads.
        _ => Line::Other,
    }
}

/// An incremental server-sent-events scanner.
///
/// Feed it the frames of a stream as they come, in any split; it calls back
/// once per complete event. Lines may end in `\n`, `\r\n` or `\r`, mixed;
/// `data:` may be followed by a space or not; several `data:` lines are
/// joined with `\n`; comments and unknown fields are skipped; events
/// without data are not dispatched, as the spec says.
///
/// It copies nothing while events fit in the frame they came in: the event
/// handed to the callback borrows the frame. Only an event split across
/// frames, or one with several `data:` lines, is copied into buffers that
/// are kept and reused, so a long stream does not allocate per frame.
///
/// An event longer than the cap ([`DEFAULT_MAX_EVENT`] unless set with
/// [`SseScanner::with_max_event`]) is skipped without being buffered, and
/// scanning resumes at the next event: a hostile upstream cannot make it
/// grow without limit. [`SseScanner::overflows`] counts such events.
///
/// Unlike a browser, [`SseScanner::finish`] dispatches a last event that
/// lacks its closing blank line: the relay observes streams, and a sloppy
/// upstream's final event still carries usage.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::sse::SseScanner;
///
/// let mut scanner = SseScanner::new();
/// let mut seen = Vec::new();
/// // One event split across three frames, with CRLF line ends.
/// for frame in [&b"event: message_st"[..], b"art\r\ndata:{\"a\":", b"1}\r\n\r\ndata: [DONE]"] {
///     scanner.feed(frame, |event| seen.push((event.name().to_vec(), event.data().to_vec())));
/// }
/// scanner.finish(|event| seen.push((event.name().to_vec(), event.data().to_vec())));
/// assert_eq!(seen, [
///     (b"message_start".to_vec(), br#"{"a":1}"#.to_vec()),
///     (b"".to_vec(), b"[DONE]".to_vec()),
/// ]);
/// ```
#[derive(Debug, Clone)]
pub struct SseScanner {
    max_event: usize,
    /// Stream offset of the next byte to be fed.
    pos: u64,
    /// Stream offset where the unfinished event starts.
    event_start: u64,
    /// The unfinished event's name and data, once it spans frames.
    name: Vec<u8>,
    data: Vec<u8>,
    has_name: bool,
    has_data: bool,
    /// The unfinished line carried from the previous frame.
    line: Vec<u8>,
    /// While skipping: the current line has bytes, so its end is no blank
    /// line.
    skip_line_open: bool,
    /// The last frame ended with `\r`: a `\n` opening the next one belongs
    /// to it.
    after_cr: bool,
    /// The unfinished event outgrew the cap; reading on to its end.
    skipping: bool,
    overflows: u64,
}

impl Default for SseScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl SseScanner {
    /// A scanner with the default cap on one event's size.
    pub fn new() -> Self {
        Self::with_max_event(DEFAULT_MAX_EVENT)
    }

    /// A scanner that skips events longer than `max_event` bytes.
    pub fn with_max_event(max_event: usize) -> Self {
        Self {
            max_event,
            pos: 0,
            event_start: 0,
            name: Vec::new(),
            data: Vec::new(),
            has_name: false,
            has_data: false,
            line: Vec::new(),
            skip_line_open: false,
            after_cr: false,
            skipping: false,
            overflows: 0,
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// How many events were skipped for outgrowing the cap.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// How many of the last bytes fed belong to the unfinished event (and
    /// would be needed to rewrite it once complete). Zero while an
    /// oversized event is being skipped.
    pub fn unfinished_len(&self) -> u64 {
        if self.skipping {
            0
        } else {
            self.pos - self.event_start
        }
    }

    /// The memory its buffers hold.
    #[cfg(test)]
    pub(super) fn buffered_capacity(&self) -> usize {
        self.name.capacity() + self.data.capacity() + self.line.capacity()
    }

    fn too_long(&self, content_end: u64) -> bool {
        content_end - self.event_start > self.max_event as u64
    }

    /// Drops the unfinished event: it outgrew the cap.
    fn overflow(&mut self) {
        self.skipping = true;
        self.overflows += 1;
        self.has_name = false;
        self.has_data = false;
        self.line.clear();
        // Give back what a hostile event made the buffers grow to.
        for buffer in [&mut self.name, &mut self.data, &mut self.line] {
            if buffer.capacity() > 64 * 1024 {
                *buffer = Vec::new();
            } else {
                buffer.clear();
            }
        }
    }

    /// Applies one complete line that came (partly) from an earlier frame.
    fn owned_line(&mut self, line: &[u8]) {
        match classify(line) {
            Line::Data(at) => {
                if self.has_data {
                    self.data.push(b'\n');
                } else {
                    self.data.clear();
                    self.has_data = true;
                }
                self.data.extend_from_slice(&line[at..]);
            }
            Line::Event(at) => {
                self.name.clear();
                self.name.extend_from_slice(&line[at..]);
                self.has_name = true;
            }
            Line::Other => {}
        }
    }

    /// Feeds the next frame of the stream, calling `on_event` for every
    /// event it completes.
    pub fn feed<F>(&mut self, chunk: &[u8], mut on_event: F)
    where
        F: FnMut(&Event<'_>),
    {
        if chunk.is_empty() {
            // An empty frame must not end a `\r` left pending.
            return;
        }
        let base = self.pos;
        self.pos += chunk.len() as u64;
        let mut i = 0;
        if self.after_cr {
            self.after_cr = false;
            if chunk.first() == Some(&b'\n') {
                i = 1;
                // The `\r` ended a blank line: the `\n` is no part of the
                // next event, as if the frames had not been split.
                if self.event_start == base && !self.skipping {
                    self.event_start = base + 1;
                }
            }
        }

        // Finish the line carried over from the previous frame.
        if !self.line.is_empty() || self.skip_line_open {
            let Some(rel) = memchr2(b'\n', b'\r', &chunk[i..]) else {
                if self.skipping {
                    return;
                }
                if self.too_long(self.pos) {
                    self.overflow();
                    self.skip_line_open = true;
                } else {
                    self.line.extend_from_slice(&chunk[i..]);
                }
                return;
            };
            let (start, end) = (i, i + rel);
            i = self.line_end(chunk, end);
            if self.skipping {
                self.skip_line_open = false;
            } else if self.too_long(base + end as u64) {
                self.overflow();
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[start..end]);
                self.owned_line(&line);
                // Keep the buffer's capacity for the next carried line.
                line.clear();
                self.line = line;
            }
        }

        let mut name = if self.has_name {
            Field::Owned
        } else {
            Field::None
        };
        let mut data = if self.has_data {
            Field::Owned
        } else {
            Field::None
        };

        while i < chunk.len() {
            let Some(rel) = memchr2(b'\n', b'\r', &chunk[i..]) else {
                break;
            };
            let end = i + rel;
            let next = self.line_end(chunk, end);
            if end == i {
                // A blank line: dispatch.
                if !self.skipping && data != Field::None {
                    let event = Event {
                        name: resolve(name, &self.name, chunk),
                        data: resolve(data, &self.data, chunk),
                        start: self.event_start,
                        end: base + next as u64,
                    };
                    on_event(&event);
                }
                name = Field::None;
                data = Field::None;
                self.has_name = false;
                self.has_data = false;
                self.skipping = false;
                self.event_start = base + next as u64;
                i = next;
                continue;
            }
            if self.skipping {
                i = next;
                continue;
            }
            if self.too_long(base + end as u64) {
                self.overflow();
                name = Field::None;
                data = Field::None;
                i = next;
                continue;
            }
            match classify(&chunk[i..end]) {
                Line::Data(at) => {
                    let value = (i + at, end);
                    data = match data {
                        Field::None => Field::Chunk(value.0, value.1),
                        Field::Chunk(s, e) => {
                            // Several data lines: join them in the buffer.
                            self.data.clear();
                            self.data.extend_from_slice(&chunk[s..e]);
                            self.data.push(b'\n');
                            self.data.extend_from_slice(&chunk[value.0..value.1]);
                            Field::Owned
                        }
                        Field::Owned => {
                            self.data.push(b'\n');
                            self.data.extend_from_slice(&chunk[value.0..value.1]);
                            Field::Owned
                        }
                    };
                }
                Line::Event(at) => name = Field::Chunk(i + at, end),
                Line::Other => {}
            }
            i = next;
        }

        // The frame ends inside an event: keep what it has so far.
        if self.skipping {
            self.skip_line_open = i < chunk.len();
            return;
        }
        if let Field::Chunk(s, e) = name {
            self.name.clear();
            self.name.extend_from_slice(&chunk[s..e]);
        }
        if let Field::Chunk(s, e) = data {
            self.data.clear();
            self.data.extend_from_slice(&chunk[s..e]);
        }
        self.has_name = name != Field::None;
        self.has_data = data != Field::None;
        if i < chunk.len() {
            if self.too_long(self.pos) {
                self.overflow();
                self.skip_line_open = true;
            } else {
                self.line.extend_from_slice(&chunk[i..]);
            }
        }
    }

    /// The index after the line end at `end` (a `\n` or `\r`), noting a
    /// `\r` that ends the frame.
    #[inline]
    fn line_end(&mut self, chunk: &[u8], end: usize) -> usize {
        if chunk[end] == b'\r' {
            match chunk.get(end + 1) {
                Some(b'\n') => end + 2,
                Some(_) => end + 1,
                None => {
                    self.after_cr = true;
                    end + 1
                }
            }
        } else {
            end + 1
        }
    }

    /// Ends the stream: dispatches a last event that lacks its closing
    /// blank line (a last line without its line end counts as complete),
    /// and readies the scanner for a new stream.
    pub fn finish<F>(&mut self, mut on_event: F)
    where
        F: FnMut(&Event<'_>),
    {
        if !self.skipping {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.owned_line(&line);
            }
            if self.has_data {
                let event = Event {
                    name: if self.has_name { &self.name } else { &[] },
                    data: &self.data,
                    start: self.event_start,
                    end: self.pos,
                };
                on_event(&event);
            }
        }
        let max_event = self.max_event;
        let overflows = self.overflows;
        *self = Self::with_max_event(max_event);
        self.overflows = overflows;
    }
}
