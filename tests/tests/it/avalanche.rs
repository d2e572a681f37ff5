//! Smoke run of the avalanche lab: a few seconds, end to end, through the
//! real gateway. It checks that the lab works; it asserts no figures (those
//! are the full run's business: `load/README.md`; the regression guard on
//! the default config's goodput is `tests/tests/avalanche_guard.rs`).

use std::time::Duration;

use breakwater_load::lab::scenario::{provider, spike};
use breakwater_load::lab::{self, chart, report, Env, Front, Group};
use breakwater_load::sim::consumer;

use crate::BIN;

#[tokio::test(flavor = "multi_thread")]
async fn the_lab_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        gateway_bin: BIN.into(),
        work_dir: dir.path().join("work"),
        timeout: Duration::from_millis(200),
        retries: 1,
    };
    let second = Duration::from_secs(1);
    let mut runs = Vec::new();
    for (front, instances) in [
        (Front::Direct, 1),
        (Front::BreakwaterTuned, 1),
        (Front::BreakwaterDefault, 2),
    ] {
        let mut s = spike(
            front.name().into(),
            if instances > 1 {
                Group::Fleet
            } else {
                Group::Targets
            },
            front,
            provider(5, Duration::from_millis(20)),
            2.0,
            (second, second, second),
        );
        s.instances = instances;
        let run = lab::run(&s, &env).await.expect("the run completes");
        assert!(run.offered() > 0, "{}: the consumer offered calls", s.name);
        assert!(
            run.provider.received > 0,
            "{}: the provider saw them",
            s.name
        );
        assert!(consumer::to_csv(&run.timeline).lines().count() > 3);
        runs.push(run);
    }
    let summary = report::summary(&runs, &[], &env, "");
    for row in [
        "| direct | 5 × 20ms (C = 250) | 2× C |",
        "| breakwater-tuned | 5 × 20ms (C = 250) | 2× C |",
        "| breakwater-default | 5 × 20ms (C = 250) | 2× C |",
    ] {
        assert!(summary.contains(row), "{row} missing from\n{summary}");
    }
    assert_eq!(report::runs_csv(&runs).lines().count(), 4);
    let svg = dir.path().join("goodput.svg");
    chart::draw(&chart::panels(&runs), &svg).unwrap();
    assert!(std::fs::read_to_string(svg)
        .unwrap()
        .contains("breakwater-tuned"));
}
