//! What the upstream's answer says about storing it (RFC 9111 §3, §4.2):
//! whether the hot-key cache may store it, for how long it is fresh, and how
//! old it already is.
//!
//! - Not stored: `Cache-Control: no-store`, `private` or `no-cache` (also
//!   with a field list), a `max-age` or `s-maxage` of 0 or not a number, a
//!   `Set-Cookie` (the answer is someone's), an `Age` that is not a number.
//! - **Lifetime**: the smaller of `max-age` and `s-maxage`, if any, less the
//!   answer's `Age` (the seconds it already spent in caches upstream, §4.2.3).
//!   An answer whose `Age` reaches its max-age is already stale: not stored.
//!   Without either directive the answer has no lifetime of its own and the
//!   rule's `ttl` applies in full, `Age` or not; with one, the shorter of the
//!   two applies.
//! - **Age**: a cached answer's `Age` is its `Age` when stored plus its time
//!   in the cache (§5.1), so a client sees how old it really is.
//!
//! Limits: `Expires`, heuristic freshness and `must-revalidate` are not read
//! (the rule's `ttl` stands in for them); `s-maxage` does not override a
//! shorter `max-age`, as a shared cache may let it.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// Why an answer is not stored.
pub(super) const FORBIDDEN: &str = "the upstream forbids storing the response";
pub(super) const ALREADY_STALE: &str = "the response is already stale (Age reaches max-age)";
const BAD_AGE: &str = "the response's Age is not a number";

/// How long an answer may be served fresh, as its upstream says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Freshness {
    /// Fresh for at most this long from now; `None`: no limit of its own.
    pub lifetime: Option<Duration>,
    /// Seconds it had spent in caches before this one (its `Age`).
    pub age: u64,
}

/// Reads the answer's `Cache-Control`, `Set-Cookie` and `Age`.
pub(super) fn freshness(headers: &[(HeaderName, HeaderValue)]) -> Result<Freshness, &'static str> {
    let mut max_age: Option<u64> = None;
    let mut age = 0u64;
    for (name, value) in headers {
        if name == http::header::SET_COOKIE {
            return Err(FORBIDDEN);
        }
        if name == http::header::AGE {
            // One field by the grammar; the oldest claim if there are more.
            let secs = value.to_str().ok().and_then(delta_seconds).ok_or(BAD_AGE)?;
            age = age.max(secs);
            continue;
        }
        if name != http::header::CACHE_CONTROL {
            continue;
        }
        for directive in value.to_str().unwrap_or("").split(',') {
            let d = directive.trim().to_ascii_lowercase();
            match d.split_once('=') {
                None if matches!(d.as_str(), "no-store" | "private" | "no-cache") => {
                    return Err(FORBIDDEN)
                }
                Some(("private" | "no-cache", _)) => return Err(FORBIDDEN),
                Some(("max-age" | "s-maxage", v)) => {
                    let secs = delta_seconds(v.trim_matches('"')).ok_or(FORBIDDEN)?;
                    if secs == 0 {
                        return Err(FORBIDDEN);
                    }
                    max_age = Some(secs.min(max_age.unwrap_or(u64::MAX)));
                }
                _ => {}
            }
        }
    }
    let lifetime = match max_age {
        None => None,
        Some(max_age) if age >= max_age => return Err(ALREADY_STALE),
        Some(max_age) => Some(Duration::from_secs(max_age - age)),
    };
    Ok(Freshness { lifetime, age })
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only. A value past `u64` is
/// read as `u64::MAX`, "the greatest positive integer it can conveniently
/// represent".
fn delta_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(headers: &[(&'static str, &'static str)]) -> Result<Freshness, &'static str> {
        let headers: Vec<_> = headers
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect();
        freshness(&headers)
    }

    fn fresh_for(secs: u64, age: u64) -> Result<Freshness, &'static str> {
        Ok(Freshness {
            lifetime: Some(Duration::from_secs(secs)),
            age,
        })
    }

    #[test]
    fn age_counts_against_max_age() {
        let cc = ("cache-control", "public, max-age=60");
        assert_eq!(read(&[cc]), fresh_for(60, 0));
        assert_eq!(read(&[cc, ("age", "50")]), fresh_for(10, 50));
        assert_eq!(read(&[cc, ("age", "59")]), fresh_for(1, 59));
        assert_eq!(read(&[cc, ("age", "60")]), Err(ALREADY_STALE));
        assert_eq!(
            read(&[cc, ("age", "99999999999999999999999")]),
            Err(ALREADY_STALE)
        );
        // Two claims: the older one.
        assert_eq!(read(&[cc, ("age", "5"), ("age", "20")]), fresh_for(40, 20));
        // The smaller of max-age and s-maxage.
        let both = ("cache-control", "s-maxage=30, max-age=60");
        assert_eq!(read(&[both, ("age", "10")]), fresh_for(20, 10));
    }

    #[test]
    fn without_max_age_the_answer_has_no_lifetime_of_its_own() {
        assert_eq!(
            read(&[("age", "500")]),
            Ok(Freshness {
                lifetime: None,
                age: 500
            })
        );
        assert_eq!(
            read(&[]),
            Ok(Freshness {
                lifetime: None,
                age: 0
            })
        );
    }

    #[test]
    fn forbidding_or_unreadable_answers_are_not_stored() {
        for headers in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private=\"x-user\"")],
            &[("cache-control", "No-Cache")],
            &[("cache-control", "max-age=0")],
            &[("cache-control", "max-age=soon")],
            &[("cache-control", "max-age=-1")],
            &[("set-cookie", "session=1")],
        ] {
            assert_eq!(read(headers), Err(FORBIDDEN), "{headers:?}");
        }
        for age in ["-1", "1.5", "soon", ""] {
            let headers = [("age", age)];
            assert_eq!(read(&headers), Err(BAD_AGE), "Age: {age:?}");
        }
    }
}
