//! Where usage reports go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Histogram};

use tokio::sync::mpsc;

use super::types::UsageReport;
use crate::account::AccountId;
use crate::metric_handles::HandleCache;
use crate::principal::KeyId;

/// Receives one [`UsageReport`] per served response.
///
/// `record` is called from inside the response body (as it ends, errors, or
/// is dropped), on the task that streams to the client, so it must return
/// at once: it must never wait, lock for long, or do I/O. A sink with slow
/// work hands the report on through a [`ChannelSink`] and does the work on
/// its own task, where it can be as asynchronous as it likes; a full
/// channel drops the report and counts it rather than stall a stream.
///
/// `Arc<S>` and pairs `(A, B)` of sinks are sinks too, so several can be fed.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_llm_relay::usage::{TracingSink, UsageReport, UsageSink};
///
/// /// Counts output tokens.
/// #[derive(Default)]
/// struct OutputTokens(AtomicU64);
///
/// impl UsageSink for OutputTokens {
///     fn record(&self, report: &UsageReport) {
///         self.0.fetch_add(report.usage.output_tokens, Ordering::Relaxed);
///     }
/// }
///
/// let sink = (TracingSink::new(), OutputTokens::default());
/// let mut report = UsageReport::default();
/// report.usage.output_tokens = 7;
/// sink.record(&report);
/// assert_eq!(sink.1 .0.load(Ordering::Relaxed), 7);
/// ```
pub trait UsageSink: Send + Sync + 'static {
    /// Takes one report. Must not block.
    fn record(&self, report: &UsageReport);

    /// Whether the sink writes a log line for every report, as
    /// [`TracingSink`] does. Responses that will be reported to such a sink
    /// say so ([`UsageHandle::logged`](super::UsageHandle::logged)), and
    /// [`RequestTrace`](crate::trace::RequestTrace) then logs its own line
    /// for them at `DEBUG`: one `INFO` line per request, not two.
    fn logs_each_report(&self) -> bool {
        false
    }
}

impl<S: UsageSink + ?Sized> UsageSink for Arc<S> {
    fn record(&self, report: &UsageReport) {
        (**self).record(report);
    }

    fn logs_each_report(&self) -> bool {
        (**self).logs_each_report()
    }
}

impl<A: UsageSink, B: UsageSink> UsageSink for (A, B) {
    fn record(&self, report: &UsageReport) {
        self.0.record(report);
        self.1.record(report);
    }

    fn logs_each_report(&self) -> bool {
        self.0.logs_each_report() || self.1.logs_each_report()
    }
}

/// The default sink: one `tracing` event per response, at `INFO`, with
/// target `tower_llm_relay::usage` and the report's fields as fields.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::usage::{TracingSink, UsageReport, UsageSink};
///
/// // With no subscriber installed this records nothing, and never fails.
/// TracingSink::new().record(&UsageReport::default());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl TracingSink {
    /// The sink.
    pub fn new() -> Self {
        Self
    }
}

impl UsageSink for TracingSink {
    fn record(&self, r: &UsageReport) {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "tower_llm_relay::usage",
            request_id = r.request_id.as_ref().map(|id| id.as_str()),
            account = r.account.as_ref().map(|id| id.as_str()),
            key = r.key.as_ref().map(|k| k.as_str()),
            endpoint = r.endpoint.map(|e| e.upstream_path()),
            client_model = r.client_model.as_deref(),
            served_model = r.served_model.as_deref(),
            stream = r.stream,
            status = r.status.as_u16(),
            input_tokens = r.usage.input_tokens,
            output_tokens = r.usage.output_tokens,
            cache_creation_input_tokens = r.usage.cache_creation_input_tokens,
            cache_read_input_tokens = r.usage.cache_read_input_tokens,
            first_token_ms = r.first_token.map(millis),
            duration_ms = millis(r.duration),
            complete = r.complete,
            end = r.end.as_str(),
            response_id = r.response_id.as_deref(),
            "usage"
        );
    }

    fn logs_each_report(&self) -> bool {
        true
    }
}

/// A sink that queues reports on a bounded channel for an asynchronous
/// consumer ([`UsageReceiver`]). When the queue is full (the consumer is
/// slow) or the consumer is gone, the report is dropped and counted: a
/// stream never waits for accounting.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::usage::{ChannelSink, UsageReport, UsageSink};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (sink, mut reports) = ChannelSink::new(1);
/// sink.record(&UsageReport::default());
/// sink.record(&UsageReport::default()); // the queue is full: dropped
/// assert_eq!(sink.dropped(), 1);
/// assert!(reports.recv().await.is_some());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: mpsc::Sender<UsageReport>,
    dropped: Arc<AtomicU64>,
}

