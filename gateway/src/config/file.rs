//! Serde mirror of `gateway.yaml`. Every struct denies unknown fields.

use std::collections::BTreeMap;

use breakwater_plugins::abuse::AbuseConfig;
use breakwater_plugins::balance::config::QueueFile;
use breakwater_plugins::balance::{BalanceFile, EndpointFile};
use breakwater_plugins::breaker::BreakerConfig;
use breakwater_plugins::concurrency::ConcurrencyConfig;
use breakwater_plugins::dedupe::DedupeConfig;
use breakwater_plugins::deny::DenyConfig;
use breakwater_plugins::duration::HumanDuration;
use breakwater_plugins::health::HealthCheckFile;
use breakwater_plugins::hotkey::HotKeyConfig;
use breakwater_plugins::overload::{OverloadFile, PriorityFile};
use breakwater_plugins::rate_limit::RateLimitConfig;
use breakwater_plugins::retry::{RetryBudgetConfig, RetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub logging: LoggingFile,
    #[serde(default)]
    pub keys: KeysFile,
    #[serde(default)]
    pub block_list: BlockListFile,
    /// Fleet mode (fleet-wide limits, hot keys and blocks through Redis).
    /// Read at startup: changing it needs a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<super::fleet_file::FleetFile>,
    /// `fleet`'s old name, still read and reported as deprecated ("cluster"
    /// now means upstream clusters only). Read both through
    /// [`FileConfig::fleet_section`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::fleet_file::FleetFile>,
    pub clusters: BTreeMap<String, ClusterFile>,
    pub routes: Vec<RouteFile>,
}

impl FileConfig {
    /// The fleet section and the key the file wrote it under: `fleet`, or
    /// `cluster`, its deprecated name. (Both at once is a config error,
    /// reported when the config compiles.)
    pub fn fleet_section(&self) -> Option<(&'static str, &super::fleet_file::FleetFile)> {
        match (&self.fleet, &self.cluster) {
            (Some(f), _) => Some(("fleet", f)),
            (None, Some(c)) => Some(("cluster", c)),
            (None, None) => None,
        }
    }

    /// Deprecated spellings the file uses, as notes for the log and
    /// `GET /config`.
    pub fn deprecations(&self) -> Vec<&'static str> {
        let mut notes = Vec::new();
        if self.cluster.is_some() {
            notes.push(
                "`cluster:` (the fleet's Redis) is now `fleet:`; `cluster` names upstream \
                 clusters only. Rename the section: `cluster:` will stop being read.",
            );
        }
        notes
    }
}

/// Process settings. Changing them needs a restart (or a graceful upgrade).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    /// Worker threads for the proxy service.
    pub threads: usize,
    /// Let idle worker threads steal tasks from busy ones (one multi-thread
    /// Tokio runtime). The default, `false`, runs one single-thread proxy
    /// service per worker, all accepting on the same listening sockets, as
    /// nginx and Envoy run one event loop per worker: a connection is served
    /// by the loop that accepted it (`workers.rs`). It cost ~15% less CPU per
    /// request than work stealing in the throughput bench, and per-worker
    /// accepting saved the cross-thread wake-ups on top (`load/README.md`),
    /// but a worker's connections cannot move to an idle one.
    pub work_stealing: bool,
    /// After SIGTERM, how long the listeners keep accepting while `/ready`
    /// answers 503, so a load balancer takes the instance out before it
    /// stops (set it to the balancer's check interval × its fall count).
    /// 0, the default, stops accepting at once, as Pingora does.
    pub drain_delay_secs: u64,
    /// How long in-flight requests may drain after SIGTERM/SIGQUIT.
    pub grace_period_secs: u64,
    /// How long services get to shut down after the grace period.
    pub graceful_shutdown_timeout_secs: u64,
    /// Idle upstream connections kept for reuse, across all clusters, per
    /// worker when `work_stealing` is off (each worker is its own proxy
    /// service with its own pool, as each nginx worker keeps its own
    /// keepalive cache).
    pub upstream_keepalive_pool_size: usize,
    /// Where the pid is written (with `-d`). Default: `breakwater.pid` in the
    /// private runtime directory (`runtime_dir`).
    pub pid_file: Option<String>,
    /// Unix socket used to hand listeners to a new process on `-u` upgrades.
    /// Whoever can connect to it first takes the listening sockets, so it
    /// defaults to `upgrade.sock` in the private runtime directory, and a
    /// path set here must be absolute, in a directory checked by the same
    /// rule (`runtime_dir`).
    pub upgrade_sock: Option<String>,
    /// Downstream connections at once, every listener and worker together;
    /// the one past it is closed at accept. Unset: half the open-file limit
    /// less 256 (each connection may hold an upstream socket too), so the
    /// process never runs out of descriptors.
    pub max_connections: Option<u64>,
    /// Downstream connections at once from one client address; 0: no cap.
    pub max_connections_per_ip: u64,
    /// Reload when the config file changes. When false, only SIGHUP and
    /// `POST /reload` reload, as with nginx.
    pub watch_config: bool,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            threads: 2,
            work_stealing: false,
            drain_delay_secs: 0,
            grace_period_secs: 10,
            graceful_shutdown_timeout_secs: 5,
            upstream_keepalive_pool_size: 512,
            pid_file: None,
            upgrade_sock: None,
            watch_config: true,
            max_connections: None,
            max_connections_per_ip: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub address: String,
    /// Cleartext protocols: `http1` (default) or `h2c` (HTTP/2 with prior
    /// knowledge beside HTTP/1.1). Ignored with `tls`, where ALPN decides.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Serve TLS with this certificate; clients pick HTTP/2 or HTTP/1.1 by
    /// ALPN.
    #[serde(default)]
    pub tls: Option<ListenerTlsFile>,
}

