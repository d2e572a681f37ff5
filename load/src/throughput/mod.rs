//! The throughput bench: wrk against each contender in turn, round after
//! round, charging each run's CPU time (user + system, from `/proc`, whole
//! process tree) to the requests it served.
//!
//! Contenders run side by side for the whole bench and take turns, so slow
//! drift of the machine (thermal, noisy neighbours) spreads over all of them;
//! the report keeps every sample and summarises each contender by its median
//! round. The limits of the method: wrk, the upstream and the proxy share the
//! machine's cores, so req/s and latency are those of this whole system; CPU
//! per request is the figure that transfers to another machine.

pub mod callgrind;
mod contenders;
mod report;
pub mod wrk;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use contenders::{Binaries, Contender};
pub use report::{chart, csv, summary_table};

use crate::procs::{process_tree, tree_cpu, tree_rss_kib, wait_listening, Spawned};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub contenders: Vec<Contender>,
    pub rounds: usize,
    pub warmup: Duration,
    pub load: wrk::WrkLoad,
    pub bins: Binaries,
    /// The `demo-upstream` binary; `None` serves it from a thread of this
    /// process (smoke runs only: `direct` then cannot be measured).
    pub upstream_bin: Option<PathBuf>,
    pub upstream_threads: usize,
}

/// One wrk run against one contender.
#[derive(Debug, Clone)]
pub struct Sample {
    pub contender: Contender,
    pub round: usize,
    pub wrk: wrk::WrkReport,
    /// CPU of the process charged (the proxy; the upstream for `direct`).
    pub cpu_us_per_request: f64,
    pub rss_kib: u64,
}

/// Runs the whole bench. Contenders whose software is missing are skipped
/// (and named in the returned list).
pub async fn run(cfg: &BenchConfig) -> std::io::Result<(Vec<Sample>, Vec<Contender>)> {
    std::fs::create_dir_all(&cfg.bins.work_dir)?;
    // Whichever upstream runs, it stops when `_upstream` drops at the end.
    let (upstream, upstream_pid, _upstream) = start_upstream(cfg).await?;
    let mut running = Vec::new();
    let mut skipped = Vec::new();
    for &c in &cfg.contenders {
        if c == Contender::Direct {
            continue;
        }
        match contenders::start(c, upstream, &cfg.bins).await? {
            Some(r) => running.push(r),
            None => skipped.push(c),
        }
    }
    // (contender, address, pid charged)
    let mut targets: Vec<(Contender, SocketAddr, u32)> = Vec::new();
    for &c in &cfg.contenders {
        if c == Contender::Direct {
            let pid = upstream_pid.ok_or_else(|| {
                std::io::Error::other("direct needs the upstream in its own process (upstream_bin)")
            })?;
            targets.push((c, upstream, pid));
        } else if let Some(r) = running.iter().find(|r| r.contender == c) {
            targets.push((c, r.addr, r.process.pid()));
        }
    }

    let warm = wrk::WrkLoad {
        duration: cfg.warmup,
        ..cfg.load.clone()
    };
    for &(_, addr, _) in &targets {
        if !cfg.warmup.is_zero() {
            wrk::run(&warm, &format!("http://{addr}/goods/1"))?;
        }
    }
    let mut samples = Vec::new();
    for round in 1..=cfg.rounds {
        for &(c, addr, pid) in &targets {
            let tree = process_tree(pid);
            let cpu0 = tree_cpu(&tree);
            let report = wrk::run(&cfg.load, &format!("http://{addr}/goods/1"))?;
            let cpu = tree_cpu(&tree).saturating_sub(cpu0);
            let sample = Sample {
                contender: c,
                round,
                cpu_us_per_request: cpu.as_secs_f64() * 1e6 / report.requests.max(1) as f64,
                rss_kib: tree_rss_kib(&tree),
                wrk: report,
            };
            eprintln!(
                "round {round} {:<17} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:>5.1} µs CPU/req  {} errors",
                c.name(),
                sample.wrk.rps,
                sample.wrk.p50_ms,
                sample.wrk.p99_ms,
                sample.cpu_us_per_request,
                sample.wrk.errors
            );
            samples.push(sample);
        }
    }
    Ok((samples, skipped))
}

/// The command-line options every throughput-bench runner shares: where
/// the binaries are and where the results go.
#[derive(Debug, Clone, clap::Args)]
pub struct PathArgs {
    #[arg(long, default_value = "target/release/breakwater")]
    pub gateway_bin: PathBuf,
    #[arg(long, default_value = "target/release/bare-pingora")]
    pub bare_pingora_bin: PathBuf,
    #[arg(long, default_value = "target/release/demo-upstream")]
    pub upstream_bin: PathBuf,
    #[arg(long, default_value = "load/results")]
    pub out_dir: PathBuf,
}

/// Contenders by name, in the order given; an unknown name is an error
/// listing the known ones.
pub fn parse_contenders(names: &[String]) -> Result<Vec<Contender>, String> {
    names
        .iter()
        .map(|n| {
            Contender::parse(n).ok_or_else(|| {
                let known: Vec<&str> = Contender::ALL.iter().map(|c| c.name()).collect();
                format!("unknown contender {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// A fresh work directory under the system's temp dir (`<name>-<pid>`), and
/// the request-mix script written in it unless `no_mix` (plain `GET /goods/1`).
pub fn work_dir_and_script(
    name: &str,
    no_mix: bool,
) -> std::io::Result<(PathBuf, Option<PathBuf>)> {
    let work_dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let script = (!no_mix).then(|| work_dir.join("mix.lua"));
    if let Some(s) = &script {
        wrk::write_mix_script(s)?;
    }
    Ok((work_dir, script))
}

/// Keeps the bench's upstream running: its process, or the in-process
/// server's stop signal.
pub(crate) type UpstreamGuard = (Option<Spawned>, Option<tokio::sync::oneshot::Sender<()>>);

/// Starts the upstream every contender proxies to: `cfg.upstream_bin` in its
/// own process (its pid returned, so `direct` can be charged), or a thread
/// of this process.
pub(crate) async fn start_upstream(
    cfg: &BenchConfig,
) -> std::io::Result<(SocketAddr, Option<u32>, UpstreamGuard)> {
    match &cfg.upstream_bin {
        Some(bin) => {
            let lease = crate::procs::PortLease::new()?;
            let upstream = lease.addr();
            let mut cmd = Command::new(bin);
            cmd.arg("--listen")
                .arg(upstream.to_string())
                .arg("--threads")
                .arg(cfg.upstream_threads.to_string());
            let p = Spawned::start(cmd, &cfg.bins.work_dir.join("upstream.log"))?.holding([lease]);
            wait_listening(upstream, &cfg.bins.work_dir).await?;
            Ok((upstream, Some(p.pid()), (Some(p), None)))
        }
        None => {
            let (addr, stop) = in_process_upstream()?;
            Ok((addr, None, (None, Some(stop))))
        }
    }
}

/// The demo upstream on a thread of this process, for smoke runs that have
/// no `demo-upstream` binary at hand (its CPU cannot be told apart then, so
/// `direct` is refused). It stops when the returned sender is dropped.
fn in_process_upstream() -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::select! {
                served = crate::demo::serve(listener) => served,
                _ = stopped => Ok(()),
            }
        })
    });
    Ok((addr, stop))
}
