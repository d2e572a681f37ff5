//! `instructions`: the throughput bench's proxies under callgrind, one at a
//! time, counting user-space instructions per request (a figure that does
//! not move with the VM's noise); writes `instructions.md` to `--out-dir`.
//!
//! instructions --duration 10s --out-dir load/results

use std::path::PathBuf;
use std::time::Duration;

use breakwater_load::throughput::{self, callgrind, wrk, BenchConfig, Binaries, Contender};
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
    /// Contenders, counted in this order (`direct` is not a proxy: skipped).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nginx,haproxy,bare-pingora,breakwater,breakwater-chain"
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
        std::env::temp_dir().join(format!("breakwater-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    std::fs::create_dir_all(&args.out_dir)?;
    let script = (!args.no_mix).then(|| work_dir.join("mix.lua"));
    if let Some(s) = &script {
        wrk::write_mix_script(s)?;
    }
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
            gateway: args.gateway_bin,
            bare_pingora: args.bare_pingora_bin,
            workers: 1,
            work_dir: work_dir.clone(),
            wrapper: Vec::new(),
        },
        upstream_bin: Some(args.upstream_bin),
        upstream_threads: 1,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (samples, skipped) = rt.block_on(throughput::callgrind::run(&cfg))?;
    let table = callgrind::table(&samples, &skipped, &cfg);
    std::fs::write(args.out_dir.join("instructions.md"), &table)?;
    println!("{table}");
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
