//! The ranges that numbers read from the config must fall in.
//!
//! Every number in the file is range-checked when the config compiles, with a
//! [`ConfigError`] that names its path (`routes[0].policies[1].rate_limit.limit:
//! must be between 1 and 1000000000`). The bounds are generous for an operator
//! and finite, and they are chosen so that the arithmetic combining config
//! values stays inside a `u64` of nanoseconds or counts:
//!
//! - counts (limits, thresholds, bursts, `min_requests`) are at most 10⁹
//!   ([`MAX_COUNT`]);
//! - counting windows are at most 30 days ([`MAX_WINDOW`], 2.6·10¹⁵ ns);
//!   window × limit is formed in `u128` (see `window::Tick::scaled`);
//! - a GCRA bucket refills in at most 365 days ([`MAX_REFILL`]): governor
//!   multiplies the emission interval by the burst in a plain `u64`, so
//!   `burst × window ÷ limit` is checked, not just each value;
//! - timeouts and open periods are at most 24 hours ([`MAX_TIMEOUT`]);
//! - any duration in the file is at most 365 days (checked by
//!   [`HumanDuration`](crate::duration::HumanDuration) as it is read), so its
//!   nanoseconds fit a `u64` with room to add a clock reading.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::ConfigError;

/// Most requests per window, events per threshold, tokens per burst.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Longest counting window (rate limits, abuse detectors, breakers).
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest timeout, open period or hold time.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest time a GCRA bucket may take to refill its whole burst.
pub const MAX_REFILL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest duration the file may hold anywhere.
pub const MAX_DURATION: Duration = MAX_REFILL;
/// Most slots, queue places, in-flight keys or entries of a table.
pub const MAX_SLOTS: u64 = 1_000_000;

/// `value` if it lies in `range`, else an error at `path`:
/// `must be between 1 and 1000000000`.
pub fn in_range<T: PartialOrd + Display + Copy>(
    value: T,
    range: RangeInclusive<T>,
    path: impl Into<String>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            path,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

/// `d` if it lies in `range`, else an error at `path`:
/// `must be between 1ms and 30d`.
pub fn duration_in(
    d: Duration,
    range: RangeInclusive<Duration>,
    path: impl Into<String>,
) -> Result<Duration, ConfigError> {
    if range.contains(&d) {
        Ok(d)
    } else {
        Err(ConfigError::new(
            path,
            format!(
                "must be between {} and {}",
                short(*range.start()),
                short(*range.end())
            ),
        ))
    }
}

/// A duration in its largest whole unit, as the file would write it
/// (`30d`, `24h`, `250ms`); `0s` for zero.
pub fn short(d: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    // Days read better from two on: `24h`, `48h` is `2d`.
    let (unit, per) = UNITS
        .iter()
        .skip(usize::from(n < 2 * UNITS[0].1))
        .find(|(_, per)| n.is_multiple_of(*per))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", n / per)
}

/// `d` in nanoseconds, saturating at `u64::MAX` (584 years) instead of
/// wrapping as `as u64` would.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_errors_name_the_path_and_the_bounds() {
        assert_eq!(in_range(5u64, 1..=MAX_COUNT, "p.limit"), Ok(5));
        let e = in_range(u64::MAX, 1..=MAX_COUNT, "p.limit").unwrap_err();
        assert_eq!(e.to_string(), "p.limit: must be between 1 and 1000000000");
        let e = duration_in(
            Duration::ZERO,
            Duration::from_millis(1)..=MAX_WINDOW,
            "p.window",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "p.window: must be between 1ms and 30d");
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(short(MAX_TIMEOUT), "24h");
        assert_eq!(short(MAX_WINDOW), "30d");
        assert_eq!(short(Duration::from_secs(90)), "90s");
        assert_eq!(short(Duration::from_millis(1500)), "1500ms");
        assert_eq!(short(Duration::ZERO), "0s");
    }

    #[test]
    fn nanos_saturate_instead_of_wrapping() {
        assert_eq!(nanos(Duration::from_secs(1)), 1_000_000_000);
        // `as u64` would wrap this to a small number.
        assert_eq!(nanos(Duration::from_secs(u64::MAX)), u64::MAX);
    }
}
