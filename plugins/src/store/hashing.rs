//! Hashing request keys to 64-bit store keys without allocating.
//!
//! Stores are keyed by a 64-bit hash of the key, not by the key text: a probe
//! hashes the key's parts straight from the request (no `String` is built on
//! the hot path) and an entry costs 8 bytes of key instead of a heap string.
//! The hasher is seeded randomly per process, so a client cannot craft keys
//! that collide (hash flooding). Two distinct keys share state only on a 64-bit
//! collision: with 1M live keys the chance that any pair collides is about
//! 3·10⁻⁸.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::keys::{KeySpec, KeyValue, RequestKeys};

/// A per-process randomly seeded hasher for store keys.
#[derive(Clone, Debug, Default)]
pub struct KeyHasher {
    state: foldhash::quality::RandomState,
}

impl KeyHasher {
    /// Hashes the parts of `spec` as found in `keys`; `None` when a part is missing.
    pub fn hash_spec(&self, spec: &KeySpec, keys: &RequestKeys) -> Option<u64> {
        let mut h = self.state.build_hasher();
        for part in spec.parts() {
            match keys.get(*part)? {
                KeyValue::Str(s) => {
                    0u8.hash(&mut h);
                    s.hash(&mut h);
                }
                KeyValue::Ip(ip) => {
                    1u8.hash(&mut h);
                    ip.hash(&mut h);
                }
            }
        }
        Some(h.finish())
    }

    /// Hashes a rendered key (`alice|goods`) the way [`Self::hash_spec`]
    /// hashes the request's parts, for keys typed by an operator.
    pub fn hash_rendered(&self, spec: &KeySpec, rendered: &str) -> Option<u64> {
        let parts = spec.parts();
        let mut values = rendered.splitn(parts.len(), '|');
        let mut h = self.state.build_hasher();
        for part in parts {
            let v = values.next()?;
            match part {
                crate::KeyRef::Ip => {
                    1u8.hash(&mut h);
                    v.parse::<std::net::IpAddr>().ok()?.hash(&mut h);
                }
                _ => {
                    0u8.hash(&mut h);
                    v.hash(&mut h);
                }
            }
        }
        Some(h.finish())
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
        assert_eq!(h.hash_rendered(&spec, "alice|goods|10.0.0.1"), Some(a));
        assert_eq!(h.hash_rendered(&spec, "alice|goods"), None);
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
