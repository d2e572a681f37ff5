//! Hot-key detector updates per second on one core, in steady state.
//!
//! A rule with the default sketch and `max_tracked`, threshold 100 per 1 s,
//! fed a Zipf stream over 1M keys at a simulated 1M events/s (the stream is
//! generated before timing). Reported per event: criterion's time per
//! element; updates/s = 1e9 / that.
//!
//! Run: `cargo bench -p breakwater-plugins --bench hotkey`.

use std::time::Duration;

use breakwater_plugins::hotkey::{DetectorConfig, HotKeyDetector};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

#[path = "zipf.rs"]
mod zipf;
use zipf::Zipf;

const BATCH: usize = 100_000;

fn detector() -> HotKeyDetector {
    HotKeyDetector::new(DetectorConfig {
        threshold: 100,
        window: Duration::from_secs(1),
        hot_ttl: Duration::from_secs(10),
        cool_ratio: 0.8,
        max_tracked: 4096,
        sketch_width: 8192,
    })
}

fn updates(c: &mut Criterion) {
    let mut g = c.benchmark_group("hotkey_observe");
    g.throughput(Throughput::Elements(BATCH as u64));
    for s in [0.9, 1.1, 1.3] {
        let stream = Zipf::new(1_000_000, s, 11).keys(2_000_000);
        let d = detector();
        // Warm up: two seconds of traffic so candidates and hot keys exist.
        for (i, &k) in stream.iter().enumerate() {
            d.observe(k, i as u64 * 1_000, || None);
        }
        let mut t = stream.len() as u64 * 1_000;
        let mut at = 0usize;
        g.bench_function(format!("zipf_{s}"), |b| {
            b.iter_batched(
                || {
                    let start = at;
                    at = (at + BATCH) % (stream.len() - BATCH);
                    start
                },
                |start| {
                    for &k in &stream[start..start + BATCH] {
                        t += 1_000;
                        std::hint::black_box(d.observe(k, t, || None));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = updates
}
criterion_main!(benches);
