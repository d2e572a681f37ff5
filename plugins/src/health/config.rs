//! A cluster's `health_check:`: how its endpoints are probed.
//!
//! ```yaml
//! clusters:
//!   orders:
//!     endpoints: ["10.0.0.5:8080", "10.0.0.6:8080"]
//!     health_check:
//!       http: /healthz           # or { path: /healthz, host: orders.internal, expect: [200, "300-399"] }
//!       # tcp: true              # a connect is enough
//!       # grpc: ""               # grpc.health.v1.Health/Check; a service name, or "" for the server
//!       interval: 5s             # between probes of one endpoint
//!       timeout: 1s              # a probe slower than this failed
//!       rise: 2                  # passes in a row to come back
//!       fall: 3                  # failures in a row to leave rotation
//! ```
//!
//! Exactly one of `http`, `tcp`, `grpc`. The defaults are HAProxy's `check`
//! (`inter 2s` aside: 5 s, as a gateway may front many endpoints), with
//! HAProxy's 2xx/3xx as a passing HTTP answer.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounds::{duration_in, in_range};
use crate::config_error::ConfigPath;
use crate::duration::HumanDuration;
use crate::ConfigError;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_THRESHOLD: u32 = 100;

/// `health_check:` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcCheckFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
}

/// `http:` a path, or the path with its `host` and `expect`ed statuses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum HttpCheckFile {
    Path(String),
    Full {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Vec<StatusFile>>,
    },
}

/// A passing status: `200`, or a range `"200-399"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StatusFile {
    Code(u16),
    Range(String),
}

/// `grpc:` the service to ask about (`""`: the server as a whole), or
/// `{ service }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum GrpcCheckFile {
    Service(String),
    Full { service: String },
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A `GET` of `path`, passing on an `expect`ed status.
    Http {
        path: String,
        /// The `Host` header; the endpoint's address when unset.
        host: Option<String>,
        expect: Vec<RangeInclusive<u16>>,
    },
    /// A TCP (and TLS, for a TLS cluster) connect.
    Tcp,
    /// `grpc.health.v1.Health/Check` for `service`, passing on `SERVING`.
    Grpc { service: String },
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http { .. } => "http",
            Probe::Tcp => "tcp",
            Probe::Grpc { .. } => "grpc",
        }
    }

    /// Whether an HTTP probe's answer `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        match self {
            Probe::Http { expect, .. } => expect.iter().any(|r| r.contains(&status)),
            _ => false,
        }
    }
}

/// The compiled settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row for a down endpoint to come back.
    pub rise: u32,
    /// Failures in a row for an up endpoint to leave rotation.
    pub fall: u32,
}

impl HealthCheckFile {
    /// The settings; `path` names the `health_check` field, for errors.
    pub fn compile(&self, path: &ConfigPath) -> Result<HealthSettings, ConfigError> {
        let named = [
            self.http.is_some(),
            self.tcp == Some(true),
            self.grpc.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(path.error(
                "name exactly one probe: `http: /path`, `tcp: true` or `grpc: \"<service>\"`",
            ));
        }
        let probe = if let Some(http) = &self.http {
            compile_http(http, &path.field("http"))?
        } else if let Some(grpc) = &self.grpc {
            let service = match grpc {
                GrpcCheckFile::Service(s) | GrpcCheckFile::Full { service: s } => s.clone(),
            };
            if service.len() > 256 || service.chars().any(|c| c.is_control()) {
                return Err(path
                    .field("grpc")
                    .error("a gRPC service name: printable, at most 256 bytes"));
            }
            Probe::Grpc { service }
        } else {
            Probe::Tcp
        };
        let interval = duration_in(
            self.interval
                .map_or(DEFAULT_INTERVAL, HumanDuration::as_duration),
            MIN_INTERVAL..=MAX_INTERVAL,
            path.field("interval"),
        )?;
        let timeout = duration_in(
            self.timeout
                .map_or(DEFAULT_TIMEOUT.min(interval), HumanDuration::as_duration),
            Duration::from_millis(10)..=interval,
            path.field("timeout"),
        )?;
        let rise = in_range(
            self.rise.unwrap_or(DEFAULT_RISE),
            1..=MAX_THRESHOLD,
            path.field("rise"),
        )?;
        let fall = in_range(
            self.fall.unwrap_or(DEFAULT_FALL),
            1..=MAX_THRESHOLD,
            path.field("fall"),
        )?;
        Ok(HealthSettings {
            probe,
            interval,
            timeout,
            rise,
            fall,
        })
    }
}

