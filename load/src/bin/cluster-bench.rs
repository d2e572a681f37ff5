//! `cluster-bench`: Breakwater instances counting locally vs. fleet-wide
//! through Redis (latency, req/s, Redis commands per request), then how
//! closely N instances keep to a global limit; writes `cluster.md`,
//! `cluster.csv` and `cluster-limit.csv` to `--out-dir`.
//!
//! cluster-bench --rounds 3 --duration 10s --out-dir load/results

use std::path::PathBuf;
use std::time::Duration;

use breakwater_load::cluster_bench::{self, BenchConfig, CompareConfig, LimitConfig};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/breakwater")]
    gateway_bin: PathBuf,
    #[arg(long, default_value = "target/release/demo-upstream")]
    upstream_bin: PathBuf,
    #[arg(long, default_value = "load/results")]
    out_dir: PathBuf,
    /// Instances in the local-vs-global comparison.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    #[arg(long, default_value = "2s")]
    warmup: humantime::Duration,
    /// wrk connections per instance.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Instances in the limit phase.
    #[arg(long, default_value_t = 3)]
    limit_instances: usize,
    /// The one user's fleet-wide limit per second in the limit phase.
    #[arg(long, default_value_t = 1000)]
    limit: u64,
    #[arg(long, default_value = "10s")]
    limit_duration: humantime::Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let work_dir = std::env::temp_dir().join(format!("breakwater-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&args.out_dir)?;
    // Bounded: at most 60 s per run and 10 rounds.
    let cap = |d: humantime::Duration| Duration::from(d).min(Duration::from_secs(60));
    let cfg = BenchConfig {
        gateway_bin: args.gateway_bin,
        upstream_bin: args.upstream_bin,
        upstream_threads: 1,
        work_dir: work_dir.clone(),
        compare: CompareConfig {
            instances: args.instances.clamp(1, 8),
            rounds: args.rounds.clamp(1, 10),
            duration: cap(args.duration),
            warmup: cap(args.warmup),
            connections: args.connections.max(1),
            user_limit: 1_000_000,
        },
        limit: LimitConfig {
            instances: args.limit_instances.clamp(1, 8),
            limit: args.limit.max(1),
            duration: cap(args.limit_duration),
            connections: args.connections.max(1),
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(cluster_bench::run(&cfg))?;
    std::fs::write(
        args.out_dir.join("cluster.csv"),
        cluster_bench::compare_csv(&res.compare),
    )?;
    std::fs::write(
        args.out_dir.join("cluster-limit.csv"),
        cluster_bench::limit_csv(&res.limit),
    )?;
    let md = cluster_bench::markdown(&res, &cfg);
    std::fs::write(args.out_dir.join("cluster.md"), &md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
