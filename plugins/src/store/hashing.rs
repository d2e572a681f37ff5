//! Hashing request keys to 64-bit store keys without allocating.
//!
//! Stores are keyed by a 64-bit hash of the key, not by the key text: a probe
//! hashes the key's parts straight from the request (no `String` is built on
//! the hot path) and an entry costs 8 bytes of key instead of a heap string.
//! Two distinct keys share state only on a 64-bit collision: with 1M live
//! keys the chance that any pair collides is about 3·10⁻⁸.
//!
//! Both kinds of hasher are fed the same specified byte encoding of the key
//! (`key_encoding.rs`), never `Hash` impls:
//! - **local** (the default): foldhash, seeded randomly per process. Fast,
//!   and a client cannot craft colliding keys (hash flooding) without the
//!   seed. Its output means nothing outside this process.
//! - **fleet** ([`KeyHasher::fleet`]): SipHash-1-3 under the fleet's 128-bit
//!   key ([`FleetKey`]). Fleet mode names keys in Redis by it, so its output
//!   is part of the wire format: SipHash is a specified function (the same
//!   bits on every platform, version and build), and a keyed PRF designed
//!   against hash flooding, which a seeded non-cryptographic hash (foldhash,
//!   XXH3) does not claim to be. 1-3 rounds, as Rust's std `HashMap`: the
//!   rounds the hash-flooding defence needs, no more. It is slower than
//!   foldhash, so only `scope: global` policies use it. Pinned by golden
//!   values below: a change of algorithm or encoding fails them.

use std::hash::{BuildHasher, Hasher};

use siphasher::sip::SipHasher13;

use super::fleet_key::FleetKey;
use super::key_encoding::KeyEncoder;
use crate::keys::{KeySpec, KeyValue, RequestKeys};

/// A hasher for store keys: randomly seeded per process by default, or the
/// fleet's stable keyed hash ([`KeyHasher::fleet`]) where instances must agree.
#[derive(Clone, Debug)]
pub struct KeyHasher {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Local(foldhash::quality::SeedableRandomState),
    Fleet(FleetKey),
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self {
            kind: Kind::Local(foldhash::quality::SeedableRandomState::random()),
        }
    }
}

impl KeyHasher {
    /// The hasher every instance of a fleet builds alike from `key`: cluster
    /// mode names keys in Redis by these hashes, so the same key hashes the
    /// same on every instance, whatever its build or architecture. The key
    /// is the only defence against crafted collisions, so it comes from a
    /// secret seed (`fleet.hash_seed`).
    pub fn fleet(key: FleetKey) -> Self {
        Self {
            kind: Kind::Fleet(key),
        }
    }

    /// Hashes `label` and a sequence of key values.
    fn hash_values<'a>(
        &self,
        label: &str,
        values: impl Iterator<Item = Option<KeyValue<'a>>>,
    ) -> Option<u64> {
        fn encode<'a, H: Hasher>(
            h: H,
            label: &str,
            values: impl Iterator<Item = Option<KeyValue<'a>>>,
        ) -> Option<u64> {
            let mut e = KeyEncoder::new(h, label);
            for v in values {
                e.value(&v?);
            }
            Some(e.finish())
        }
        match &self.kind {
            Kind::Local(state) => encode(state.build_hasher(), label, values),
            Kind::Fleet(k) => encode(SipHasher13::new_with_keys(k.k0, k.k1), label, values),
        }
    }

    /// Hashes raw bytes (a header value), without the key encoding.
    pub fn hash_bytes(&self, bytes: &[u8]) -> u64 {
        match &self.kind {
            Kind::Local(state) => {
                let mut h = state.build_hasher();
                h.write(bytes);
                h.finish()
            }
            Kind::Fleet(k) => SipHasher13::new_with_keys(k.k0, k.k1).hash(bytes),
        }
    }

    /// Hashes the parts of `spec` as found in `keys`; `None` when a part is missing.
    pub fn hash_spec(&self, spec: &KeySpec, keys: &RequestKeys) -> Option<u64> {
        self.hash_values("", spec.parts().iter().map(|p| keys.get(*p)))
    }

    /// Like [`Self::hash_spec`], under a label (the block list uses the spec's
    /// text, so `ip:1.2.3.4` and `user:1.2.3.4` differ).
    pub fn hash_labeled(&self, label: &str, spec: &KeySpec, keys: &RequestKeys) -> Option<u64> {
        self.hash_values(label, spec.parts().iter().map(|p| keys.get(*p)))
    }

    /// Hashes a key written as text, `<spec>:<value>` with values joined by
    /// `|` (`ip:10.0.0.1`, `user+endpoint:alice|goods`), exactly as
    /// [`Self::hash_labeled`] hashes the same key taken from a request.
    /// Parts named `ip` must parse as IP addresses; an IPv6 one stands for
    /// its network of `ipv6_prefix` bits, as a request's `ip` key does.
    pub fn hash_text(&self, text: &str, ipv6_prefix: u8) -> Result<(u64, String), String> {
        let (spec, value) = text.split_once(':').ok_or_else(|| {
            format!("\"{text}\" is not <key>:<value>, e.g. ip:203.0.113.7 or user:alice")
        })?;
        let names: Vec<&str> = spec.split('+').map(str::trim).collect();
        if names.iter().any(|n| n.is_empty()) || value.is_empty() {
            return Err(format!("\"{text}\" is not <key>:<value>"));
        }
        let raw: Vec<&str> = value.splitn(names.len(), '|').collect();
        if raw.len() != names.len() {
            return Err(format!(
                "\"{text}\" needs {} values joined by '|'",
                names.len()
            ));
        }
        let mut values = Vec::with_capacity(raw.len());
        for (name, v) in names.iter().zip(&raw) {
            if *name == "ip" {
                let ip: std::net::IpAddr = v
                    .parse()
                    .map_err(|_| format!("\"{v}\" is not an IP address"))?;
                values.push(KeyValueOwned::Ip(crate::keys::ip_key(ip, ipv6_prefix)));
            } else {
                values.push(KeyValueOwned::Str(v));
            }
        }
        let label = names.join("+");
        let hash = self
            .hash_values(&label, values.iter().map(|v| Some(v.borrow())))
            .unwrap_or_default();
        let canonical = format!(
            "{label}:{}",
            values
                .iter()
                .map(|v| v.borrow().to_string())
                .collect::<Vec<_>>()
                .join("|")
        );
        Ok((hash, canonical))
    }
}

