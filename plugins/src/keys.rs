//! The keys a request is known by: `endpoint`, `ip`, `user` and named custom keys.
//!
//! The gateway extracts them once per request, early, and every policy reads
//! them from here by a [`KeyRef`] resolved at config-compile time, so a policy
//! never re-parses headers or paths on the hot path.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use crate::ConfigError;

/// The keys of one request.
#[derive(Debug, Clone)]
pub struct RequestKeys {
    /// The route id, or `route:METHOD` when the config asks for per-method endpoints.
    pub endpoint: Arc<str>,
    /// The address the `ip` key counts: the client's IPv4 address, or the
    /// network of its IPv6 address (`keys.ipv6_prefix`, /64 by default),
    /// since one IPv6 client holds a whole /64 and could rotate through it.
    pub ip: IpAddr,
    /// The client's own address, after `trusted_proxies` handling of
    /// `X-Forwarded-For`: deny lists and logs see this one.
    pub client: IpAddr,
    /// The user id from the configured header, cookie or query parameter.
    pub user: Option<Box<str>>,
    /// Custom keys, indexed by [`KeyRef::Custom`]. `None` when the request lacks it.
    pub custom: Vec<Option<Box<str>>>,
}

impl RequestKeys {
    /// The value of one key, or `None` when the request does not carry it.
    pub fn get(&self, key: KeyRef) -> Option<KeyValue<'_>> {
        match key {
            KeyRef::Endpoint => Some(KeyValue::Str(&self.endpoint)),
            KeyRef::Ip => Some(KeyValue::Ip(self.ip)),
            KeyRef::User => self.user.as_deref().map(KeyValue::Str),
            KeyRef::Custom(i) => self
                .custom
                .get(i as usize)
                .and_then(|v| v.as_deref())
                .map(KeyValue::Str),
        }
    }
}

/// A borrowed key value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyValue<'a> {
    Str(&'a str),
    Ip(IpAddr),
}

impl std::fmt::Display for KeyValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Str(s) => f.write_str(s),
            KeyValue::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The address a client is known by: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) is the IPv4 client, so limits, deny lists and blocks
/// see one key for it, however it arrived.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address the `ip` key counts for `ip`: IPv4 (and IPv4-mapped IPv6)
/// addresses as they are, IPv6 addresses cut to their first `ipv6_prefix`
/// bits (1 to 128; 64 as large CDNs count IPv6 clients).
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let keep = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// Whether `name` is usable as a key or capture name: letters, digits, `_`
/// and `-` (`+` combines keys, `:` and `|` separate block-list text).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A reference to one key, resolved from its name when the config is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    Endpoint,
    Ip,
    User,
    Custom(u16),
}

impl KeyRef {
    /// Resolves a key name against the built-in keys and the configured custom names.
    pub fn resolve(name: &str, custom_names: &[String], path: &str) -> Result<Self, ConfigError> {
        match name {
            "endpoint" => Ok(KeyRef::Endpoint),
            "ip" => Ok(KeyRef::Ip),
            "user" => Ok(KeyRef::User),
            other => custom_names
                .iter()
                .position(|n| n == other)
                .map(|i| KeyRef::Custom(i as u16))
                .ok_or_else(|| {
                    let mut known = String::from("endpoint, ip, user");
                    for n in custom_names {
                        let _ = write!(known, ", {n}");
                    }
                    ConfigError::new(path, format!("unknown key \"{other}\" (known: {known})"))
                }),
        }
    }
}

/// One key or a combination of keys such as `user+endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    text: String,
    parts: Vec<KeyRef>,
}

impl KeySpec {
    /// Parses `name` or `name+name+...`.
    pub fn parse(spec: &str, custom_names: &[String], path: &str) -> Result<Self, ConfigError> {
        if spec.trim().is_empty() {
            return Err(ConfigError::new(path, "key must not be empty"));
        }
        let names: Vec<&str> = spec.split('+').map(str::trim).collect();
        let parts = names
            .iter()
            .map(|p| KeyRef::resolve(p, custom_names, path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: names.join("+"),
            parts,
        })
    }

