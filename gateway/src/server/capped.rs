//! The proxy's connection handler under the connection cap
//! ([`super::connections`]).
//!
//! Pingora hands an app each accepted connection, and again after each
//! reusable exchange on it (keep-alive), with no sign of which is which and
//! no call when the connection closes. So the wrapper takes the connection's
//! place on the first call and serves the whole connection itself, the
//! same reuse loop Pingora's listener runs; the place frees when the loop
//! ends and the connection with it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::connections::{Connections, Refused};

/// How often a refusal is logged at most (each is counted).
const LOG_EVERY: Duration = Duration::from_secs(1);

pub struct Capped<A> {
    inner: Arc<A>,
    conns: Arc<Connections>,
    logged: Mutex<Option<std::time::Instant>>,
}

impl<A> Capped<A> {
    pub fn new(inner: A, conns: Arc<Connections>) -> Self {
        Self {
            inner: Arc::new(inner),
            conns,
            logged: Mutex::new(None),
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    fn log(&self, why: Refused) {
        let now = crate::time::now();
        {
            let mut last = self.logged.lock();
            if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let limits = self.conns.limits();
        match why {
            Refused::Total => tracing::warn!(
                max_connections = limits.max,
                "server.max_connections reached: closing new connections at accept"
            ),
            Refused::PerIp => tracing::warn!(
                max_connections_per_ip = limits.per_ip,
                "server.max_connections_per_ip reached for a client: closing its new connections at accept"
            ),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _place = match self.conns.enter(peer) {
            Ok(place) => place,
            Err(why) => {
                self.log(why);
                // Dropping the stream closes the connection.
                return None;
            }
        };
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
