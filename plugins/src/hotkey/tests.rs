//! The detector and the `hotkey` rule on a fake clock.

use std::time::Duration;

use super::*;
use crate::testing::{keys, Env};
use crate::{Clock, Decision, Policy};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn detector(threshold: u64, max_tracked: usize) -> HotKeyDetector {
    HotKeyDetector::new(DetectorConfig {
        threshold,
        window: Duration::from_secs(1),
        hot_ttl: Duration::from_secs(2),
        cool_ratio: 0.8,
        max_tracked,
        sketch_width: 8192,
    })
}

fn name(k: u64) -> impl Fn() -> Option<String> {
    move || Some(format!("k{k}"))
}

/// Feeds `per_sec` events per second of key `k` from `from` for `secs`,
/// evenly spaced; returns when (if ever) it was declared hot.
fn feed(d: &HotKeyDetector, k: u64, from: u64, per_sec: u64, secs: f64) -> Option<u64> {
    let n = (per_sec as f64 * secs) as u64;
    let step = SEC / per_sec;
    let mut hot_at = None;
    for i in 0..n {
        let now = from + i * step;
        let seen = d.observe(k, now, name(k));
        if seen.became_hot.is_some() {
            hot_at.get_or_insert(now);
        }
    }
    hot_at
}

#[test]
fn a_key_at_the_threshold_rate_is_hot_within_the_stated_latency() {
    let d = detector(1000, 4096);
    let start = 10 * SEC;
    // Background: 5000 cold keys at 2/s each.
    for i in 0..10_000u64 {
        d.observe(100_000 + i % 5000, start + i * (SEC / 10_000), name(i));
    }
    let hot_at = feed(&d, 7, start, 1100, 2.0).expect("declared hot");
    let latency = hot_at - start;
    assert!(
        latency <= SEC + 100 * MS,
        "detected after {} ms (bound: window + 100 ms)",
        latency / MS
    );
    // Faster keys are found sooner.
    let fast = feed(&d, 8, start, 4000, 1.0).expect("declared hot");
    assert!(fast - start <= 300 * MS, "{} ms", (fast - start) / MS);
    assert!(!d.is_hot(100_001), "a cold key is not hot");
    let hot: Vec<String> = d
        .hot_keys(start + 2 * SEC)
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(hot.len(), 2, "{hot:?}");
    assert!(hot.contains(&"k7".to_string()) && hot.contains(&"k8".to_string()));
}

#[test]
fn a_key_just_under_the_threshold_is_never_hot() {
    let d = detector(1000, 4096);
    assert_eq!(feed(&d, 7, 0, 900, 5.0), None);
    assert_eq!(d.hot_len(), 0);
}

#[test]
fn hysteresis_holds_a_key_that_dips_and_cools_one_that_stops() {
    let d = detector(1000, 4096);
    let t0 = 5 * SEC;
    feed(&d, 7, t0, 1200, 2.0).expect("hot");
    // Dips to 0.9 × threshold for 5 s (TTL 2 s): held by the 0.8 band.
    feed(&d, 7, t0 + 2 * SEC, 900, 5.0);
    assert!(
        d.sweep(t0 + 7 * SEC).is_empty(),
        "held while >= 0.8 × threshold"
    );
    assert!(d.is_hot(7));
    // Dips to 0.5 × threshold: no longer held; cools hot_ttl after.
    feed(&d, 7, t0 + 7 * SEC, 500, 1.0);
    assert!(d.sweep(t0 + 8 * SEC).is_empty(), "still within the TTL");
    let cooled = d.sweep(t0 + 10 * SEC);
    assert_eq!(cooled.len(), 1);
    assert_eq!(cooled[0].change, HotChange::Cooled);
    assert_eq!(cooled[0].key, "k7");
    assert!(!d.is_hot(7));
    // Crossing the threshold again makes it hot again, with a new event.
    let again = feed(&d, 7, t0 + 20 * SEC, 1500, 1.0);
    assert!(again.is_some());
}

