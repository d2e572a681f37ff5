//! Smoke run of the avalanche lab: a few seconds, end to end, through the
//! real gateway. It checks that the lab works; it asserts no figures (those
//! are the full run's business: `load/README.md`).

use std::time::Duration;

use breakwater_load::lab::{self, Front, LabConfig};
use breakwater_load::sim::consumer;
use breakwater_load::sim::provider::ProviderConfig;

use crate::BIN;

#[tokio::test(flavor = "multi_thread")]
async fn the_lab_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LabConfig {
        provider: ProviderConfig {
            workers: 5,
            service: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
        },
        timeout: Duration::from_millis(200),
        retries: 1,
        warm: Duration::from_secs(1),
        spike: Duration::from_secs(1),
        cool: Duration::from_secs(1),
        gateway_bin: BIN.into(),
        work_dir: dir.path().to_path_buf(),
    };
    let mut runs = Vec::new();
    for front in [Front::Direct, Front::BreakwaterTuned] {
        let run = lab::run(front, 2.0, &cfg).await.expect("the run completes");
        assert!(
            run.offered > 0,
            "{}: the consumer offered calls",
            front.name()
        );
        assert!(
            run.provider.received > 0,
            "{}: the provider saw them",
            front.name()
        );
        assert!(consumer::to_csv(&run.timeline).lines().count() > 3);
        runs.push(run);
    }
    let table = lab::summary_table(&runs, &cfg);
    assert!(
        table.contains("| direct | 2× C |") && table.contains("| breakwater-tuned | 2× C |"),
        "{table}"
    );
}
