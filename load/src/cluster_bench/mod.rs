//! The cluster-mode bench: what sharing limits and hot keys through Redis
//! costs, and how closely a fleet keeps to a global limit.
//!
//! Two phases, one Redis (started here), one demo upstream:
//!
//! 1. **compare** — N instances with a per-user sliding-window limit far
//!    above the load and an observe-only hot-key rule, counting locally
//!    (`local`) or fleet-wide (`global`); the same wrk load on every
//!    instance at once, modes in alternation. Reports latency and req/s of
//!    both, and for `global` the Redis commands per second and per request.
//! 2. **limit** — N instances in `global` mode, a per-user limit of 1000/s,
//!    all load from one user at full speed; the instances' admitted counts
//!    are sampled every 100 ms and every 1 s span is checked against the
//!    bound in `plugins/src/cluster/mod.rs`.
//!
//! Every process is a [`Spawned`](crate::procs::Spawned): all stop when the
//! bench returns or fails. Runs are bounded by wrk's duration (and a
//! deadline past it), sampling by a step count.

mod admin;
mod compare;
mod config;
mod fleet;
mod limit;
mod load;
mod redis;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use compare::{CompareSample, RedisUse};
pub use config::{gateway_yaml, GatewaySpec, Mode};
pub use limit::{LimitResult, Tick};
pub use report::{compare_csv, limit_csv, markdown};

use crate::procs::{wait_listening, PortLease, Spawned};

/// Phase 1's settings.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub instances: usize,
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// wrk connections per instance.
    pub connections: usize,
    /// The per-user limit per second: far above what one user gets.
    pub user_limit: u64,
}

/// Phase 2's settings.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub instances: usize,
    /// The one user's fleet-wide limit per 1 s window.
    pub limit: u64,
    pub duration: Duration,
    pub connections: usize,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub gateway_bin: PathBuf,
    pub upstream_bin: PathBuf,
    pub upstream_threads: usize,
    pub work_dir: PathBuf,
    pub compare: CompareConfig,
    pub limit: LimitConfig,
}

/// What the phases share.
pub struct Env {
    pub upstream: SocketAddr,
    pub work_dir: PathBuf,
    pub mix_script: PathBuf,
    pub hot_script: PathBuf,
}

pub struct Results {
    pub compare: Vec<CompareSample>,
    pub limit: LimitResult,
}

/// Runs both phases.
pub async fn run(cfg: &BenchConfig) -> std::io::Result<Results> {
    std::fs::create_dir_all(&cfg.work_dir)?;
    let lease = PortLease::new()?;
    let upstream = lease.addr();
    let mut cmd = Command::new(&cfg.upstream_bin);
    cmd.arg("--listen")
        .arg(upstream.to_string())
        .arg("--threads")
        .arg(cfg.upstream_threads.to_string());
    let _upstream = Spawned::start(cmd, &cfg.work_dir.join("upstream.log"))?.holding([lease]);
    wait_listening(upstream, &cfg.work_dir).await?;
    let redis = redis::start(&cfg.work_dir.join("redis")).await?;
    let env = Env {
        upstream,
        work_dir: cfg.work_dir.clone(),
        mix_script: cfg.work_dir.join("mix.lua"),
        hot_script: cfg.work_dir.join("hot-user.lua"),
    };
    load::write_mix_script(&env.mix_script)?;
    load::write_hot_user_script(&env.hot_script)?;
    let compare = compare::run(cfg, &env, &redis).await?;
    let limit = limit::run(cfg, &env, &redis).await?;
    eprintln!(
        "limit phase: {:.0} req/s offered, {:.0}/s admitted (steady), worst 1 s window {:.0}, bound {:.0}",
        limit.offered_rps(),
        limit.steady_rate().unwrap_or(0.0),
        limit.worst().map_or(0.0, |w| w.count),
        limit.bound()
    );
    Ok(Results { compare, limit })
}
