//! The text log line, formatted without colour machinery.
//!
//! The layout is tracing-subscriber's default ("full") one without ANSI:
//!
//! ```text
//! 2026-11-23T17:04:05.123456Z  INFO request{id=… method=POST path=/v1/messages}: tower_llm_relay::trace: answered status=200
//! ```
//!
//! Written here because the default formatter routes every field name, `=`
//! and the level through `nu_ansi_term` styles even when colour is off, and
//! formats the clock through `fmt` on every line: at the proxy's line per
//! request that was about a fifth of the instructions the proxy spends on a
//! request. This one writes the same text with plain appends, a cached
//! date per second and `itoa` for numbers. Strings are still `Debug`-quoted,
//! so a value cannot break a line apart; the common ones, with nothing to
//! escape, are quoted without going through `fmt`.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineFormat;

/// Formats span and event fields as ` name=value` pairs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineFields;

thread_local! {
    /// Where a line is put together before it goes to tracing-subscriber's
    /// `Writer` in one piece: each of the `Writer`'s calls is a call through
    /// `dyn fmt::Write`, and a line of the usage report's eighteen fields
    /// made about a hundred of them.
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// Runs `f` on this thread's empty scratch text, or on a new one if a
/// value's `Debug` logs while a line is being formatted.
fn with_scratch<R>(f: impl FnOnce(&mut String) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut text) => {
            text.clear();
            f(&mut text)
        }
        Err(_) => f(&mut String::new()),
    })
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_scratch(|line| {
            write_timestamp(line, SystemTime::now());
            let meta = event.metadata();
            line.push_str(level_text(*meta.level()));
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    line.push_str(span.name());
                    let extensions = span.extensions();
                    if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                        if !fields.is_empty() {
                            line.push('{');
                            line.push_str(fields);
                            line.push('}');
                        }
                    }
                    line.push(':');
                }
                line.push(' ');
            }
            line.push_str(meta.target());
            line.push_str(": ");
            let mut visitor = FieldVisitor::new(line);
            event.record(&mut visitor);
            visitor.result?;
            line.push('\n');
            writer.write_str(line)
        })
    }
}

impl<'w> FormatFields<'w> for LineFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        with_scratch(|text| {
            let mut visitor = FieldVisitor::new(text);
            fields.record(&mut visitor);
            visitor.result?;
            writer.write_str(text)
        })
    }
}

struct FieldVisitor<'a> {
    out: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl<'a> FieldVisitor<'a> {
    fn new(out: &'a mut String) -> Self {
        Self {
            out,
            first: true,
            result: Ok(()),
        }
    }

    /// Starts a field: the separator, then `name=` unless it is the
    /// message, which stands bare.
    fn start(&mut self, field: &Field) -> &mut String {
        if !std::mem::take(&mut self.first) {
            self.out.push(' ');
        }
        let name = field.name();
        if name != "message" {
            self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
            self.out.push('=');
        }
        self.out
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.start(field)
            .push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.start(field)
            .push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.start(field)
            .push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let out = self.start(field);
        if field.name() == "message" {
            out.push_str(value);
        } else {
            push_quoted(out, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = write!(self.start(field), "{value:?}");
        }
    }
}

/// `value` as `{value:?}` writes it. Most values (ids, model names,
/// paths) are printable ASCII with nothing to escape, and for those the
/// quotes go around the text as it is: `Debug` would push every character
/// through `fmt` one at a time, a few thousand instructions per log line.
fn push_quoted(out: &mut String, value: &str) {
    if is_plain(value.as_bytes()) {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{value:?}");
    }
}

/// Whether every byte is printable ASCII other than `"` and `\`: what
/// `Debug` leaves as it is. Eight bytes at a time, with the usual
/// has-zero-byte test on the word xor each refused byte and on the word
/// less 0x20 (each is zero exactly when no byte matches).
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let refused = word
            | zero(word ^ (ONES * u64::from(b'"')))
            | zero(word ^ (ONES * u64::from(b'\\')))
            | zero(word ^ (ONES * 0x7f))
            | (word.wrapping_sub(ONES * 0x20) & !word);
        if refused & HIGH != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
}

fn level_text(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

thread_local! {
    /// The last second formatted on this thread, and its text.
    static DATE: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ ` in UTC.
fn write_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = DATE.get();
    if cached != secs {
        text = date_time(secs);
        DATE.set((secs, text));
    }
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    let micros = since.subsec_micros();
    let mut fraction = *b".000000Z ";
    let mut rest = micros;
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.push_str(std::str::from_utf8(&fraction).unwrap_or_default());
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, by the days-to-civil conversion
/// of H. Hinnant's date algorithms (proleptic Gregorian calendar).
fn date_time(secs: u64) -> [u8; 19] {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day % 3_600 / 60);
    put(17, 2, of_day % 60);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_as_debug_quotes_them() {
        let cases = [
            "",
            "claude-sonnet-4-5",
            "/v1/messages?beta=true",
            "a \"quoted\" word",
            "back\\slash",
            "line\nbreak\tand tab\r",
            "bell\u{7}",
            "del\u{7f}",
            "caf\u{e9} \u{1f600}",
            "zero\u{200b}width",
            "it's",
            "0123456789abcdef\"",
            "0123456789abcde\u{7f}",
            "01234567\u{1f}89abcdefgh",
            "abcdefgh~ijklmnop",
            "01234567caf\u{e9}",
        ];
        for value in cases {
            let mut text = String::new();
            push_quoted(&mut text, value);
            assert_eq!(text, format!("{value:?}"), "{value:?}");
        }
    }

    #[test]
    fn plain_text_is_told_apart_at_every_position() {
        let simple = |bytes: &[u8]| {
            bytes
                .iter()
                .all(|&b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
        };
        // Each byte value at each place of the words and of the tail.
        for len in [1, 8, 17] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert_eq!(is_plain(&text), simple(&text), "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn dates_match_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_799, "2024-02-28T23:59:59"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_795_453_445, "2026-11-23T17:04:05"),
            (4_102_444_800, "2100-01-01T00:00:00"),
        ];
        for (secs, expected) in cases {
            assert_eq!(
                std::str::from_utf8(&date_time(secs)).unwrap(),
                expected,
                "{secs}"
            );
        }
    }
}
