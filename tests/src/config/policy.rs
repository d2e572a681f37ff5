//! Entries of a route's `policies`, one builder per kind.
//!
//! Every builder becomes a [`Policy`]: a kind and its fields in the order
//! they were set. A builder method exists for each field the tests use;
//! [`Policy::set`] writes any other, and [`Policy::raw`] takes a whole
//! entry as YAML.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_yaml::{Mapping, Value};

/// One entry of a route's `policies`, written `kind: { fields }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    kind: String,
    fields: Mapping,
}

impl Policy {
    /// A policy of `kind` (`rate_limit`, `hotkey`...) with no fields yet.
    pub fn new(kind: &str) -> Policy {
        Policy {
            kind: kind.to_string(),
            fields: Mapping::new(),
        }
    }

    /// Sets `field` to `value` (anything serde can write), replacing an
    /// earlier value.
    pub fn set(mut self, field: &str, value: impl Serialize) -> Policy {
        let value = serde_yaml::to_value(value)
            .unwrap_or_else(|e| panic!("policy field {field}: not writable as YAML: {e}"));
        self.fields.insert(Value::from(field), value);
        self
    }

    /// A whole entry as YAML, `kind: { ... }`, for shapes no builder
    /// covers. Panics unless it is one `kind: { fields }` entry.
    pub fn raw(yaml: &str) -> Policy {
        let parsed: Mapping = serde_yaml::from_str(yaml)
            .unwrap_or_else(|e| panic!("Policy::raw({yaml:?}): not a YAML map: {e}"));
        let mut entries = parsed.into_iter();
        match (entries.next(), entries.next()) {
            (Some((Value::String(kind), Value::Mapping(fields))), None) => Policy { kind, fields },
            _ => panic!("Policy::raw({yaml:?}): not one `kind: {{ fields }}` entry"),
        }
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(&self.kind, &self.fields)?;
        map.end()
    }
}

/// A builder around a [`Policy`] of one kind, with `name` and `set`.
macro_rules! policy_builder {
    ($(#[$doc:meta])* $builder:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $builder(Policy);

        impl From<$builder> for Policy {
            fn from(b: $builder) -> Policy {
                b.0
            }
        }

        impl $builder {
            fn of_kind() -> $builder {
                $builder(Policy::new($kind))
            }

            fn with(self, field: &str, value: impl Serialize) -> $builder {
                $builder(self.0.set(field, value))
            }

            /// The policy's name in headers, metrics and the admin
            /// (`<route>.<kind>` by default).
            pub fn name(self, name: &str) -> $builder {
                self.with("name", name)
            }

            /// Any other field (see [`Policy::set`]).
            pub fn set(self, field: &str, value: impl Serialize) -> $builder {
                self.with(field, value)
            }
        }
    };
}

policy_builder!(
    /// `rate_limit`: at most `limit` requests per `window` for each key.
    RateLimit,
    "rate_limit"
);

impl RateLimit {
    /// `limit` requests per `window` (`"1m"`) for each value of `key`
    /// (`ip`, `user`, `endpoint` or a custom key).
    pub fn new(key: &str, limit: u64, window: &str) -> RateLimit {
        RateLimit::of_kind()
            .with("key", key)
            .with("limit", limit)
            .with("window", window)
    }

    /// [`RateLimit::new`] on the client IP.
    pub fn per_ip(limit: u64, window: &str) -> RateLimit {
        RateLimit::new("ip", limit, window)
    }

    pub fn sliding_window(self) -> RateLimit {
        self.with("algorithm", "sliding_window")
    }

    pub fn gcra(self) -> RateLimit {
        self.with("algorithm", "gcra")
    }

    /// GCRA's burst allowance.
    pub fn burst(self, burst: u32) -> RateLimit {
        self.with("burst", burst)
    }

    /// Counts and reports, but admits everything.
    pub fn shadow(self) -> RateLimit {
        self.with("shadow", true)
    }

    /// Fleet-wide, through the fleet's Redis.
    pub fn global(self) -> RateLimit {
        self.with("scope", "global")
    }
}

policy_builder!(
    /// `deny`: refuses listed client addresses and users.
    Deny,
    "deny"
);

impl Deny {
    pub fn new() -> Deny {
        Deny::of_kind()
    }

    /// Addresses or CIDR ranges.
    pub fn ips<S: ToString>(self, ips: impl IntoIterator<Item = S>) -> Deny {
        self.with("ips", strings(ips))
    }

    pub fn users<S: ToString>(self, users: impl IntoIterator<Item = S>) -> Deny {
        self.with("users", strings(users))
    }
}

impl Default for Deny {
    fn default() -> Self {
        Deny::new()
    }
}

policy_builder!(
    /// `concurrency_limit`: at most `max` requests in flight.
    Concurrency,
    "concurrency_limit"
);

impl Concurrency {
    pub fn max(max: u32) -> Concurrency {
        Concurrency::of_kind().with("max", max)
    }

    /// Up to `max` requests wait for a slot, each at most `timeout`.
    pub fn queue(self, max: u32, timeout: &str) -> Concurrency {
        #[derive(Serialize)]
        struct Queue<'a> {
            max: u32,
            timeout: &'a str,
        }
        self.with("queue", Queue { max, timeout })
    }
}

