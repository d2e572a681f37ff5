//! Routes: what they match, where they go, their timeouts, retries and
//! policies.

use serde::{Serialize, Serializer};

use super::text::one_entry;
use super::Policy;

/// One entry of `routes`. Without a match it takes every request.
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    id: String,
    #[serde(rename = "match", skip_serializing_if = "Match::is_any")]
    matcher: Match,
    cluster: String,
    #[serde(skip_serializing_if = "Timeouts::is_unset")]
    timeouts: Timeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<Retry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<serde_yaml::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    policies: Vec<Policy>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Match {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<HeaderMatch>,
}

impl Match {
    fn is_any(&self) -> bool {
        self.host.is_none()
            && self.path.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
    }
}

#[derive(Clone, Debug)]
enum PathMatch {
    Exact(String),
    Prefix(String),
    Template(String),
}

impl Serialize for PathMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PathMatch::Exact(p) => one_entry(s, "exact", p),
            PathMatch::Prefix(p) => one_entry(s, "prefix", p),
            PathMatch::Template(p) => one_entry(s, "template", p),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
struct HeaderMatch {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Timeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<String>,
}

impl Timeouts {
    fn is_unset(&self) -> bool {
        self.connect.is_none() && self.response.is_none() && self.total.is_none()
    }
}

impl Route {
    /// Route `id` to the upstream cluster `cluster`.
    pub fn new(id: &str, cluster: &str) -> Route {
        Route {
            id: id.to_string(),
            matcher: Match::default(),
            cluster: cluster.to_string(),
            timeouts: Timeouts::default(),
            deadline_header: None,
            retry: None,
            priority: None,
            policies: Vec::new(),
        }
    }

    /// `example.com`, or `*.example.com` for any subdomain.
    pub fn host(mut self, host: &str) -> Route {
        self.matcher.host = Some(host.to_string());
        self
    }

    pub fn path_exact(mut self, path: &str) -> Route {
        self.matcher.path = Some(PathMatch::Exact(path.to_string()));
        self
    }

    pub fn path_prefix(mut self, prefix: &str) -> Route {
        self.matcher.path = Some(PathMatch::Prefix(prefix.to_string()));
        self
    }

    /// `/goods/{id}`: each `{name}` matches one segment and captures it.
    pub fn path_template(mut self, template: &str) -> Route {
        self.matcher.path = Some(PathMatch::Template(template.to_string()));
        self
    }

    /// Only these methods (any method by default).
    pub fn methods<S: ToString>(mut self, methods: impl IntoIterator<Item = S>) -> Route {
        self.matcher.methods = methods.into_iter().map(|m| m.to_string()).collect();
        self
    }

    /// Only requests whose header `name` is `value`.
    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.matcher.headers.push(HeaderMatch {
            name: name.to_string(),
            value: Some(value.to_string()),
        });
        self
    }

    /// The whole request's timeout (`"300ms"`; `"0s"` for none).
    pub fn total_timeout(mut self, timeout: &str) -> Route {
        self.timeouts.total = Some(timeout.to_string());
        self
    }

    /// A request header carrying the caller's deadline in milliseconds.
    pub fn deadline_header(mut self, header: &str) -> Route {
        self.deadline_header = Some(header.to_string());
        self
    }

    pub fn retry(mut self, retry: Retry) -> Route {
        self.retry = Some(retry);
        self
    }

    /// The route's class at its cluster's overload gate: `"critical"`.
    pub fn priority(mut self, class: &str) -> Route {
        self.priority = Some(serde_yaml::Value::String(class.into()));
        self
    }

    /// The class by the value of `key`, `class` otherwise:
    /// `priority_by("tier", "default", &[("gold", "critical")])`.
    pub fn priority_by(mut self, key: &str, class: &str, classes: &[(&str, &str)]) -> Route {
        let mut map = serde_yaml::Mapping::new();
        for (value, c) in classes {
            map.insert((*value).into(), (*c).into());
        }
        let mut p = serde_yaml::Mapping::new();
        p.insert("class".into(), class.into());
        p.insert("key".into(), key.into());
        p.insert("classes".into(), serde_yaml::Value::Mapping(map));
        self.priority = Some(serde_yaml::Value::Mapping(p));
        self
    }

    /// Appends a policy; policies run in the order added.
    pub fn policy(mut self, policy: impl Into<Policy>) -> Route {
        self.policies.push(policy.into());
        self
    }
}

/// A route's `retry` section.
#[derive(Clone, Debug, Serialize)]
pub struct Retry {
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    backoff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_backoff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    on_statuses: Vec<u16>,
}

impl Retry {
    /// Up to `attempts` retries after the first try.
    pub fn attempts(attempts: u32) -> Retry {
        Retry {
            attempts,
            backoff: None,
            max_backoff: None,
            idempotent: None,
            on_statuses: Vec::new(),
        }
    }

    /// The first backoff and its cap (`"1ms"`, `"5ms"`).
    pub fn backoff(mut self, backoff: &str, max_backoff: &str) -> Retry {
        self.backoff = Some(backoff.to_string());
        self.max_backoff = Some(max_backoff.to_string());
        self
    }

    /// Whether the route's calls may be retried whatever their method.
    pub fn idempotent(mut self, idempotent: bool) -> Retry {
        self.idempotent = Some(idempotent);
        self
    }

    /// Upstream statuses that are retried too.
    pub fn on_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Retry {
        self.on_statuses = statuses.into_iter().collect();
        self
    }
}
