//! The `breakwater` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use pingora::server::RunArgs;

use crate::server::assemble::{build, RunFlags};
use crate::server::drain_signal::DrainSignal;
use crate::server::runtime_dir::{self, Prepare};
use crate::state::GatewayState;

/// Breakwater: a service-governance gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "breakwater", version)]
pub struct Cli {
    /// The config file.
    #[arg(short = 'c', long = "conf", default_value = "conf/gateway.yaml")]
    pub conf: PathBuf,
    /// Validate the config, print "ok" or the error, and exit 0 or 1 (like `nginx -t`).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Take over the listening sockets of a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
}

/// Entry point of the `breakwater` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = match GatewayState::load(cli.conf.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("breakwater: {}: {e}", cli.conf.display());
            return ExitCode::FAILURE;
        }
    };
    let snapshot = state.snapshot();
    let insecure = crate::config::admin::insecure_warning(&snapshot.source.admin);
    if cli.test {
        // The runtime directory is checked, not created: `-t` changes nothing.
        match runtime_dir::resolve(&snapshot.source.server, Prepare::CheckOnly) {
            Ok(paths) => {
                for passed_over in paths.passed_over {
                    eprintln!("breakwater: warning: {passed_over}");
                }
            }
            Err(e) => {
                eprintln!("breakwater: {}: {e}", cli.conf.display());
                return ExitCode::FAILURE;
            }
        }
        if let Some(warning) = insecure {
            eprintln!("breakwater: warning: {warning}");
        }
        for note in snapshot.source.deprecations() {
            eprintln!("breakwater: warning: deprecated: {note}");
        }
        println!("ok");
        return ExitCode::SUCCESS;
    }
    crate::server::logging::init(&snapshot.source.logging);
    if let Some(warning) = insecure {
        tracing::warn!(target: "breakwater::admin", "{warning}");
    }
    for note in snapshot.source.deprecations() {
        tracing::warn!(target: "breakwater::config", "deprecated: {note}");
    }
    match crate::server::limits::raise_open_files() {
        Ok((before, after)) if after > before => {
            tracing::info!(before, after, "raised the open-file limit")
        }
        Ok((_, now)) => tracing::info!(limit = now, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    tracing::info!(
        config = %cli.conf.display(),
        hash = %snapshot.hash,
        listeners = ?snapshot.source.listeners.iter().map(|l| l.address.as_str()).collect::<Vec<_>>(),
        admin = %snapshot.source.admin.address,
        "breakwater starting"
    );
    let drain_delay = std::time::Duration::from_secs(snapshot.source.server.drain_delay_secs);
    drop(snapshot);
    let signals = DrainSignal {
        state: state.clone(),
        delay: drain_delay,
    };
    let server = match build(
        state,
        RunFlags {
            upgrade: cli.upgrade,
            daemon: cli.daemon,
        },
    ) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("breakwater: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    ExitCode::SUCCESS
}
