//! The fleet's secret hash key, derived from `fleet.hash_seed`.
//!
//! Fleet key names are SipHash-1-3 outputs under a 128-bit key (see
//! `hashing.rs`). Operators give a seed of any length (a passphrase, a hex
//! string from a secret store); the key is derived from it by a fixed,
//! specified function, so every instance, of any build, derives the same:
//!
//! ```text
//! d  = BLAKE2b (RFC 7693, unkeyed, 16-byte digest) of
//!      "breakwater.fleet-hash-key.v1" ‖ 0x00 ‖ seed (UTF-8)
//! k0 = d[0..8] as u64 little-endian,  k1 = d[8..16] as u64 little-endian
//! ```
//!
//! BLAKE2b keeps up to 128 bits of the seed's entropy and the context string
//! keeps this key apart from any other use of the same secret. The key is
//! only as strong as the seed: a guessable seed lets an attacker who sees a
//! few key hashes (Redis field names) recover it offline and craft colliding
//! keys, which is why the config asks for at least 16 bytes.

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};

/// Domain separation for the derivation (version 1).
const CONTEXT: &[u8] = b"breakwater.fleet-hash-key.v1\0";

/// The 128-bit SipHash key every instance of a fleet shares. Its `Debug`
/// does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FleetKey {
    pub(crate) k0: u64,
    pub(crate) k1: u64,
}

impl FleetKey {
    /// The key derived from `seed` (see the module doc).
    pub fn from_seed(seed: &str) -> Self {
        let digest = Blake2b::<U16>::new()
            .chain_update(CONTEXT)
            .chain_update(seed.as_bytes())
            .finalize();
        let (a, b) = digest.split_at(8);
        Self {
            k0: u64::from_le_bytes(a.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(b.try_into().expect("8 bytes")),
        }
    }
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the derivation: a change of function, context or byte order
    /// would rename every key of a running fleet. The value was checked
    /// against Python's `hashlib.blake2b(digest_size=16)`.
    #[test]
    fn derivation_is_pinned() {
        let k = FleetKey::from_seed("correct horse battery staple");
        assert_eq!(
            format!("{:016x}{:016x}", k.k0, k.k1),
            "627e8c984efdeef02b884d52400e316a",
            "the fleet key derivation changed"
        );
        assert_ne!(k, FleetKey::from_seed("correct horse battery stapl"));
        assert_eq!(format!("{k:?}"), "FleetKey(<secret>)");
    }
}
