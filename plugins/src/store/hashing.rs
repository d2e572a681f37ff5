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

/// A hasher for store keys: randomly seeded per process by default, or
/// seeded by the fleet ([`KeyHasher::fleet`]) where instances must agree.
#[derive(Clone, Debug)]
pub struct KeyHasher {
    state: foldhash::quality::SeedableRandomState,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self {
            state: foldhash::quality::SeedableRandomState::random(),
        }
    }
}

impl KeyHasher {
    /// A hasher every instance of a fleet builds alike from `seed`: cluster
    /// mode names keys in Redis by these hashes, so the same key must hash
    /// the same on every instance. The hash is stable for one build of the
    /// gateway (foldhash's algorithm may change between versions: a rolling
    /// upgrade across such a change splits counts until it completes). The
    /// seed is the only defence against crafted collisions, so a fleet
    /// should set a secret one (`cluster.hash_seed`).
    pub fn fleet(seed: u64) -> Self {
        Self {
            state: foldhash::quality::SeedableRandomState::with_seed(
                seed,
                foldhash::SharedSeed::global_fixed(),
            ),
        }
    }

    /// Hashes `label` and a sequence of key values.
    fn hash_values<'a>(
        &self,
        label: &str,
        values: impl Iterator<Item = Option<KeyValue<'a>>>,
    ) -> Option<u64> {
        let mut h = self.state.build_hasher();
        label.hash(&mut h);
        for v in values {
            match v? {
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

    /// Hashes raw bytes (a header value).
    pub fn hash_bytes(&self, bytes: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        h.write(bytes);
        h.finish()
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
    /// Parts named `ip` must parse as IP addresses.
    pub fn hash_text(&self, text: &str) -> Result<(u64, String), String> {
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
                values.push(KeyValueOwned::Ip(crate::keys::canonical_ip(ip)));
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
            .hash_text("user+endpoint+ip:alice|goods|10.0.0.1")
            .unwrap();
        assert_eq!(from_text, labeled);
        assert_eq!(canonical, "user+endpoint+ip:alice|goods|10.0.0.1");
        assert!(h.hash_text("user+endpoint:alice").is_err());
        assert!(h.hash_text("ip:not-an-ip").is_err());
        assert!(h.hash_text("nocolon").is_err());
        // Mapped IPv6 is the IPv4 client, as at extraction.
        let ip = KeySpec::parse("ip", &[], "k").unwrap();
        assert_eq!(
            h.hash_text("ip:::ffff:10.0.0.1").unwrap().0,
            h.hash_labeled("ip", &ip, &keys("x")).unwrap()
        );
    }

    #[test]
    fn fleet_hashers_agree_with_each_other_and_differ_by_seed() {
        let spec = KeySpec::parse("user", &[], "k").unwrap();
        let a = KeyHasher::fleet(7).hash_labeled("user", &spec, &keys("alice"));
        let b = KeyHasher::fleet(7).hash_labeled("user", &spec, &keys("alice"));
        let c = KeyHasher::fleet(8).hash_labeled("user", &spec, &keys("alice"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            KeyHasher::default().hash_labeled("user", &spec, &keys("alice")),
            KeyHasher::default().hash_labeled("user", &spec, &keys("alice"))
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
