//! Where requests go: upstream clusters, and the fleet's Redis.

use std::fmt::Display;

use serde::Serialize;

/// An upstream cluster (`clusters.<name>`): endpoints balanced round-robin.
#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    endpoints: Vec<serde_yaml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_budget: Option<RetryBudget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overload: Option<serde_yaml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<serde_yaml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_start: Option<String>,
    /// Fields set as YAML by [`Cluster::set`].
    #[serde(flatten)]
    more: std::collections::BTreeMap<String, serde_yaml::Value>,
}

#[derive(Clone, Debug, Serialize)]
struct RetryBudget {
    budget_percent: f64,
    min_retries_per_sec: u32,
}

impl Cluster {
    /// `host:port` endpoints, e.g. a `MockUpstream`'s or a `ClosedPort`'s
    /// `addr`.
    pub fn new<A: Display>(endpoints: impl IntoIterator<Item = A>) -> Cluster {
        Cluster {
            endpoints: endpoints
                .into_iter()
                .map(|a| serde_yaml::Value::String(a.to_string()))
                .collect(),
            connect_timeout_ms: None,
            read_timeout_ms: None,
            protocol: None,
            retry_budget: None,
            overload: None,
            health_check: None,
            slow_start: None,
            more: Default::default(),
        }
    }

    /// Gives the endpoints these weights (`{address, weight}`), in order.
    pub fn weights(mut self, weights: &[u32]) -> Cluster {
        for (e, w) in self.endpoints.iter_mut().zip(weights) {
            let address = e.as_str().expect("an address").to_string();
            *e = serde_yaml::from_str(&format!("{{address: \"{address}\", weight: {w}}}")).unwrap();
        }
        self
    }

    /// Any other field, as YAML: `set("balance", "least_request")`.
    pub fn set(mut self, field: &str, yaml: &str) -> Cluster {
        let value = serde_yaml::from_str(yaml).expect("valid YAML");
        self.more.insert(field.to_string(), value);
        self
    }

    /// `slow_start: <window>` (`"30s"`).
    pub fn slow_start(mut self, window: &str) -> Cluster {
        self.slow_start = Some(window.to_string());
        self
    }

    /// `health_check:` as YAML, e.g.
    /// `"{ http: /health, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }"`.
    pub fn health_check(mut self, yaml: &str) -> Cluster {
        self.health_check = Some(serde_yaml::from_str(yaml).expect("a valid health_check map"));
        self
    }

    /// `overload: off`: no adaptive limit in front of the cluster.
    pub fn overload_off(mut self) -> Cluster {
        self.overload = Some(serde_yaml::Value::String("off".into()));
        self
    }

    /// A fixed limit of `n` (the adaptive one held at `min = max = n`),
    /// queueing at most `queue` for at most `max_wait` (`"2s"`): the gate
    /// made predictable for a test.
    pub fn overload_fixed(mut self, n: u32, queue: usize, max_wait: &str) -> Cluster {
        let text = format!(
            "{{ initial: {n}, min: {n}, max: {n}, max_queue: {queue}, max_wait: {max_wait} }}"
        );
        self.overload = Some(serde_yaml::from_str(&text).expect("a valid overload map"));
        self
    }

    pub fn connect_timeout_ms(mut self, ms: u64) -> Cluster {
        self.connect_timeout_ms = Some(ms);
        self
    }

    pub fn read_timeout_ms(mut self, ms: u64) -> Cluster {
        self.read_timeout_ms = Some(ms);
        self
    }

    /// How the gateway speaks to the endpoints (HTTP/1.1 by default).
    pub fn protocol(mut self, protocol: Protocol) -> Cluster {
        self.protocol = Some(protocol);
        self
    }

    /// Caps retries to `percent` of recent requests, at least
    /// `min_per_sec` a second.
    pub fn retry_budget(mut self, percent: f64, min_per_sec: u32) -> Cluster {
        self.retry_budget = Some(RetryBudget {
            budget_percent: percent,
            min_retries_per_sec: min_per_sec,
        });
        self
    }
}

/// A wire protocol: of a cluster's endpoints, or of a listener (`http1`
/// and `h2c` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
    /// h2c carrying gRPC.
    Grpc,
}

/// Cluster mode: the Redis the fleet of gateways shares (the file's
/// `cluster:` section).
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    redis_cluster: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_seed_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

impl Fleet {
    fn empty() -> Fleet {
        Fleet {
            redis: None,
            redis_cluster: Vec::new(),
            instance_id: None,
            hash_seed: None,
            hash_seed_env: None,
            expected_instances: None,
            timeout: None,
        }
    }

    /// One standalone Redis, `redis://host:port`.
    pub fn redis(url: &str) -> Fleet {
        Fleet {
            redis: Some(url.to_string()),
            ..Fleet::empty()
        }
    }

    /// A Redis Cluster, by the URLs of its seed nodes.
    pub fn redis_cluster<S: ToString>(urls: impl IntoIterator<Item = S>) -> Fleet {
        Fleet {
            redis_cluster: urls.into_iter().map(|u| u.to_string()).collect(),
            ..Fleet::empty()
        }
    }

    pub fn instance_id(mut self, id: &str) -> Fleet {
        self.instance_id = Some(id.to_string());
        self
    }

    /// The key-hash seed every instance of the fleet shares.
    pub fn hash_seed(mut self, seed: &str) -> Fleet {
        self.hash_seed = Some(seed.to_string());
        self
    }

    /// The key-hash seed, from this environment variable.
    pub fn hash_seed_env(mut self, var: &str) -> Fleet {
        self.hash_seed_env = Some(var.to_string());
        self
    }

    pub fn expected_instances(mut self, n: u32) -> Fleet {
        self.expected_instances = Some(n);
        self
    }

    /// How long one Redis round may take (`"1s"`).
    pub fn timeout(mut self, timeout: &str) -> Fleet {
        self.timeout = Some(timeout.to_string());
        self
    }
}
