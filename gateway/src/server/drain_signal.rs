//! The process's shutdown signals, with a drain delay before SIGTERM's
//! shutdown (see [`crate::state::drain`] for why).
//!
//! Pingora's own watcher turns SIGTERM into a graceful shutdown at once: its
//! listeners stop accepting while a load balancer still sends traffic.
//! This one, on SIGTERM, marks the instance draining (`/ready` answers 503),
//! keeps serving for `server.drain_delay_secs`, and only then hands Pingora
//! the graceful terminate (its `grace_period_secs` for requests in flight
//! follows). A second SIGTERM ends the delay early; SIGINT is still a fast
//! shutdown at any point; SIGQUIT is still the graceful upgrade, with no
//! delay: the new process takes over the listening sockets, so nothing is
//! refused.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::state::drain::DrainCause;
use crate::state::GatewayState;

pub struct DrainSignal {
    pub state: Arc<GatewayState>,
    pub delay: Duration,
}

/// A signal stream, or one that never fires when it cannot be installed
/// (logged: the process then cannot be stopped that way, but it serves).
fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, signal = name, "cannot install a signal handler");
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        tokio::select! {
            _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
            _ = next(&mut int) => return ShutdownSignal::FastShutdown,
            _ = next(&mut term) => {}
        }
        self.state.drain.start(DrainCause::Signal);
        if self.delay.is_zero() {
            tracing::info!("SIGTERM: draining, no drain delay");
            return ShutdownSignal::GracefulTerminate;
        }
        tracing::info!(
            delay_secs = self.delay.as_secs(),
            "SIGTERM: draining; /ready answers 503, the listeners keep serving for the drain delay"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {
                tracing::info!("drain delay over: shutting down");
            }
            _ = next(&mut term) => {
                tracing::info!("second SIGTERM: the drain delay ends now");
            }
            _ = next(&mut int) => return ShutdownSignal::FastShutdown,
        }
        ShutdownSignal::GracefulTerminate
    }
}
