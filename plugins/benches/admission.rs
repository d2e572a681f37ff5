//! Cost of one admission decision (window update + limit check) at 1, 1k and
//! 1M live keys, on one thread and on two, for Breakwater's `rate_limit`
//! (GCRA and sliding window) against two baselines:
//!
//! - `naive`: a fixed-window counter in a `Mutex<HashMap<IpAddr, _>>`, the
//!   obvious first implementation;
//! - `governor`: plain `governor` keyed GCRA (an uncapped `DashMap`).
//!
//! `breakwater-global-leased` is a `scope: global` limit in cluster mode
//! whose keys hold leases, as between two syncs: what a fleet-wide decision
//! costs on the request path (no Redis call).
//!
//! Keys are client IPs, visited in a shuffled order so the larger key sets
//! really miss the CPU caches. Limits are set high enough that every decision
//! admits: this measures the admission path (a refusal also builds headers). Run: `cargo bench -p breakwater-plugins --bench admission`.

// Benches measure real time against a naive baseline.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::fleet::{Fleet, FleetSettings, SectionReply};
use breakwater_plugins::rate_limit::RateLimitConfig;
use breakwater_plugins::{
    Clock, Exchange, MonotonicClock, Policy, PolicyEnv, RequestKeys, RequestView,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, Method};

const SIZES: [usize; 3] = [1, 1_000, 1_000_000];

fn ips(n: usize) -> Vec<IpAddr> {
    // A fixed permutation (multiplicative hashing) so consecutive lookups
    // land far apart in the tables.
    (0..n as u32)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) % (n as u32).max(1)),
            ))
        })
        .collect()
}

fn keys(ips: &[IpAddr]) -> Vec<RequestKeys> {
    let endpoint: Arc<str> = Arc::from("api");
    ips.iter()
        .map(|ip| RequestKeys {
            endpoint: endpoint.clone(),
            ip: *ip,
            client: *ip,
            user: None,
            custom: vec![],
        })
        .collect()
}

fn policy(algorithm: &str, clock: Arc<dyn Clock>, fleet: Option<Arc<Fleet>>) -> Box<dyn Policy> {
    let scope = if fleet.is_some() { "global" } else { "local" };
    let cfg: RateLimitConfig = serde_yaml::from_str(&format!(
        "{{ key: ip, limit: 1000000000, window: 1s, algorithm: {algorithm}, max_keys: 2000000, scope: {scope} }}"
    ))
    .unwrap();
    let env = PolicyEnv {
        custom_keys: &[],
        clock: clock.clone(),
        blocks: Arc::new(BlockList::new(10, clock)),
        hot_events: Default::default(),
        fleet,
        cluster: "bench",
        cluster_endpoints: &[],
    };
    Box::new(cfg.compile("bench".into(), "bench", &env).unwrap())
}

/// A `scope: global` limit whose every key holds a lease (as after a sync):
/// the steady-state decision, one atomic decrement.
fn leased_global(ips: &[IpAddr], clock: &MonotonicClock) -> Breakwater {
    let fleet = Arc::new(Fleet::new(FleetSettings {
        sync_interval: Duration::from_millis(100),
        hash_key: breakwater_plugins::store::FleetKey::from_seed("bench-fleet-seed"),
        expected_instances: Some(1),
    }));
    fleet.set_global(true);
    let bw = Breakwater {
        policy: policy("sliding_window", Arc::new(clock.clone()), Some(fleet)),
        keys: keys(ips),
        headers: HeaderMap::new(),
        clock: clock.clone(),
    };
    for i in 0..ips.len() {
        bw.admit(i);
    }
    let sync = bw.policy.global().expect("a global limit");
    let section = sync.collect(clock.now_nanos(), usize::MAX);
    let reply = SectionReply {
        totals: vec![0; section.items.len()],
        hot: vec![],
        grants: vec![u64::from(u32::MAX); section.items.len()],
        bucket: 0,
    };
    sync.apply(&section, &reply, clock.now_nanos());
    bw
}

