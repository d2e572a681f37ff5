//! `instructions`: the throughput bench's proxies under callgrind, one at a
//! time, counting user-space instructions per request (a figure that does
//! not move with the VM's noise); writes `instructions.md` to `--out-dir`.
//!
//! instructions --duration 10s --out-dir load/results

use std::time::Duration;

use breakwater_load::throughput::{self, callgrind, wrk, BenchConfig, Binaries};
use clap::Parser;

/// Counts the user-space instructions per request of each proxy under callgrind.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    paths: throughput::PathArgs,
    /// Contenders, counted in this order (`direct` is not a proxy: skipped).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nginx,haproxy,bare-pingora,breakwater-no-gate,breakwater,breakwater-chain"
    )]
    contenders: Vec<String>,
    /// How long the counted wrk run lasts (under valgrind a proxy serves a
    /// few hundred to a few thousand requests a second).
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    #[arg(long, default_value = "3s")]
    warmup: humantime::Duration,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Plain `GET /goods/1` instead of rotating over 100 items and 1000 users.
    #[arg(long)]
    no_mix: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !callgrind::available() {
        return Err("valgrind is not installed: apt-get install -y valgrind".into());
    }
    let contenders = throughput::parse_contenders(&args.contenders)?;
    let (work_dir, script) =
        throughput::work_dir_and_script("breakwater-instructions", args.no_mix)?;
    std::fs::create_dir_all(&args.paths.out_dir)?;
    let cfg = BenchConfig {
        contenders,
        rounds: 1,
        warmup: args.warmup.into(),
        load: wrk::WrkLoad {
            threads: 1,
            connections: args.connections.max(1),
            duration: Duration::from(args.duration),
            script,
        },
        bins: Binaries {
            gateway: args.paths.gateway_bin,
            bare_pingora: args.paths.bare_pingora_bin,
            workers: 1,
            work_dir: work_dir.clone(),
            wrapper: Vec::new(),
        },
        upstream_bin: Some(args.paths.upstream_bin),
        upstream_threads: 1,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (samples, skipped) = rt.block_on(throughput::callgrind::run(&cfg))?;
    let table = callgrind::table(&samples, &skipped, &cfg);
    std::fs::write(args.paths.out_dir.join("instructions.md"), &table)?;
    println!("{table}");
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
