//! `X-Request-Id`: kept when the client sent a sane one, generated otherwise.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};

/// Longest client-supplied id we pass on; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The client's `x-request-id` if it is short, visible ASCII; else a new id.
pub fn from_request_or_new(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(new_id)
}

/// A new id: a per-process random prefix and a counter, as 24 hex digits.
/// Unique within a process by construction, and across processes with
/// overwhelming probability; cheap (no syscall, no lock).
pub fn new_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{prefix:016x}{:08x}", n as u32);
    HeaderValue::from_str(&id).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_hostile_ones() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(from_request_or_new(&h), "abc-123");
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"x".repeat(500)).unwrap(),
        );
        assert_eq!(from_request_or_new(&h).len(), 24);
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(from_request_or_new(&h).len(), 24);
    }

    #[test]
    fn new_ids_differ() {
        assert_ne!(new_id(), new_id());
    }
}
