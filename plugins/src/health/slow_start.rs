//! Slow start: an endpoint the health checks bring back (or a reload adds
//! to a serving cluster) takes a growing share of its traffic over a
//! window instead of a full share at once. A recovered provider is cold
//! (empty caches, a JIT not yet warm, a queue of dead work still draining,
//! as seed 002's was): a full share is what knocks it over again.
//!
//! The share grows linearly from 10% to 100% of a normal one over the
//! window: HAProxy's `slowstart` ramps a server's weight linearly, Envoy's
//! slow start mode with `aggression: 1` and `min_weight_percent: 10` is the
//! same curve. The gateway applies it when choosing an endpoint: a ramping
//! endpoint is taken with probability [`share`], else the choice moves on;
//! a ramping endpoint that is the only one in rotation is still taken.

use std::time::Duration;

/// The share a ramping endpoint starts at: enough probes of real traffic to
/// warm it, too few to swamp it.
pub const MIN_SHARE: f64 = 0.1;

/// The share of a normal endpoint's traffic an endpoint in rotation for
/// `age` of a `window` takes.
pub fn share(age: Duration, window: Duration) -> f64 {
    if window.is_zero() || age >= window {
        return 1.0;
    }
    (age.as_secs_f64() / window.as_secs_f64()).max(MIN_SHARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_ramps_linearly_from_a_tenth_to_all() {
        let w = Duration::from_secs(30);
        assert_eq!(share(Duration::ZERO, w), MIN_SHARE);
        assert_eq!(share(Duration::from_secs(1), w), MIN_SHARE);
        assert!((share(Duration::from_secs(15), w) - 0.5).abs() < 1e-9);
        assert_eq!(share(w, w), 1.0);
        assert_eq!(share(Duration::from_secs(3600), w), 1.0);
        assert_eq!(
            share(Duration::ZERO, Duration::ZERO),
            1.0,
            "no window, no ramp"
        );
    }
}