policy_builder!(
    /// `abuse`: blocks a key that passes `threshold` requests in `window`.
    Abuse,
    "abuse"
);

impl Abuse {
    pub fn new(key: &str, threshold: u64, window: &str, block_for: &str) -> Abuse {
        Abuse::of_kind()
            .with("key", key)
            .with("threshold", threshold)
            .with("window", window)
            .with("block_for", block_for)
    }

    /// The status of the refusal (403 by default).
    pub fn status(self, status: u16) -> Abuse {
        self.with("status", status)
    }
}

policy_builder!(
    /// `circuit_breaker`: stops calling a failing upstream for a while.
    Breaker,
    "circuit_breaker"
);

impl Breaker {
    /// Opens after `n` failures in a row.
    pub fn consecutive_failures(n: u32) -> Breaker {
        Breaker::of_kind().with("consecutive_failures", n)
    }

    /// How long it stays open before probing (`"30s"`).
    pub fn open(self, open: &str) -> Breaker {
        self.with("open", open)
    }

    /// Probes let through at once when half open, and the successes that
    /// close it.
    pub fn half_open(self, max_probes: u32, successes: u32) -> Breaker {
        self.with("half_open_max_probes", max_probes)
            .with("half_open_successes", successes)
    }

    /// One breaker per endpoint (outlier ejection) instead of one for the
    /// cluster.
    pub fn per_endpoint(self) -> Breaker {
        self.with("scope", "endpoint")
    }

    /// At most this share of endpoints ejected at once.
    pub fn max_ejection_percent(self, percent: u32) -> Breaker {
        self.with("max_ejection_percent", percent)
    }
}

policy_builder!(
    /// `dedupe`: requests with the same idempotency key join one call.
    Dedupe,
    "dedupe"
);

impl Dedupe {
    /// Keyed by the request header `header`.
    pub fn header(header: &str) -> Dedupe {
        Dedupe::of_kind().with("header", header)
    }

    /// Duplicates join the call in flight (the default, written out).
    pub fn join(self) -> Dedupe {
        self.with("on_duplicate", "join")
    }

    /// Duplicates are refused with 409.
    pub fn reject(self) -> Dedupe {
        self.with("on_duplicate", "reject")
    }
}

policy_builder!(
    /// `hotkey`: finds keys over `threshold` requests per `window` and acts
    /// on them.
    HotKey,
    "hotkey"
);

/// What a hot-key rule does with a hot key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Observe,
    Limit,
    Block,
    Cache,
}

impl HotKey {
    pub fn new(key: &str, threshold: u64, window: &str) -> HotKey {
        HotKey::of_kind()
            .with("key", key)
            .with("threshold", threshold)
            .with("window", window)
    }

    /// How long a key stays hot once detected.
    pub fn hot_ttl(self, ttl: &str) -> HotKey {
        self.with("hot_ttl", ttl)
    }

    pub fn actions(self, actions: impl IntoIterator<Item = Action>) -> HotKey {
        self.with("actions", actions.into_iter().collect::<Vec<_>>())
    }

    /// The `limit` action's limit for each hot key.
    pub fn limit(self, limit: u64, window: &str, burst: u32) -> HotKey {
        #[derive(Serialize)]
        struct HotLimit<'a> {
            limit: u64,
            window: &'a str,
            burst: u32,
        }
        self.with(
            "limit",
            HotLimit {
                limit,
                window,
                burst,
            },
        )
    }

    /// The `block` action's block length.
    pub fn block_for(self, block_for: &str) -> HotKey {
        self.with("block_for", block_for)
    }

    /// The `cache` action's response cache.
    pub fn cache(self, cache: Cache) -> HotKey {
        self.with("cache", cache.0)
    }

    /// Detected fleet-wide, through the fleet's Redis.
    pub fn global(self) -> HotKey {
        self.with("scope", "global")
    }
}

/// A hot-key rule's `cache` section; `{}` (every default) when nothing is
/// set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cache(Mapping);

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    fn with(mut self, field: &str, value: impl Into<Value>) -> Cache {
        self.0.insert(Value::from(field), value.into());
        self
    }

    /// How long an answer is fresh (`"30s"`).
    pub fn ttl(self, ttl: &str) -> Cache {
        self.with("ttl", ttl)
    }

    /// How long past its TTL an answer may stand in for an error.
    pub fn stale_ttl(self, ttl: &str) -> Cache {
        self.with("stale_ttl", ttl)
    }

    /// Cache every key, hot or not.
    pub fn always(self) -> Cache {
        self.with("always", true)
    }

    /// Cache answers to requests with credentials, one per credential.
    pub fn authorized(self) -> Cache {
        self.with("authorized", true)
    }
}

fn strings<S: ToString>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(|s| s.to_string()).collect()
}
