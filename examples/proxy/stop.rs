//! Telling every open connection that the proxy is stopping.
//!
//! Written here because the usual choices (a `watch` receiver, `Notify`,
//! tokio-util's `CancellationToken`) take their one lock, shared by every
//! connection on every thread, each time a waiting future is polled: a
//! connection's task polls its stop signal whenever anything wakes it, a
//! few times per request. Here a poll reads one flag; the lock is taken
//! when a connection first waits (or waits with another waker), when it
//! closes, and once at the stop.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    last_id: u64,
    wakers: HashMap<u64, Waker>,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        // Nothing in the map can be left half-changed by a panic.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops every [`Stopped`] it made when dropped.
pub(crate) struct StopSender {
    shared: Arc<Shared>,
}

impl StopSender {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::default(),
        }
    }

    /// A future that completes once this sender is dropped.
    pub(crate) fn subscribe(&self) -> Stopped {
        Stopped {
            shared: self.shared.clone(),
            registered: None,
        }
    }
}

impl Drop for StopSender {
    fn drop(&mut self) {
        // Set before the lock is taken: a waiter that registers after the
        // wakers below were taken sees it under the same lock.
        self.shared.stopping.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut self.shared.waiters().wakers);
        wakers.into_values().for_each(Waker::wake);
    }
}

/// Completes when the proxy stops (its [`StopSender`] is dropped).
pub(crate) struct Stopped {
    shared: Arc<Shared>,
    /// The id and waker this future waits with, once it has waited.
    registered: Option<(u64, Waker)>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shared.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &this.registered {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let mut waiters = this.shared.waiters();
        if this.shared.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let id = match &this.registered {
            Some((id, _)) => *id,
            None => {
                waiters.last_id += 1;
                waiters.last_id
            }
        };
        waiters.wakers.insert(id, cx.waker().clone());
        this.registered = Some((id, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some((id, _)) = self.registered.take() {
            self.shared.waiters().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waiting(sender: &StopSender) -> usize {
        sender.shared.waiters().wakers.len()
    }

    #[test]
    fn a_waiting_connection_is_woken_once_by_the_stop_and_then_ready() {
        let sender = StopSender::new();
        let mut stopped = sender.subscribe();
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(Pin::new(&mut stopped).poll(&mut cx).is_pending());
        }
        // Polled again with the same waker: registered once.
        assert_eq!(waiting(&sender), 1);
        drop(sender);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut stopped).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let sender = StopSender::new();
        let mut stopped = sender.subscribe();
        let first = Arc::new(CountingWaker::default());
        let second = Arc::new(CountingWaker::default());
        for counter in [&first, &second] {
            let waker = Waker::from(counter.clone());
            assert!(Pin::new(&mut stopped)
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        assert_eq!(waiting(&sender), 1);
        drop(sender);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_closed_connection_leaves_no_waker_and_a_late_one_is_ready() {
        let sender = StopSender::new();
        let mut stopped = sender.subscribe();
        assert!(Pin::new(&mut stopped)
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());
        drop(stopped);
        assert_eq!(waiting(&sender), 0);
        let mut late = sender.subscribe();
        drop(sender);
        assert!(Pin::new(&mut late)
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_on_other_threads_finish_at_the_stop() {
        let sender = StopSender::new();
        let tasks: Vec<_> = (0..64).map(|_| tokio::spawn(sender.subscribe())).collect();
        tokio::task::yield_now().await;
        drop(sender);
        for task in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .expect("every waiter is woken")
                .expect("no waiter panics");
        }
    }
}
