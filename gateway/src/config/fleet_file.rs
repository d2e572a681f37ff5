//! The `fleet:` section: how this instance joins its fleet through Redis.

use std::time::Duration;

use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::duration::HumanDuration;
use breakwater_plugins::fleet::FleetSettings;
use breakwater_plugins::store::FleetKey;
use breakwater_plugins::ConfigError;
use serde::{Deserialize, Serialize};

use super::fleet_seed::{self as seed, HashSeed};

/// `fleet:` at the top level of the config (`cluster:`, its old name, is still read).
///
/// ```yaml
/// fleet:
///   redis: redis://127.0.0.1:6379          # a standalone Redis, or:
///   # redis_cluster: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]
///   sync_interval: 100ms                   # how often counts are flushed and read back
///   instance_id: gw-1                      # default: <hostname>-<pid>
///   key_prefix: bw                         # every key and the event channel start with it
///   timeout: 250ms                         # a slower Redis call counts as a failure
///   expected_instances: 3                  # degraded mode: each enforces limit ÷ this (default: peers last seen)
///   shards: 1                              # hash-tag groups (default 1; 16 with redis_cluster)
///   hash_seed: "<secret, 16+ bytes>"       # required: the fleet's key-hash seed (same on every instance)
///   # hash_seed_env: BREAKWATER_HASH_SEED  # or: the environment variable that holds it
///   max_keys_per_sync: 4096                # per policy and sync; the rest wait a round
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    #[serde(default)]
    pub redis: Option<String>,
    #[serde(default)]
    pub redis_cluster: Vec<String>,
    #[serde(default = "default_sync_interval")]
    pub sync_interval: HumanDuration,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub expected_instances: Option<u32>,
    #[serde(default)]
    pub shards: Option<u32>,
    #[serde(default)]
    pub hash_seed: Option<HashSeed>,
    #[serde(default)]
    pub hash_seed_env: Option<String>,
    #[serde(default = "default_max_keys_per_sync")]
    pub max_keys_per_sync: usize,
}

fn default_sync_interval() -> HumanDuration {
    HumanDuration::from(Duration::from_millis(100))
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from(Duration::from_millis(250))
}

fn default_prefix() -> String {
    "bw".into()
}

fn default_max_keys_per_sync() -> usize {
    4096
}

/// Where the fleet's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

/// The validated `fleet:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub target: RedisTarget,
    pub sync_interval: Duration,
    pub instance_id: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub expected_instances: Option<u32>,
    pub shards: u32,
    /// Derived from the seed; the seed itself is not kept.
    pub hash_key: FleetKey,
    pub max_keys_per_sync: usize,
}

impl FleetConfig {
    pub fn settings(&self) -> FleetSettings {
        FleetSettings {
            sync_interval: self.sync_interval,
            hash_key: self.hash_key,
            expected_instances: self.expected_instances,
        }
    }

    /// The hash-tagged base of shard `shard`'s keys: `{bw:3}`. Redis Cluster
    /// hashes only the part in braces, so every key of one shard (its
    /// counters, hot sets, peers and blocks) lives in one slot and one script
    /// call can touch them all.
    pub fn shard_base(&self, shard: u32) -> String {
        format!("{{{}:{shard}}}", self.key_prefix)
    }

    /// The pub/sub channel of hot-key and block events.
    pub fn channel(&self) -> String {
        format!("{}:events", self.key_prefix)
    }
}

fn check_url(url: &str, path: &ConfigPath) -> Result<(), ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(path.error(format!("\"{url}\" is not a redis:// URL")));
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| path.error(format!("\"{url}\": {e}")))
}

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{}", std::process::id())
}

impl FleetFile {
    /// Validates the section written under `section` (`fleet`, or its old
    /// name `cluster`: errors name the key the file used);
    /// `hash_seed_env` is read from the process's environment.
    pub fn compile(&self, section: &str) -> Result<FleetConfig, ConfigError> {
        self.compile_with_env(section, |name| std::env::var(name).ok())
    }

    /// [`Self::compile`] with `env` looking environment variables up.
    pub fn compile_with_env(
        &self,
        section: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<FleetConfig, ConfigError> {
        let path = ConfigPath::root().field(section);
        let err = |field: &str, msg: &str| path.field(field).error(msg);
        let target = self.target(&path)?;
        let sync_interval = self.sync_interval.as_duration();
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&sync_interval) {
            return Err(err("sync_interval", "must be between 10ms and 10s"));
        }
        let timeout = self.timeout.as_duration();
        if !(Duration::from_millis(5)..=Duration::from_secs(10)).contains(&timeout) {
            return Err(err("timeout", "must be between 5ms and 10s"));
        }
        let instance_id = self.instance_id(&path)?;
        self.check_key_prefix(&path)?;
        if let Some(n) = self.expected_instances {
            breakwater_plugins::bounds::in_range(n, 1..=10_000, path.field("expected_instances"))?;
        }
        let shards = self.shards.unwrap_or(match target {
            RedisTarget::Standalone(_) => 1,
            RedisTarget::Cluster(_) => 16,
        });
        if !(1..=1024).contains(&shards) {
            return Err(err("shards", "must be between 1 and 1024"));
        }
        if !(1..=100_000).contains(&self.max_keys_per_sync) {
            return Err(err("max_keys_per_sync", "must be between 1 and 100000"));
        }
        let hash_key = seed::fleet_key(
            &path,
            self.hash_seed.as_ref(),
            self.hash_seed_env.as_deref(),
            env,
        )?;
        Ok(FleetConfig {
            target,
            sync_interval,
            instance_id,
            key_prefix: self.key_prefix.clone(),
            timeout,
            expected_instances: self.expected_instances,
            shards,
            hash_key,
            max_keys_per_sync: self.max_keys_per_sync,
        })
    }