/// Something that makes one admission decision for a key index.
trait Admit: Sync {
    fn admit(&self, i: usize) -> bool;
}

struct Breakwater {
    policy: Box<dyn Policy>,
    keys: Vec<RequestKeys>,
    headers: HeaderMap,
    clock: MonotonicClock,
}

impl Admit for Breakwater {
    fn admit(&self, i: usize) -> bool {
        let view = RequestView {
            route: "r",
            host: None,
            tls: false,
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &self.headers,
            keys: &self.keys[i % self.keys.len()],
            grpc: false,
            now_nanos: self.clock.now_nanos(),
            body: breakwater_plugins::RequestBody::Unread,
        };
        matches!(
            self.policy.on_request(&view, &mut Exchange::default()),
            breakwater_plugins::Decision::Continue
        )
    }
}

/// The obvious first implementation: one lock, one map, fixed windows.
struct Naive {
    map: Mutex<HashMap<IpAddr, (u64, u64)>>,
    ips: Vec<IpAddr>,
    limit: u64,
    start: Instant,
}

impl Admit for Naive {
    fn admit(&self, i: usize) -> bool {
        let window = self.start.elapsed().as_secs();
        let mut map = self.map.lock().unwrap();
        let e = map
            .entry(self.ips[i % self.ips.len()])
            .or_insert((window, 0));
        if e.0 != window {
            *e = (window, 0);
        }
        e.1 += 1;
        e.1 <= self.limit
    }
}

struct Governor {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    ips: Vec<IpAddr>,
}

impl Admit for Governor {
    fn admit(&self, i: usize) -> bool {
        self.limiter
            .check_key(&self.ips[i % self.ips.len()])
            .is_ok()
    }
}

fn contenders(n: usize) -> Vec<(&'static str, Box<dyn Admit>)> {
    let ips = ips(n);
    let clock = MonotonicClock::new();
    let bw = |algorithm| {
        Box::new(Breakwater {
            policy: policy(algorithm, Arc::new(clock.clone()), None),
            keys: keys(&ips),
            headers: HeaderMap::new(),
            clock: clock.clone(),
        }) as Box<dyn Admit>
    };
    vec![
        ("breakwater-gcra", bw("gcra")),
        ("breakwater-sliding", bw("sliding_window")),
        (
            "breakwater-global-leased",
            Box::new(leased_global(&ips, &clock)),
        ),
        (
            "naive-mutex-hashmap",
            Box::new(Naive {
                map: Mutex::new(HashMap::new()),
                ips: ips.clone(),
                limit: 1_000_000_000,
                start: Instant::now(),
            }),
        ),
        (
            "governor-keyed",
            Box::new(Governor {
                limiter: governor::RateLimiter::keyed(governor::Quota::per_second(
                    NonZeroU32::new(1_000_000).unwrap(),
                )),
                ips: ips.clone(),
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let all = contenders(n);
        // Populate every key first: the measured decisions hit live keys.
        for (_, a) in &all {
            for i in 0..n {
                a.admit(i);
            }
        }
        for threads in [1usize, 2] {
            let mut group = c.benchmark_group(format!("admission/{threads}-thread"));
            group.throughput(Throughput::Elements(1));
            group.measurement_time(Duration::from_secs(3));
            group.warm_up_time(Duration::from_secs(1));
            for (name, a) in &all {
                group.bench_with_input(BenchmarkId::new(*name, format!("{n}-keys")), &n, |b, _| {
                    b.iter_custom(|iters| {
                        let per_thread = (iters as usize).div_ceil(threads);
                        let start = Instant::now();
                        std::thread::scope(|s| {
                            for t in 0..threads {
                                let a = &**a;
                                s.spawn(move || {
                                    let offset = t * 7_919;
                                    for i in 0..per_thread {
                                        black_box(a.admit(offset + i));
                                    }
                                });
                            }
                        });
                        // Decisions per wall-clock time: with two threads this
                        // is the cost per decision at twice the offered rate.
                        start
                            .elapsed()
                            .div_f64((per_thread * threads) as f64 / iters as f64)
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
