//! Rate-limit response headers.
//!
//! `Retry-After` (RFC 9110) in whole seconds, and the IETF RateLimit fields
//! of draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "name";q=100;w=1`
//! announces the quota `q` per window of `w` seconds, and
//! `RateLimit: "name";r=0;t=3` the remaining quota `r` and the seconds `t`
//! until it resets. Windows are whole seconds in the draft; a sub-second
//! window is announced as its equivalent quota per second.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up, at least 1.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

/// An sf-string: quotes and backslashes escaped, non-printable ASCII dropped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
    out
}

/// The `RateLimit-Policy` value for a policy, computed once.
pub(crate) fn policy_value(name: &str, limit: u64, window: Duration) -> HeaderValue {
    let (q, w) = if window >= Duration::from_secs(1) && window.subsec_nanos() == 0 {
        (limit, window.as_secs())
    } else {
        let per_sec = (limit as f64 / window.as_secs_f64()).round().max(1.0) as u64;
        (per_sec, 1)
    };
    HeaderValue::from_str(&format!("{};q={q};w={w}", sf_string(name)))
        .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""))
}

/// The headers of a 429.
pub(crate) fn rejection_headers(
    policy: &HeaderValue,
    name: &str,
    remaining: u64,
    retry_after: Duration,
) -> Vec<(HeaderName, HeaderValue)> {
    let secs = ceil_secs(retry_after);
    let mut out = vec![
        (http::header::RETRY_AFTER, HeaderValue::from(secs)),
        (RATELIMIT_POLICY, policy.clone()),
    ];
    if let Ok(v) = HeaderValue::from_str(&format!("{};r={remaining};t={secs}", sf_string(name))) {
        out.push((RATELIMIT, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_value_in_whole_seconds_or_per_second() {
        assert_eq!(
            policy_value("per-ip", 100, Duration::from_secs(60)),
            "\"per-ip\";q=100;w=60"
        );
        assert_eq!(
            policy_value("p", 50, Duration::from_millis(500)),
            "\"p\";q=100;w=1"
        );
        assert_eq!(
            policy_value("a\"b", 1, Duration::from_secs(1)),
            "\"a\\\"b\";q=1;w=1"
        );
    }

    #[test]
    fn rejection_headers_round_up_retry_after() {
        let p = policy_value("p", 10, Duration::from_secs(1));
        let h = rejection_headers(&p, "p", 0, Duration::from_millis(1200));
        assert_eq!(
            h[0],
            (http::header::RETRY_AFTER, HeaderValue::from_static("2"))
        );
        assert_eq!(h[2].1, "\"p\";r=0;t=2");
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }
}
