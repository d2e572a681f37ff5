//! The byte encoding of a key that every hasher of store keys is fed.
//!
//! Fleet mode names keys in Redis by a hash of this encoding, so it is part
//! of the fleet's wire format: instances of different builds, versions and
//! architectures must produce the same bytes for the same key. It is
//! therefore written out here byte by byte, never taken from `Hash` impls
//! (std's derived `Hash` feeds enum discriminants as `isize`, integers in
//! native byte order and a `0xff` after each `str`, none of it promised to
//! stay).
//!
//! Version 1, for a key with label `L` (empty for a policy's own store, the
//! key spec's text such as `user+endpoint` for the block list) and values
//! `v1 … vn`:
//!
//! ```text
//! len(L) as u64 little-endian ‖ L (UTF-8)
//! for each value:
//!   tag (1 byte) ‖ len(bytes) as u64 little-endian ‖ bytes
//!     tag 0x00: text, bytes = its UTF-8
//!     tag 0x04: IPv4, bytes = the 4 octets in network order
//!     tag 0x06: IPv6, bytes = the 16 octets in network order
//! ```
//!
//! Addresses are canonical first (`::ffff:a.b.c.d` is the IPv4 `a.b.c.d`),
//! as at extraction. Every field carries its length, so the encoding is
//! injective: two different keys never give the same bytes (`("ab", "c")`
//! and `("a", "bc")` differ, and so do a text `"1.2.3.4"` and the address).
//! Changing any of this renames every key of a running fleet: the golden
//! tests in `hashing.rs` fail on such a change on purpose.

use std::hash::Hasher;
use std::net::IpAddr;

use crate::keys::{canonical_ip, KeyValue};

/// Tag of a text value.
pub const TAG_TEXT: u8 = 0x00;
/// Tag of an IPv4 address.
pub const TAG_IPV4: u8 = 0x04;
/// Tag of an IPv6 address.
pub const TAG_IPV6: u8 = 0x06;

/// Feeds a key's encoding to a hasher in few, large writes: fields are
/// gathered in a stack buffer and passed on when it fills. A hasher that
/// streams (SipHash) gives the same result for any split of the bytes; one
/// that does not (foldhash, used per process) sees the same splits for the
/// same key, which is all it needs.
pub struct KeyEncoder<H: Hasher> {
    hasher: H,
    buf: [u8; 64],
    len: usize,
}

impl<H: Hasher> KeyEncoder<H> {
    /// Starts a key under `label`.
    pub fn new(hasher: H, label: &str) -> Self {
        let mut e = Self {
            hasher,
            buf: [0; 64],
            len: 0,
        };
        e.field(label.as_bytes());
        e
    }

    /// Appends one value.
    pub fn value(&mut self, value: &KeyValue<'_>) {
        match value {
            KeyValue::Str(s) => {
                self.put(&[TAG_TEXT]);
                self.field(s.as_bytes());
            }
            KeyValue::Ip(ip) => match canonical_ip(*ip) {
                IpAddr::V4(v4) => {
                    self.put(&[TAG_IPV4]);
                    self.field(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    self.put(&[TAG_IPV6]);
                    self.field(&v6.octets());
                }
            },
        }
    }

    /// The hash of everything appended.
    pub fn finish(mut self) -> u64 {
        self.flush();
        self.hasher.finish()
    }

    /// A length-prefixed field.
    fn field(&mut self, bytes: &[u8]) {
        self.put(&(bytes.len() as u64).to_le_bytes());
        self.put(bytes);
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.flush();
            if bytes.len() > self.buf.len() {
                self.hasher.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.hasher.write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "hasher" that keeps the bytes it is fed.
    #[derive(Default)]
    pub struct Recorder(pub Vec<u8>);

    impl Hasher for Recorder {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
    }

    fn encode(label: &str, values: &[KeyValue<'_>]) -> Vec<u8> {
        let mut rec = Recorder::default();
        let mut e = KeyEncoder::new(&mut rec, label);
        for v in values {
            e.value(v);
        }
        e.finish();
        rec.0
    }

    #[test]
    fn the_encoding_is_the_documented_bytes() {
        let got = encode(
            "user+ip",
            &[
                KeyValue::Str("alice"),
                KeyValue::Ip("::ffff:10.0.0.1".parse().unwrap()),
                KeyValue::Ip("2001:db8::1".parse().unwrap()),
            ],
        );
        let mut want = vec![7, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"user+ip");
        want.extend_from_slice(&[0x00, 5, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(b"alice");
        // The mapped address is its IPv4 client.
        want.extend_from_slice(&[0x04, 4, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        want.extend_from_slice(&[0x06, 16, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(got, want);
    }

    #[test]
    fn different_keys_encode_differently() {
        let keys: [(&str, Vec<KeyValue<'_>>); 6] = [
            ("", vec![KeyValue::Str("ab"), KeyValue::Str("c")]),
            ("", vec![KeyValue::Str("a"), KeyValue::Str("bc")]),
            ("", vec![KeyValue::Str("1.2.3.4")]),
            ("", vec![KeyValue::Ip("1.2.3.4".parse().unwrap())]),
            ("a", vec![KeyValue::Str("")]),
            ("", vec![KeyValue::Str("a")]),
        ];
        for (i, (la, va)) in keys.iter().enumerate() {
            for (lb, vb) in &keys[i + 1..] {
                assert_ne!(encode(la, va), encode(lb, vb), "{la:?} {va:?}");
            }
        }
    }

    #[test]
    fn long_values_are_encoded_whole() {
        let long = "x".repeat(1000);
        let got = encode("k", &[KeyValue::Str(&long), KeyValue::Str("tail")]);
        assert_eq!(got.len(), 8 + 1 + (1 + 8 + 1000) + (1 + 8 + 4));
        assert_eq!(&got[got.len() - 4..], b"tail");
        assert_eq!(&got[18..1018], long.as_bytes());
    }
}
