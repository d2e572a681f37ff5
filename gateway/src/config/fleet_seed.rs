//! `fleet.hash_seed` / `fleet.hash_seed_env`: the fleet's secret seed.
//!
//! Fleet mode names keys in Redis by a keyed hash (SipHash-1-3, see
//! `breakwater_plugins::store`); whoever knows the key can craft request keys
//! that collide and share (or starve) each other's fleet-wide counts. So the
//! seed is required (a default would be public), at least [`MIN_LEN`] bytes,
//! and may come from the environment so that it stays out of config files.
//! It is shown nowhere: not by `Debug`, not when the config is serialized.

use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::store::FleetKey;
use breakwater_plugins::ConfigError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest seed accepted: a guessable seed could be found offline from a
/// few hashes seen in Redis.
pub const MIN_LEN: usize = 16;
/// Longest seed accepted (any secret store's output fits).
pub const MAX_LEN: usize = 1024;

const HOW: &str = "a secret of at least 16 bytes, the same on every instance \
                   (e.g. the output of `openssl rand -hex 16`)";

/// The seed as written in the config: a string, redacted when shown.
#[derive(Clone, PartialEq, Eq)]
pub struct HashSeed(String);

impl HashSeed {
    pub fn new(seed: impl Into<String>) -> Self {
        Self(seed.into())
    }
}

impl std::fmt::Debug for HashSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashSeed(<secret>)")
    }
}

impl Serialize for HashSeed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for HashSeed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HashSeed;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a string: {HOW}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HashSeed, E> {
                Ok(HashSeed(v.to_string()))
            }
        }
        // YAML hands a plain scalar over as written: an unquoted hex string
        // (`0x5eed`, `1e100...`) is its text, not a number.
        d.deserialize_str(Visitor)
    }
}

/// The fleet's hash key from `hash_seed` or, with `hash_seed_env`, from the
/// environment variable it names (`env` looks one up). Exactly one is set.
pub fn fleet_key(
    section: &ConfigPath,
    seed: Option<&HashSeed>,
    seed_env: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<FleetKey, ConfigError> {
    let err = |field: &str, msg: String| section.field(field).error(msg);
    let (field, text) = match (seed, seed_env) {
        (Some(seed), None) => ("hash_seed", seed.0.clone()),
        (None, Some(var)) => {
            if var.is_empty() {
                return Err(err("hash_seed_env", "names no variable".into()));
            }
            match env(var) {
                Some(v) => ("hash_seed_env", v),
                None => {
                    return Err(err(
                        "hash_seed_env",
                        format!(
                        "environment variable {var} is not set (it holds the fleet's hash seed)"
                    ),
                    ))
                }
            }
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "hash_seed_env",
                "set either hash_seed or hash_seed_env, not both".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "hash_seed",
                format!(
                    "required: the fleet's key-hash seed, {HOW}; or hash_seed_env: the \
                     name of an environment variable that holds it"
                ),
            ))
        }
    };
    if !(MIN_LEN..=MAX_LEN).contains(&text.len()) {
        return Err(err(
            field,
            format!(
                "is {} bytes long; must be 16 to 1024 bytes: {HOW}",
                text.len()
            ),
        ));
    }
    Ok(FleetKey::from_seed(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "0123456789abcdef0123456789abcdef";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_seed_comes_from_the_config_or_the_environment_alike() {
        let from_file = fleet_key(
            &ConfigPath::from("cluster"),
            Some(&HashSeed::new(SEED)),
            None,
            no_env,
        )
        .unwrap();
        let from_env = fleet_key(&ConfigPath::from("cluster"), None, Some("BW_SEED"), |v| {
            (v == "BW_SEED").then(|| SEED.to_string())
        })
        .unwrap();
        assert_eq!(from_file, from_env);
        assert_eq!(from_file, FleetKey::from_seed(SEED));
        let other = fleet_key(
            &ConfigPath::from("cluster"),
            Some(&HashSeed::new(&SEED[1..])),
            None,
            no_env,
        )
        .unwrap();
        assert_ne!(from_file, other);
    }

    #[test]
    fn a_missing_short_or_doubled_seed_is_an_error_naming_the_field() {
        let seed = HashSeed::new(SEED);
        for (result, field, says) in [
            (
                fleet_key(&ConfigPath::from("cluster"), None, None, no_env),
                "cluster.hash_seed",
                "required",
            ),
            (
                fleet_key(
                    &ConfigPath::from("cluster"),
                    Some(&HashSeed::new("short")),
                    None,
                    no_env,
                ),
                "cluster.hash_seed",
                "5 bytes long",
            ),
            (
                fleet_key(&ConfigPath::from("cluster"), None, Some("BW_SEED"), no_env),
                "cluster.hash_seed_env",
                "BW_SEED is not set",
            ),
            (
                fleet_key(&ConfigPath::from("cluster"), None, Some("BW_SEED"), |_| {
                    Some("x".into())
                }),
                "cluster.hash_seed_env",
                "1 bytes long",
            ),
            (
                fleet_key(
                    &ConfigPath::from("cluster"),
                    Some(&seed),
                    Some("BW_SEED"),
                    no_env,
                ),
                "cluster.hash_seed_env",
                "not both",
            ),
            (
                fleet_key(
                    &ConfigPath::from("cluster"),
                    Some(&HashSeed::new("x".repeat(1025))),
                    None,
                    no_env,
                ),
                "cluster.hash_seed",
                "1025 bytes",
            ),
        ] {
            let e = result.unwrap_err().to_string();
            assert!(e.starts_with(field) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn the_seed_is_never_shown() {
        let seed = HashSeed::new(SEED);
        assert!(!format!("{seed:?}").contains(SEED));
        assert!(!serde_json::to_string(&seed).unwrap().contains(SEED));
    }

    #[test]
    fn an_unquoted_seed_is_taken_as_written() {
        for text in [
            "0x5eed",
            "00123456789012345678901",
            "1e1000000000000000",
            "true",
        ] {
            let seed: HashSeed = serde_yaml::from_str(text).unwrap();
            assert_eq!(seed, HashSeed::new(text));
        }
        // The old numeric seeds are too short now.
        let old: HashSeed = serde_yaml::from_str("0x5eed").unwrap();
        let e = fleet_key(&ConfigPath::from("cluster"), Some(&old), None, no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("6 bytes long"), "{e}");
    }
}
