//! `upstream-sim`: a provider like the seed's service B.
//!
//! Each request needs one of `workers` workers for `service` time (± `jitter`),
//! so capacity is `workers / service` requests per second. The service time
//! may follow a schedule (`schedule`: the seed's provider slowed down tenfold
//! mid-incident); a request's time is decided when a worker takes it up.
//!
//! Capacity is exact whatever the timer's resolution: Tokio's timers tick
//! in whole milliseconds, so a worker that slept 5 ms per request would
//! really take 5.5–6 and serve 15% less than `workers / service`. Each
//! worker keeps its own clock instead: a request that was already waiting
//! when the worker finished its last one starts at that finish time, not
//! when the late timer woke it, so the error shows as up to a millisecond
//! of latency per call and never accumulates into lost capacity. Requests beyond
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
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::rng;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub workers: usize,
    /// The service time, or the first one when `schedule` is set.
    pub service: Duration,
    pub jitter: Duration,
    /// Service time over time, from [`Provider::begin_schedule`] (or the
    /// start): each phase's time holds for its duration, the last one for
    /// ever after. Empty: `service` throughout.
    pub schedule: Vec<ServicePhase>,
}

/// One stretch of the service-time schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServicePhase {
    pub duration: Duration,
    pub service: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            workers: 50,
            service: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            schedule: Vec::new(),
        }
    }
}

impl ProviderConfig {
    /// A pool of `workers` taking `service` (± `jitter`) per request.
    pub fn new(workers: usize, service: Duration, jitter: Duration) -> Self {
        Self {
            workers,
            service,
            jitter,
            schedule: Vec::new(),
        }
    }

    /// Requests per second the pool can complete (at the first service
    /// time).
    pub fn capacity(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }

    /// The service time `elapsed` into the schedule.
    pub fn service_at(&self, elapsed: Duration) -> Duration {
        let mut end = Duration::ZERO;
        for phase in &self.schedule {
            end += phase.duration;
            if elapsed < end {
                return phase.service;
            }
        }
        self.schedule.last().map_or(self.service, |p| p.service)
    }

    /// The capacity `elapsed` into the schedule.
    pub fn capacity_at(&self, elapsed: Duration) -> f64 {
        self.workers as f64 / self.service_at(elapsed).as_secs_f64()
    }
}

/// Parses a service-time schedule: `20s@50ms,40s@500ms` (duration @
/// service time, comma-separated).
pub fn parse_service_schedule(s: &str) -> Result<Vec<ServicePhase>, String> {
    s.split(',')
        .map(|part| {
            let (d, t) = part
                .split_once('@')
                .ok_or_else(|| format!("\"{part}\" is not <duration>@<service time>"))?;
            let duration =
                humantime::parse_duration(d.trim()).map_err(|e| format!("\"{d}\": {e}"))?;
            let service =
                humantime::parse_duration(t.trim()).map_err(|e| format!("\"{t}\": {e}"))?;
            if service.is_zero() {
                return Err(format!("\"{part}\": the service time must be > 0"));
            }
            Ok(ServicePhase { duration, service })
        })
        .collect()
}

/// What the provider did.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub received: AtomicU64,
    pub completed: AtomicU64,
    /// Completed after the caller had gone: work nobody waited for.
    pub wasted: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
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

/// The workers: each a token holding when it was last free (its own
/// clock), taken in arrival order (Tokio's mutex queues its waiters FIFO).
struct Pool {
    free: Mutex<mpsc::UnboundedReceiver<tokio::time::Instant>>,
    back: mpsc::UnboundedSender<tokio::time::Instant>,
}

impl Pool {
    fn new(workers: usize) -> Self {
        let (back, free) = mpsc::unbounded_channel();
        let now = tokio::time::Instant::now();
        for _ in 0..workers {
            let _ = back.send(now);
        }
        Self {
            free: Mutex::new(free),
            back,
        }
    }

    /// A worker, and since when it has been free.
    async fn take(&self) -> Option<tokio::time::Instant> {
        self.free.lock().await.recv().await
    }

    fn give_back(&self, free_since: tokio::time::Instant) {
        let _ = self.back.send(free_since);
    }
}

/// What every connection's handler shares.
struct Shared {
    cfg: ProviderConfig,
    pool: Pool,
    stats: Arc<ProviderStats>,
    /// The schedule's clock: `base` and the offset of its start from it.
    base: Instant,
    schedule_start_nanos: AtomicU64,
}

impl Shared {
    fn service_now(&self) -> Duration {
        let start = Duration::from_nanos(self.schedule_start_nanos.load(Ordering::Relaxed));
        self.cfg
            .service_at(self.base.elapsed().saturating_sub(start))
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let stats = &shared.stats;
    if req.uri().path() == "/stats" {
        let body = serde_json::to_string(&stats.view()).unwrap_or_default();
        return Ok(text(StatusCode::OK, body));
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
    let (done, answer) = oneshot::channel();
    let work = shared.clone();
    // Detached from the connection: hanging up does not stop the work.
    tokio::spawn(async move {
        let arrived = tokio::time::Instant::now();
        let Some(free_since) = work.pool.take().await else {
            return;
        };
        let start = arrived.max(free_since);
        let jitter = work.cfg.jitter.as_secs_f64() * (2.0 * rng::unit() - 1.0);
        let busy = (work.service_now().as_secs_f64() + jitter).max(0.0);
        let finish = start + Duration::from_secs_f64(busy);
        tokio::time::sleep_until(finish).await;
        work.pool.give_back(finish);
        work.stats.completed.fetch_add(1, Ordering::Relaxed);
        if done.send(()).is_err() {
            work.stats.wasted.fetch_add(1, Ordering::Relaxed);
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
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    /// Serves on `listener` until dropped.
    pub fn start(listener: TcpListener, cfg: ProviderConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProviderStats::default());
        let shared = Arc::new(Shared {
            pool: Pool::new(cfg.workers.max(1)),
            cfg,
            stats: stats.clone(),
            base: Instant::now(),
            schedule_start_nanos: AtomicU64::new(0),
        });
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(req, shared.clone()));
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            stats,
            shared,
            task,
        })
    }

    /// Starts the service-time schedule now (it runs from
    /// [`Provider::start`] otherwise), so that it lines up with the load's.
    pub fn begin_schedule(&self) {
        let offset = u64::try_from(self.shared.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared
            .schedule_start_nanos
            .store(offset, Ordering::Relaxed);
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}
