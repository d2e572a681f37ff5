//! Hot-key detector updates per second on one core, in steady state; and
//! the cost of a cache hit through a `hotkey` rule.
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

/// One request through a `hotkey` rule with `cache: { always: true }` whose
/// answer (1 KiB body, 3 headers) is cached: hash the key, count it, look
/// the answer up, build the response (header copies, `Age`, `Cache-Status`;
/// the body is shared, not copied).
fn cache_hit(c: &mut Criterion) {
    use breakwater_plugins::block_list::BlockList;
    use breakwater_plugins::hotkey::HotKeyConfig;
    use breakwater_plugins::{
        Clock, Decision, Exchange, FakeClock, Policy, PolicyEnv, RequestKeys, RequestView,
    };
    use http::{HeaderMap, HeaderValue, Method};
    use std::sync::Arc;

    let clock = FakeClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let env = PolicyEnv {
        custom_keys: &[],
        clock: shared.clone(),
        blocks: Arc::new(BlockList::new(10, shared)),
        hot_events: Default::default(),
        fleet: None,
        cluster: "bench",
        cluster_endpoints: &[],
    };
    let cfg: HotKeyConfig = serde_yaml::from_str(
        "{ key: user, threshold: 1000000, window: 1s, actions: [cache], cache: { always: true, ttl: 1h } }",
    )
    .unwrap();
    let rule = cfg.compile("bench.hotkey".into(), "bench", &env).unwrap();
    let keys = RequestKeys {
        endpoint: Arc::from("goods"),
        ip: "10.0.0.1".parse().unwrap(),
        client: "10.0.0.1".parse().unwrap(),
        user: Some("alice".into()),
        custom: vec![],
    };
    let headers = HeaderMap::new();
    let request = |permits: &mut Exchange| {
        let view = RequestView {
            route: "r",
            host: None,
            tls: false,
            method: &Method::GET,
            path: "/goods/1",
            query: None,
            headers: &headers,
            keys: &keys,
            grpc: false,
            now_nanos: clock.now_nanos(),
            body: breakwater_plugins::RequestBody::Unread,
        };
        rule.on_request(&view, permits)
    };
    // Fill it.
    let mut permits = Exchange::default();
    assert!(matches!(request(&mut permits), Decision::Continue));
    let mut answer = HeaderMap::new();
    answer.insert("content-type", HeaderValue::from_static("application/json"));
    answer.insert("etag", HeaderValue::from_static("\"v1\""));
    answer.insert("x-upstream", HeaderValue::from_static("goods-1"));
    permits.response_head(200, &answer);
    permits.response_body(&[b'x'; 1024], true);
    drop(permits);
    c.bench_function("hotkey_cache_hit", |b| {
        b.iter(|| {
            let mut permits = Exchange::default();
            let d = request(&mut permits);
            assert!(matches!(d, Decision::Respond(_)));
            std::hint::black_box(d)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = updates, cache_hit
}
criterion_main!(benches);