enum KeyValueOwned<'a> {
    Str(&'a str),
    Ip(std::net::IpAddr),
}

impl KeyValueOwned<'_> {
    fn borrow(&self) -> KeyValue<'_> {
        match self {
            KeyValueOwned::Str(s) => KeyValue::Str(s),
            KeyValueOwned::Ip(ip) => KeyValue::Ip(*ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn keys(user: &str) -> RequestKeys {
        RequestKeys {
            endpoint: Arc::from("goods"),
            ip: "10.0.0.1".parse().unwrap(),
            client: "10.0.0.1".parse().unwrap(),
            user: Some(user.into()),
            custom: vec![],
        }
    }

    #[test]
    fn equal_keys_hash_equal_and_rendered_form_agrees() {
        let h = KeyHasher::default();
        let spec = KeySpec::parse("user+endpoint+ip", &[], "k").unwrap();
        let a = h.hash_spec(&spec, &keys("alice")).unwrap();
        assert_eq!(a, h.hash_spec(&spec, &keys("alice")).unwrap());
        assert_ne!(a, h.hash_spec(&spec, &keys("bob")).unwrap());
        let labeled = h
            .hash_labeled("user+endpoint+ip", &spec, &keys("alice"))
            .unwrap();
        assert_ne!(a, labeled);
        let (from_text, canonical) = h
            .hash_text("user+endpoint+ip:alice|goods|10.0.0.1", 128)
            .unwrap();
        assert_eq!(from_text, labeled);
        assert_eq!(canonical, "user+endpoint+ip:alice|goods|10.0.0.1");
        assert!(h.hash_text("user+endpoint:alice", 128).is_err());
        assert!(h.hash_text("ip:not-an-ip", 128).is_err());
        assert!(h.hash_text("nocolon", 128).is_err());
        // Mapped IPv6 is the IPv4 client, as at extraction.
        let ip = KeySpec::parse("ip", &[], "k").unwrap();
        assert_eq!(
            h.hash_text("ip:::ffff:10.0.0.1", 128).unwrap().0,
            h.hash_labeled("ip", &ip, &keys("x")).unwrap()
        );
    }

    #[test]
    fn fleet_hashers_agree_with_each_other_and_differ_by_seed() {
        let spec = KeySpec::parse("user", &[], "k").unwrap();
        let seed = |s: &str| KeyHasher::fleet(FleetKey::from_seed(s));
        let a = seed("seven-seven-seven").hash_labeled("user", &spec, &keys("alice"));
        let b = seed("seven-seven-seven").hash_labeled("user", &spec, &keys("alice"));
        let c = seed("eight-eight-eight").hash_labeled("user", &spec, &keys("alice"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            KeyHasher::default().hash_labeled("user", &spec, &keys("alice")),
            KeyHasher::default().hash_labeled("user", &spec, &keys("alice"))
        );
    }

    /// Fleet key names are part of the fleet's wire format: instances of
    /// different builds and architectures must agree. These values were
    /// computed by an independent implementation (Python: `hashlib.blake2b`
    /// for the key, SipHash-1-3 from the paper's reference, the encoding of
    /// `key_encoding.rs`). A change of algorithm, key derivation or encoding
    /// fails this test, and must not be made without a migration.
    #[test]
    fn fleet_hashes_are_pinned() {
        let key = FleetKey::from_seed("correct horse battery staple");
        let h = KeyHasher::fleet(key);
        let hex = |v: Option<u64>| format!("{:016x}", v.unwrap());
        let user = KeySpec::parse("user", &[], "k").unwrap();
        let combo = KeySpec::parse("user+endpoint+ip", &[], "k").unwrap();
        // A policy's own store (unlabeled), as global limits name keys.
        assert_eq!(hex(h.hash_spec(&user, &keys("alice"))), "aa543320ee5a10c5");
        assert_eq!(
            hex(h.hash_labeled("user+endpoint+ip", &combo, &keys("alice"))),
            "c311e3799ab2c8f7"
        );
        assert_eq!(
            hex(Some(h.hash_text("ip:2001:db8::1", 128).unwrap().0)),
            "1ec9fa41c4941c1d"
        );
        assert_eq!(
            hex(Some(h.hash_text("ip:::ffff:10.0.0.1", 128).unwrap().0)),
            "5360a41053f9e564"
        );
        // And that is SipHash-1-3 of exactly the documented bytes.
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(&[0x00, 5, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(b"alice");
        assert_eq!(
            SipHasher13::new_with_keys(key.k0, key.k1).hash(&bytes),
            0xaa54_3320_ee5a_10c5
        );
    }

    #[test]
    fn missing_part_has_no_hash() {
        let h = KeyHasher::default();
        let spec = KeySpec::parse("user", &[], "k").unwrap();
        let mut k = keys("x");
        k.user = None;
        assert_eq!(h.hash_spec(&spec, &k), None);
    }
}
