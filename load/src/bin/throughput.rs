//! `throughput`: wrk against direct, nginx, HAProxy, bare Pingora and
//! Breakwater (bare and with a policy chain), in alternation; writes
//! `throughput.csv`, `throughput.md` and `throughput.svg` to `--out-dir`.
//!
//! throughput --rounds 3 --duration 10s --out-dir load/results

use std::time::Duration;

use breakwater_load::throughput::{self, wrk, BenchConfig, Binaries};
use clap::Parser;

/// Runs wrk against each contender in turn and charges the CPU to the requests.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    paths: throughput::PathArgs,
    /// Contenders, in the order they take turns.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,nginx,haproxy,bare-pingora,breakwater,breakwater-chain"
    )]
    contenders: Vec<String>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    #[arg(long, default_value = "2s")]
    warmup: humantime::Duration,
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Worker processes or threads of every proxy.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 1)]
    upstream_threads: usize,
    /// Plain `GET /goods/1` instead of rotating over 100 items and 1000 users.
    #[arg(long)]
    no_mix: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let contenders = throughput::parse_contenders(&args.contenders)?;
    let (work_dir, script) = throughput::work_dir_and_script("breakwater-throughput", args.no_mix)?;
    std::fs::create_dir_all(&args.paths.out_dir)?;
    let cfg = BenchConfig {
        contenders,
        rounds: args.rounds.max(1),
        warmup: args.warmup.into(),
        load: wrk::WrkLoad {
            threads: args.wrk_threads.max(1),
            connections: args.connections.max(1),
            duration: Duration::from(args.duration),
            script,
        },
        bins: Binaries {
            gateway: args.paths.gateway_bin,
            bare_pingora: args.paths.bare_pingora_bin,
            workers: args.workers.max(1),
            work_dir: work_dir.clone(),
            wrapper: Vec::new(),
        },
        upstream_bin: Some(args.paths.upstream_bin),
        upstream_threads: args.upstream_threads.max(1),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (samples, skipped) = rt.block_on(throughput::run(&cfg))?;
    std::fs::write(
        args.paths.out_dir.join("throughput.csv"),
        throughput::csv(&samples),
    )?;
    let table = throughput::summary_table(&samples, &skipped, &cfg);
    std::fs::write(args.paths.out_dir.join("throughput.md"), &table)?;
    throughput::chart(&samples, &cfg, &args.paths.out_dir.join("throughput.svg"))?;
    println!("{table}");
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