impl ChannelSink {
    /// A sink queueing at most `capacity` reports (at least one), and the
    /// receiver to read them from.
    pub fn new(capacity: usize) -> (Self, UsageReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sink = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, UsageReceiver { rx })
    }

    /// How many reports were dropped because the queue was full or the
    /// receiver gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl UsageSink for ChannelSink {
    fn record(&self, report: &UsageReport) {
        if self.tx.try_send(report.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The reading end of a [`ChannelSink`].
#[derive(Debug)]
pub struct UsageReceiver {
    rx: mpsc::Receiver<UsageReport>,
}

impl UsageReceiver {
    /// The next report; `None` once every sink is dropped and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<UsageReport> {
        self.rx.recv().await
    }

    /// The next report if one is queued now.
    pub fn try_recv(&mut self) -> Option<UsageReport> {
        self.rx.try_recv().ok()
    }
}

/// A sink that emits each report through the [`metrics`] facade:
/// `relay_tokens_total{kind, key, account}` (kind: `input`, `output`,
/// `cache_read`, `cache_creation`), `relay_first_token_seconds{account}`,
/// `relay_response_seconds{account}` and
/// `relay_incomplete_responses_total{account, end}`. With no recorder
/// installed it costs next to nothing.
///
/// The handles of each (account, key) pair are registered once and kept:
/// going through the recorder's registry on every report cost a dozen
/// allocations per request (a label list per metric, and the registry's
/// copies). They are registered again when the current recorder is another
/// one than the one they came from, and every few seconds, so an exporter
/// that forgets metrics idle for 5 s or more (`idle_timeout`) gets them
/// back when they are used again.
///
/// # Examples
///
/// ```
/// use tower_llm_relay::usage::{MetricsSink, UsageReport, UsageSink};
///
/// MetricsSink::new().record(&UsageReport::default());
/// ```
#[derive(Debug, Clone, Default)]
pub struct MetricsSink {
    handles: Arc<HandleCache<Pair, PairHandles>>,
}

impl MetricsSink {
    /// The sink.
    pub fn new() -> Self {
        Self::default()
    }
}

/// An account's and a key's names.
type Pair = (Arc<str>, Arc<str>);

/// The metrics of one (account, key) pair.
struct PairHandles {
    tokens: [Counter; 4],
    first_token: Histogram,
    response: Histogram,
}

/// The `kind` label of each of [`PairHandles::tokens`].
const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_creation"];

fn register((account, key): &Pair) -> PairHandles {
    PairHandles {
        tokens: TOKEN_KINDS.map(|kind| {
            metrics::counter!("relay_tokens_total", "kind" => kind, "key" => key.clone(), "account" => account.clone())
        }),
        first_token: metrics::histogram!("relay_first_token_seconds", "account" => account.clone()),
        response: metrics::histogram!("relay_response_seconds", "account" => account.clone()),
    }
}

impl UsageSink for MetricsSink {
    fn record(&self, r: &UsageReport) {
        // Shared texts: a label clone is a reference count, not a copy.
        let none = || Arc::<str>::from("");
        let account = r.account.as_ref().map_or_else(none, AccountId::shared);
        let key = r.key.as_ref().map_or_else(none, KeyId::shared);
        let handles = self.handles.get((account.clone(), key), register);
        let u = &r.usage;
        let tokens = [
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        ];
        for (counter, tokens) in handles.tokens.iter().zip(tokens) {
            if tokens > 0 {
                counter.increment(tokens);
            }
        }
        if let Some(ttft) = r.first_token {
            handles.first_token.record(ttft.as_secs_f64());
        }
        handles.response.record(r.duration.as_secs_f64());
        if !r.complete {
            // Rare, and labelled by how the answer ended: not cached.
            metrics::counter!("relay_incomplete_responses_total", "account" => account, "end" => r.end.as_str())
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

    fn report(account: &str, input: u64) -> UsageReport {
        let mut report = UsageReport {
            account: Some(AccountId::from(account)),
            key: Some(KeyId::from("team-a")),
            complete: true,
            ..UsageReport::default()
        };
        report.usage.input_tokens = input;
        report
    }

    /// The value of the first line of `rendered` that starts with `series`.
    fn value(recorder: &PrometheusRecorder, series: &str) -> Option<f64> {
        recorder
            .handle()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    const INPUT_A1: &str = r#"relay_tokens_total{kind="input",key="team-a",account="a1"}"#;

    #[test]
    fn reports_add_up_through_the_kept_handles() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let sink = MetricsSink::new();
        metrics::with_local_recorder(&recorder, || {
            sink.record(&report("a1", 10));
            sink.record(&report("a1", 5));
            sink.record(&report("a2", 7));
        });
        assert_eq!(value(&recorder, INPUT_A1), Some(15.0));
        assert_eq!(
            value(
                &recorder,
                r#"relay_tokens_total{kind="input",key="team-a",account="a2"}"#
            ),
            Some(7.0)
        );
        assert_eq!(
            value(&recorder, r#"relay_response_seconds_count{account="a1"}"#),
            Some(2.0)
        );
    }

    #[test]
    fn another_recorder_gets_handles_of_its_own() {
        let first = PrometheusBuilder::new().build_recorder();
        let second = PrometheusBuilder::new().build_recorder();
        let sink = MetricsSink::new();
        metrics::with_local_recorder(&first, || sink.record(&report("a1", 10)));
        metrics::with_local_recorder(&second, || sink.record(&report("a1", 3)));
        metrics::with_local_recorder(&first, || sink.record(&report("a1", 1)));
        assert_eq!(value(&first, INPUT_A1), Some(11.0));
        assert_eq!(value(&second, INPUT_A1), Some(3.0));
    }
}
