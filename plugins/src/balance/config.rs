//! A cluster's endpoints as written, and how it balances among them.
//!
//! ```yaml
//! clusters:
//!   goods:
//!     endpoints:
//!       - 10.0.0.5:8080                                   # weight 1
//!       - { address: 10.0.0.6:8080, weight: 3 }           # three times the share
//!       - { address: goods-7.internal:8080, max_in_flight: 20 }
//!     balance: least_request        # round_robin (default) | least_request | { hash: <key> }
//!     max_in_flight: 100            # each endpoint's cap on attempts in flight; 0: none (default)
//!     endpoint_queue: { size: 1000, timeout: 1s }   # waiting for an endpoint under its cap
//! ```
//!
//! `hash` takes any key the `keys:` section knows (`user`, `ip`, a custom
//! key, or a combination like `user+endpoint`); a request without it is
//! placed by weight at random.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounds::{duration_in, in_range};
use crate::config_error::ConfigPath;
use crate::duration::HumanDuration;
use crate::keys::KeySpec;
use crate::ConfigError;

/// The largest weight: a thousand to one is already a different cluster.
pub const MAX_WEIGHT: u32 = 1000;
/// The largest per-endpoint cap.
pub const MAX_IN_FLIGHT: u32 = 1_000_000;
const DEFAULT_QUEUE_SIZE: usize = 1000;
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_QUEUE_SIZE: usize = 1_000_000;
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// One entry of `endpoints:`: `host:port`, or a map with a weight and cap.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EndpointFile {
    Address(String),
    Detailed(DetailedEndpoint),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedEndpoint {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

impl From<&str> for EndpointFile {
    fn from(address: &str) -> Self {
        Self::Address(address.to_string())
    }
}

impl EndpointFile {
    /// `host:port` as written.
    pub fn address(&self) -> &str {
        match self {
            Self::Address(a) => a,
            Self::Detailed(d) => &d.address,
        }
    }

    /// The weight, 1 to [`MAX_WEIGHT`] (1 unless set).
    pub fn weight(&self, path: &ConfigPath) -> Result<u32, ConfigError> {
        match self {
            Self::Detailed(DetailedEndpoint {
                weight: Some(w), ..
            }) => in_range(*w, 1..=MAX_WEIGHT, path.field("weight")),
            _ => Ok(1),
        }
    }

    /// The endpoint's own cap, overriding the cluster's `max_in_flight`.
    pub fn max_in_flight(&self, path: &ConfigPath) -> Result<Option<u32>, ConfigError> {
        match self {
            Self::Detailed(DetailedEndpoint {
                max_in_flight: Some(m),
                ..
            }) => in_range(*m, 0..=MAX_IN_FLIGHT, path.field("max_in_flight")).map(Some),
            _ => Ok(None),
        }
    }
}

/// `balance:` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BalanceFile {
    Named(String),
    Hash { hash: String },
}

/// How a cluster orders its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceKind {
    RoundRobin,
    LeastRequest,
    Hash(KeySpec),
}

impl BalanceKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastRequest => "least_request",
            Self::Hash(_) => "hash",
        }
    }
}

impl BalanceFile {
    /// The order, with a hash key resolved against the custom key names.
    pub fn compile(
        &self,
        custom_keys: &[String],
        path: &ConfigPath,
    ) -> Result<BalanceKind, ConfigError> {
        match self {
            Self::Named(n) if n == "round_robin" => Ok(BalanceKind::RoundRobin),
            Self::Named(n) if n == "least_request" => Ok(BalanceKind::LeastRequest),
            Self::Named(n) => Err(path.error(format!(
                "unknown balance \"{n}\" (known: round_robin, least_request, {{ hash: <key> }})"
            ))),
            Self::Hash { hash } => {
                let at = path.field("hash");
                KeySpec::parse(hash, custom_keys, &at.to_string()).map(BalanceKind::Hash)
            }
        }
    }
}

/// `endpoint_queue:` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// How many requests may wait for an endpoint under its cap, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub size: usize,
    pub timeout: Duration,
}

impl QueueFile {
    pub fn compile(&self, path: &ConfigPath) -> Result<QueueSettings, ConfigError> {
        Ok(QueueSettings {
            size: in_range(
                self.size.unwrap_or(DEFAULT_QUEUE_SIZE),
                0..=MAX_QUEUE_SIZE,
                path.field("size"),
            )?,
            timeout: duration_in(
                self.timeout
                    .map_or(DEFAULT_QUEUE_TIMEOUT, |d| d.as_duration()),
                Duration::ZERO..=MAX_QUEUE_TIMEOUT,
                path.field("timeout"),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> ConfigPath {
        ConfigPath::root().field("clusters").field("c")
    }

    #[test]
    fn endpoints_are_an_address_or_a_map() {
        let e: Vec<EndpointFile> =
            serde_yaml::from_str("[\"a:1\", {address: \"b:2\", weight: 3, max_in_flight: 7}]")
                .unwrap();
        assert_eq!(e[0].address(), "a:1");
        assert_eq!(e[0].weight(&root()).unwrap(), 1);
        assert_eq!(e[1].address(), "b:2");
        assert_eq!(e[1].weight(&root()).unwrap(), 3);
        assert_eq!(e[1].max_in_flight(&root()).unwrap(), Some(7));
        let bad: Vec<EndpointFile> =
            serde_yaml::from_str("[{address: \"b:2\", weight: 0}]").unwrap();
        let err = bad[0].weight(&root().item("endpoints", 0)).unwrap_err();
        assert!(
            err.to_string().contains("clusters.c.endpoints[0].weight"),
            "{err}"
        );
        assert!(
            serde_yaml::from_str::<Vec<EndpointFile>>("[{address: \"b:2\", wieght: 2}]").is_err()
        );
    }

    #[test]
    fn balance_names_an_order_or_a_hash_key() {
        let compile = |yaml: &str| {
            serde_yaml::from_str::<BalanceFile>(yaml)
                .unwrap()
                .compile(&["tenant".to_string()], &root().field("balance"))
        };
        assert_eq!(compile("least_request").unwrap(), BalanceKind::LeastRequest);
        assert_eq!(compile("round_robin").unwrap(), BalanceKind::RoundRobin);
        let BalanceKind::Hash(spec) = compile("{hash: user+tenant}").unwrap() else {
            panic!("a hash")
        };
        assert_eq!(spec.text(), "user+tenant");
        let err = compile("fastest").unwrap_err().to_string();
        assert!(
            err.contains("clusters.c.balance") && err.contains("least_request"),
            "{err}"
        );
        let err = compile("{hash: nope}").unwrap_err().to_string();
        assert!(
            err.contains("clusters.c.balance.hash") && err.contains("unknown key"),
            "{err}"
        );
    }

    #[test]
    fn the_queue_has_defaults_and_bounds() {
        let q = QueueFile::default().compile(&root()).unwrap();
        assert_eq!(
            q,
            QueueSettings {
                size: 1000,
                timeout: Duration::from_secs(1)
            }
        );
        let long: QueueFile = serde_yaml::from_str("timeout: 2m").unwrap();
        let err = long.compile(&root().field("endpoint_queue")).unwrap_err();
        assert!(err.to_string().contains("endpoint_queue.timeout"), "{err}");
    }
}