    /// A spec of one key, named as the config would name it.
    pub fn single(key: KeyRef, name: &str) -> Self {
        Self {
            text: name.to_string(),
            parts: vec![key],
        }
    }

    /// The spec as written, normalized: `user+endpoint`.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn parts(&self) -> &[KeyRef] {
        &self.parts
    }

    /// A 64-bit hash of the composite key (XXH3, seed 0: the same on every
    /// gateway and build), or `None` when the request lacks any part. For
    /// placing requests on a consistent-hash ring; not for secrets.
    pub fn hash(&self, keys: &RequestKeys) -> Option<u64> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in &self.parts {
            match keys.get(*part)? {
                KeyValue::Str(s) => h.update(s.as_bytes()),
                KeyValue::Ip(std::net::IpAddr::V4(v4)) => h.update(&v4.octets()),
                KeyValue::Ip(std::net::IpAddr::V6(v6)) => h.update(&v6.octets()),
            }
            h.update(b"|");
        }
        Some(h.digest())
    }

    /// Renders the composite key (`alice|goods`), or `None` when the request
    /// lacks any part: a request with no user is not counted under a user key.
    pub fn render(&self, keys: &RequestKeys) -> Option<String> {
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            let _ = write!(out, "{}", keys.get(*part)?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> RequestKeys {
        RequestKeys {
            endpoint: Arc::from("goods"),
            ip: "203.0.113.7".parse().unwrap(),
            client: "203.0.113.7".parse().unwrap(),
            user: Some("alice".into()),
            custom: vec![Some("123".into()), None],
        }
    }

    fn names() -> Vec<String> {
        vec!["goods_id".to_string(), "tenant".to_string()]
    }

    #[test]
    fn resolves_builtin_and_custom_names() {
        assert_eq!(KeyRef::resolve("ip", &names(), "k").unwrap(), KeyRef::Ip);
        assert_eq!(
            KeyRef::resolve("tenant", &names(), "k").unwrap(),
            KeyRef::Custom(1)
        );
    }

    #[test]
    fn unknown_key_names_the_path_and_the_known_keys() {
        let err = KeyRef::resolve("usr", &names(), "routes[0].policies[1].key").unwrap_err();
        assert_eq!(err.path, "routes[0].policies[1].key");
        assert!(err.message.contains("unknown key \"usr\""), "{err}");
        assert!(err.message.contains("goods_id"), "{err}");
    }

    #[test]
    fn combination_renders_all_parts_or_nothing() {
        let spec = KeySpec::parse("user+endpoint", &names(), "k").unwrap();
        assert_eq!(spec.render(&keys()).as_deref(), Some("alice|goods"));
        let spec = KeySpec::parse("ip+goods_id", &names(), "k").unwrap();
        assert_eq!(spec.render(&keys()).as_deref(), Some("203.0.113.7|123"));
        let missing = KeySpec::parse("user+tenant", &names(), "k").unwrap();
        assert_eq!(missing.render(&keys()), None);
    }

    #[test]
    fn empty_spec_is_an_error() {
        assert!(KeySpec::parse(" ", &names(), "k").is_err());
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::7"), 64), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("2001:db8:1:2:ffff::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("2001:db8:1:3::1"), 64), ip("2001:db8:1:3::"));
        assert_eq!(ip_key(ip("2001:db8:1:2::7"), 48), ip("2001:db8:1::"));
        assert_eq!(ip_key(ip("2001:db8::7"), 128), ip("2001:db8::7"));
        assert_eq!(ip_key(ip("2001:db8::7"), 1), ip("::"));
        // IPv4, mapped or not, is one client per address.
        assert_eq!(ip_key(ip("203.0.113.7"), 64), ip("203.0.113.7"));
        assert_eq!(ip_key(ip("::ffff:203.0.113.7"), 64), ip("203.0.113.7"));
    }
}
