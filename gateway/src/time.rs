//! The gateway's one reading of the monotonic clock.
//!
//! Deadlines and timeouts here are Pingora's: they are `Instant`s and
//! `Duration`s that its timers compare with the real clock, so they cannot
//! run on the policies' injected [`Clock`](breakwater_plugins::Clock). Every
//! reading goes through [`now`], the one place the workspace's clippy ban on
//! `Instant::now` is lifted, so that a future fake clock has one seam to
//! replace.

use std::time::Instant;

/// The monotonic clock's time now.
#[allow(clippy::disallowed_methods)]
#[inline]
pub fn now() -> Instant {
    Instant::now()
}
