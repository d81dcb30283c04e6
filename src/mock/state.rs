//! What the running mock shares between its tasks and its handle.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::fault::{Fault, PlanCursor};
use super::{FaultPlan, ReceivedRequest};

/// Pacing settings, fixed when the mock starts.
#[derive(Debug, Clone)]
pub(super) struct Pacing {
    pub(super) stream_deltas: usize,
    pub(super) event_interval: Duration,
    pub(super) first_byte_delay: Duration,
    /// Whether requests and answers are kept for `received()`.
    pub(super) record: bool,
    /// Whether each streamed event is preceded by a send-time comment.
    pub(super) stamp_events: bool,
}

/// One received request and the bytes sent back for it so far.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) request: ReceivedRequest,
    pub(super) sent: Vec<u8>,
}

/// State shared by the handle, the accept loop, connections and bodies.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) pacing: Pacing,
    /// Whether requests are recorded (a long soak turns it off).
    pub(super) recording: bool,
    pub(super) records: Mutex<Vec<Record>>,
    plans: Mutex<HashMap<String, PlanCursor>>,
    default_plan: Mutex<PlanCursor>,
    answers: AtomicU64,
    pub(super) open_streams: AtomicUsize,
    pub(super) open_connections: AtomicUsize,
    pub(super) completed_streams: AtomicUsize,
    pub(super) cancelled_streams: AtomicUsize,
    pub(super) token_refreshes: AtomicUsize,
    pub(super) spent_refresh_tokens: Mutex<HashSet<String>>,
    /// Per credential: requests being answered now, and the most at once.
    pub(super) in_flight: Mutex<HashMap<String, (usize, usize)>>,
    /// Its sender lives in the handle: when the handle is dropped, every
    /// `changed()` on a clone of this ends.
    shutdown: watch::Receiver<()>,
}

/// Locks, ignoring poisoning: a panicked test thread must not make the
/// mock unusable for the next assertion.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(pacing: Pacing, recording: bool, shutdown: watch::Receiver<()>) -> Self {
        Self {
            pacing,
            recording,
            records: Mutex::new(Vec::new()),
            plans: Mutex::new(HashMap::new()),
            default_plan: Mutex::new(PlanCursor::new(FaultPlan::Never)),
            answers: AtomicU64::new(0),
            open_streams: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            completed_streams: AtomicUsize::new(0),
            cancelled_streams: AtomicUsize::new(0),
            token_refreshes: AtomicUsize::new(0),
            spent_refresh_tokens: Mutex::new(HashSet::new()),
            in_flight: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// Resolves when the mock is dropped.
    pub(super) async fn shut_down(&self) {
        let mut shutdown = self.shutdown.clone();
        // Only ever errors: nothing is sent, the sender is only dropped.
        let _ = shutdown.changed().await;
    }

    pub(super) fn set_plan(&self, credential: &str, plan: FaultPlan) {
        lock(&self.plans).insert(credential.to_owned(), PlanCursor::new(plan));
    }

    pub(super) fn set_default_plan(&self, plan: FaultPlan) {
        *lock(&self.default_plan) = PlanCursor::new(plan);
    }

    /// The fault for the next request with this credential: its own plan
    /// when it has one, else the default plan.
    pub(super) fn next_fault(&self, credential: Option<&str>) -> Option<Fault> {
        if let Some(credential) = credential {
            if let Some(cursor) = lock(&self.plans).get_mut(credential) {
                return cursor.next_fault();
            }
        }
        lock(&self.default_plan).next_fault()
    }

    /// The fault for the next request under a plan name, none without a
    /// plan of that name (the default plan does not apply).
    pub(super) fn next_named_fault(&self, name: &str) -> Option<Fault> {
        lock(&self.plans)
            .get_mut(name)
            .and_then(PlanCursor::next_fault)
    }

    /// Numbers answers 1, 2, 3, ... for their ids.
    pub(super) fn next_answer_number(&self) -> u64 {
        self.answers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a request as it arrives; the recorder fills in the answer.
    pub(super) fn record(self: &Arc<Self>, request: ReceivedRequest) -> Recorder {
        if !self.recording {
            // No record has this index: the recorder writes nowhere.
            return Recorder {
                shared: self.clone(),
                index: usize::MAX,
            };
        }
        let mut records = lock(&self.records);
        records.push(Record {
            request,
            sent: Vec::new(),
        });
        Recorder {
            shared: self.clone(),
            index: records.len() - 1,
        }
    }
}

/// Writes what is answered into one request's record.
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    shared: Arc<Shared>,
    index: usize,
}

impl Recorder {
    pub(super) fn status(&self, status: u16) {
        if let Some(record) = lock(&self.shared.records).get_mut(self.index) {
            record.request.status = status;
        }
    }

    pub(super) fn sent(&self, bytes: &[u8]) {
        if let Some(record) = lock(&self.shared.records).get_mut(self.index) {
            record.sent.extend_from_slice(bytes);
        }
    }
}

/// Counts a request as in flight for its credential until dropped.
#[derive(Debug)]
pub(super) struct InFlight {
    shared: Arc<Shared>,
    credential: String,
}

impl InFlight {
    pub(super) fn start(shared: &Arc<Shared>, credential: Option<&str>) -> Self {
        let credential = credential.unwrap_or_default().to_owned();
        let mut counts = lock(&shared.in_flight);
        let (now, peak) = counts.entry(credential.clone()).or_default();
        *now += 1;
        *peak = (*peak).max(*now);
        drop(counts);
        Self {
            shared: shared.clone(),
            credential,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((now, _)) = lock(&self.shared.in_flight).get_mut(&self.credential) {
            *now = now.saturating_sub(1);
        }
    }
}

/// Counts one connection as open until dropped.
#[derive(Debug)]
pub(super) struct ConnectionTally {
    shared: Arc<Shared>,
}

impl ConnectionTally {
    pub(super) fn open(shared: &Arc<Shared>) -> Self {
        shared.open_connections.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
        }
    }
}

impl Drop for ConnectionTally {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// Sent to its end.
    Completed,
    /// Broken off by the mock on purpose.
    Cut,
}

/// Counts one stream as open until it ends; a stream dropped before its
/// end (the client went away) counts as cancelled.
#[derive(Debug)]
pub(super) struct StreamTally {
    shared: Arc<Shared>,
    ended: bool,
}

impl StreamTally {
    pub(super) fn open(shared: &Arc<Shared>) -> Self {
        shared.open_streams.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
            ended: false,
        }
    }

    pub(super) fn end(&mut self, how: StreamEnd) {
        if self.ended {
            return;
        }
        self.ended = true;
        if how == StreamEnd::Completed {
            self.shared.completed_streams.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for StreamTally {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
            self.ended = true;
            self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A snapshot of the records as the public type.
pub(super) fn snapshot(records: &[Record]) -> Vec<ReceivedRequest> {
    records
        .iter()
        .map(|record| ReceivedRequest {
            response_body: Bytes::copy_from_slice(&record.sent),
            ..record.request.clone()
        })
        .collect()
}
