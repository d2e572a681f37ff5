//! `client-sim`: a consumer like the seed's service A.
//!
//! Logical calls arrive open-loop — a Poisson process whose rate follows a
//! schedule, so a slow provider does not slow the offered load down (as real
//! users do not slow down). Each attempt has a timeout `T`; on a timeout, an
//! error or any non-2xx answer (a fast 503 or 429 included) the call is sent
//! again, up to `retries` times, at once — Dubbo's default behaviour (a
//! `Retry-After` is not honoured). An optional idempotency key is sent per
//! logical call. With several targets, attempts go to them in turn (round
//! robin), as a client-side balancer in front of a fleet of gateways does.
//!
//! Every figure is booked under the second the logical call *arrived* in, so
//! a row reads: of the calls offered in this second, how many succeeded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::rng;

/// One stretch of the rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub duration: Duration,
    /// Logical calls per second.
    pub rate: f64,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where attempts go, in turn (at least one).
    pub targets: Vec<SocketAddr>,
    pub path: String,
    pub timeout: Duration,
    pub retries: u32,
    /// Send `idempotency-key: <call id>` on every attempt of a call.
    pub idempotency_keys: bool,
    pub schedule: Vec<Phase>,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Second {
    pub second: u64,
    pub offered: u64,
    /// Logical calls that got a 2xx.
    pub goodput: u64,
    /// Logical calls that failed every attempt.
    pub failed: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    pub attempts: u64,
    /// Attempts answered with a status other than 2xx (refusals included).
    pub non_2xx: u64,
    /// Of those, Breakwater's overload refusals (`503`,
    /// `x-breakwater-error: overloaded`).
    pub shed: u64,
    /// Attempts that failed without an answer and before the timeout
    /// (refused or reset connections).
    pub errors: u64,
    /// Latency of successful logical calls, first attempt to answer.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Latency of the attempt that succeeded (the call the front admitted),
    /// without the attempts refused or timed out before it.
    pub p99_admitted_ms: f64,
}

#[derive(Default)]
struct Bucket {
    offered: AtomicU64,
    goodput: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    attempts: AtomicU64,
    non_2xx: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<f64>>,
    admitted: Mutex<Vec<f64>>,
}

/// Successful calls' latencies (ms), by the second the call arrived in:
/// from the first attempt (`calls`), and of the attempt that succeeded
/// (`admitted`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latencies {
    pub calls: Vec<Vec<f64>>,
    pub admitted: Vec<Vec<f64>>,
}

fn gather(by_second: &[Vec<f64>], from: u64, to: u64) -> Vec<f64> {
    let mut all: Vec<f64> = by_second
        .iter()
        .enumerate()
        .filter(|(s, _)| (from..to).contains(&(*s as u64)))
        .flat_map(|(_, l)| l.iter().copied())
        .collect();
    all.sort_by(|a, b| a.total_cmp(b));
    all
}

impl Latencies {
    /// The latencies of calls that arrived in seconds `[from, to)`, first
    /// attempt to answer, sorted.
    pub fn between(&self, from: u64, to: u64) -> Vec<f64> {
        gather(&self.calls, from, to)
    }

    /// The latencies of the successful attempts of calls that arrived in
    /// seconds `[from, to)`, sorted.
    pub fn admitted_between(&self, from: u64, to: u64) -> Vec<f64> {
        gather(&self.admitted, from, to)
    }

    /// Every call's latency, sorted.
    pub fn all(&self) -> Vec<f64> {
        self.between(0, u64::MAX)
    }
}

/// How one attempt ended.
enum Attempt {
    Success,
    Refused { shed: bool },
    Error,
    TimedOut,
}

async fn attempt(client: &HttpClient, req: Request<Empty<Bytes>>, timeout: Duration) -> Attempt {
    let exchange = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let shed = resp
            .headers()
            .get("x-breakwater-error")
            .is_some_and(|v| v.as_bytes() == b"overloaded");
        // Read the body, as a real client does, so the connection goes back
        // to the pool instead of being closed.
        resp.into_body()
            .collect()
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, shed))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, _))) if status.is_success() => Attempt::Success,
        Ok(Ok((_, shed))) => Attempt::Refused { shed },
        Ok(Err(_)) => Attempt::Error,
        // Dropping the exchange hangs up on the provider.
        Err(_) => Attempt::TimedOut,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One logical call: the first attempt and the naive retries.