#[test]
fn memory_stays_capped_under_a_flood_of_distinct_keys() {
    let d = detector(40, 1024);
    // 200k distinct keys, each seen 3 times (above the admission count of 2).
    let mut now = SEC;
    for k in 0..200_000u64 {
        for _ in 0..3 {
            d.observe(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), now, name(k));
        }
        now += 1_000;
    }
    let stats = d.tracked();
    assert!(stats.tracked <= 1024, "{stats:?}");
    assert!(
        d.refused() > 0,
        "newcomers were refused, not let in past the cap"
    );
    // A genuinely hot key gets in once the flood's keys cool (one window).
    assert!(feed(&d, 1, now, 400, 3.0).is_some());
    assert!(d.tracked().evictions > 0, "cooled flood keys made room");
    // The default rule fits in 1 MiB.
    assert!(detector(1000, 4096).memory_bound_bytes() <= 1 << 20);
}

#[test]
fn forgetting_a_hot_key_makes_it_report_again() {
    let d = detector(100, 64);
    feed(&d, 3, 0, 200, 1.0).expect("hot");
    assert!(d.forget(3));
    assert!(!d.is_hot(3));
    let seen = d.observe(3, SEC + 1, name(3));
    assert!(
        seen.became_hot.is_some(),
        "still over the threshold: hot again"
    );
}

#[test]
fn minute_statistics_keep_the_top_keys() {
    // Admission at threshold / 20 = 1 event: every key is counted from its first.
    let d = detector(20, 4096);
    let base = 60 * SEC * 10;
    for (k, n) in [(1u64, 500u64), (2, 300), (3, 100)] {
        for i in 0..n {
            d.observe(k, base + i * (SEC / 10), name(k));
        }
    }
    // Read any time during the next minute.
    let top = d.top_of_last_minute(base + 61 * SEC, 2);
    assert_eq!(top, vec![("k1".to_string(), 500), ("k2".to_string(), 300)]);
    assert!(d.top_of_last_minute(base + 121 * SEC, 2).is_empty());
}

fn rule(env: &Env, yaml: &str) -> HotKeyRule {
    let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
    cfg.compile(
        "goods.hotkey".into(),
        "routes[0].policies[0].hotkey",
        &env.policy_env(),
    )
    .unwrap()
}

#[test]
fn the_rule_publishes_events_and_blocks_a_hot_ip() {
    let env = Env::new();
    let r = rule(
        &env,
        "{ key: ip, threshold: 50, window: 1s, hot_ttl: 1s, actions: [block], block_for: 1m }",
    );
    let mut rx = env.hub.subscribe();
    let abuser = keys("198.51.100.7", None);
    let bystander = keys("198.51.100.8", None);
    let mut blocked_at = None;
    for i in 0..100 {
        env.clock.advance(Duration::from_millis(5));
        if i % 10 == 0 {
            // 20 per second: under the threshold of 50.
            assert!(matches!(env.decide(&r, &bystander).0, Decision::Continue));
        }
        if let (Decision::Reject(rej), _) = env.decide(&r, &abuser) {
            assert_eq!(rej.status, 403);
            assert_eq!(rej.kind, "blocked");
            blocked_at.get_or_insert(i);
        }
    }
    assert!(blocked_at.is_some_and(|i| i < 60), "{blocked_at:?}");
    let hit = env.blocks.check(
        env.blocks
            .hash_of(&crate::KeySpec::parse("ip", &[], "k").unwrap(), &abuser)
            .unwrap(),
    );
    assert!(hit.is_some(), "the IP is on the block list");
    let event = rx.try_recv().unwrap();
    assert_eq!((event.event, event.key.as_str()), ("hot", "198.51.100.7"));
    assert_eq!(event.actions, vec!["block"]);
    assert_eq!(r.counts().hot_events, 1);
}

