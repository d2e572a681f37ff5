//! The `circuit_breaker:` config and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::machine::Recovery;
use super::{Classifier, TripRules};
use crate::bounds::{duration_in, in_range, MAX_COUNT, MAX_SLOTS, MAX_TIMEOUT, MAX_WINDOW};
use crate::config_error::ConfigPath;
use crate::duration::HumanDuration;
use crate::rate_limit::config_checks::check_status;
use crate::ConfigError;

/// `circuit_breaker:` in a route's `policies`.
///
/// ```yaml
/// - circuit_breaker:
///     scope: cluster               # or endpoint: one breaker per upstream endpoint (outlier ejection)
///     window: 10s
///     min_requests: 20
///     error_ratio: 0.5             # any of the three rules trips it
///     slow_call: 1s
///     slow_ratio: 0.8
///     consecutive_failures: 5
///     open: 5s                     # then half-open; doubled on repeated trips, up to max_open
///     max_open: 1m
///     half_open_max_probes: 1
///     half_open_successes: 3
///     max_ejection_percent: 50     # endpoint scope: never eject more than this share
///     fallback: { status: 200, body: '{"items":[]}' }   # optional static answer while open
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scope: BreakerScope,
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default)]
    pub error_ratio: Option<f64>,
    #[serde(default)]
    pub slow_call: Option<HumanDuration>,
    #[serde(default)]
    pub slow_ratio: Option<f64>,
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
    /// gRPC statuses that are failures: UNKNOWN, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE by default.
    #[serde(default = "default_failure_grpc_statuses")]
    pub failure_grpc_statuses: Vec<u16>,
    #[serde(default = "default_open")]
    pub open: HumanDuration,
    #[serde(default = "default_max_open")]
    pub max_open: HumanDuration,
    #[serde(default = "default_multiplier")]
    pub backoff_multiplier: u32,
    #[serde(default = "default_one")]
    pub half_open_max_probes: u32,
    #[serde(default = "default_successes")]
    pub half_open_successes: u32,
    #[serde(default = "default_max_ejection")]
    pub max_ejection_percent: u32,
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    /// Status of the fail-fast answer when there is no fallback. Default 503.
    #[serde(default)]
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerScope {
    #[default]
    Cluster,
    Endpoint,
}

/// A static answer served instead of failing fast while the breaker is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_window() -> HumanDuration {
    Duration::from_secs(10).into()
}
fn default_min_requests() -> u64 {
    20
}
fn default_failure_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}
fn default_failure_grpc_statuses() -> Vec<u16> {
    vec![2, 4, 8, 13, 14]
}
fn default_open() -> HumanDuration {
    Duration::from_secs(5).into()
}
fn default_max_open() -> HumanDuration {
    Duration::from_secs(60).into()
}
fn default_multiplier() -> u32 {
    2
}
fn default_one() -> u32 {
    1
}
fn default_successes() -> u32 {
    3
}
fn default_max_ejection() -> u32 {
    50
}
fn default_content_type() -> String {
    "application/json".into()
}

/// The shortest slow-call line.
const MIN_TIMING: Duration = Duration::from_millis(1);
/// The shortest open period.
const MIN_OPEN: Duration = Duration::from_millis(10);
/// Most probes in flight, or successes asked for, in half-open.
const MAX_PROBES: u32 = 10_000;

/// A validated breaker config.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) rules: TripRules,
    pub(crate) classifier: Classifier,
    pub(crate) recovery: Recovery,
    pub(crate) window: Duration,
    pub(crate) status: u16,
}

fn ratio(v: Option<f64>, path: ConfigPath) -> Result<Option<f64>, ConfigError> {
    match v {
        Some(r) if !(r > 0.0 && r <= 1.0) => Err(path.error("must be in (0, 1]")),
        other => Ok(other),
    }
}