/// A listener's certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 only.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c: gRPC, Dubbo triple) *and*
    /// HTTP/1.1, told apart by the connection preface.
    H2c,
}

/// What a cluster's endpoints speak.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plaintext.
    H2c,
    /// gRPC: HTTP/2 with prior knowledge (the same as `h2c`).
    Grpc,
}

impl UpstreamProtocol {
    pub fn is_h2(self) -> bool {
        matches!(self, Self::H2c | Self::Grpc)
    }
}

/// The admin listener and who may use it (compiled by `config::admin`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    pub address: String,
    /// The write token: `Authorization: Bearer <token>` for mutations
    /// (POST/DELETE), and for reads too once any token is set. Prefer
    /// `token_env` in production.
    pub token: Option<String>,
    /// Name of an environment variable holding the write token.
    pub token_env: Option<String>,
    /// A token that may read (every GET) but never mutate: for dashboards
    /// and Prometheus. Needs a write token beside it.
    pub read_token: Option<String>,
    /// Name of an environment variable holding the read token.
    pub read_token_env: Option<String>,
    /// Host names (without port) that requests may name in `Host` besides
    /// the admin's own address and loopback (`localhost`, 127.0.0.0/8, ::1):
    /// for reaching the admin by a DNS name. Anything else is refused, which
    /// stops DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Serve a non-loopback `address` without a token. Anyone who can reach
    /// the port can then reload, block and force breakers; a warning is
    /// logged at startup.
    pub insecure_no_token: bool,
    /// Most concurrent `GET /hotkeys/stream` subscribers; past it, 503.
    pub max_stream_subscribers: usize,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9901".into(),
            token: None,
            token_env: None,
            read_token: None,
            read_token_env: None,
            allowed_hosts: Vec::new(),
            insecure_no_token: false,
            max_stream_subscribers: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingFile {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,pingora=warn`.
    pub level: String,
    pub access_log: bool,
}

impl Default for LoggingFile {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeysFile {
    /// `route` (the route id) or `route_method` (`goods:GET`).
    pub endpoint: EndpointKeyMode,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses).
    pub trusted_proxies: Vec<String>,
    /// The `ip` key of an IPv6 client is its network of this many bits
    /// (1-128; 64 when unset).
    pub ipv6_prefix: Option<u32>,
    /// Where the `user` key comes from.
    pub user: Option<KeySourceFile>,
    /// Named custom keys.
    pub custom: BTreeMap<String, KeySourceFile>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKeyMode {
    #[default]
    Route,
    RouteMethod,
}

/// Where a key's value is read from. Exactly one field is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum KeySourceFile {
    Header(String),
    Cookie(String),
    Query(String),
    PathCapture(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `host:port` endpoints, or `{address, weight, max_in_flight}`.
    pub endpoints: Vec<EndpointFile>,
    /// `round_robin` (default), `least_request` or `{ hash: <key> }`
    /// (`plugins/src/balance/config.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceFile>,
    /// Each endpoint's cap on attempts in flight; 0: none.
    #[serde(default)]
    pub max_in_flight: u32,
    /// Requests waiting for an endpoint under its cap.
    #[serde(default)]
    pub endpoint_queue: QueueFile,
    /// How often endpoint names are resolved again (30s unless set; `0s`:
    /// only when the config is compiled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh: Option<HumanDuration>,

    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_io_timeout_ms")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_io_timeout_ms")]
    pub write_timeout_ms: u64,
    /// How long an idle pooled connection is kept.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default)]
    pub tls: bool,
    /// SNI and `Host` for TLS upstreams; defaults to empty (no SNI).
    #[serde(default)]
    pub sni: String,
    /// `http1` (default), `h2c` or `grpc` (HTTP/2 with prior knowledge).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Concurrent HTTP/2 streams per upstream connection.
    #[serde(default = "default_h2_streams")]
    pub h2_streams: usize,
    /// Caps the retries of every route to this cluster (20% of recent
    /// requests, at least 3 per second, by default).
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// The adaptive concurrency limit in front of the cluster: on unless
    /// `off`; its bounds may be adjusted (`plugins/src/overload/config.rs`).
    #[serde(default)]
    pub overload: OverloadFile,
    /// Active health checks (`plugins/src/health/config.rs`); none unless
    /// set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckFile>,
    /// An endpoint the health checks bring back, or a reload adds, takes a
    /// share of its traffic growing from 10% to all over this window
    /// (`plugins/src/health/slow_start.rs`). Needs `health_check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<HumanDuration>,
}