async fn call(
    client: &HttpClient,
    cfg: &ConsumerConfig,
    turn: &AtomicUsize,
    id: u64,
    bucket: &Bucket,
) {
    let started = Instant::now();
    for _ in 0..=cfg.retries {
        let attempt_started = Instant::now();
        bucket.attempts.fetch_add(1, Ordering::Relaxed);
        let target = cfg.targets[turn.fetch_add(1, Ordering::Relaxed) % cfg.targets.len()];
        let mut req = Request::get(format!("http://{target}{}", cfg.path));
        if cfg.idempotency_keys {
            req = req.header("idempotency-key", format!("call-{id}"));
        }
        let Ok(req) = req.body(Empty::new()) else {
            break;
        };
        match attempt(client, req, cfg.timeout).await {
            Attempt::Success => {
                bucket.goodput.fetch_add(1, Ordering::Relaxed);
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut l) = bucket.latencies.lock() {
                    l.push(ms);
                }
                let ms = attempt_started.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut l) = bucket.admitted.lock() {
                    l.push(ms);
                }
                return;
            }
            Attempt::TimedOut => {
                bucket.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Attempt::Refused { shed } => {
                bucket.non_2xx.fetch_add(1, Ordering::Relaxed);
                if shed {
                    bucket.shed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Attempt::Error => {
                bucket.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    bucket.failed.fetch_add(1, Ordering::Relaxed);
}

/// Runs the schedule and returns the timeline. Bounded: it stops offering at
/// the end of the schedule and waits at most `(retries + 1) * timeout` more.
pub async fn run(cfg: ConsumerConfig) -> Vec<Second> {
    run_with_latencies(cfg).await.0
}

/// Like [`run`], also returning every successful call's latency.
pub async fn run_with_latencies(cfg: ConsumerConfig) -> (Vec<Second>, Latencies) {
    assert!(!cfg.targets.is_empty(), "the consumer needs a target");
    let total: Duration = cfg.schedule.iter().map(|p| p.duration).sum();
    let seconds = total.as_secs().max(1) as usize + 1;
    let buckets: Arc<Vec<Bucket>> = Arc::new((0..seconds).map(|_| Bucket::default()).collect());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let cfg = Arc::new(cfg);
    let turn = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut next = Duration::ZERO;
    let mut phase_start = Duration::ZERO;
    let mut calls = tokio::task::JoinSet::new();
    let mut id = 0u64;
    for phase in cfg.schedule.clone() {
        let phase_end = phase_start + phase.duration;
        if phase.rate > 0.0 {
            loop {
                next += Duration::from_secs_f64(rng::exponential(1.0 / phase.rate));
                if next >= phase_end {
                    break;
                }
                tokio::time::sleep_until(start + next).await;
                let second = next.as_secs() as usize;
                buckets[second].offered.fetch_add(1, Ordering::Relaxed);
                id += 1;
                let (client, cfg, turn, buckets) =
                    (client.clone(), cfg.clone(), turn.clone(), buckets.clone());
                calls.spawn(async move { call(&client, &cfg, &turn, id, &buckets[second]).await });
                // Reap finished calls as we go, so the set stays small.
                while calls.try_join_next().is_some() {}
            }
        }
        next = phase_end;
        phase_start = phase_end;
    }
    let grace = cfg.timeout * (cfg.retries + 1) + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async { while calls.join_next().await.is_some() {} }).await;
    calls.abort_all();
    let mut all = Vec::new();
    let mut admitted = Vec::new();
    let timeline = buckets
        .iter()
        .enumerate()
        .map(|(s, b)| {
            let mut l = b.latencies.lock().map(|l| l.clone()).unwrap_or_default();
            l.sort_by(|a, b| a.total_cmp(b));
            let mut a = b.admitted.lock().map(|l| l.clone()).unwrap_or_default();
            a.sort_by(|x, y| x.total_cmp(y));
            let second = Second {
                second: s as u64,
                offered: b.offered.load(Ordering::Relaxed),
                goodput: b.goodput.load(Ordering::Relaxed),
                failed: b.failed.load(Ordering::Relaxed),
                timeouts: b.timeouts.load(Ordering::Relaxed),
                attempts: b.attempts.load(Ordering::Relaxed),
                non_2xx: b.non_2xx.load(Ordering::Relaxed),
                shed: b.shed.load(Ordering::Relaxed),
                errors: b.errors.load(Ordering::Relaxed),
                p50_ms: percentile(&l, 0.50),
                p99_ms: percentile(&l, 0.99),
                p99_admitted_ms: percentile(&a, 0.99),
            };
            all.push(l);
            admitted.push(a);
            second
        })
        .collect();
    (
        timeline,
        Latencies {
            calls: all,
            admitted,
        },
    )
}

/// The `p`-quantile of sorted values (0 when empty).
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p)
}

/// Writes a timeline as CSV.
pub fn to_csv(timeline: &[Second]) -> String {
    let mut out = String::from(
        "second,offered,goodput,failed,timeouts,attempts,non_2xx,shed,errors,p50_ms,p99_ms,p99_admitted_ms\n",
    );
    for s in timeline {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.1}\n",
            s.second,
            s.offered,
            s.goodput,
            s.failed,
            s.timeouts,
            s.attempts,
            s.non_2xx,
            s.shed,
            s.errors,
            s.p50_ms,
            s.p99_ms,
            s.p99_admitted_ms
        ));
    }
    out
}