impl BreakerConfig {
    pub(crate) fn validate(&self, path: &str) -> Result<Compiled, ConfigError> {
        let path = ConfigPath::from(path);
        let p = |f: &str| path.field(f);
        let error_ratio = ratio(self.error_ratio, p("error_ratio"))?;
        let slow_ratio = ratio(self.slow_ratio, p("slow_ratio"))?;
        if self.error_ratio.is_none()
            && self.slow_ratio.is_none()
            && self.consecutive_failures.is_none()
        {
            return Err(
                path.error("set at least one of error_ratio, slow_ratio, consecutive_failures")
            );
        }
        if slow_ratio.is_some() && self.slow_call.is_none() {
            return Err(p("slow_call").error("is required with slow_ratio"));
        }
        let slow_call = self
            .slow_call
            .map(|d| duration_in(d.as_duration(), MIN_TIMING..=MAX_TIMEOUT, p("slow_call")))
            .transpose()?;
        if let Some(n) = self.consecutive_failures {
            in_range(u64::from(n), 1..=MAX_SLOTS, p("consecutive_failures"))?;
        }
        in_range(self.min_requests, 0..=MAX_COUNT, p("min_requests"))?;
        let window = duration_in(
            self.window.as_duration(),
            Duration::from_millis(100)..=MAX_WINDOW,
            p("window"),
        )?;
        let recovery = self.recovery(&path)?;
        self.check_scope_and_statuses(&path)?;
        Ok(Compiled {
            rules: TripRules {
                min_requests: self.min_requests,
                error_ratio,
                slow_ratio,
                consecutive_failures: self.consecutive_failures,
            },
            classifier: Classifier {
                failure_statuses: self.failure_statuses.clone(),
                failure_grpc_statuses: self.failure_grpc_statuses.clone(),
                slow_call,
            },
            recovery,
            window,
            status: check_status(self.status, 503, &path)?,
        })
    }

    /// The open period, its backoff and the half-open probes.
    fn recovery(&self, path: &ConfigPath) -> Result<Recovery, ConfigError> {
        let p = |f: &str| path.field(f);
        // Each bound first, then how they relate, so that an error names
        // the field that is out of range.
        let open = duration_in(self.open.as_duration(), MIN_OPEN..=MAX_TIMEOUT, p("open"))?;
        let max_open = duration_in(
            self.max_open.as_duration(),
            MIN_OPEN..=MAX_TIMEOUT,
            p("max_open"),
        )?;
        if max_open < open {
            return Err(p("max_open").error("must be at least `open`"));
        }
        in_range(self.backoff_multiplier, 1..=100, p("backoff_multiplier"))?;
        in_range(
            self.half_open_max_probes,
            1..=MAX_PROBES,
            p("half_open_max_probes"),
        )?;
        in_range(
            self.half_open_successes,
            1..=MAX_PROBES,
            p("half_open_successes"),
        )?;
        Ok(Recovery {
            open,
            max_open,
            multiplier: self.backoff_multiplier,
            half_open_max_probes: self.half_open_max_probes,
            half_open_successes: self.half_open_successes,
        })
    }

    /// The ejection share, the fallback and the statuses that count as
    /// failures.
    fn check_scope_and_statuses(&self, path: &ConfigPath) -> Result<(), ConfigError> {
        let p = |f: &str| path.field(f);
        if self.max_ejection_percent > 100 {
            return Err(p("max_ejection_percent").error("must be 0-100"));
        }
        if self.scope == BreakerScope::Endpoint && self.fallback.is_some() {
            return Err(p("fallback").error(
                "applies to scope: cluster only (an endpoint breaker ejects, it does not answer)",
            ));
        }
        for (i, code) in self.failure_grpc_statuses.iter().enumerate() {
            in_range(*code, 1..=16, path.item("failure_grpc_statuses", i))?;
        }
        for (i, s) in self.failure_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                return Err(path
                    .item("failure_statuses", i)
                    .error("is not an HTTP status"));
            }
        }
        if let Some(f) = &self.fallback {
            let fallback = p("fallback");
            if !(200..=599).contains(&f.status) {
                return Err(fallback.field("status").error("must be 200-599"));
            }
            if http::HeaderValue::from_str(&f.content_type).is_err() {
                return Err(fallback
                    .field("content_type")
                    .error("is not a valid header value"));
            }
        }
        Ok(())
    }
}