fn default_h2_streams() -> usize {
    100
}

fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_io_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub id: String,
    #[serde(default, rename = "match")]
    pub matcher: MatchFile,
    pub cluster: String,
    /// Per-route timeouts; each defaults to the cluster's.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// A request header carrying the caller's deadline in milliseconds
    /// (`grpc-timeout` is always read). The remaining time is forwarded in it.
    #[serde(default)]
    pub deadline_header: Option<String>,
    /// Retries; none without this section.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// The class the route's requests queue in when their cluster is at its
    /// learned limit (`default` when unset).
    #[serde(default)]
    pub priority: Option<PriorityFile>,
    #[serde(default)]
    pub policies: Vec<PolicyFile>,
}

/// Route timeouts. Any that is set overrides the cluster's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsFile {
    /// Connecting to an endpoint.
    pub connect: Option<HumanDuration>,
    /// Waiting for the upstream's response (each read, first byte included).
    pub response: Option<HumanDuration>,
    /// The whole request, from arrival to the last byte from upstream;
    /// 15 s when unset, none with `0s` (long-lived streams).
    pub total: Option<HumanDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MatchFile {
    /// `example.com`, or `*.example.com` for any subdomain.
    pub host: Option<String>,
    pub path: Option<PathMatchFile>,
    /// Empty means any method.
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatchFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PathMatchFile {
    Exact(String),
    Prefix(String),
    /// `/goods/{id}`: `{name}` matches one path segment and captures it.
    Template(String),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchFile {
    pub name: String,
    /// When absent, the header only has to be present.
    #[serde(default)]
    pub value: Option<String>,
}

/// The process-wide block list. Read at startup; its entries survive reloads.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BlockListFile {
    /// Most live blocks kept; past that, new blocks are refused and counted.
    pub max_entries: usize,
}

impl Default for BlockListFile {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
        }
    }
}

/// One entry of a route's `policies` list, e.g. `- deny: { ips: [...] }`.
/// Policies run in the order listed; the first that refuses ends the chain.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PolicyFile {
    Deny(DenyConfig),
    RateLimit(RateLimitConfig),
    ConcurrencyLimit(ConcurrencyConfig),
    Abuse(AbuseConfig),
    CircuitBreaker(BreakerConfig),
    Dedupe(DedupeConfig),
    Hotkey(HotKeyConfig),
}

impl PolicyFile {
    /// The type name as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deny(_) => "deny",
            Self::RateLimit(_) => "rate_limit",
            Self::ConcurrencyLimit(_) => "concurrency_limit",
            Self::Abuse(_) => "abuse",
            Self::CircuitBreaker(_) => "circuit_breaker",
            Self::Dedupe(_) => "dedupe",
            Self::Hotkey(_) => "hotkey",
        }
    }

    /// The `name:` given in the file, if any.
    pub fn explicit_name(&self) -> Option<&str> {
        match self {
            Self::Deny(c) => c.name.as_deref(),
            Self::RateLimit(c) => c.name.as_deref(),
            Self::ConcurrencyLimit(c) => c.name.as_deref(),
            Self::Abuse(c) => c.name.as_deref(),
            Self::CircuitBreaker(c) => c.name.as_deref(),
            Self::Dedupe(c) => c.name.as_deref(),
            Self::Hotkey(c) => c.name.as_deref(),
        }
    }
}
