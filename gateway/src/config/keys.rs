//! The `keys:` section: where the request keys policies count by come from.

use std::net::IpAddr;

use breakwater_plugins::bounds::in_range;
use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;
use http::HeaderName;
use ipnet::IpNet;

use super::file::{EndpointKeyMode, KeySourceFile, KeysFile};
use crate::route::keys::{KeyExtractor, KeySource};

/// Compiles the key sources. A `user` key may come from a path capture:
/// `/users/{uid}/...` routes can key users by path.
pub fn compile_keys(k: &KeysFile) -> Result<KeyExtractor, ConfigError> {
    let path = ConfigPath::root().field("keys");
    let trusted_proxies = trusted_proxies(&k.trusted_proxies, &path)?;
    let user = k
        .user
        .as_ref()
        .map(|s| compile_source(s, &path.field("user")))
        .transpose()?;
    let custom = custom_keys(k, &path)?;
    let ipv6_prefix = in_range(
        k.ipv6_prefix
            .unwrap_or(u32::from(KeyExtractor::DEFAULT_IPV6_PREFIX)),
        1..=128,
        path.field("ipv6_prefix"),
    )? as u8;
    Ok(KeyExtractor {
        by_method: k.endpoint == EndpointKeyMode::RouteMethod,
        ipv6_prefix,
        trusted_proxies,
        user,
        custom,
    })
}

/// `trusted_proxies`: CIDR ranges, or single addresses.
fn trusted_proxies(raw: &[String], path: &ConfigPath) -> Result<Vec<IpNet>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, raw)| {
            raw.parse::<IpNet>()
                .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    path.item("trusted_proxies", i)
                        .error(format!("\"{raw}\" is not an IP address or CIDR range"))
                })
        })
        .collect()
}

/// The named custom keys, in name order (`KeyRef::Custom` indexes them).
fn custom_keys(k: &KeysFile, path: &ConfigPath) -> Result<Vec<(String, KeySource)>, ConfigError> {
    let mut custom = Vec::with_capacity(k.custom.len());
    for (name, source) in &k.custom {
        let at = path.field("custom").field(name);
        if matches!(name.as_str(), "endpoint" | "ip" | "user") {
            return Err(at.error(format!("\"{name}\" is a built-in key name")));
        }
        if !breakwater_plugins::keys::is_valid_name(name) {
            return Err(at.error("key names use letters, digits, '_' or '-' ('+' combines keys)"));
        }
        custom.push((name.clone(), compile_source(source, &at)?));
    }
    Ok(custom)
}

fn compile_source(s: &KeySourceFile, path: &ConfigPath) -> Result<KeySource, ConfigError> {
    let nonempty = |v: &str, field: &str| {
        if v.trim().is_empty() {
            Err(path.field(field).error("must not be empty"))
        } else {
            Ok(v.to_string())
        }
    };
    Ok(match s {
        KeySourceFile::Header(h) => {
            KeySource::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                path.field("header")
                    .error(format!("\"{h}\" is not a valid header name"))
            })?)
        }
        KeySourceFile::Cookie(c) => KeySource::Cookie(nonempty(c, "cookie")?),
        KeySourceFile::Query(q) => KeySource::Query(nonempty(q, "query")?),
        KeySourceFile::PathCapture(p) => KeySource::PathCapture(nonempty(p, "path_capture")?),
    })
}
