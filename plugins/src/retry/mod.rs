//! Retry discipline: a budget, jittered backoff, and the route's settings.
//!
//! Breakwater does not retry unless a route asks for it, and then only what
//! the gateway can prove the upstream never processed. Even so, a fixed
//! retry count turns an upstream's bad minute into a multiple of its load —
//! the seed incident's 2 default retries tripled it. So retries also draw on
//! a **budget**, as Finagle's and Envoy's do and tower's `retry::budget`
//! argues: every request to a cluster deposits, every retry withdraws, and
//! retries may never exceed `budget_percent` of the recent requests (plus a
//! small `min_retries_per_sec` floor so a quiet cluster can still retry).
//! When the upstream is sick, the budget runs dry and the retries stop.

//!
//! [`policy`] holds the configuration, the backoff and the budget; [`rules`]
//! the decision, as a pure function of the failure, the request and the
//! cluster's state, so that the gateway's `attempts` only performs it.

mod policy;
mod rules;

pub use policy::{RetryBudget, RetryBudgetConfig, RetryConfig, RetryPolicy, BUDGET_WINDOW};
pub use rules::{retry, Attempt, Context, NoRetry, RetryVerdict};
