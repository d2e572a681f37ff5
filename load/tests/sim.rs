//! The avalanche lab's actors behave as the seed incident needs them to.

use std::time::Duration;

use breakwater_load::sim::consumer::{self, ConsumerConfig, Phase};
use breakwater_load::sim::provider::{Provider, ProviderConfig};
use tokio::net::TcpListener;

async fn provider(workers: usize, service_ms: u64) -> Provider {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Provider::start(
        listener,
        ProviderConfig::new(workers, Duration::from_millis(service_ms), Duration::ZERO),
    )
    .unwrap()
}

fn consumer(p: &Provider, rate: f64, timeout_ms: u64, retries: u32) -> ConsumerConfig {
    ConsumerConfig {
        targets: vec![p.addr],
        path: "/work".into(),
        timeout: Duration::from_millis(timeout_ms),
        retries,
        idempotency_keys: false,
        schedule: vec![Phase {
            duration: Duration::from_millis(1500),
            rate,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_capacity_every_call_succeeds_once() {
    let p = provider(4, 20).await; // capacity 200/s
    let timeline = consumer::run(consumer(&p, 50.0, 1000, 2)).await;
    let offered: u64 = timeline.iter().map(|s| s.offered).sum();
    let goodput: u64 = timeline.iter().map(|s| s.goodput).sum();
    let attempts: u64 = timeline.iter().map(|s| s.attempts).sum();
    assert!(offered > 30, "{offered}");
    assert_eq!(goodput, offered);
    assert_eq!(attempts, offered, "no retries when nothing fails");
    let stats = p.stats.view();
    assert_eq!(stats.received, offered);
    assert_eq!(stats.wasted, 0);
    let csv = consumer::to_csv(&timeline);
    assert!(csv.starts_with("second,offered,goodput"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_with_timeouts_and_retries_amplifies_and_wastes_work() {
    let p = provider(2, 50).await; // capacity 40/s
    let timeline = consumer::run(consumer(&p, 120.0, 150, 2)).await;
    let offered: u64 = timeline.iter().map(|s| s.offered).sum();
    let attempts: u64 = timeline.iter().map(|s| s.attempts).sum();
    let timeouts: u64 = timeline.iter().map(|s| s.timeouts).sum();
    // The queue outgrows the timeout, so callers give up and retry ...
    assert!(timeouts > 0);
    assert!(
        attempts > offered,
        "attempts {attempts} vs offered {offered}"
    );
    // ... and the provider, unaware, works on requests nobody waits for.
    let stats = p.stats.view();
    assert!(stats.received > offered, "{stats:?} vs {offered}");
    assert!(stats.wasted > 0, "{stats:?}");
}
