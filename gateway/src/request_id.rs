//! `X-Request-Id`: kept when the client sent a sane one, generated otherwise.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header, as a `HeaderName`: looking a `&str` up parses it every time.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we pass on; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The client's `x-request-id` if it is short, visible ASCII; else a new id.
pub fn from_request_or_new(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
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
    // Hex digits written by hand into a stack buffer: `format!` and its
    // `String` cost more than the rest of the id (this runs per request).
    let mut id = [0u8; 24];
    hex_into(&mut id[..16], prefix);
    hex_into(&mut id[16..], u64::from(n as u32));
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

/// Writes the low `out.len() * 4` bits of `v` as lowercase hex, big-endian.
fn hex_into(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
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
    fn hex_is_zero_padded_lowercase() {
        let mut out = [0u8; 8];
        hex_into(&mut out, 0xab);
        assert_eq!(&out, b"000000ab");
        let mut out = [0u8; 16];
        hex_into(&mut out, u64::MAX - 1);
        assert_eq!(&out, b"fffffffffffffffe");
        let id = new_id();
        assert_eq!(id.len(), 24);
        assert!(id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn new_ids_differ() {
        assert_ne!(new_id(), new_id());
    }
}
