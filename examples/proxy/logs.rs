//! Log output: lines gather in a shared buffer that one thread writes to
//! stderr every few milliseconds.
//!
//! Written here because the usual choice, `tracing-appender`'s non-blocking
//! writer, hands each line to its thread through a channel and wakes that
//! thread per line (a futex wake, then the thread spins with
//! `sched_yield` before sleeping again). At the two lines per request the
//! proxy then logged at `info`, that cost more than the request's own work on the
//! relay's side: 11–18 µs of 52 µs of CPU per request under load. Here a
//! line costs an uncontended lock and a copy; the thread wakes on a timer.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Past this many buffered bytes (stderr blocked or slow), the line's own
/// writer writes the buffer out: logging slows down rather than growing
/// memory or dropping lines.
const MAX_BUFFERED: usize = 4 << 20;

struct Shared {
    buffer: Mutex<Vec<u8>>,
    stopping: AtomicBool,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves at worst a partial line.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out what is buffered, outside the lock.
    fn flush(&self, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.buffer(), spare);
        if !spare.is_empty() {
            // Nowhere to report a failing stderr.
            let _ = io::stderr().lock().write_all(spare);
            spare.clear();
        }
    }
}

/// The `MakeWriter` for the proxy's subscriber.
#[derive(Clone)]
pub(crate) struct BatchedStderr {
    shared: Arc<Shared>,
}

/// Stops the writing thread and writes out the last lines when dropped.
pub(crate) struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writing thread. Lines are written until the guard is dropped.
pub(crate) fn batched_stderr() -> (BatchedStderr, FlushOnDrop) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(64 << 10)),
        stopping: AtomicBool::new(false),
    });
    let writer = shared.clone();
    let thread = thread::Builder::new()
        .name("proxy-logs".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(64 << 10);
            while !writer.stopping.load(Ordering::Acquire) {
                thread::park_timeout(FLUSH_EVERY);
                writer.flush(&mut spare);
            }
        })
        .ok();
    (
        BatchedStderr {
            shared: shared.clone(),
        },
        FlushOnDrop { shared, thread },
    )
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        // Also what the thread had no turn for, or all of it without one.
        self.shared.flush(&mut Vec::new());
    }
}

/// One line's writer: tracing-subscriber formats a whole line, then writes
/// it with one call.
pub(crate) struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut buffer = self.shared.buffer();
        if self.shared.stopping.load(Ordering::Acquire) {
            // No thread left to write it out later.
            drop(buffer);
            return io::stderr().lock().write(line);
        }
        if buffer.len() + line.len() > MAX_BUFFERED {
            io::stderr().lock().write_all(&buffer)?;
            buffer.clear();
        }
        buffer.extend_from_slice(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}