#[test]
fn the_rule_limits_each_hot_key_and_leaves_cold_ones_alone() {
    let env = Env::new();
    let r = rule(
        &env,
        "{ key: user, threshold: 20, window: 1s, actions: [limit], limit: { limit: 5, window: 1s, burst: 5 } }",
    );
    let hot = keys("10.0.0.1", Some("crawler"));
    let cold = keys("10.0.0.2", Some("reader"));
    let (mut admitted, mut limited) = (0, 0);
    for _ in 0..100 {
        env.clock.advance(Duration::from_millis(10));
        match env.decide(&r, &hot).0 {
            Decision::Continue => admitted += 1,
            Decision::Reject(rej) => {
                assert_eq!(rej.status, 429);
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
        if env.clock.now_nanos().is_multiple_of(100 * MS) {
            assert!(matches!(env.decide(&r, &cold).0, Decision::Continue));
        }
    }
    // ~20 before it is hot, then ~5 per second for the rest of the second.
    assert!(admitted < 40, "admitted {admitted}");
    assert!(limited > 60, "limited {limited}");
    assert_eq!(r.counts().limited, limited);
}

#[test]
fn ticks_cool_keys_and_keep_minute_statistics() {
    let env = Env::new();
    let r = rule(
        &env,
        "{ key: user, threshold: 20, window: 1s, hot_ttl: 1s }",
    );
    let mut rx = env.hub.subscribe();
    env.clock.advance(Duration::from_secs(60));
    r.tick(env.clock.now_nanos());
    for _ in 0..50 {
        env.clock.advance(Duration::from_millis(10));
        assert!(matches!(
            env.decide(&r, &keys("10.0.0.1", Some("alice"))).0,
            Decision::Continue
        ));
    }
    assert_eq!(r.hot_keys().len(), 1);
    env.clock.advance(Duration::from_secs(3));
    r.tick(env.clock.now_nanos());
    assert!(r.hot_keys().is_empty());
    assert_eq!(rx.try_recv().unwrap().event, "hot");
    let cooled = rx.try_recv().unwrap();
    assert_eq!((cooled.event, cooled.key.as_str()), ("cooled", "alice"));
    // Into the next minute: the last one's top keys are kept.
    env.clock.advance(Duration::from_secs(60));
    r.tick(env.clock.now_nanos());
    let top = r.top_over(5);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].0, "alice");
    assert!(top[0].1 >= 45, "{top:?}");
}

#[test]
fn config_errors_name_the_field() {
    let env = Env::new();
    let err = |yaml: &str| {
        let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.compile(
            "r".into(),
            "routes[0].policies[0].hotkey",
            &env.policy_env(),
        )
        .err()
        .expect("rejected")
        .to_string()
    };
    assert!(err("{ key: goods_id, threshold: 10, window: 1s }").contains(".key"));
    assert!(err("{ key: ip, threshold: 1, window: 1s }").contains(".threshold"));
    assert!(err("{ key: ip, threshold: 10, window: 10ms }").contains(".window"));
    assert!(err("{ key: ip, threshold: 10, window: 1s, actions: [limit] }").contains(".limit"));
    assert!(
        err("{ key: endpoint, threshold: 10, window: 1s, actions: [block], block_for: 1m }")
            .contains("needs an `ip` or `user` key")
    );
    assert!(err("{ key: ip, threshold: 10, window: 1s, actions: [block] }").contains(".block_for"));
    assert!(err("{ key: ip, threshold: 10, window: 1s, cool_ratio: 1.5 }").contains(".cool_ratio"));
    assert!(err("{ key: ip, threshold: 10, window: 1s, actions: [] }").contains(".actions"));
    // Numbers past their bounds; each error names its own field.
    let path = |yaml: &str| err(yaml).split(": ").next().unwrap().to_string();
    for (yaml, field) in [
        ("{ key: ip, threshold: 18446744073709551615, window: 1s }", "threshold"),
        ("{ key: ip, threshold: 10, window: 1s, hot_ttl: 2d }", "hot_ttl"),
        (
            "{ key: ip, threshold: 10, window: 1s, status: 200, actions: [limit], limit: { limit: 5, window: 1s } }",
            "status",
        ),
        (
            "{ key: ip, threshold: 10, window: 1s, actions: [limit], limit: { limit: 5, window: 1s, burst: 4294967295 } }",
            "limit.burst",
        ),
        (
            "{ key: ip, threshold: 10, window: 1s, actions: [cache], cache: { statuses: [200, 99] } }",
            "cache.statuses[1]",
        ),
    ] {
        assert_eq!(path(yaml), format!("routes[0].policies[0].hotkey.{field}"), "{yaml}");
    }
}

