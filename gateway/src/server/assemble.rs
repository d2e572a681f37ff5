//! Assembling the Pingora server: proxy listeners, admin, reload triggers.

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::{http_proxy_service_with_name, HttpProxy};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::file::{ListenerFile, ListenerProtocol, ServerFile};
use crate::config::tls::tls_settings;
use crate::control::admin::{AdminApp, AdminServer};
use crate::control::watch::ReloadTriggers;
use crate::fleet::relay::FleetEvents;
use crate::fleet::sync::FleetSync;
use crate::fleet::Local;
use crate::proxy::Gateway;
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

/// Binds one downstream listener.
///
/// Pingora keeps the h2c switch per service, not per listener: an `h2c`
/// listener turns it on for the proxy, and since Pingora tells HTTP/2 from
/// HTTP/1.1 by the connection preface, every cleartext listener then takes
/// both. A TLS listener negotiates the protocol by ALPN instead.
fn add_listener(
    service: &mut Service<HttpProxy<Gateway>>,
    listener: &ListenerFile,
) -> Result<(), String> {
    if let Some(tls) = &listener.tls {
        let settings = tls_settings(tls)?;
        service.add_tls_with_settings(&listener.address, None, settings);
        return Ok(());
    }
    match listener.protocol {
        ListenerProtocol::Http1 => service.add_tcp(&listener.address),
        ListenerProtocol::H2c => {
            if let Some(app) = service.app_logic_mut() {
                let mut options = app.server_options.clone().unwrap_or_default();
                options.h2c = true;
                app.server_options = Some(options);
            }
            service.add_tcp(&listener.address)
        }
    }
    Ok(())
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
    let mut proxies = Vec::new();
    for _ in 0..workers {
        let mut proxy = http_proxy_service_with_name(
            &server.configuration,
            Gateway {
                state: state.clone(),
            },
            "breakwater proxy",
        );
        for (i, l) in source.listeners.iter().enumerate() {
            add_listener(&mut proxy, l).map_err(|e| format!("listeners[{i}]: {e}"))?;
        }
        proxies.push(proxy);
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
    if let Some((sync, events)) = fleet {
        server.add_service(sync);
        server.add_service(events);
    }
    Ok(server)
}
