//! Classifying an upstream exchange for a breaker.

use std::time::Duration;

use crate::{ErrorKind, Outcome};

/// What one call means to a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success {
        slow: bool,
    },
    Failure {
        slow: bool,
    },
    /// The client went away first: says nothing about the upstream (but an
    /// abandoned half-open probe is still a failed probe).
    Abandoned,
    /// The client went away after the call had already taken `slow_call`:
    /// whatever the upstream would have said, it was slow (the seed's
    /// consumer gave up at 3 s on a provider that was still working). Counts
    /// as a slow call, neither failure nor success. (A caller's own deadline
    /// running out stays [`CallResult::Abandoned`].)
    AbandonedSlow,
}

/// Which statuses and errors are failures, and what is slow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    pub failure_statuses: Vec<u16>,
    /// gRPC statuses that count as failures (from headers or trailers).
    pub failure_grpc_statuses: Vec<u16>,
    pub slow_call: Option<Duration>,
}

impl Classifier {
    pub fn classify(&self, outcome: &Outcome) -> CallResult {
        let slow = self.slow_call.is_some_and(|s| outcome.latency >= s);
        match outcome.error {
            // The client left after the call had already been slow: it was
            // slow, whatever the upstream would have said.
            Some(ErrorKind::Abandoned) if slow => return CallResult::AbandonedSlow,
            // The client left, or its own deadline ran out: nothing is
            // learnt about the upstream.
            Some(ErrorKind::Abandoned | ErrorKind::DeadlineExceeded) => {
                return CallResult::Abandoned
            }
            // A timeout is slow by definition, and a failure.
            Some(ErrorKind::Timeout | ErrorKind::ConnectTimeout) => {
                return CallResult::Failure {
                    slow: self.slow_call.is_some(),
                }
            }
            Some(_) => return CallResult::Failure { slow },
            None => {}
        }
        let failed = outcome
            .status
            .is_some_and(|s| self.failure_statuses.contains(&s))
            || outcome
                .grpc_status
                .is_some_and(|s| self.failure_grpc_statuses.contains(&s));
        if failed {
            CallResult::Failure { slow }
        } else {
            CallResult::Success { slow }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier() -> Classifier {
        Classifier {
            failure_statuses: vec![500, 502, 503, 504],
            failure_grpc_statuses: vec![14],
            slow_call: Some(Duration::from_millis(100)),
        }
    }

    fn outcome(status: Option<u16>, error: Option<ErrorKind>, ms: u64) -> Outcome {
        Outcome {
            status,
            grpc_status: None,
            latency: Duration::from_millis(ms),
            error,
            upstream: None,
        }
    }

    #[test]
    fn statuses_errors_and_latency() {
        let c = classifier();
        assert_eq!(
            c.classify(&outcome(Some(200), None, 5)),
            CallResult::Success { slow: false }
        );
        assert_eq!(
            c.classify(&outcome(Some(200), None, 150)),
            CallResult::Success { slow: true }
        );
        assert_eq!(
            c.classify(&outcome(Some(404), None, 5)),
            CallResult::Success { slow: false }
        );
        assert_eq!(
            c.classify(&outcome(Some(503), None, 5)),
            CallResult::Failure { slow: false }
        );
        assert_eq!(
            c.classify(&outcome(None, Some(ErrorKind::ConnectRefused), 1)),
            CallResult::Failure { slow: false }
        );
        assert_eq!(
            c.classify(&outcome(None, Some(ErrorKind::Timeout), 1)),
            CallResult::Failure { slow: true }
        );
        assert_eq!(
            c.classify(&outcome(None, Some(ErrorKind::Abandoned), 1)),
            CallResult::Abandoned
        );
        assert_eq!(
            c.classify(&outcome(None, Some(ErrorKind::DeadlineExceeded), 5_000)),
            CallResult::Abandoned
        );
        let mut grpc = outcome(Some(200), None, 5);
        grpc.grpc_status = Some(14);
        assert_eq!(c.classify(&grpc), CallResult::Failure { slow: false });
    }

    #[test]
    fn a_call_abandoned_once_already_slow_counts_as_slow() {
        let c = classifier();
        assert_eq!(
            c.classify(&outcome(None, Some(ErrorKind::Abandoned), 150)),
            CallResult::AbandonedSlow
        );
        let mut grpc = outcome(Some(200), None, 5);
        grpc.grpc_status = Some(14);
        assert_eq!(c.classify(&grpc), CallResult::Failure { slow: false });
    }
}
