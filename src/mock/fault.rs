use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One way the mock can misbehave for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// An error answer with this status in the API's format
    /// (429 `rate_limit_error`, 529 `overloaded_error`, 5xx `api_error`,
    /// 401 `authentication_error`, 403 `permission_error`, 400
    /// `invalid_request_error`), with `retry-after` when given.
    Status {
        /// The HTTP status.
        status: u16,
        /// Seconds for a `retry-after` header.
        retry_after: Option<u64>,
    },
    /// A 400 with this message.
    BadRequest {
        /// The error message.
        message: String,
    },
    /// The connection is closed without an answer.
    ConnectionReset,
    /// No answer ever comes (until the mock is dropped).
    Hang,
    /// Streams open with an `event: error` (overloaded) and end; non-stream
    /// requests get 529.
    SseErrorFirst,
    /// The answer is cut off abruptly after this many events (streams) or
    /// half way (JSON).
    MidStreamCut {
        /// Events sent before the cut.
        after_events: usize,
    },
    /// Stream events come this far apart.
    SlowStream {
        /// The delay between events.
        interval: Duration,
    },
}

/// When faults happen, for one credential (or by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FaultPlan {
    /// Never: every request is answered normally.
    #[default]
    Never,
    /// Every request.
    Always(Fault),
    /// The next requests get these faults in order, then normal answers.
    Sequence(Vec<Fault>),
    /// Every `n`-th request.
    EveryNth {
        /// The period.
        n: usize,
        /// The fault.
        fault: Fault,
    },
    /// Each request with this probability, reproducibly from `seed`.
    Random {
        /// The chance of the fault, 0.0 to 1.0.
        probability: f64,
        /// The fault.
        fault: Fault,
        /// The seed of the random sequence.
        seed: u64,
    },
}

/// A plan and how far it has gone.
#[derive(Debug)]
pub(super) struct PlanState {
    plan: FaultPlan,
    requests: usize,
    rng: Option<StdRng>,
}

impl PlanState {
    pub(super) fn new(plan: FaultPlan) -> Self {
        let rng = match &plan {
            FaultPlan::Random { seed, .. } => Some(StdRng::seed_from_u64(*seed)),
            _ => None,
        };
        Self {
            plan,
            requests: 0,
            rng,
        }
    }

    /// The fault for the next request, if any.
    pub(super) fn next_fault(&mut self) -> Option<Fault> {
        self.requests += 1;
        match &self.plan {
            FaultPlan::Never => None,
            FaultPlan::Always(fault) => Some(fault.clone()),
            FaultPlan::Sequence(faults) => faults.get(self.requests - 1).cloned(),
            FaultPlan::EveryNth { n, fault } => {
                (*n > 0 && self.requests.is_multiple_of(*n)).then(|| fault.clone())
            }
            FaultPlan::Random {
                probability, fault, ..
            } => {
                let roll: f64 = self.rng.as_mut().map_or(1.0, |rng| rng.random());
                (roll < *probability).then(|| fault.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault() -> Fault {
        Fault::Status {
            status: 529,
            retry_after: None,
        }
    }

    #[test]
    fn plans_yield_faults_in_their_pattern() {
        let mut every = PlanState::new(FaultPlan::EveryNth {
            n: 3,
            fault: fault(),
        });
        let hits: Vec<bool> = (0..6).map(|_| every.next_fault().is_some()).collect();
        assert_eq!(hits, [false, false, true, false, false, true]);

        let mut seq = PlanState::new(FaultPlan::Sequence(vec![fault(), Fault::Hang]));
        assert_eq!(seq.next_fault(), Some(fault()));
        assert_eq!(seq.next_fault(), Some(Fault::Hang));
        assert_eq!(seq.next_fault(), None);

        let random = |seed| {
            let mut plan = PlanState::new(FaultPlan::Random {
                probability: 0.5,
                fault: fault(),
                seed,
            });
            (0..64)
                .map(|_| plan.next_fault().is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(random(7), random(7));
        let hits = random(7).into_iter().filter(|h| *h).count();
        assert!((16..=48).contains(&hits), "{hits}");
    }
}
