//! Whether a failed attempt is tried again: one pure decision.
//!
//! The rules, in the order they are checked (the first that fails says why):
//! 1. the route has a `retry:` section;
//! 2. the failure is one the upstream provably did not process (the
//!    connection was refused, or reset before any response byte), or an
//!    answer whose status the route opted in for;
//! 3. the request is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), or
//!    the route says all its requests are;
//! 4. attempts are left (`attempts` counts retries after the first try);
//! 5. the cluster's breaker is closed: a retry into an open or probing
//!    breaker is the avalanche we exist to stop;
//! 6. the cluster's budget pays for it (checked last: only a retry that
//!    would happen spends a token).
//!
//! Nothing here does I/O or waits: the gateway performs the verdict (the
//! backoff from [`super::RetryPolicy::backoff_for`], the next endpoint).

use http::Method;

use super::{RetryBudget, RetryPolicy};
use crate::ErrorKind;

/// How an upstream attempt went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// It failed; `responded`: the upstream had already sent a response
    /// header, so it saw (and may have acted on) the request.
    Failed { kind: ErrorKind, responded: bool },
    /// It answered with this status.
    Answered { status: u16 },
}

/// Why an attempt is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    /// The route has no `retry:` section.
    NotConfigured,
    /// The upstream may have processed the request (a timeout, a reset
    /// after it answered), or the answer's status is not opted in.
    NotRetryable,
    /// POST or PATCH on a route not marked `idempotent: true`.
    NotIdempotent,
    /// Every allowed attempt has been made.
    AttemptsSpent,
    /// The cluster's breaker is open or half-open.
    BreakerNotClosed,
    /// The cluster's retry budget is spent.
    BudgetExhausted,
}

/// The decision: `Ok(())` means retry (the budget's token is taken).
pub type RetryVerdict = Result<(), NoRetry>;

/// What the cluster and the request bring to the decision.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub method: &'a Method,
    /// Attempts made so far (1 = the first try).
    pub made: u32,
    /// The cluster's breaker is closed (or there is none).
    pub breaker_closed: bool,
    pub budget: &'a RetryBudget,
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether the upstream provably did not act on the request, or the route
/// opted in for retrying this answer.
fn retryable(policy: &RetryPolicy, attempt: Attempt) -> bool {
    match attempt {
        Attempt::Failed { kind, responded } => match kind {
            ErrorKind::ConnectRefused => true,
            ErrorKind::Reset => !responded,
            _ => false,
        },
        Attempt::Answered { status } => policy.on_statuses.contains(&status),
    }
}

