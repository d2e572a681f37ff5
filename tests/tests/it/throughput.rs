//! Smoke run of the throughput bench: one short round through the real
//! gateway, bare and with its policy chain, with wrk as the load. It checks
//! that the bench works end to end (configs valid, wrk parsed, CPU and RSS
//! read, table and chart written); it asserts no figures.

use std::time::Duration;

use breakwater_load::throughput::{self, wrk, BenchConfig, Binaries, Contender};

use crate::BIN;

/// One round of one second, no warm-up, the test build of the gateway with
/// one worker, the upstream in this process.
fn smoke_config(
    dir: &std::path::Path,
    contenders: Vec<Contender>,
    connections: usize,
    script: Option<std::path::PathBuf>,
) -> BenchConfig {
    BenchConfig {
        contenders,
        rounds: 1,
        warmup: Duration::ZERO,
        load: wrk::WrkLoad {
            threads: 1,
            connections,
            duration: Duration::from_secs(1),
            script,
        },
        bins: Binaries {
            gateway: BIN.into(),
            bare_pingora: "unused".into(),
            workers: 1,
            work_dir: dir.join("work"),
            wrapper: Vec::new(),
        },
        upstream_bin: None,
        upstream_threads: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bench_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mix.lua");
    wrk::write_mix_script(&script).unwrap();
    let cfg = smoke_config(
        dir.path(),
        vec![Contender::BreakwaterBare, Contender::BreakwaterChain],
        4,
        Some(script),
    );
    let (samples, skipped) = throughput::run(&cfg).await.expect("the bench runs");
    assert!(skipped.is_empty());
    assert_eq!(samples.len(), 2);
    for s in &samples {
        let name = s.contender.name();
        assert!(s.wrk.requests > 0, "{name}: wrk got answers");
        assert_eq!(s.wrk.errors, 0, "{name}: every answer was a success");
        assert!(s.cpu_us_per_request > 0.0, "{name}: its CPU was read");
        assert!(s.rss_kib > 0, "{name}: its RSS was read");
    }
    let table = throughput::summary_table(&samples, &skipped, &cfg);
    assert!(table.contains("| breakwater-chain |"), "{table}");
    assert_eq!(throughput::csv(&samples).lines().count(), 3);
    let svg = dir.path().join("throughput.svg");
    throughput::chart(&samples, &cfg, &svg).unwrap();
    assert!(std::fs::read_to_string(svg)
        .unwrap()
        .contains("breakwater-chain"));
}

/// Smoke run of the instruction counter: Breakwater with its chain under
/// callgrind for a second. Checks that valgrind starts it, that the counts
/// are read from the dump and that the table is written; asserts no figures.
#[tokio::test(flavor = "multi_thread")]
async fn the_instruction_count_runs_end_to_end() {
    assert!(
        throughput::callgrind::available(),
        "valgrind is missing: .ci/setup installs it (apt-get install -y valgrind)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = smoke_config(
        dir.path(),
        vec![Contender::Direct, Contender::BreakwaterChain],
        2,
        None,
    );
    // A debug build under callgrind answers its first requests in seconds,
    // while valgrind translates the code: those go to the warm-up.
    cfg.warmup = Duration::from_secs(2);
    let (samples, skipped) = throughput::callgrind::run(&cfg)
        .await
        .expect("the count runs");
    assert!(skipped.is_empty());
    assert_eq!(samples.len(), 1, "direct is not a proxy: not counted");
    let s = &samples[0];
    assert!(s.requests > 0, "wrk got answers");
    assert!(s.instructions > 0, "the dump's total was read");
    let table = throughput::callgrind::table(&samples, &skipped, &cfg);
    assert!(table.contains("| breakwater-chain |"), "{table}");
}