fn compile_http(http: &HttpCheckFile, path: &ConfigPath) -> Result<Probe, ConfigError> {
    let (p, host, expect) = match http {
        HttpCheckFile::Path(p) => (p, None, None),
        HttpCheckFile::Full { path, host, expect } => (path, host.as_ref(), expect.as_ref()),
    };
    let at = match http {
        HttpCheckFile::Path(_) => path.clone(),
        HttpCheckFile::Full { .. } => path.field("path"),
    };
    if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(at.error(format!(
            "{p:?} is not a request path (`/healthz`, `/status?full=1`)"
        )));
    }
    if let Some(h) = host {
        if h.is_empty() || http::HeaderValue::from_str(h).is_err() {
            return Err(path
                .field("host")
                .error(format!("{h:?} is not a valid Host header")));
        }
    }
    let expect = match expect {
        None => vec![200..=399],
        Some(list) if list.is_empty() => {
            return Err(path.field("expect").error("list at least one status"))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| status_range(s, &path.field("expect").index(i)))
            .collect::<Result<_, _>>()?,
    };
    Ok(Probe::Http {
        path: p.clone(),
        host: host.cloned(),
        expect,
    })
}

fn status_range(s: &StatusFile, at: &ConfigPath) -> Result<RangeInclusive<u16>, ConfigError> {
    let (lo, hi) = match s {
        StatusFile::Code(c) => (*c, *c),
        StatusFile::Range(r) => {
            let parsed = r.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            });
            parsed.ok_or_else(|| {
                at.error(format!("{r:?}: a status (200) or a range (\"200-399\")"))
            })?
        }
    };
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(at.error(format!(
            "{lo}-{hi}: statuses are 100 to 599, the first no higher than the last"
        )));
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> Result<HealthSettings, String> {
        let file: HealthCheckFile = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        file.compile(&ConfigPath::root().field("clusters.up.health_check"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_path_alone_is_an_http_check_with_the_defaults() {
        let s = compile("http: /healthz").unwrap();
        assert_eq!(
            s.probe,
            Probe::Http {
                path: "/healthz".into(),
                host: None,
                expect: vec![200..=399],
            }
        );
        assert_eq!(
            (s.interval, s.timeout, s.rise, s.fall),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 2, 3)
        );
        assert!(s.probe.passes(204) && s.probe.passes(302) && !s.probe.passes(404));
    }

    #[test]
    fn expected_statuses_take_codes_and_ranges() {
        let s =
            compile("http: { path: /s, host: a.internal, expect: [200, \"500-503\"] }").unwrap();
        assert!(s.probe.passes(200) && s.probe.passes(503));
        assert!(!s.probe.passes(204) && !s.probe.passes(504));
    }

    #[test]
    fn grpc_and_tcp_and_their_settings() {
        let s = compile("grpc: \"\"\ninterval: 2s\ntimeout: 500ms\nrise: 1\nfall: 1").unwrap();
        assert_eq!(
            s.probe,
            Probe::Grpc {
                service: String::new()
            }
        );
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(compile("tcp: true").unwrap().probe, Probe::Tcp);
        assert_eq!(
            compile("grpc: { service: orders.v1.Orders }")
                .unwrap()
                .probe,
            Probe::Grpc {
                service: "orders.v1.Orders".into()
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, field) in [
            ("interval: 5s", "health_check"),
            ("http: /a\ntcp: true", "health_check"),
            ("tcp: false", "health_check"),
            ("http: healthz", "health_check.http"),
            (
                "http: { path: /a, expect: [\"300-200\"] }",
                "health_check.http.expect[0]",
            ),
            (
                "http: { path: /a, expect: [99] }",
                "health_check.http.expect[0]",
            ),
            ("http: { path: /a, expect: [] }", "health_check.http.expect"),
            (
                "http: { path: /a, host: \"a\\nb\" }",
                "health_check.http.host",
            ),
            ("http: /a\ninterval: 10ms", "health_check.interval"),
            (
                "http: /a\ninterval: 1s\ntimeout: 2s",
                "health_check.timeout",
            ),
            ("http: /a\nrise: 0", "health_check.rise"),
            ("http: /a\nfall: 1000", "health_check.fall"),
        ] {
            let e = compile(yaml).expect_err(yaml);
            assert!(e.contains(field), "{yaml}: {e}");
        }
        assert!(
            compile("http: /a\nbogus: 1").is_err(),
            "unknown fields are refused"
        );
    }
}
