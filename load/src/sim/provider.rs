//! `upstream-sim`: a provider like the seed's service B.
//!
//! Each request needs one of `workers` workers for `service` time (± `jitter`),
//! so capacity is `workers / service` requests per second. Requests beyond
//! the pool wait in an unbounded FIFO queue. The provider is **cancel-unaware**,
//! like a Dubbo provider: a request whose caller has hung up still runs to
//! the end, and such completions are counted as wasted work. The work is
//! waiting, not CPU, so the lab measures queueing, not the machine.
//!
//! `GET /stats` answers the counters as JSON (and is not counted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use super::rng;

#[derive(Debug, Clone, Copy)]
pub struct ProviderConfig {
    pub workers: usize,
    pub service: Duration,
    pub jitter: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            workers: 50,
            service: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
        }
    }
}

impl ProviderConfig {
    /// Requests per second the pool can complete.
    pub fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }
}

/// What the provider did.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub received: AtomicU64,
    pub completed: AtomicU64,
    /// Completed after the caller had gone: work nobody waited for.
    pub wasted: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatsView {
    pub received: u64,
    pub completed: u64,
    pub wasted: u64,
}

impl ProviderStats {
    pub fn view(&self) -> StatsView {
        StatsView {
            received: self.received.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            wasted: self.wasted.load(Ordering::Relaxed),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn handle(
    req: Request<Incoming>,
    cfg: ProviderConfig,
    pool: Arc<Semaphore>,
    stats: Arc<ProviderStats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/stats" {
        let body = serde_json::to_string(&stats.view()).unwrap_or_default();
        return Ok(text(StatusCode::OK, body));
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
    let (done, answer) = oneshot::channel();
    let work_stats = stats.clone();
    // Detached from the connection: hanging up does not stop the work.
    tokio::spawn(async move {
        let Ok(_worker) = pool.acquire_owned().await else {
            return;
        };
        let jitter = cfg.jitter.as_secs_f64() * (2.0 * rng::unit() - 1.0);
        let busy = (cfg.service.as_secs_f64() + jitter).max(0.0);
        tokio::time::sleep(Duration::from_secs_f64(busy)).await;
        work_stats.completed.fetch_add(1, Ordering::Relaxed);
        if done.send(()).is_err() {
            work_stats.wasted.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(match answer.await {
        Ok(()) => text(StatusCode::OK, "{\"ok\":true}".into()),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "{\"ok\":false}".into()),
    })
}

/// A running provider.
pub struct Provider {
    pub addr: SocketAddr,
    pub stats: Arc<ProviderStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    /// Serves on `listener` until dropped.
    pub fn start(listener: TcpListener, cfg: ProviderConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProviderStats::default());
        let pool = Arc::new(Semaphore::new(cfg.workers.max(1)));
        let task = {
            let stats = stats.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (pool, stats) = (pool.clone(), stats.clone());
                    tokio::spawn(async move {
                        let svc =
                            service_fn(move |req| handle(req, cfg, pool.clone(), stats.clone()));
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        };
        Ok(Self { addr, stats, task })
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}
