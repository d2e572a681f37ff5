//! CI's regression guard for overload protection out of the box (issue 16):
//! a short avalanche through the real gateway with **the default config**
//! (the README's minimal config: one cluster, one route, no policies),
//! asserting a deliberately loose bound on goodput during a 3× spike.
//!
//! The provider is 10 workers × 50 ms (C = 200 req/s), cancel-unaware with
//! an unbounded queue; the consumer offers 0.7 C for 5 s, 3 C for 15 s,
//! 0.7 C for 5 s, with a 1 s timeout and 2 immediate retries. Without
//! protection the provider's queue passes the timeout within about two
//! seconds of the spike and goodput collapses to a small fraction of C
//! (`load/README.md`). The adaptive limit on by default holds about C; the
//! guard asks for ≥ 0.7 C, loose enough for a debug build on a busy CI
//! machine. The full figures against the targets come from
//! `load/avalanche` (release build) and are committed in `load/results/`.
//!
//! It is its own test binary so that it runs alone: `cargo test` runs test
//! binaries one after another, while the tests inside `it` run in parallel
//! and would share the CPU with this timing-sensitive run. About 35 s.

use std::time::{Duration, Instant};

use breakwater_load::lab::scenario::{provider, spike};
use breakwater_load::lab::{self, report, Env, Front, Group};

const BIN: &str = env!("CARGO_BIN_EXE_breakwater-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_holds_goodput_through_a_3x_spike() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        gateway_bin: std::env::var_os("BREAKWATER_TEST_BIN").map_or_else(|| BIN.into(), Into::into),
        work_dir: dir.path().join("work"),
        timeout: Duration::from_secs(1),
        retries: 2,
    };
    let scenario = spike(
        "guard-3x".into(),
        Group::Targets,
        Front::BreakwaterDefault,
        provider(10, Duration::from_millis(50)),
        3.0,
        (
            Duration::from_secs(5),
            Duration::from_secs(15),
            Duration::from_secs(5),
        ),
    );
    let run = lab::run(&scenario, &env).await.expect("the run completes");
    let table = report::summary(std::slice::from_ref(&run), &[], &env, "");
    let goodput = run.goodput_in_window();
    assert!(
        goodput >= 0.7,
        "goodput during the 3× spike was {goodput:.2} C, below 0.7 C: the default config no longer protects the provider\n{table}\ntimeline:\n{}",
        breakwater_load::sim::consumer::to_csv(&run.timeline)
    );
    eprintln!(
        "guard: goodput {goodput:.2} C during the 3× spike, amplification {:.2}, recovery {:?} s, p99 of admitted calls {:.0} ms, {} attempts shed, {:?} in all",
        run.amplification(),
        run.recovery_secs(),
        run.p99_ms(),
        run.shed(),
        started.elapsed()
    );
    // The guard's own budget (issue 16: ≤ 60 s).
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the guard took {:?}",
        started.elapsed()
    );
}