#[test]
fn a_global_rule_sends_candidate_counts_and_takes_the_fleets_verdicts() {
    use crate::fleet::{Fleet, FleetSettings, SectionKind, SectionReply};
    let env = Env::new();
    let yaml = "{ key: ip, threshold: 100, window: 1s, actions: [observe], scope: global }";
    let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
    let err = cfg
        .compile("goods.hot".into(), "p", &env.policy_env())
        .err()
        .expect("global scope without a fleet");
    assert!(err.to_string().starts_with("p.scope:"), "{err}");
    let fleet = std::sync::Arc::new(Fleet::new(FleetSettings {
        sync_interval: Duration::from_millis(100),
        hash_key: crate::store::FleetKey::from_seed("test-fleet-seed-1"),
        expected_instances: None,
    }));
    let penv = crate::PolicyEnv {
        fleet: Some(fleet.clone()),
        ..env.policy_env()
    };
    let r = cfg.compile("goods.hot".into(), "p", &penv).unwrap();
    let g = r.global().expect("a global rule syncs");
    let mut rx = env.hub.subscribe();
    let k = keys("198.51.100.7", None);
    // 40 events in 200 ms: under the threshold of 100 on this instance.
    for _ in 0..40 {
        env.clock.advance(Duration::from_millis(5));
        assert!(matches!(env.decide(&r, &k).0, Decision::Continue));
    }
    let now = env.clock.now_nanos();
    let s = g.collect(now, 10);
    assert!(matches!(
        s.kind,
        SectionKind::Hot {
            threshold: 100,
            hold_at: 80,
            hot_ttl_ms: 10_000
        }
    ));
    // Every event counts, also the ones that got the key admitted.
    assert_eq!(s.items.len(), 1);
    assert_eq!(s.items[0].delta, 40);
    assert_eq!(s.items[0].name, "198.51.100.7");
    // Named in the fleet by the fleet's stable hash, not the per-process one.
    let spec = crate::KeySpec::parse("ip", &[], "k").unwrap();
    assert_eq!(
        Some(s.items[0].hash),
        fleet.hasher().hash_labeled("ip", &spec, &k)
    );
    assert!(g.collect(now, 10).items.is_empty(), "deltas are taken once");
    assert!(rx.try_recv().is_err(), "not hot here");
    // The fleet's total crossed the threshold: hot here too, with an event.
    let hash = s.items[0].hash;
    let verdict = SectionReply {
        totals: vec![120],
        hot: vec![(hash, "198.51.100.7".into())],
        grants: vec![],
        bucket: 0,
    };
    g.apply(&s, &verdict, now);
    assert!(r.detector().is_hot(hash));
    assert_eq!(rx.try_recv().unwrap().event, "hot");
    // Repeated verdicts keep it hot without new events.
    env.clock.advance(Duration::from_secs(5));
    g.apply(&s, &verdict, env.clock.now_nanos());
    r.tick(env.clock.now_nanos());
    assert!(r.detector().is_hot(hash));
    assert!(rx.try_recv().is_err());
    // The fleet cooled it.
    g.fleet_hot(hash, "198.51.100.7", 0, false, env.clock.now_nanos());
    assert!(!r.detector().is_hot(hash));
    assert_eq!(rx.try_recv().unwrap().event, "cooled");
    assert_eq!(r.counts().cooled_events, 1);
}

#[test]
fn a_global_rule_blocks_a_fleet_hot_key_on_the_local_block_list() {
    use crate::fleet::{Fleet, FleetSettings};
    let env = Env::new();
    let fleet = std::sync::Arc::new(Fleet::new(FleetSettings {
        sync_interval: Duration::from_millis(100),
        hash_key: crate::store::FleetKey::from_seed("test-fleet-seed-block"),
        expected_instances: None,
    }));
    let penv = crate::PolicyEnv {
        fleet: Some(fleet.clone()),
        ..env.policy_env()
    };
    let yaml =
        "{ key: ip, threshold: 100, window: 1s, actions: [block], block_for: 1m, scope: global }";
    let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
    let r = cfg.compile("goods.hot".into(), "p", &penv).unwrap();
    let (abuser, bystander) = (keys("198.51.100.7", None), keys("198.51.100.8", None));
    let spec = crate::KeySpec::parse("ip", &[], "k").unwrap();
    // The fleet says the key is hot, naming it by the fleet's hash.
    let fleet_hash = fleet.hasher().hash_labeled("ip", &spec, &abuser).unwrap();
    r.global()
        .unwrap()
        .fleet_hot(fleet_hash, "198.51.100.7", 150, true, env.clock.now_nanos());
    let (decision, _) = env.decide(&r, &abuser);
    assert!(matches!(decision, Decision::Reject(ref rej) if rej.kind == "blocked"));
    assert!(matches!(env.decide(&r, &bystander).0, Decision::Continue));
    // The block list, which hashes per process, holds the key under its own hash.
    let local = env.blocks.hash_of(&spec, &abuser).unwrap();
    assert_ne!(local, fleet_hash);
    assert!(
        env.blocks.check(local).is_some(),
        "the IP is on the block list"
    );
}
