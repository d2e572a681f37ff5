//! A route's match conditions: host, path, methods and headers. All must hold.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{Captures, PathPattern};

/// Host condition. Compared case-insensitively, without the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
    AnySubdomainOf(String),
}

impl HostMatch {
    pub fn parse(raw: &str) -> Self {
        let raw = raw.to_ascii_lowercase();
        match raw.strip_prefix("*.") {
            Some(suffix) => Self::AnySubdomainOf(format!(".{suffix}")),
            None => Self::Exact(raw),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => host.eq_ignore_ascii_case(h),
            Self::AnySubdomainOf(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// Header condition: presence, or an exact value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

impl HeaderMatch {
    fn matches(&self, headers: &HeaderMap) -> bool {
        match &self.value {
            None => headers.contains_key(&self.name),
            Some(v) => headers.get_all(&self.name).iter().any(|h| h == v),
        }
    }
}

/// All conditions of one route. An empty matcher matches every request.
#[derive(Debug, Clone, Default)]
pub struct RouteMatcher {
    pub host: Option<HostMatch>,
    pub path: Option<PathPattern>,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderMatch>,
}

impl RouteMatcher {
    /// Returns the path captures when every condition holds. `host` is the
    /// request's host without port.
    pub fn matches(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Captures> {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return None;
        }
        if let Some(h) = &self.host {
            if !host.is_some_and(|host| h.matches(host)) {
                return None;
            }
        }
        if !self.headers.iter().all(|h| h.matches(headers)) {
            return None;
        }
        match &self.path {
            Some(p) => p.matches(path),
            None => Some(Captures::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_exact_and_wildcard() {
        let exact = HostMatch::parse("Shop.Example.com");
        assert!(exact.matches("shop.example.COM"));
        assert!(!exact.matches("example.com"));
        let wild = HostMatch::parse("*.example.com");
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
    }

    #[test]
    fn every_condition_must_hold() {
        let m = RouteMatcher {
            host: Some(HostMatch::parse("api.test")),
            path: Some(PathPattern::prefix("/v1/", "p").unwrap()),
            methods: vec![Method::GET],
            headers: vec![
                HeaderMatch {
                    name: HeaderName::from_static("x-canary"),
                    value: Some(HeaderValue::from_static("1")),
                },
                HeaderMatch {
                    name: HeaderName::from_static("x-team"),
                    value: None,
                },
            ],
        };
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("1"));
        h.insert("x-team", HeaderValue::from_static("anything"));
        assert!(m
            .matches(Some("api.test"), &Method::GET, "/v1/x", &h)
            .is_some());
        assert!(m
            .matches(Some("api.test"), &Method::POST, "/v1/x", &h)
            .is_none());
        assert!(m
            .matches(Some("other"), &Method::GET, "/v1/x", &h)
            .is_none());
        assert!(m.matches(None, &Method::GET, "/v1/x", &h).is_none());
        assert!(m
            .matches(Some("api.test"), &Method::GET, "/v2/x", &h)
            .is_none());
        h.insert("x-canary", HeaderValue::from_static("0"));
        assert!(m
            .matches(Some("api.test"), &Method::GET, "/v1/x", &h)
            .is_none());
        h.insert("x-canary", HeaderValue::from_static("1"));
        h.remove("x-team");
        assert!(m
            .matches(Some("api.test"), &Method::GET, "/v1/x", &h)
            .is_none());
    }
}
