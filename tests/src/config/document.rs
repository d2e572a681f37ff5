//! The whole file: process settings, listeners, admin, logging, and the
//! sections of `keys`, `upstream`, `route` and `policy`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::text::{yaml, ADMIN, ADMIN_PORT, DIR, LISTEN};
use super::{Cluster, Fleet, Keys, Protocol, Route};

/// A gateway config. Unset sections get the harness's defaults (module
/// doc of `config`); [`Config::to_yaml`] writes it.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    server: Server,
    listeners: Vec<Listener>,
    admin: Admin,
    logging: Logging,
    #[serde(skip_serializing_if = "Keys::is_empty")]
    keys: Keys,
    /// The fleet's Redis (`fleet:`; `cluster:` is its deprecated name).
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<Fleet>,
    clusters: BTreeMap<String, Cluster>,
    routes: Vec<Route>,
    /// Whether `listeners` was set by the test (else it is the default one).
    #[serde(skip)]
    own_listeners: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// The harness's defaults, no clusters and no routes.
    pub fn new() -> Config {
        Config {
            server: Server::default(),
            listeners: vec![Listener::http1()],
            admin: Admin::default(),
            logging: Logging::default(),
            keys: Keys::default(),
            fleet: None,
            clusters: BTreeMap::new(),
            routes: Vec::new(),
            own_listeners: false,
        }
    }

    pub fn server(mut self, server: Server) -> Config {
        self.server = server;
        self
    }

    /// Adds a listener; the first one replaces the default HTTP/1 listener.
    pub fn listener(mut self, listener: Listener) -> Config {
        if !self.own_listeners {
            self.listeners.clear();
            self.own_listeners = true;
        }
        self.listeners.push(listener);
        self
    }

    pub fn admin(mut self, admin: Admin) -> Config {
        self.admin = admin;
        self
    }

    pub fn keys(mut self, keys: Keys) -> Config {
        self.keys = keys;
        self
    }

    /// Cluster mode: the fleet's Redis.
    pub fn fleet(mut self, fleet: Fleet) -> Config {
        self.fleet = Some(fleet);
        self
    }

    /// Adds (or replaces) the upstream cluster `name`.
    pub fn cluster(mut self, name: &str, cluster: Cluster) -> Config {
        self.clusters.insert(name.to_string(), cluster);
        self
    }

    /// Appends a route; routes match in the order added.
    pub fn route(mut self, route: Route) -> Config {
        self.routes.push(route);
        self
    }

    /// The file's text, with the harness's placeholders.
    pub fn to_yaml(&self) -> String {
        yaml(self)
    }
}

/// The `server` section. The default is the harness's: one worker, a short
/// grace period, the pid file and upgrade socket in the gateway's temp dir.
#[derive(Clone, Debug, Serialize)]
pub struct Server {
    threads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_delay_secs: Option<u64>,
    grace_period_secs: u64,
    graceful_shutdown_timeout_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upgrade_sock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_config: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections_per_ip: Option<u64>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: 1,
            drain_delay_secs: None,
            grace_period_secs: 5,
            graceful_shutdown_timeout_secs: 1,
            pid_file: Some(format!("{DIR}/bw.pid")),
            upgrade_sock: Some(format!("{DIR}/upgrade.sock")),
            watch_config: None,
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

impl Server {
    /// Worker threads (one event loop each).
    pub fn threads(mut self, threads: usize) -> Server {
        self.threads = threads;
        self
    }

    /// No pid file or upgrade socket set: the gateway puts them in its
    /// private runtime directory, chosen from the environment.
    pub fn default_runtime_paths(mut self) -> Server {
        self.pid_file = None;
        self.upgrade_sock = None;
        self
    }

    /// After SIGTERM, how long the listeners keep serving while `/ready`
    /// answers 503.
    pub fn drain_delay_secs(mut self, secs: u64) -> Server {
        self.drain_delay_secs = Some(secs);
        self
    }

    /// Downstream connections at once, and from one address (0: no cap).
    pub fn max_connections(mut self, total: u64, per_ip: u64) -> Server {
        self.max_connections = Some(total);
        self.max_connections_per_ip = Some(per_ip);
        self
    }

    /// `false`: reload only on SIGHUP or `POST /reload`.
    pub fn watch_config(mut self, watch: bool) -> Server {
        self.watch_config = Some(watch);
        self
    }
}

/// One entry of `listeners`, always on the harness's leased proxy port.
#[derive(Clone, Debug, Serialize)]
pub struct Listener {
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

#[derive(Clone, Debug, Serialize)]
struct Tls {
    cert: String,
    key: String,
}

impl Listener {
    /// Cleartext HTTP/1.1 (the default listener).
    pub fn http1() -> Listener {
        Listener {
            address: LISTEN.to_string(),
            protocol: None,
            tls: None,
        }
    }

    /// Cleartext HTTP/2 with prior knowledge, and HTTP/1.1 too.
    pub fn h2c() -> Listener {
        Listener {
            protocol: Some(Protocol::H2c),
            ..Listener::http1()
        }
    }

    /// TLS with this certificate and key (PEM files); ALPN offers h2 and
    /// http/1.1.
    pub fn tls(cert: &str, key: &str) -> Listener {
        Listener {
            tls: Some(Tls {
                cert: cert.to_string(),
                key: key.to_string(),
            }),
            ..Listener::http1()
        }
    }
}

/// The `admin` section. The default listens on the leased admin port on
/// loopback, without a token.
#[derive(Clone, Debug, Serialize)]
pub struct Admin {
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_token: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_stream_subscribers: Option<usize>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: ADMIN.to_string(),
            token: None,
            token_env: None,
            read_token: None,
            allowed_hosts: Vec::new(),
            max_stream_subscribers: None,
        }
    }
}

impl Admin {
    /// On `0.0.0.0` (the leased port): reachable from the network, which
    /// the gateway only accepts with a token.
    pub fn on_all_interfaces(mut self) -> Admin {
        self.address = format!("0.0.0.0:{ADMIN_PORT}");
        self
    }

    /// The write token (reads need a token too once one is set).
    pub fn token(mut self, token: &str) -> Admin {
        self.token = Some(token.to_string());
        self
    }

    /// The write token, read from this environment variable.
    pub fn token_env(mut self, var: &str) -> Admin {
        self.token_env = Some(var.to_string());
        self
    }

    /// A token that may read but not mutate.
    pub fn read_token(mut self, token: &str) -> Admin {
        self.read_token = Some(token.to_string());
        self
    }

    /// Extra `Host` names that name the admin.
    pub fn allowed_hosts<S: ToString>(mut self, hosts: impl IntoIterator<Item = S>) -> Admin {
        self.allowed_hosts = hosts.into_iter().map(|h| h.to_string()).collect();
        self
    }

    pub fn max_stream_subscribers(mut self, max: usize) -> Admin {
        self.max_stream_subscribers = Some(max);
        self
    }
}

/// The `logging` section: JSON lines with an access log, which the
/// harness's `Gateway::access_log` reads.
#[derive(Clone, Debug, Serialize)]
struct Logging {
    format: &'static str,
    level: &'static str,
    access_log: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            format: "json",
            level: "info",
            access_log: true,
        }
    }
}
