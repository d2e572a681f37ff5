use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::testing::{keys, Env};
use crate::{Decision, End, ErrorKind, Exchange, Guard, Outcome, PolicyEnv};

fn ok() -> Outcome {
    Outcome {
        status: Some(200),
        latency: Duration::from_millis(5),
        ..Default::default()
    }
}

fn fail() -> Outcome {
    Outcome {
        status: Some(503),
        latency: Duration::from_millis(5),
        ..Default::default()
    }
}

fn policy(yaml: &str, env: &Env, endpoints: &[SocketAddr]) -> CircuitBreaker {
    let cfg: BreakerConfig = serde_yaml::from_str(yaml).unwrap();
    let penv = PolicyEnv {
        cluster: "orders",
        cluster_endpoints: endpoints,
        ..env.policy_env()
    };
    cfg.compile("orders.cb".into(), "p", &penv).unwrap()
}

/// Runs one call through the policy and completes it with `outcome`.
/// Returns whether it was admitted.
fn call(p: &CircuitBreaker, env: &Env, outcome: Outcome) -> bool {
    let (d, mut permits) = env.decide(p, &keys("10.0.0.1", None));
    let admitted = matches!(d, Decision::Continue);
    permits.complete(&outcome);
    admitted
}

fn state(p: &CircuitBreaker) -> BreakerState {
    p.breakers()[0].state()
}

const RATIO: &str = "{ error_ratio: 0.5, min_requests: 20, window: 10s, open: 5s, max_open: 30s, half_open_successes: 2, half_open_max_probes: 2 }";

#[test]
fn min_requests_holds_the_ratio_back() {
    let env = Env::new();
    let p = policy(RATIO, &env, &[]);
    for _ in 0..19 {
        assert!(call(&p, &env, fail()));
    }
    assert_eq!(state(&p), BreakerState::Closed, "19 calls < min_requests");
    assert!(call(&p, &env, fail()));
    assert_eq!(state(&p), BreakerState::Open);
    assert!(p.breakers()[0]
        .snapshot()
        .last_reason
        .contains("error ratio 100%"));
}

#[test]
fn open_fails_fast_then_half_open_probes_then_closes() {
    let env = Env::new();
    let p = policy(RATIO, &env, &[]);
    for _ in 0..20 {
        call(&p, &env, fail());
    }
    // Open: refused with the remaining open time.
    match env.decide(&p, &keys("10.0.0.1", None)).0 {
        Decision::Reject(r) => {
            assert_eq!(r.status, 503);
            assert_eq!(r.grpc_status, 14);
            assert_eq!(r.kind, "circuit_open");
            let retry = r.headers.iter().find(|(n, _)| n == "retry-after").unwrap();
            assert_eq!(retry.1, "5");
            assert!(r
                .headers
                .iter()
                .any(|(n, v)| n == "x-breakwater-breaker" && v == "orders.cb"));
        }
        other => panic!("{other:?}"),
    }
    env.clock.advance(Duration::from_secs(5));
    // Half-open: exactly two probes at a time.
    let (d1, mut p1) = env.decide(&p, &keys("10.0.0.1", None));
    let (d2, mut p2) = env.decide(&p, &keys("10.0.0.1", None));
    let (d3, _) = env.decide(&p, &keys("10.0.0.1", None));
    assert!(matches!(d1, Decision::Continue) && matches!(d2, Decision::Continue));
    assert!(
        matches!(d3, Decision::Reject(_)),
        "a third concurrent probe fails fast"
    );
    assert_eq!(state(&p), BreakerState::HalfOpen);
    p1.complete(&ok());
    assert_eq!(state(&p), BreakerState::HalfOpen, "one success of two");
    p2.complete(&ok());
    assert_eq!(state(&p), BreakerState::Closed);
    let t = p.breakers()[0].transitions();
    assert_eq!((t.to_open, t.to_half_open, t.to_closed), (1, 1, 1));
    // Closed again with a clean window.
    assert!(call(&p, &env, fail()));
    assert_eq!(state(&p), BreakerState::Closed);
}

