//! Request deadlines: reading them from the caller, forwarding what is left.
//!
//! A caller that will give up after 3 s should not make the provider work for
//! 10 s: that wasted work is how the seed incident's provider drowned. The
//! caller's deadline comes from `grpc-timeout` (gRPC's `1-8 digits + unit`,
//! H/M/S/m/u/n) or from a configured header holding milliseconds. The
//! effective deadline is the earliest of that and the route's `total`
//! timeout; upstream timeouts are cut to it, and the time still left is
//! forwarded upstream in the same header(s).

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// A `HeaderName`, not a `&str`: a `&str` lookup parses the name on every call.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Parses a `grpc-timeout` value: `100m`, `2S`, `1H`.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` in milliseconds (at most 8 digits, so very long
/// deadlines are sent in seconds).
pub fn format_grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

/// The caller's deadline: the smaller of `grpc-timeout` and `header` (ms).
pub fn caller_deadline(headers: &HeaderMap, header: Option<&HeaderName>) -> Option<Duration> {
    let grpc = headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_grpc_timeout(v.trim()));
    let custom = header
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    earliest(grpc, custom)
}

/// The shorter of two optional budgets; either alone when the other is absent.
pub fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The headers that carry the remaining time upstream: `grpc-timeout` for
/// gRPC calls (or when the caller sent one), and the configured header.
pub fn forward(
    headers: &HeaderMap,
    remaining: Duration,
    grpc: bool,
    header: Option<&http::HeaderName>,
) -> Vec<(http::HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if grpc || headers.contains_key(GRPC_TIMEOUT) {
        if let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(remaining)) {
            out.push((GRPC_TIMEOUT, v));
        }
    }
    if let Some(h) = header {
        out.push((h.clone(), HeaderValue::from(remaining.as_millis() as u64)));
    }
    out
}

/// Sets the peer's timeouts: the route's, each cut to the time `left`
/// before the deadline, since nothing upstream may outlast it.
pub fn bound_timeouts(
    o: &mut pingora::upstreams::peer::PeerOptions,
    t: &crate::route::RouteTimeouts,
    left: Option<Duration>,
) {
    if let Some(c) = t.connect {
        o.connection_timeout = Some(c);
    }
    if let Some(r) = t.response {
        o.read_timeout = Some(r);
    }
    if let Some(left) = left {
        for timeout in [
            &mut o.connection_timeout,
            &mut o.read_timeout,
            &mut o.write_timeout,
        ] {
            *timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("0m"), Some(Duration::ZERO));
        for bad in ["", "m", "10", "10x", "-1m", "123456789m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(1234)), "1234m");
        assert_eq!(format_grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn caller_deadline_takes_the_smaller_and_forward_rewrites() {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("5S"));
        h.insert("x-timeout-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            caller_deadline(&h, Some(&HeaderName::from_static("x-timeout-ms"))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(caller_deadline(&h, None), Some(Duration::from_secs(5)));
        let name = http::HeaderName::from_static("x-timeout-ms");
        let out = forward(&h, Duration::from_millis(900), false, Some(&name));
        assert_eq!(out[0].0, "grpc-timeout");
        assert_eq!(out[0].1, "900m");
        assert_eq!(out[1], (name, HeaderValue::from_static("900")));
        let plain = forward(&HeaderMap::new(), Duration::from_millis(900), false, None);
        assert!(
            plain.is_empty(),
            "nothing to forward for a plain HTTP call without a deadline header"
        );
        let grpc = forward(&HeaderMap::new(), Duration::from_millis(900), true, None);
        assert_eq!(grpc[0].1, "900m");
    }
}
