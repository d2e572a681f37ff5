//! Assembling the Pingora server: proxy listeners, admin, reload triggers.

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::{http_proxy, HttpProxy};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use super::prober::Prober;
use super::resolver::Resolver;
use crate::config::file::{ListenerFile, ListenerProtocol, ServerFile};
use crate::config::tls::tls_settings;
use crate::control::admin::{AdminApp, AdminServer};
use crate::control::watch::ReloadTriggers;
use crate::fleet::relay::FleetEvents;
use crate::fleet::sync::FleetSync;
use crate::fleet::Local;
use crate::proxy::Gateway;
use crate::server::capped::Capped;
use crate::server::connections::{ConnectionLimits, Connections};
use crate::server::housekeeping::Housekeeping;
use crate::server::runtime_dir::{self, Prepare, RuntimePaths};
use crate::server::workers::ProxyWorker;
use crate::state::GatewayState;

/// Process-level switches from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    /// Take over the listeners of a running instance (`-u`), for zero-downtime upgrades.
    pub upgrade: bool,
    pub daemon: bool,
}

fn server_conf(s: &ServerFile, paths: RuntimePaths) -> ServerConf {
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(s.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_secs),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        pid_file: paths.pid_file,
        upgrade_sock: paths.upgrade_sock,
        ..ServerConf::default()
    }
}

/// The proxy service of one worker: its connections are counted against
/// the process's cap.
type ProxyService = Service<Capped<HttpProxy<Gateway>>>;

/// Pingora keeps the h2c switch per service, not per listener: an `h2c`
/// listener turns it on for the proxy, and since Pingora tells HTTP/2 from
/// HTTP/1.1 by the connection preface, every cleartext listener then takes
/// both. A TLS listener negotiates the protocol by ALPN instead.
fn set_h2c(proxy: &mut HttpProxy<Gateway>, listeners: &[ListenerFile]) {
    let h2c = listeners
        .iter()
        .any(|l| l.tls.is_none() && matches!(l.protocol, ListenerProtocol::H2c));
    if h2c {
        let mut options = proxy.server_options.clone().unwrap_or_default();
        options.h2c = true;
        proxy.server_options = Some(options);
    }
}

/// Binds one downstream listener.
fn add_listener(service: &mut ProxyService, listener: &ListenerFile) -> Result<(), String> {
    if let Some(tls) = &listener.tls {
        let settings = tls_settings(tls)?;
        service.add_tls_with_settings(&listener.address, None, settings);
        return Ok(());
    }
    service.add_tcp(&listener.address);
    Ok(())
}

/// The connection caps: `server.max_connections`, else what the open-file
/// limit allows; a configured cap the limit cannot hold is warned about.
fn connection_limits(s: &ServerFile) -> ConnectionLimits {
    let files = crate::server::limits::open_files();
    let max = match (s.max_connections, &files) {
        (Some(max), Ok(files)) => {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            let needed = ConnectionLimits::files_needed(max);
            if needed > *files {
                tracing::warn!(
                    max_connections = max,
                    open_file_limit = files,
                    needed,
                    "server.max_connections may need more open files than the process may have: \
                     raise the limit (systemd LimitNOFILE, ulimit -n) or lower the cap"
                );
            }
            max
        }
        (Some(max), Err(_)) => usize::try_from(max).unwrap_or(usize::MAX),
        (None, Ok(files)) => ConnectionLimits::from_open_files(*files),
        (None, Err(e)) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; server.max_connections defaults to 10000");
            10_000
        }
    };
    let per_ip = usize::try_from(s.max_connections_per_ip).unwrap_or(usize::MAX);
    tracing::info!(
        max_connections = max,
        max_connections_per_ip = per_ip,
        "downstream connection caps"
    );
    ConnectionLimits { max, per_ip }
}

/// Builds the server for an already-loaded state. Fails if the private
/// runtime directory cannot be made or is not private (`runtime_dir`), or if
/// a TLS listener's files changed since the config was validated.
pub fn build(state: Arc<GatewayState>, flags: RunFlags) -> Result<Server, String> {
    let source = &state.snapshot().source;
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let paths = runtime_dir::resolve(&source.server, Prepare::Create)?;
    for passed_over in &paths.passed_over {
        tracing::warn!("{passed_over}");
    }
    tracing::debug!(pid_file = %paths.pid_file, upgrade_sock = %paths.upgrade_sock, "runtime paths");
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&source.server, paths));
    server.bootstrap();

    // One event loop per worker (no work stealing): one single-thread proxy
    // service per worker on shared sockets, so a connection is served by
    // the loop that accepted it (see `workers`).
    let workers = if source.server.work_stealing {
        1
    } else {
        source.server.threads.max(1)
    };
    let conns = Connections::new(connection_limits(&source.server), &state.metrics.registry);
    let mut proxies = Vec::new();
    for _ in 0..workers {
        let mut proxy = http_proxy(
            &server.configuration,
            Gateway {
                state: state.clone(),
            },
        );
        set_h2c(&mut proxy, &source.listeners);
        let mut service = Service::new(
            "breakwater proxy".to_string(),
            Capped::new(proxy, conns.clone()),
        );
        for (i, l) in source.listeners.iter().enumerate() {
            add_listener(&mut service, l).map_err(|e| format!("listeners[{i}]: {e}"))?;
        }
        proxies.push(service);
    }

    let mut admin = Service::new(
        "breakwater admin".to_string(),
        AdminServer(AdminApp::new(state.clone())),
    );
    admin.add_tcp(&source.admin.address);
    admin.threads = Some(1);

    let housekeeping = background_service(
        "breakwater housekeeping",
        Housekeeping {
            state: state.clone(),
        },
    );
    let local = Local {
        store: state.store.clone(),
        clock: state.clock.clone(),
        blocks: state.blocks.clone(),
    };
    let fleet = state.fleet_status.clone().map(|status| {
        (
            background_service(
                "breakwater fleet sync",
                FleetSync {
                    local: local.clone(),
                    status: status.clone(),
                },
            ),
            background_service("breakwater fleet events", FleetEvents::new(local, status)),
        )
    });
    let prober = background_service(
        "breakwater health checks",
        Prober {
            state: state.clone(),
        },
    );
    let resolver = background_service(
        "breakwater dns refresh",
        Resolver {
            state: state.clone(),
        },
    );
    let triggers = background_service("breakwater reload", ReloadTriggers { state });

    for (w, proxy) in proxies.into_iter().enumerate() {
        if workers == 1 {
            server.add_service(proxy);
        } else {
            server.add_service(ProxyWorker::new(w, proxy));
        }
    }
    server.add_service(admin);
    server.add_service(triggers);
    server.add_service(housekeeping);
    server.add_service(prober);
    server.add_service(resolver);
    if let Some((sync, events)) = fleet {
        server.add_service(sync);
        server.add_service(events);
    }
    Ok(server)
}
