//! One proxy service per worker thread, all accepting on the same sockets.
//!
//! Why: Pingora's listening service accepts every connection on one runtime
//! and hands it to a random worker's runtime. Tokio registers the socket with
//! the event loop of the runtime that accepted it, so for half the
//! connections (with two workers) every read readiness crosses threads: the
//! accepting loop writes an eventfd to wake the worker that owns the task.
//! `strace` counted 1.6 such `write`s per request, and a wake-up per request
//! on the other thread. With one single-thread service per worker, the loop
//! that accepts a connection is the loop that serves it, as in nginx.
//!
//! How: worker 0 is an ordinary Pingora service. It binds each listener (or
//! takes it over from the previous process on a graceful upgrade) and records
//! the socket in Pingora's listener table. Every other worker waits until the
//! table holds each of its addresses, then starts on a private table of
//! `dup`s of those sockets. Each worker's epoll watches the same listening
//! socket, and whichever worker is free accepts. Every worker owns, and closes
//! on shutdown, only its own descriptor; only the original is handed to a
//! new process on upgrade.
//!
//! Limits: all workers wake for each new connection (a thundering herd of
//! `threads`, cheap at the handful of threads a gateway runs, and only on
//! connect, not per request). A connection stays on the worker that accepted
//! it for its whole life, as with Pingora's own per-thread runtimes.

use std::os::fd::{BorrowedFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::proxy::HttpProxy;
use pingora::server::{Fds, ListenFds, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::Service as ServiceTrait;

use crate::proxy::Gateway;
use crate::server::capped::Capped;

/// How long a worker waits for worker 0 to bind the listeners. Binding is
/// immediate; this only bounds a start-up that has already failed.
const BIND_WAIT: Duration = Duration::from_secs(30);

/// One worker: a single-thread proxy service. Worker 0 binds the listeners;
/// the others serve `dup`s of them.
pub struct ProxyWorker {
    index: usize,
    name: String,
    inner: Service<Capped<HttpProxy<Gateway>>>,
}

impl ProxyWorker {
    /// Worker `index` around `inner`, a proxy service with its listeners
    /// added. The service is made single-threaded.
    pub fn new(index: usize, mut inner: Service<Capped<HttpProxy<Gateway>>>) -> Self {
        inner.threads = Some(1);
        Self {
            index,
            name: format!("breakwater proxy worker {index}"),
            inner,
        }
    }

    fn addresses(&self) -> Vec<String> {
        ServiceTrait::listen_addresses(&self.inner).unwrap_or_default()
    }
}

#[async_trait]
impl ServiceTrait for ProxyWorker {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let fds = match fds {
            Some(shared) if self.index > 0 => {
                match duplicated(&shared, &self.addresses(), &shutdown).await {
                    Ok(private) => Some(private),
                    Err(e) => {
                        tracing::error!(worker = self.index, "{e}; this worker does not serve");
                        return;
                    }
                }
            }
            other => other,
        };
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        ServiceTrait::listen_addresses(&self.inner)
    }
}

/// A private listener table holding a `dup` of each of `addresses`' sockets
/// from `shared`, once worker 0 has put them all there.
async fn duplicated(
    shared: &ListenFds,
    addresses: &[String],
    shutdown: &ShutdownWatch,
) -> Result<ListenFds, String> {
    let started = crate::time::now();
    let originals = loop {
        if let Some(found) = lookup(shared, addresses) {
            break found;
        }
        if *shutdown.borrow() {
            return Err("shut down before the listeners were bound".into());
        }
        if started.elapsed() > BIND_WAIT {
            return Err(format!(
                "worker 0 did not bind {} within {BIND_WAIT:?}",
                addresses.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut private = Fds::new();
    for (address, fd) in addresses.iter().zip(originals) {
        private.add(
            address.clone(),
            dup(fd).map_err(|e| format!("dup({address}): {e}"))?,
        );
    }
    Ok(Arc::new(Mutex::new(private)))
}

/// The descriptor of every address, or `None` while one is still missing.
fn lookup(table: &ListenFds, addresses: &[String]) -> Option<Vec<RawFd>> {
    let table = table.lock();
    addresses.iter().map(|a| table.get(a).copied()).collect()
}

/// A close-on-exec duplicate of `fd`, owned by the caller.
fn dup(fd: RawFd) -> std::io::Result<RawFd> {
    // SAFETY: `fd` is a listening socket in Pingora's table, open for the
    // life of the server; it is only borrowed for the duplication.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(borrowed.try_clone_to_owned()?.into_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[tokio::test]
    async fn duplicates_every_address_once_worker_0_has_bound_it() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let shared: ListenFds = Arc::new(Mutex::new(Fds::new()));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let addresses = vec!["a:1".to_string(), "b:2".to_string()];
        shared.lock().add("a:1".into(), a.as_raw_fd());

        // Worker 0 binds the second address a little later.
        let late = shared.clone();
        let fd_b = b.as_raw_fd();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            late.lock().add("b:2".into(), fd_b);
        });
        let private = duplicated(&shared, &addresses, &shutdown).await.unwrap();
        let private = private.lock();
        for (address, original) in [("a:1", &a), ("b:2", &b)] {
            let fd = *private.get(address).unwrap();
            assert_ne!(
                fd,
                original.as_raw_fd(),
                "{address}: a duplicate, not the original"
            );
            // The duplicate is the same socket: it has the same local address.
            // SAFETY: the test owns `fd` (a fresh dup) and closes it here.
            let dup = unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            assert_eq!(dup.local_addr().unwrap(), original.local_addr().unwrap());
        }
    }

    #[tokio::test]
    async fn gives_up_on_shutdown_while_waiting() {
        let shared: ListenFds = Arc::new(Mutex::new(Fds::new()));
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        let err = duplicated(&shared, &["x:1".to_string()], &shutdown)
            .await
            .err()
            .unwrap();
        assert!(err.contains("shut down"), "{err}");
    }
}
