//! `throughput`: wrk against direct, nginx, HAProxy, bare Pingora and
//! Breakwater (bare and with a policy chain), in alternation; writes
//! `throughput.csv`, `throughput.md` and `throughput.svg` to `--out-dir`.
//!
//! throughput --rounds 3 --duration 10s --out-dir load/results

use std::path::PathBuf;
use std::time::Duration;

use breakwater_load::throughput::{self, wrk, BenchConfig, Binaries, Contender};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/breakwater")]
    gateway_bin: PathBuf,
    #[arg(long, default_value = "target/release/bare-pingora")]
    bare_pingora_bin: PathBuf,
    #[arg(long, default_value = "target/release/demo-upstream")]
    upstream_bin: PathBuf,
    #[arg(long, default_value = "load/results")]
    out_dir: PathBuf,
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
    let contenders = args
        .contenders
        .iter()
        .map(|n| {
            Contender::parse(n).ok_or_else(|| {
                let known: Vec<&str> = Contender::ALL.iter().map(|c| c.name()).collect();
                format!("unknown contender {n:?} (known: {})", known.join(", "))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let work_dir =
        std::env::temp_dir().join(format!("breakwater-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    std::fs::create_dir_all(&args.out_dir)?;
    let script = (!args.no_mix).then(|| work_dir.join("mix.lua"));
    if let Some(s) = &script {
        wrk::write_mix_script(s)?;
    }
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
            gateway: args.gateway_bin,
            bare_pingora: args.bare_pingora_bin,
            workers: args.workers.max(1),
            work_dir: work_dir.clone(),
            wrapper: Vec::new(),
        },
        upstream_bin: Some(args.upstream_bin),
        upstream_threads: args.upstream_threads.max(1),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (samples, skipped) = rt.block_on(throughput::run(&cfg))?;
    std::fs::write(
        args.out_dir.join("throughput.csv"),
        throughput::csv(&samples),
    )?;
    let table = throughput::summary_table(&samples, &skipped, &cfg);
    std::fs::write(args.out_dir.join("throughput.md"), &table)?;
    throughput::chart(&samples, &cfg, &args.out_dir.join("throughput.svg"))?;
    println!("{table}");
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