    /// The fleet's Redis: standalone (`redis`) or a Redis Cluster's seed
    /// nodes (`redis_cluster`), exactly one.
    fn target(&self, path: &ConfigPath) -> Result<RedisTarget, ConfigError> {
        match (&self.redis, self.redis_cluster.as_slice()) {
            (Some(url), []) => {
                check_url(url, &path.field("redis"))?;
                Ok(RedisTarget::Standalone(url.clone()))
            }
            (None, nodes) if !nodes.is_empty() => {
                for (i, url) in nodes.iter().enumerate() {
                    check_url(url, &path.item("redis_cluster", i))?;
                }
                Ok(RedisTarget::Cluster(nodes.to_vec()))
            }
            (Some(_), _) => Err(path.field("redis_cluster").error(
                "set either `redis` (standalone) or `redis_cluster` (seed nodes), not both",
            )),
            (None, _) => Err(path.field("redis").error(
                "name the fleet's Redis: `redis: redis://host:6379` or `redis_cluster: [...]`",
            )),
        }
    }

    /// This instance's name among its peers: `<hostname>-<pid>` unless set.
    fn instance_id(&self, path: &ConfigPath) -> Result<String, ConfigError> {
        let id = match &self.instance_id {
            Some(id) => id.clone(),
            None => default_instance_id(),
        };
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(path
                .field("instance_id")
                .error("must be 1-64 characters of letters, digits and - _ . :"));
        }
        Ok(id)
    }

    /// Braces are the hash tags of the keys: none in the prefix.
    fn check_key_prefix(&self, path: &ConfigPath) -> Result<(), ConfigError> {
        let prefix = &self.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || prefix.contains(['{', '}'])
            || prefix.chars().any(char::is_whitespace)
        {
            return Err(path.field("key_prefix").error(
                "must be 1-64 characters without braces or spaces (braces are the hash tags)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "hash_seed: 0123456789abcdef0123456789abcdef";

    /// Parses a section, with a seed added unless it names one.
    fn parse(yaml: &str) -> Result<FleetConfig, String> {
        let yaml = if yaml.contains("hash_seed") {
            yaml.to_string()
        } else {
            format!("{yaml}\n{SEED}")
        };
        let file: FleetFile = serde_yaml::from_str(&yaml).map_err(|e| e.to_string())?;
        file.compile_with_env("cluster", |_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_shard_bases() {
        let c = parse("redis: redis://127.0.0.1:6379\ninstance_id: gw-1").unwrap();
        assert_eq!(c.sync_interval, Duration::from_millis(100));
        assert_eq!(c.shards, 1);
        assert_eq!(c.shard_base(0), "{bw:0}");
        assert_eq!(c.channel(), "bw:events");
        let cl = parse("redis_cluster: [redis://a:7000, redis://b:7000]").unwrap();
        assert_eq!(cl.shards, 16);
        assert!(matches!(cl.target, RedisTarget::Cluster(ref n) if n.len() == 2));
        assert!(cl.instance_id.ends_with(&std::process::id().to_string()));
        assert_eq!(
            c.hash_key,
            FleetKey::from_seed("0123456789abcdef0123456789abcdef")
        );
        // No default seed: it would be public.
        let unseeded: FleetFile = serde_yaml::from_str("redis: redis://h:1").unwrap();
        let e = unseeded
            .compile_with_env("cluster", |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cluster.hash_seed: required"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, field) in [
            ("sync_interval: 100ms", "cluster.redis"),
            ("redis: http://x", "cluster.redis"),
            (
                "redis: redis://h:1\nredis_cluster: [redis://h:2]",
                "cluster.redis_cluster",
            ),
            (
                "redis_cluster: [redis://a:1, 'nope']",
                "cluster.redis_cluster[1]",
            ),
            (
                "redis: redis://h:1\nsync_interval: 1ms",
                "cluster.sync_interval",
            ),
            ("redis: redis://h:1\ntimeout: 1h", "cluster.timeout"),
            (
                "redis: redis://h:1\ninstance_id: 'a b'",
                "cluster.instance_id",
            ),
            (
                "redis: redis://h:1\nkey_prefix: '{x}'",
                "cluster.key_prefix",
            ),
            (
                "redis: redis://h:1\nexpected_instances: 0",
                "cluster.expected_instances",
            ),
            ("redis: redis://h:1\nshards: 0", "cluster.shards"),
            (
                "redis: redis://h:1\nhash_seed: too-short",
                "cluster.hash_seed",
            ),
            (
                "redis: redis://h:1\nhash_seed_env: BW_UNSET_SEED_VAR",
                "cluster.hash_seed_env",
            ),
            (
                "redis: redis://h:1\nmax_keys_per_sync: 0",
                "cluster.max_keys_per_sync",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.starts_with(field), "{yaml}: {e}");
        }
        assert!(parse("redis: redis://h:1\nbogus: 1").is_err());
    }
}
