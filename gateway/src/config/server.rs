//! Listeners, process settings and logging: checked on every compile, in
//! effect from startup (a reload reports them as pending a restart).

use std::net::SocketAddr;

use breakwater_plugins::bounds::{in_range, MAX_SLOTS};
use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;

use super::file::{FileConfig, ListenerFile, LoggingFile};

/// Most proxy worker threads.
const MAX_THREADS: u64 = 1024;
/// Longest drain on shutdown, and longest wait for services to stop.
const MAX_DRAIN_SECS: u64 = 3600;
/// Ten million connections: past any open-file limit a kernel grants.
const MAX_CONNECTIONS: u64 = 10_000_000;

/// At least one listener, each with an address and, with `tls`, a
/// certificate and key that load.
pub fn validate_listeners(listeners: &[ListenerFile]) -> Result<(), ConfigError> {
    let path = ConfigPath::root().field("listeners");
    if listeners.is_empty() {
        return Err(path.error("at least one listener is required"));
    }
    for (i, l) in listeners.iter().enumerate() {
        let at = path.index(i);
        parse_socket_addr(&l.address, &at.field("address"))?;
        if let Some(tls) = &l.tls {
            crate::config::tls::tls_settings(tls).map_err(|e| at.field("tls").error(e))?;
        }
    }
    Ok(())
}

/// The process settings' numbers. They take effect at startup, but `-t`
/// and a reload check them too.
pub fn validate_server(file: &FileConfig) -> Result<(), ConfigError> {
    let s = &file.server;
    let at = |field: &str| ConfigPath::root().field("server").field(field);
    in_range(s.threads as u64, 1..=MAX_THREADS, at("threads"))?;
    in_range(
        s.drain_delay_secs,
        0..=MAX_DRAIN_SECS,
        at("drain_delay_secs"),
    )?;
    in_range(
        s.grace_period_secs,
        0..=MAX_DRAIN_SECS,
        at("grace_period_secs"),
    )?;
    in_range(
        s.graceful_shutdown_timeout_secs,
        0..=MAX_DRAIN_SECS,
        at("graceful_shutdown_timeout_secs"),
    )?;
    if let Some(max) = s.max_connections {
        in_range(max, 1..=MAX_CONNECTIONS, at("max_connections"))?;
    }
    in_range(
        s.max_connections_per_ip,
        0..=MAX_CONNECTIONS,
        at("max_connections_per_ip"),
    )?;
    in_range(
        s.upstream_keepalive_pool_size as u64,
        0..=MAX_SLOTS,
        at("upstream_keepalive_pool_size"),
    )?;
    in_range(
        file.block_list.max_entries as u64,
        1..=MAX_SLOTS,
        ConfigPath::root().field("block_list").field("max_entries"),
    )?;
    Ok(())
}

/// The log filter parses (`info`, `breakwater=debug,pingora=warn`).
pub fn validate_logging(logging: &LoggingFile) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&logging.level)
        .map(|_| ())
        .map_err(|e| {
            ConfigPath::root()
                .field("logging")
                .field("level")
                .error(format!("invalid filter: {e}"))
        })
}

fn parse_socket_addr(raw: &str, path: &ConfigPath) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        path.error(format!(
            "\"{raw}\" is not an address like 127.0.0.1:8080 or [::]:8080"
        ))
    })
}
