//! Memory per tracked key, and RSS under a flood of distinct keys.
//!
//! 1. Bytes per tracked key: heap bytes (counted by a wrapping global
//!    allocator) held by a `rate_limit` policy after N distinct keys, divided
//!    by the keys it tracks, next to a naive `HashMap<IpAddr, (u64, u64)>`.
//! 2. RSS while 5M distinct client IPs arrive at a policy with
//!    `max_keys: 100000`: it must stay flat once the cap is reached.
//!
//! Run: `cargo bench -p breakwater-plugins --bench key_memory`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::rate_limit::RateLimitConfig;
use breakwater_plugins::{Exchange, FakeClock, Policy, PolicyEnv, RequestKeys, RequestView};
use http::{HeaderMap, Method};

#[path = "counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
}

fn policy(algorithm: &str, max_keys: usize, clock: &FakeClock) -> Box<dyn Policy> {
    let cfg: RateLimitConfig = serde_yaml::from_str(&format!(
        "{{ key: ip, limit: 100, window: 10s, algorithm: {algorithm}, max_keys: {max_keys} }}"
    ))
    .unwrap();
    let env = PolicyEnv {
        custom_keys: &[],
        clock: Arc::new(clock.clone()),
        blocks: Arc::new(BlockList::new(10, Arc::new(clock.clone()))),
        hot_events: Default::default(),
        fleet: None,
        cluster: "bench",
        cluster_endpoints: &[],
    };
    Box::new(cfg.compile("mem".into(), "mem", &env).unwrap())
}

fn admit(p: &dyn Policy, ip: IpAddr, endpoint: &Arc<str>, clock: &FakeClock, headers: &HeaderMap) {
    let keys = RequestKeys {
        endpoint: endpoint.clone(),
        ip,
        client: ip,
        user: None,
        custom: vec![],
    };
    let view = RequestView {
        route: "r",
        host: None,
        tls: false,
        method: &Method::GET,
        path: "/",
        query: None,
        headers,
        keys: &keys,
        grpc: false,
        now_nanos: breakwater_plugins::Clock::now_nanos(clock),
        body: breakwater_plugins::RequestBody::Unread,
    };
    p.on_request(&view, &mut Exchange::default());
}

fn main() {
    let clock = FakeClock::new();
    let endpoint: Arc<str> = Arc::from("api");
    let headers = HeaderMap::new();

    println!("## RSS while 5M distinct keys arrive, max_keys = 100000 (sliding window)\n");
    println!("| distinct keys so far | tracked | evictions | RSS (MiB) |");
    println!("|---|---|---|---|");
    let p = policy("sliding_window", 100_000, &clock);
    let mut next = 0u32;
    for checkpoint in [
        0u32, 100_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000,
    ] {
        while next < checkpoint {
            admit(&*p, ip(next + 10_000_000), &endpoint, &clock, &headers);
            next += 1;
        }
        let r = p.limit_report(0).unwrap();
        println!(
            "| {checkpoint} | {} | {} | {:.1} |",
            r.tracked_keys,
            r.evictions,
            rss_kib() as f64 / 1024.0
        );
    }
    drop(p);
    println!("\n## Bytes per tracked key (heap, after N distinct keys, max_keys = N)\n");
    println!("| store | N | tracked | bytes/key |");
    println!("|---|---|---|---|");
    for n in [100_000u32, 1_000_000] {
        for algorithm in ["sliding_window", "gcra"] {
            let before = live();
            let p = policy(algorithm, n as usize, &clock);
            for i in 0..n {
                admit(&*p, ip(i), &endpoint, &clock, &headers);
            }
            let tracked = p.limit_report(0).unwrap().tracked_keys;
            let bytes = live() - before;
            println!(
                "| breakwater {algorithm} | {n} | {tracked} | {:.1} |",
                bytes as f64 / tracked as f64
            );
            drop(p);
        }
        let before = live();
        let mut naive: HashMap<IpAddr, (u64, u64)> = HashMap::new();
        for i in 0..n {
            naive.insert(ip(i), (0, 1));
        }
        println!(
            "| naive HashMap<IpAddr,(u64,u64)> (uncapped) | {n} | {} | {:.1} |",
            naive.len(),
            (live() - before) as f64 / naive.len() as f64
        );
    }
}