#[test]
fn a_failed_probe_reopens_with_backoff_capped_at_max_open() {
    let env = Env::new();
    let p = policy(RATIO, &env, &[]);
    for _ in 0..20 {
        call(&p, &env, fail());
    }
    let b = p.breakers()[0].clone();
    let mut expected_open = [10u64, 20, 30, 30].into_iter();
    env.clock.advance(Duration::from_secs(5));
    for _ in 0..4 {
        assert!(call(&p, &env, fail()), "the probe is let through");
        assert_eq!(state(&p), BreakerState::Open);
        let open = expected_open.next().unwrap();
        assert_eq!(b.snapshot().next_probe_in_ms, Some(open * 1000));
        env.clock.advance(Duration::from_secs(open - 1));
        assert!(!call(&p, &env, ok()), "still open a second before the end");
        env.clock.advance(Duration::from_secs(1));
    }
}

#[test]
fn an_abandoned_probe_fails_and_frees_its_slot() {
    let env = Env::new();
    let p = policy("{ consecutive_failures: 3, open: 1s }", &env, &[]);
    for _ in 0..3 {
        call(&p, &env, fail());
    }
    assert_eq!(state(&p), BreakerState::Open);
    env.clock.advance(Duration::from_secs(1));
    let (_, probe) = env.decide(&p, &keys("10.0.0.1", None));
    assert_eq!(p.breakers()[0].snapshot().probes_in_flight, 1);
    drop(probe); // the client went away
    assert_eq!(state(&p), BreakerState::Open);
    assert_eq!(p.breakers()[0].snapshot().probes_in_flight, 0);
}

#[test]
fn an_unused_probe_is_released_without_judgement() {
    let env = Env::new();
    let p = policy(
        "{ consecutive_failures: 1, open: 1s, half_open_successes: 1 }",
        &env,
        &[],
    );
    call(&p, &env, fail());
    env.clock.advance(Duration::from_secs(1));
    let (_, mut probe) = env.decide(&p, &keys("10.0.0.1", None));
    probe.cancel(); // a later policy refused the request
    assert_eq!(state(&p), BreakerState::HalfOpen);
    assert_eq!(p.breakers()[0].snapshot().probes_in_flight, 0);
    assert!(call(&p, &env, ok()));
    assert_eq!(state(&p), BreakerState::Closed);
}

