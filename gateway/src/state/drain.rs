//! Readiness and drain: whether this instance wants new traffic.
//!
//! A load balancer takes an instance out of rotation only after its health
//! check fails, a few seconds after the instance decided to stop. If the
//! listener closed at once, every request the balancer sent in between
//! would be refused. So a drain first says "not ready" (`/ready`, and
//! `/healthz` for probes written against it, answer 503) while the
//! listener keeps serving, and only after `server.drain_delay_secs` does
//! the shutdown proper begin (Traefik's `requestAcceptGraceTimeout`,
//! Envoy's `/healthcheck/fail` followed by a stop).
//!
//! A drain starts on SIGTERM ([`crate::server::drain_signal`]) or on
//! `POST /drain`; only the admin's drain can be called off
//! (`DELETE /drain`), a signal's is final.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why the instance is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// `POST /drain`: an operator took it out; `DELETE /drain` undoes it.
    Admin,
    /// SIGTERM: the process is stopping.
    Signal,
}

impl DrainCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainCause::Admin => "admin",
            DrainCause::Signal => "signal",
        }
    }
}

const SERVING: u8 = 0;
const ADMIN: u8 = 1;
const SIGNAL: u8 = 2;

/// The drain flag, shared by the signal watcher, the admin and its probes.
#[derive(Debug, Default)]
pub struct Drain {
    state: AtomicU8,
}

impl Drain {
    /// Starts draining. A signal's drain overrides the admin's; returns
    /// whether this call changed anything.
    pub fn start(&self, cause: DrainCause) -> bool {
        let to = match cause {
            DrainCause::Admin => ADMIN,
            DrainCause::Signal => SIGNAL,
        };
        self.state.fetch_max(to, Ordering::AcqRel) < to
    }

    /// Calls off an admin drain. A signal's drain stays: the process is
    /// stopping. Returns the drain still in force, if any.
    pub fn cancel(&self) -> Option<DrainCause> {
        let _ = self
            .state
            .compare_exchange(ADMIN, SERVING, Ordering::AcqRel, Ordering::Acquire);
        self.cause()
    }

    /// The drain in force, if any.
    pub fn cause(&self) -> Option<DrainCause> {
        match self.state.load(Ordering::Acquire) {
            SERVING => None,
            ADMIN => Some(DrainCause::Admin),
            _ => Some(DrainCause::Signal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_drain_can_be_called_off_a_signals_cannot() {
        let d = Drain::default();
        assert_eq!(d.cause(), None);
        assert!(d.start(DrainCause::Admin));
        assert!(!d.start(DrainCause::Admin), "already draining");
        assert_eq!(d.cause(), Some(DrainCause::Admin));
        assert_eq!(d.cancel(), None);
        assert!(d.start(DrainCause::Admin));
        assert!(d.start(DrainCause::Signal), "a signal overrides the admin");
        assert!(!d.start(DrainCause::Admin), "and the admin cannot lower it");
        assert_eq!(d.cancel(), Some(DrainCause::Signal));
        assert_eq!(d.cause(), Some(DrainCause::Signal));
    }
}