/// Decides whether `attempt` is retried. See the module docs for the rules.
pub fn retry(policy: Option<&RetryPolicy>, attempt: Attempt, cx: Context<'_>) -> RetryVerdict {
    let policy = policy.ok_or(NoRetry::NotConfigured)?;
    if !retryable(policy, attempt) {
        return Err(NoRetry::NotRetryable);
    }
    if !(policy.idempotent || idempotent(cx.method)) {
        return Err(NoRetry::NotIdempotent);
    }
    if cx.made > policy.attempts {
        return Err(NoRetry::AttemptsSpent);
    }
    if !cx.breaker_closed {
        return Err(NoRetry::BreakerNotClosed);
    }
    if !cx.budget.try_withdraw() {
        return Err(NoRetry::BudgetExhausted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{RetryBudgetConfig, RetryConfig};
    use crate::FakeClock;
    use std::sync::Arc;

    fn policy(yaml: &str) -> RetryPolicy {
        serde_yaml::from_str::<RetryConfig>(yaml)
            .unwrap()
            .compile("retry")
            .unwrap()
    }

    fn budget(clock: &Arc<FakeClock>, percent: f64, floor: u32) -> RetryBudget {
        RetryBudgetConfig {
            budget_percent: percent,
            min_retries_per_sec: floor,
        }
        .compile("retry_budget", clock.clone())
        .unwrap()
    }

    const REFUSED: Attempt = Attempt::Failed {
        kind: ErrorKind::ConnectRefused,
        responded: false,
    };

    fn cx<'a>(method: &'a Method, made: u32, budget: &'a RetryBudget) -> Context<'a> {
        Context {
            method,
            made,
            breaker_closed: true,
            budget,
        }
    }

    #[test]
    fn only_failures_the_upstream_never_processed_are_retried() {
        let clock = Arc::new(FakeClock::new());
        let b = budget(&clock, 100.0, 100);
        let p = policy("{ attempts: 2 }");
        let get = Method::GET;
        let failed = |kind, responded| Attempt::Failed { kind, responded };
        for (attempt, verdict) in [
            (REFUSED, Ok(())),
            (failed(ErrorKind::Reset, false), Ok(())),
            (failed(ErrorKind::Reset, true), Err(NoRetry::NotRetryable)),
            (
                failed(ErrorKind::Timeout, false),
                Err(NoRetry::NotRetryable),
            ),
            (
                failed(ErrorKind::ConnectTimeout, false),
                Err(NoRetry::NotRetryable),
            ),
            (
                failed(ErrorKind::DeadlineExceeded, false),
                Err(NoRetry::NotRetryable),
            ),
            (
                Attempt::Answered { status: 502 },
                Err(NoRetry::NotRetryable),
            ),
        ] {
            assert_eq!(
                retry(Some(&p), attempt, cx(&get, 1, &b)),
                verdict,
                "{attempt:?}"
            );
        }
        assert_eq!(
            retry(None, REFUSED, cx(&get, 1, &b)),
            Err(NoRetry::NotConfigured)
        );
    }

    #[test]
    fn statuses_are_retried_only_when_the_route_opts_in() {
        let clock = Arc::new(FakeClock::new());
        let b = budget(&clock, 100.0, 100);
        let p = policy("{ attempts: 1, on_statuses: [502] }");
        let get = Method::GET;
        let answered = |status| Attempt::Answered { status };
        assert_eq!(retry(Some(&p), answered(502), cx(&get, 1, &b)), Ok(()));
        assert_eq!(
            retry(Some(&p), answered(500), cx(&get, 1, &b)),
            Err(NoRetry::NotRetryable)
        );
    }

    #[test]
    fn post_needs_the_route_to_be_idempotent() {
        let clock = Arc::new(FakeClock::new());
        let b = budget(&clock, 100.0, 100);
        let post = Method::POST;
        assert_eq!(
            retry(Some(&policy("{ attempts: 1 }")), REFUSED, cx(&post, 1, &b)),
            Err(NoRetry::NotIdempotent)
        );
        let marked = policy("{ attempts: 1, idempotent: true }");
        assert_eq!(retry(Some(&marked), REFUSED, cx(&post, 1, &b)), Ok(()));
    }

    #[test]
    fn attempts_and_an_unclosed_breaker_stop_retries_before_the_budget_pays() {
        let clock = Arc::new(FakeClock::new());
        // A floor of 1/s over the 10 s window: 10 tokens, no requests needed.
        let b = budget(&clock, 0.0, 1);
        let p = policy("{ attempts: 2 }");
        let get = Method::GET;
        assert_eq!(retry(Some(&p), REFUSED, cx(&get, 2, &b)), Ok(()));
        assert_eq!(
            retry(Some(&p), REFUSED, cx(&get, 3, &b)),
            Err(NoRetry::AttemptsSpent)
        );
        let open = Context {
            breaker_closed: false,
            ..cx(&get, 1, &b)
        };
        assert_eq!(
            retry(Some(&p), REFUSED, open),
            Err(NoRetry::BreakerNotClosed)
        );
        // Refusals above took no token: 9 of the 10 are left.
        for _ in 0..9 {
            assert_eq!(retry(Some(&p), REFUSED, cx(&get, 1, &b)), Ok(()));
        }
        assert_eq!(
            retry(Some(&p), REFUSED, cx(&get, 1, &b)),
            Err(NoRetry::BudgetExhausted)
        );
    }

    #[test]
    fn the_budget_refills_as_the_window_slides_on_the_fake_clock() {
        let clock = Arc::new(FakeClock::new());
        let b = budget(&clock, 20.0, 0);
        let p = policy("{ attempts: 1 }");
        let get = Method::GET;
        for _ in 0..10 {
            b.deposit();
        }
        // 20% of 10 requests: two retries.
        assert_eq!(retry(Some(&p), REFUSED, cx(&get, 1, &b)), Ok(()));
        assert_eq!(retry(Some(&p), REFUSED, cx(&get, 1, &b)), Ok(()));
        assert_eq!(
            retry(Some(&p), REFUSED, cx(&get, 1, &b)),
            Err(NoRetry::BudgetExhausted)
        );
        // The window moves on: old retries and requests age out; new
        // requests deposit again.
        clock.advance(crate::retry::BUDGET_WINDOW * 2);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(retry(Some(&p), REFUSED, cx(&get, 1, &b)), Ok(()));
    }
}