#[test]
fn concurrent_callers_get_exactly_the_probe_limit() {
    let env = Env::new();
    let p = Arc::new(policy(
        "{ consecutive_failures: 1, open: 1s, half_open_max_probes: 3 }",
        &env,
        &[],
    ));
    call(&p, &env, fail());
    env.clock.advance(Duration::from_secs(1));
    let granted: Vec<Exchange> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (p, env) = (p.clone(), &env);
                s.spawn(move || {
                    (0..50)
                        .filter_map(|_| {
                            let (d, permits) = env.decide(&*p, &keys("10.0.0.1", None));
                            matches!(d, Decision::Continue).then_some(permits)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(granted.len(), 3);
    for mut g in granted {
        g.cancel();
    }
}

#[test]
fn timeouts_and_connect_failures_count_abandoned_calls_do_not() {
    let env = Env::new();
    let p = policy("{ consecutive_failures: 3 }", &env, &[]);
    let err = |e| Outcome {
        error: Some(e),
        ..Default::default()
    };
    call(&p, &env, err(ErrorKind::Timeout));
    call(&p, &env, err(ErrorKind::Abandoned));
    call(&p, &env, err(ErrorKind::ConnectRefused));
    assert_eq!(state(&p), BreakerState::Closed);
    call(&p, &env, err(ErrorKind::Reset));
    assert_eq!(state(&p), BreakerState::Open);
}

#[test]
fn forced_states_stick_until_reset() {
    let env = Env::new();
    let p = policy("{ consecutive_failures: 1, open: 1s }", &env, &[]);
    let b = p.breakers()[0].clone();
    b.force_open();
    env.clock.advance(Duration::from_secs(60));
    assert!(!call(&p, &env, ok()), "forced open ignores the open period");
    assert!(b.snapshot().forced);
    b.force_close();
    assert!(call(&p, &env, fail()));
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "forced closed does not trip"
    );
    b.reset();
    assert!(!b.snapshot().forced);
    call(&p, &env, fail());
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn fallback_answers_while_open() {
    let env = Env::new();
    let p = policy(
        "{ consecutive_failures: 1, fallback: { status: 200, body: '{\"items\":[]}' } }",
        &env,
        &[],
    );
    call(&p, &env, fail());
    match env.decide(&p, &keys("10.0.0.1", None)).0 {
        Decision::Respond(r) => {
            assert_eq!(r.status, 200);
            assert_eq!(&r.body[..], b"{\"items\":[]}");
            assert!(r.headers.iter().any(|(n, _)| n == "x-breakwater-fallback"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn endpoint_scope_ejects_up_to_the_max_share() {
    let env = Env::new();
    let eps: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let p = policy(
        "{ scope: endpoint, consecutive_failures: 1, max_ejection_percent: 50 }",
        &env,
        &eps,
    );
    assert!(matches!(
        env.decide(&p, &keys("10.0.0.1", None)).0,
        Decision::Continue
    ));
    assert_eq!(p.breakers().len(), 4);
    let fail_endpoint = |addr: SocketAddr| {
        let permit = p.admit_endpoint(addr).expect("closed endpoint admits");
        Box::new(permit).finish(End::Upstream(&fail()));
    };
    fail_endpoint(eps[0]);
    assert!(
        p.admit_endpoint(eps[0]).is_none(),
        "an open endpoint is skipped"
    );
    assert!(p.admit_endpoint(eps[1]).is_some());
    assert!(p.ejection_allowed(), "1 of 4 open");
    fail_endpoint(eps[1]);
    assert!(p.ejection_allowed(), "2 of 4 open = 50%");
    fail_endpoint(eps[2]);
    assert!(!p.ejection_allowed(), "3 of 4 open: panic routing");
}

#[test]
fn config_errors_name_their_fields() {
    let env = Env::new();
    for (yaml, path) in [
        ("{ min_requests: 5 }", "p"),
        ("{ error_ratio: 1.5 }", "p.error_ratio"),
        ("{ slow_ratio: 0.5 }", "p.slow_call"),
        ("{ consecutive_failures: 0 }", "p.consecutive_failures"),
        (
            "{ consecutive_failures: 1, open: 10s, max_open: 5s }",
            "p.max_open",
        ),
        (
            "{ consecutive_failures: 1, half_open_max_probes: 0 }",
            "p.half_open_max_probes",
        ),
        (
            "{ consecutive_failures: 1, scope: endpoint, fallback: { status: 200 } }",
            "p.fallback",
        ),
        (
            "{ consecutive_failures: 1, max_ejection_percent: 101 }",
            "p.max_ejection_percent",
        ),
        // Each field's own bound comes before how it relates to another:
        // a huge `open` is named, not the `max_open` it now exceeds.
        ("{ consecutive_failures: 1, open: 2d }", "p.open"),
        ("{ consecutive_failures: 1, max_open: 2d }", "p.max_open"),
        ("{ consecutive_failures: 1, window: 31d }", "p.window"),
        (
            "{ consecutive_failures: 4294967295 }",
            "p.consecutive_failures",
        ),
        (
            "{ consecutive_failures: 1, min_requests: 18446744073709551615 }",
            "p.min_requests",
        ),
        (
            "{ consecutive_failures: 1, backoff_multiplier: 0 }",
            "p.backoff_multiplier",
        ),
        (
            "{ consecutive_failures: 1, half_open_successes: 4294967295 }",
            "p.half_open_successes",
        ),
        (
            "{ error_ratio: 0.5, slow_ratio: 0.5, slow_call: 2d }",
            "p.slow_call",
        ),
        (
            "{ consecutive_failures: 1, failure_grpc_statuses: [14, 99] }",
            "p.failure_grpc_statuses[1]",
        ),
    ] {
        let cfg: BreakerConfig = serde_yaml::from_str(yaml).unwrap();
        let err = cfg
            .compile("n".into(), "p", &env.policy_env())
            .err()
            .expect(yaml);
        assert_eq!(err.path, path, "{yaml}: {err}");
    }
}

#[test]
fn open_periods_at_their_bounds_back_off_without_overflow() {
    let env = Env::new();
    let p = policy(
        "{ consecutive_failures: 1, open: 24h, max_open: 24h, backoff_multiplier: 100 }",
        &env,
        &[],
    );
    assert!(call(&p, &env, fail()));
    // 40 failed probes in a row: 100^39 × 24h saturates and is capped.
    for _ in 0..40 {
        assert_eq!(state(&p), BreakerState::Open);
        let snap = p.breakers()[0].snapshot();
        assert_eq!(snap.next_probe_in_ms, Some(24 * 3600 * 1000));
        env.clock.advance(Duration::from_secs(24 * 3600));
        assert!(call(&p, &env, fail()), "the probe goes through");
    }
}
