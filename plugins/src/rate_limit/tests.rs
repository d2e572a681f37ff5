use std::time::Duration;

use super::*;
use crate::testing::{keys, Env};
use crate::{Decision, Policy};

fn limit(yaml: &str, env: &Env) -> RateLimit {
    let cfg: RateLimitConfig = serde_yaml::from_str(yaml).expect("test config parses");
    cfg.compile("per-ip".into(), "p", &env.policy_env())
        .expect("test config compiles")
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    match d {
        Decision::Reject(r) => r
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok()),
        _ => None,
    }
}

#[test]
fn gcra_admits_the_burst_then_refills_at_the_rate() {
    let env = Env::new();
    let p = limit("{ key: ip, limit: 10, window: 1s }", &env);
    let k = keys("10.0.0.1", None);
    assert_eq!(env.admitted(&p, &k, 10), 10);
    let (d, _) = env.decide(&p, &k);
    match &d {
        Decision::Reject(r) => {
            assert_eq!(r.status, 429);
            assert_eq!(r.grpc_status, 8);
            assert_eq!(r.kind, "rate_limited");
            assert_eq!(r.policy, "per-ip");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(header(&d, "retry-after"), Some("1"));
    assert_eq!(header(&d, "ratelimit-policy"), Some("\"per-ip\";q=10;w=1"));
    assert_eq!(header(&d, "ratelimit"), Some("\"per-ip\";r=0;t=1"));
    // One emission interval later, exactly one more.
    env.clock.advance(Duration::from_millis(100));
    assert_eq!(env.admitted(&p, &k, 5), 1);
    env.clock.advance(Duration::from_secs(1));
    assert_eq!(env.admitted(&p, &k, 20), 10);
}

#[test]
fn gcra_burst_caps_the_instantaneous_allowance() {
    let env = Env::new();
    let p = limit("{ key: ip, limit: 10, window: 1s, burst: 2 }", &env);
    let k = keys("10.0.0.1", None);
    assert_eq!(env.admitted(&p, &k, 5), 2);
    env.clock.advance(Duration::from_millis(100));
    assert_eq!(env.admitted(&p, &k, 5), 1);
    // Over a long run the rate holds: 10 per second.
    let mut total = 0;
    for _ in 0..100 {
        env.clock.advance(Duration::from_millis(10));
        total += env.admitted(&p, &k, 3);
    }
    assert_eq!(total, 10);
}

#[test]
fn sliding_window_counts_admitted_requests_in_the_window() {
    let env = Env::new();
    let p = limit(
        "{ key: ip, limit: 5, window: 1s, algorithm: sliding_window }",
        &env,
    );
    let k = keys("10.0.0.1", None);
    assert_eq!(env.admitted(&p, &k, 8), 5);
    let (d, _) = env.decide(&p, &k);
    assert_eq!(header(&d, "retry-after"), Some("1"));
    env.clock.advance(Duration::from_millis(999));
    assert_eq!(env.admitted(&p, &k, 8), 0);
    // After a full window plus the sub-bucket they fell in, all 5 are gone.
    env.clock.advance(Duration::from_millis(251));
    assert_eq!(env.admitted(&p, &k, 8), 5);
}

#[test]
fn sliding_window_at_twice_the_limit_admits_the_limit() {
    let env = Env::new();
    let p = limit(
        "{ key: ip, limit: 100, window: 1s, algorithm: sliding_window }",
        &env,
    );
    let k = keys("10.0.0.1", None);
    // 200 req/s, evenly spaced, for 20 s.
    let mut admitted = 0;
    for _ in 0..4_000 {
        env.clock.advance(Duration::from_millis(5));
        admitted += env.admitted(&p, &k, 1);
    }
    let expected = 100 * 20;
    assert!(
        (admitted as i64 - expected as i64).abs() <= expected as i64 / 20,
        "admitted {admitted}"
    );
}

#[test]
fn keys_are_limited_independently_and_absent_keys_not_at_all() {
    let env = Env::new();
    let p = limit("{ key: user, limit: 2, window: 1s }", &env);
    assert_eq!(env.admitted(&p, &keys("10.0.0.1", Some("a")), 5), 2);
    assert_eq!(env.admitted(&p, &keys("10.0.0.1", Some("b")), 5), 2);
    assert_eq!(env.admitted(&p, &keys("10.0.0.1", None), 5), 5);
}

#[test]
fn overrides_and_allowlist() {
    let env = Env::new();
    for algo in ["gcra", "sliding_window"] {
        let p = limit(
            &format!("{{ key: user, limit: 2, window: 1s, algorithm: {algo}, overrides: [{{ key: vip, limit: 5 }}], allow: [robot] }}"),
            &env,
        );
        assert_eq!(
            env.admitted(&p, &keys("10.0.0.1", Some("joe")), 10),
            2,
            "{algo}"
        );
        assert_eq!(
            env.admitted(&p, &keys("10.0.0.1", Some("vip")), 10),
            5,
            "{algo}"
        );
        assert_eq!(
            env.admitted(&p, &keys("10.0.0.1", Some("robot")), 100),
            100,
            "{algo}"
        );
    }
}

#[test]
fn shadow_mode_admits_and_counts_what_it_would_reject() {
    let env = Env::new();
    let p = limit("{ key: ip, limit: 3, window: 1s, shadow: true }", &env);
    assert_eq!(env.admitted(&p, &keys("10.0.0.1", None), 10), 10);
    let r = p.limit_report(5).unwrap();
    assert_eq!(r.counts.admitted, 3);
    assert_eq!(r.counts.shadow_rejected, 7);
    assert_eq!(r.counts.rejected, 0);
}

#[test]
fn report_lists_top_keys_by_rate_with_names() {
    let env = Env::new();
    let p = limit(
        "{ key: ip, limit: 100, window: 1s, algorithm: sliding_window }",
        &env,
    );
    env.admitted(&p, &keys("10.0.0.1", None), 90);
    env.admitted(&p, &keys("10.0.0.2", None), 60);
    env.admitted(&p, &keys("10.0.0.3", None), 5);
    let r = p.limit_report(2).unwrap();
    assert_eq!(r.tracked_keys, 3);
    let top: Vec<(&str, f64)> = r
        .top_keys
        .iter()
        .map(|t| (t.key.as_str(), t.count))
        .collect();
    assert_eq!(top, [("10.0.0.1", 90.0), ("10.0.0.2", 60.0)]);
    assert_eq!(r.top_keys[0].rate_per_sec, 90.0);
}

#[test]
fn key_space_is_capped_and_evictions_counted() {
    let env = Env::new();
    for algo in ["gcra", "sliding_window"] {
        let p = limit(
            &format!("{{ key: ip, limit: 10, window: 10s, max_keys: 500, algorithm: {algo} }}"),
            &env,
        );
        for i in 0..5_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            env.admitted(&p, &keys(&ip, None), 1);
        }
        let r = p.limit_report(1).unwrap();
        assert!(r.tracked_keys <= 500, "{algo}: {}", r.tracked_keys);
        assert!(r.evictions >= 4_000, "{algo}: {}", r.evictions);
    }
}

#[test]
fn config_errors_name_their_fields() {
    let env = Env::new();
    let cases = [
        ("{ key: ip, limit: 0, window: 1s }", "p.limit"),
        ("{ key: ipp, limit: 1, window: 1s }", "p.key"),
        ("{ key: ip, limit: 1, window: 0s }", "p.window"),
        (
            "{ key: ip, limit: 1, window: 1s, algorithm: sliding_window, burst: 3 }",
            "p.burst",
        ),
        ("{ key: ip, limit: 1, window: 1s, burst: 0 }", "p.burst"),
        (
            "{ key: ip, limit: 1, window: 1s, max_keys: 0 }",
            "p.max_keys",
        ),
        ("{ key: ip, limit: 1, window: 1s, status: 200 }", "p.status"),
        (
            "{ key: ip, limit: 1, window: 1s, overrides: [{ key: a, limit: 0 }] }",
            "p.overrides[0].limit",
        ),
    ];
    for (yaml, path) in cases {
        let cfg: RateLimitConfig = serde_yaml::from_str(yaml).unwrap();
        let err = cfg
            .compile("n".into(), "p", &env.policy_env())
            .err()
            .expect(yaml);
        assert_eq!(err.path, path, "{yaml}: {err}");
    }
    assert!(
        serde_yaml::from_str::<RateLimitConfig>("{ key: ip, limit: 1, window: 1s, limt: 2 }")
            .is_err()
    );
}

#[test]
fn numbers_past_their_bounds_are_config_errors_not_overflows() {
    let env = Env::new();
    let compile = |yaml: &str| {
        let cfg: RateLimitConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.compile("n".into(), "p", &env.policy_env())
            .err()
            .map(|e| e.to_string())
    };
    // The reported config: burst × override limit overflowed a u64 (a
    // panic in debug builds, a wrapped burst in release).
    assert_eq!(
        compile(
            "{ key: ip, limit: 10, window: 1s, algorithm: gcra, burst: 4294967295, \
             overrides: [{ key: vip, limit: 18446744073709551615 }] }"
        )
        .as_deref(),
        Some("p.burst: must be between 1 and 1000000000")
    );
    assert_eq!(
        compile(
            "{ key: ip, limit: 10, window: 1s, burst: 1000, \
             overrides: [{ key: vip, limit: 18446744073709551615 }] }"
        )
        .as_deref(),
        Some("p.overrides[0].limit: must be between 1 and 1000000000")
    );
    for (yaml, want) in [
        (
            "{ key: ip, limit: 18446744073709551615, window: 1s, algorithm: sliding_window }",
            "p.limit: must be between 1 and 1000000000",
        ),
        (
            "{ key: ip, limit: 1, window: 31d }",
            "p.window: must be between 1ms and 30d",
        ),
        // burst × interval: a 30-day interval times a burst of a million.
        (
            "{ key: ip, limit: 1, window: 30d, burst: 1000000 }",
            "p.burst: at 1 per 30d a burst of 1000000 takes longer than 365d to refill",
        ),
        // An override spacing requests under 1 ns apart.
        (
            "{ key: ip, limit: 1, window: 1ms, overrides: [{ key: vip, limit: 1000000000 }] }",
            "p.overrides[0].limit: more than one request per nanosecond cannot be expressed",
        ),
    ] {
        assert_eq!(compile(yaml).as_deref(), Some(want), "{yaml}");
    }
}

#[test]
fn limits_at_their_bounds_decide_without_overflow() {
    let env = Env::new();
    let k = keys("10.0.0.1", None);
    for yaml in [
        "{ key: ip, limit: 1000000000, window: 30d, burst: 1000000000, \
         overrides: [{ key: 10.0.0.1, limit: 1000000000 }] }",
        "{ key: ip, limit: 1, window: 30d, burst: 12, overrides: [{ key: 10.0.0.1, limit: 1000000000 }] }",
        "{ key: ip, limit: 1000000000, window: 1s, burst: 1, overrides: [{ key: 10.0.0.1, limit: 1 }] }",
        "{ key: ip, limit: 1000000000, window: 30d, algorithm: sliding_window, \
         overrides: [{ key: 10.0.0.1, limit: 1 }] }",
    ] {
        let p = limit(yaml, &env);
        let other = keys("10.0.0.2", None);
        for _ in 0..3 {
            assert!(env.admitted(&p, &k, 2) >= 1, "{yaml}");
            assert!(env.admitted(&p, &other, 2) >= 1, "{yaml}");
            // A window and its oldest (interpolated) sub-bucket later.
            env.clock.advance(Duration::from_secs(40 * 24 * 3600));
        }
        p.limit_report(5).unwrap();
    }
}

#[test]
fn a_global_limit_counts_the_fleet_and_keeps_overrides() {
    use crate::fleet::{Fleet, FleetSettings, SectionReply};
    use crate::Clock;
    use std::sync::Arc;
    let env = Env::new();
    let fleet = Arc::new(Fleet::new(FleetSettings {
        sync_interval: Duration::from_millis(100),
        hash_key: crate::store::FleetKey::from_seed("test-fleet-seed-9"),
        expected_instances: Some(2),
    }));
    let cfg: RateLimitConfig = serde_yaml::from_str(
        "{ key: user, limit: 10, window: 1s, algorithm: sliding_window, scope: global, \
         overrides: [{ key: vip, limit: 40 }] }",
    )
    .unwrap();
    let penv = crate::PolicyEnv {
        fleet: Some(fleet.clone()),
        ..env.policy_env()
    };
    let p = cfg.compile("per-user".into(), "p", &penv).unwrap();
    let g = p.global().expect("a global limit syncs");
    let (alice, vip) = (
        keys("10.0.0.1", Some("alice")),
        keys("10.0.0.1", Some("vip")),
    );
    // Degraded until the first sync: this instance's half of each limit.
    assert_eq!(env.admitted(&p, &alice, 20), 5);
    assert_eq!(env.admitted(&p, &vip, 50), 20);
    // In global mode a new key has half of its half of the limit as an
    // allowance, then admits what the fleet's store leases it.
    fleet.set_global(true);
    env.clock.advance(Duration::from_secs(2));
    let now = env.clock.now_nanos();
    assert_eq!(env.admitted(&p, &alice, 8), 3);
    assert_eq!(env.admitted(&p, &vip, 30), 10, "the override's");
    let s = g.collect(now, 100);
    assert_eq!(s.items.len(), 2);
    let limits: Vec<u64> = s.items.iter().map(|i| i.lease.unwrap().limit).collect();
    assert!(limits.contains(&10) && limits.contains(&40), "{limits:?}");
    // The store leases 3 more to alice and nothing to the VIP.
    let grants: Vec<u64> = s
        .items
        .iter()
        .map(|i| if i.lease.unwrap().limit == 10 { 3 } else { 0 })
        .collect();
    g.apply(
        &s,
        &SectionReply {
            totals: vec![8, 40],
            hot: vec![],
            grants,
            bucket: 7,
        },
        now,
    );
    assert_eq!(env.admitted(&p, &alice, 20), 3);
    let (d, _) = env.decide(&p, &alice);
    assert!(matches!(d, Decision::Reject(ref r) if r.kind == "rate_limited"));
    assert_eq!(env.admitted(&p, &vip, 5), 0);
    // A local limit has nothing to sync.
    assert!(limit("{ key: ip, limit: 10, window: 1s }", &env)
        .global()
        .is_none());
}
