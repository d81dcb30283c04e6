//! Metric handles registered once per label set and kept.
//!
//! Going through the recorder's registry on every request costs a label
//! list per metric (an allocation each), the registry's own copies and a
//! hash of every label: a few thousand instructions a request for the
//! handful of metrics the relay updates per answer. A [`HandleCache`] keeps
//! the handles of each label set instead and hands them out after one
//! `HashMap` lookup.
//!
//! Handles are registered again when the current recorder is another one
//! than the one they came from (a local recorder in a test), and every few
//! seconds, so an exporter that forgets metrics idle for a while
//! (`metrics-exporter-prometheus`'s `idle_timeout`) gets them back when
//! they are used again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::account::AccountIdHash;

/// How long registered handles are used before they are registered again.
const REFRESH: Duration = Duration::from_secs(5);

/// The most label sets kept: past it the cache starts over, so accounts and
/// keys removed by reloads do not pile up.
const MAX_CACHED: usize = 4096;

/// The handles `H` of each label set `K`; see the module docs.
pub(crate) struct HandleCache<K, H> {
    /// Hashed with FNV-1a: label sets are a few short names, from the
    /// config and the upstream's status, where SipHash's set-up cost more
    /// than the bytes.
    by_labels: RwLock<HashMap<K, Arc<Registered<H>>, AccountIdHash>>,
}

impl<K, H> Default for HandleCache<K, H> {
    fn default() -> Self {
        Self {
            by_labels: RwLock::new(HashMap::default()),
        }
    }
}

impl<K, H> std::fmt::Debug for HandleCache<K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleCache").finish_non_exhaustive()
    }
}

/// Handles, with the recorder they belong to and when they were made.
pub(crate) struct Registered<H> {
    recorder: usize,
    at: Instant,
    handles: H,
}

impl<H> std::ops::Deref for Registered<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.handles
    }
}

/// The address of the recorder in use here: a local one in a test, else
/// the global one.
fn current_recorder() -> usize {
    metrics::with_recorder(|recorder| std::ptr::from_ref(recorder).cast::<()>() as usize)
}

impl<K: Hash + Eq, H> HandleCache<K, H> {
    /// The handles of `labels`, made by `register` when there are none yet
    /// (or they are stale).
    pub(crate) fn get(&self, labels: K, register: impl FnOnce(&K) -> H) -> Arc<Registered<H>> {
        let recorder = current_recorder();
        let cached = self
            .by_labels
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
            .filter(|r| r.recorder == recorder && r.at.elapsed() < REFRESH)
            .cloned();
        if let Some(registered) = cached {
            return registered;
        }
        let registered = Arc::new(Registered {
            recorder,
            at: Instant::now(),
            handles: register(&labels),
        });
        let mut by_labels = self
            .by_labels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if by_labels.len() >= MAX_CACHED {
            by_labels.clear();
        }
        by_labels.insert(labels, registered.clone());
        registered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn registers_once_per_label_set_and_again_under_another_recorder() {
        let cache: HandleCache<&'static str, metrics::Counter> = HandleCache::default();
        let mut registrations = 0;
        let mut count = |recorder: &metrics_exporter_prometheus::PrometheusRecorder, label| {
            metrics::with_local_recorder(recorder, || {
                cache
                    .get(label, |l| {
                        registrations += 1;
                        metrics::counter!("cached_total", "l" => *l)
                    })
                    .increment(1);
            });
        };
        let first = PrometheusBuilder::new().build_recorder();
        count(&first, "a");
        count(&first, "a");
        count(&first, "b");
        let second = PrometheusBuilder::new().build_recorder();
        count(&second, "a");
        // "a" and "b" under the first recorder, "a" again under the second.
        assert_eq!(registrations, 3);
        let rendered = first.handle().render();
        assert!(rendered.contains(r#"cached_total{l="a"} 2"#), "{rendered}");
        assert!(rendered.contains(r#"cached_total{l="b"} 1"#), "{rendered}");
        let rendered = second.handle().render();
        assert!(rendered.contains(r#"cached_total{l="a"} 1"#), "{rendered}");
    }
}
