//! What can go wrong, and when.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One way the mock misbehaves for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// An error answer with this status, in the API's own error format.
    ///
    /// The error type follows the status: 400 `invalid_request_error`,
    /// 401 `authentication_error`, 403 `permission_error`, 429
    /// `rate_limit_error`, 529 `overloaded_error`, other 5xx `api_error`
    /// (Anthropic names; OpenAI paths get OpenAI's). A `retry-after`
    /// header is sent when `retry_after` is given.
    Status {
        /// The HTTP status code.
        status: u16,
        /// Seconds for the `retry-after` header, if any.
        retry_after: Option<u64>,
    },
    /// A 400 `invalid_request_error` carrying this message.
    BadRequest {
        /// The error message.
        message: String,
    },
    /// The connection is closed without any answer (a TCP reset over
    /// HTTP/1, a stream reset over HTTP/2).
    ConnectionReset,
    /// No answer ever comes; the connection stays open until the client
    /// gives up or the mock is dropped.
    Hang,
    /// Streams: a 200 `text/event-stream` whose first event is an
    /// `event: error` (overloaded), then the end. Non-stream requests: a
    /// 529 overloaded error. Bedrock paths: a stream whose first frame is
    /// a `throttlingException` exception, or a 429 `ThrottlingException`.
    SseErrorFirst,
    /// Streams: this many events, then the connection breaks (the client
    /// sees a body error, not a clean end). Non-stream requests: half the
    /// JSON body, then the break.
    MidStreamCut {
        /// Events sent before the break.
        after_events: usize,
    },
    /// Streams: this delay between events instead of the configured one.
    SlowStream {
        /// The delay between two events.
        interval: Duration,
    },
}

/// When faults happen for one credential (or for all others).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FaultPlan {
    /// Every request is answered normally.
    #[default]
    Never,
    /// Every request gets this fault.
    Always(Fault),
    /// The next requests get these faults in order, later ones normal
    /// answers.
    Sequence(Vec<Fault>),
    /// Every `n`-th request gets the fault (the `n`-th, `2n`-th, ...);
    /// `n == 0` never does.
    EveryNth {
        /// The period, counted in requests.
        n: usize,
        /// The fault.
        fault: Fault,
    },
    /// Each request gets the fault with this probability, drawn from a
    /// generator seeded with `seed`, so a run can be reproduced.
    Random {
        /// The chance of the fault, from 0.0 (never) to 1.0 (always).
        probability: f64,
        /// The fault.
        fault: Fault,
        /// The generator's seed.
        seed: u64,
    },
}

/// A plan together with how far it has gone.
#[derive(Debug)]
pub(super) struct PlanCursor {
    plan: FaultPlan,
    requests_seen: usize,
    // Only for `Random`: its own generator, so other plans don't disturb it.
    rng: Option<StdRng>,
}

impl PlanCursor {
    pub(super) fn new(plan: FaultPlan) -> Self {
        let rng = match &plan {
            FaultPlan::Random { seed, .. } => Some(StdRng::seed_from_u64(*seed)),
            _ => None,
        };
        Self {
            plan,
            requests_seen: 0,
            rng,
        }
    }

    /// The fault for the next request, if it gets one.
    pub(super) fn next_fault(&mut self) -> Option<Fault> {
        self.requests_seen += 1;
        let seen = self.requests_seen;
        match &self.plan {
            FaultPlan::Never => None,
            FaultPlan::Always(fault) => Some(fault.clone()),
            FaultPlan::Sequence(faults) => faults.get(seen - 1).cloned(),
            FaultPlan::EveryNth { n, fault } => {
                (*n > 0 && seen.is_multiple_of(*n)).then(|| fault.clone())
            }
            FaultPlan::Random {
                probability, fault, ..
            } => {
                // Always draw, so the sequence depends only on the seed.
                let draw: f64 = self.rng.as_mut().map_or(1.0, |rng| rng.random());
                (draw < *probability).then(|| fault.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overloaded() -> Fault {
        Fault::Status {
            status: 529,
            retry_after: None,
        }
    }

    fn pattern(plan: FaultPlan, requests: usize) -> Vec<bool> {
        let mut cursor = PlanCursor::new(plan);
        (0..requests)
            .map(|_| cursor.next_fault().is_some())
            .collect()
    }

    #[test]
    fn never_and_always() {
        assert_eq!(pattern(FaultPlan::Never, 3), [false; 3]);
        assert_eq!(pattern(FaultPlan::Always(overloaded()), 3), [true; 3]);
    }

    #[test]
    fn sequence_gives_its_faults_in_order_then_nothing() {
        let mut cursor = PlanCursor::new(FaultPlan::Sequence(vec![Fault::Hang, overloaded()]));
        assert_eq!(cursor.next_fault(), Some(Fault::Hang));
        assert_eq!(cursor.next_fault(), Some(overloaded()));
        assert_eq!(cursor.next_fault(), None);
        assert_eq!(cursor.next_fault(), None);
    }

    #[test]
    fn every_nth_hits_multiples_of_n_and_zero_never() {
        let every_third = FaultPlan::EveryNth {
            n: 3,
            fault: overloaded(),
        };
        assert_eq!(
            pattern(every_third, 7),
            [false, false, true, false, false, true, false]
        );
        let zero = FaultPlan::EveryNth {
            n: 0,
            fault: overloaded(),
        };
        assert_eq!(pattern(zero, 4), [false; 4]);
    }

    #[test]
    fn random_is_reproducible_and_roughly_honours_the_probability() {
        let plan = |seed| FaultPlan::Random {
            probability: 0.3,
            fault: overloaded(),
            seed,
        };
        let first = pattern(plan(42), 1000);
        assert_eq!(first, pattern(plan(42), 1000));
        assert_ne!(first, pattern(plan(43), 1000));
        let hits = first.iter().filter(|hit| **hit).count();
        assert!((200..400).contains(&hits), "{hits} hits of 1000");
        let never = FaultPlan::Random {
            probability: 0.0,
            fault: overloaded(),
            seed: 1,
        };
        assert_eq!(pattern(never, 100), [false; 100]);
        let always = FaultPlan::Random {
            probability: 1.0,
            fault: overloaded(),
            seed: 1,
        };
        assert_eq!(pattern(always, 100), [true; 100]);
    }
}
