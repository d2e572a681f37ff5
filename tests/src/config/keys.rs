//! The `keys` section: who the caller is, for limits, blocks and logs.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use super::text::one_entry;

/// The `keys` section; empty (and not written) by default.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Keys {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6_prefix: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<KeySource>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    custom: BTreeMap<String, KeySource>,
}

impl Keys {
    pub fn new() -> Keys {
        Keys::default()
    }

    /// Peers (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies<S: ToString>(mut self, peers: impl IntoIterator<Item = S>) -> Keys {
        self.trusted_proxies = peers.into_iter().map(|p| p.to_string()).collect();
        self
    }

    /// How many leading bits of an IPv6 client address make its `ip` key.
    pub fn ipv6_prefix(mut self, bits: u32) -> Keys {
        self.ipv6_prefix = Some(bits);
        self
    }

    /// Where the `user` key comes from.
    pub fn user(mut self, source: KeySource) -> Keys {
        self.user = Some(source);
        self
    }

    /// A custom key `name`, usable as a policy's `key`.
    pub fn custom(mut self, name: &str, source: KeySource) -> Keys {
        self.custom.insert(name.to_string(), source);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.trusted_proxies.is_empty()
            && self.ipv6_prefix.is_none()
            && self.user.is_none()
            && self.custom.is_empty()
    }
}

/// Where a key is read from, written `{ header: x-user-id }` and so on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Header(String),
    Cookie(String),
    Query(String),
    /// A `{name}` segment of the route's path template.
    PathCapture(String),
}

impl KeySource {
    pub fn header(name: &str) -> KeySource {
        KeySource::Header(name.to_string())
    }

    pub fn cookie(name: &str) -> KeySource {
        KeySource::Cookie(name.to_string())
    }

    pub fn query(name: &str) -> KeySource {
        KeySource::Query(name.to_string())
    }

    pub fn path_capture(name: &str) -> KeySource {
        KeySource::PathCapture(name.to_string())
    }
}

impl Serialize for KeySource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KeySource::Header(n) => one_entry(s, "header", n),
            KeySource::Cookie(n) => one_entry(s, "cookie", n),
            KeySource::Query(n) => one_entry(s, "query", n),
            KeySource::PathCapture(n) => one_entry(s, "path_capture", n),
        }
    }
}
