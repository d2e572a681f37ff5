//! A route's `match:` conditions: host, path, methods and headers.

use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;
use http::{HeaderName, HeaderValue, Method};

use super::file::{HeaderMatchFile, MatchFile, PathMatchFile};
use crate::route::{HeaderMatch, HostMatch, PathPattern, RouteMatcher};

/// Compiles the conditions at `path` (`routes[0].match`).
pub fn compile_matcher(m: &MatchFile, path: &ConfigPath) -> Result<RouteMatcher, ConfigError> {
    let path_pattern = m
        .path
        .as_ref()
        .map(|p| path_pattern(p, &path.field("path")))
        .transpose()?;
    let methods = m
        .methods
        .iter()
        .enumerate()
        .map(|(i, raw)| method(raw, &path.item("methods", i)))
        .collect::<Result<_, _>>()?;
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header(h, &path.item("headers", i)))
        .collect::<Result<_, _>>()?;
    let host = match &m.host {
        Some(h) if h.trim().is_empty() => {
            return Err(path.field("host").error("must not be empty"))
        }
        Some(h) => Some(HostMatch::parse(h)),
        None => None,
    };
    Ok(RouteMatcher {
        host,
        path: path_pattern,
        methods,
        headers,
    })
}

fn path_pattern(p: &PathMatchFile, path: &ConfigPath) -> Result<PathPattern, ConfigError> {
    match p {
        PathMatchFile::Exact(p) => PathPattern::exact(p, &path.field("exact")),
        PathMatchFile::Prefix(p) => PathPattern::prefix(p, &path.field("prefix")),
        PathMatchFile::Template(p) => PathPattern::template(p, &path.field("template")),
    }
}

/// A method, in any case (`get` is `GET`).
fn method(raw: &str, path: &ConfigPath) -> Result<Method, ConfigError> {
    let upper = raw.to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| path.error(format!("\"{raw}\" is not an HTTP method")))
}

/// A header that must be present, with this value if one is given.
fn header(h: &HeaderMatchFile, path: &ConfigPath) -> Result<HeaderMatch, ConfigError> {
    let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
        path.field("name")
            .error(format!("\"{}\" is not a valid header name", h.name))
    })?;
    let value = h
        .value
        .as_ref()
        .map(|v| {
            HeaderValue::from_str(v)
                .map_err(|_| path.field("value").error("is not a valid header value"))
        })
        .transpose()?;
    Ok(HeaderMatch { name, value })
}
