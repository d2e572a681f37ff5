//! The hot-key cache on a fake clock: hits, freshness and staleness, single
//! flight, what may be stored, vary, invalidation.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::testing::{keys, Env};
use crate::{Clock, Decision, LocalResponse, Permits, Policy, RequestKeys, WaitOutcome};

fn rule(env: &Env, extra: &str) -> HotKeyRule {
    let yaml = format!(
        "{{ key: user, threshold: 1000, window: 1s, actions: [cache], cache: {{ always: true, ttl: 5s, stale_ttl: 30s{extra} }} }}"
    );
    let cfg: HotKeyConfig = serde_yaml::from_str(&yaml).unwrap();
    cfg.compile(
        "goods.hotkey".into(),
        "routes[0].policies[0].hotkey",
        &env.policy_env(),
    )
    .unwrap()
}

fn user(name: &str) -> RequestKeys {
    keys("10.0.0.1", Some(name))
}

/// The upstream's answer, fed through the request's taps.
fn answer(permits: &mut Permits, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    permits.tap_header(status, &h);
    permits.tap_body(body, true);
}

fn header<'a>(r: &'a LocalResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

fn status_header(p: &Permits) -> String {
    p.response_headers()
        .iter()
        .find(|(n, _)| n == "cache-status")
        .map(|(_, v)| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_miss_is_stored_then_served_fresh_then_kept_for_errors() {
    let env = Env::new();
    let r = rule(&env, "");
    let (d, mut p) = env.decide(&r, &user("alice"));
    assert!(matches!(d, Decision::Continue), "a miss goes upstream");
    assert_eq!(status_header(&p), "breakwater; fwd=miss");
    answer(&mut p, 200, &[("content-type", "text/plain")], b"goods");
    drop(p);

    env.clock.advance(Duration::from_secs(2));
    let Decision::Respond(hit) = env.decide(&r, &user("alice")).0 else {
        panic!("expected a hit")
    };
    assert_eq!((hit.status, &hit.body[..]), (200, &b"goods"[..]));
    assert_eq!(header(&hit, "cache-status"), Some("breakwater; hit; ttl=3"));
    assert_eq!(header(&hit, "age"), Some("2"));
    assert_eq!(header(&hit, "content-type"), Some("text/plain"));
    // HEAD shares the entry, without a body.
    let (d, _) = env.decide_with(&r, &user("alice"), &Method::HEAD, &HeaderMap::new());
    let Decision::Respond(head) = d else {
        panic!("HEAD hit")
    };
    assert!(head.body.is_empty());
    // Another key misses.
    assert!(matches!(env.decide(&r, &user("bob")).0, Decision::Continue));

    // Past the TTL: the refill goes upstream, with the stale copy as fallback.
    env.clock.advance(Duration::from_secs(4));
    let (d, mut p) = env.decide(&r, &user("alice"));
    assert!(matches!(d, Decision::Continue));
    assert_eq!(status_header(&p), "breakwater; fwd=stale");
    let stale = p.take_fallback().expect("stale-if-error fallback");
    assert_eq!(&stale.body[..], b"goods");
    assert_eq!(
        header(&stale, "cache-status"),
        Some("breakwater; hit; detail=stale-if-error")
    );
    assert_eq!(r.cache().unwrap().counts().stale, 1);
    drop(p); // the refill failed
             // Past TTL + stale_ttl: nothing left to fall back on.
    env.clock.advance(Duration::from_secs(40));
    let (_, mut p) = env.decide(&r, &user("alice"));
    assert!(p.take_fallback().is_none());
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let env = Env::new();
    let r = rule(&env, "");
    let (lead, mut leader) = env.decide(&r, &user("alice"));
    assert!(matches!(lead, Decision::Continue));
    let mut waiters = Vec::new();
    for _ in 0..99 {
        match env.decide(&r, &user("alice")).0 {
            Decision::Wait(w) => waiters.push(w),
            other => panic!("expected to wait for the fill, got {other:?}"),
        }
    }
    answer(&mut leader, 200, &[], b"once");
    for w in waiters {
        let WaitOutcome::Respond(resp) = w.await else {
            panic!("expected the filled answer")
        };
        assert_eq!(&resp.body[..], b"once");
        assert_eq!(
            header(&resp, "cache-status"),
            Some("breakwater; fwd=miss; collapsed")
        );
    }
    let c = r.cache().unwrap().counts();
    assert_eq!((c.miss, c.collapsed, c.stored), (1, 99, 1));
}

#[tokio::test]
async fn uncacheable_answers_are_not_stored_and_waiters_go_upstream() {
    let env = Env::new();
    let r = rule(&env, "");
    for (status, headers) in [
        (200, vec![("cache-control", "no-store")]),
        (200, vec![("cache-control", "private, max-age=60")]),
        (200, vec![("cache-control", "max-age=0")]),
        (200, vec![("set-cookie", "session=1")]),
        (503, vec![]),
    ] {
        let (_, mut leader) = env.decide(&r, &user("alice"));
        let Decision::Wait(w) = env.decide(&r, &user("alice")).0 else {
            panic!("expected to wait")
        };
        answer(&mut leader, status, &headers, b"x");
        assert!(matches!(w.await, WaitOutcome::Admit(None)), "{headers:?}");
        assert!(
            matches!(env.decide(&r, &user("alice")).0, Decision::Continue),
            "{status} {headers:?} was stored"
        );
    }
    assert_eq!(r.cache().unwrap().counts().stored, 0);
}

#[test]
fn max_age_shortens_the_ttl_and_authorization_bypasses() {
    let env = Env::new();
    let r = rule(&env, "");
    let (_, mut p) = env.decide(&r, &user("alice"));
    answer(&mut p, 200, &[("cache-control", "public, max-age=2")], b"x");
    drop(p);
    env.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        env.decide(&r, &user("alice")).0,
        Decision::Respond(_)
    ));
    env.clock.advance(Duration::from_secs(2));
    assert!(matches!(
        env.decide(&r, &user("alice")).0,
        Decision::Continue
    ));

    let mut auth = HeaderMap::new();
    auth.insert("authorization", HeaderValue::from_static("Bearer t"));
    let (d, p) = env.decide_with(&r, &user("carol"), &Method::GET, &auth);
    assert!(matches!(d, Decision::Continue));
    assert!(!p.has_taps(), "never stored");
    assert_eq!(
        status_header(&p),
        "breakwater; fwd=bypass; detail=authorization"
    );
    assert!(matches!(
        env.decide_with(&r, &user("carol"), &Method::POST, &HeaderMap::new())
            .0,
        Decision::Continue
    ));
}

#[test]
fn vary_headers_split_entries_and_invalidation_drops_every_variant() {
    let env = Env::new();
    let r = rule(&env, ", vary: [accept-encoding]");
    let with = |enc: &str| {
        let mut h = HeaderMap::new();
        h.insert("accept-encoding", HeaderValue::from_str(enc).unwrap());
        h
    };
    for (enc, body) in [("gzip", &b"zipped"[..]), ("identity", &b"plain"[..])] {
        let (_, mut p) = env.decide_with(&r, &user("alice"), &Method::GET, &with(enc));
        answer(&mut p, 200, &[], body);
    }
    for (enc, body) in [("gzip", &b"zipped"[..]), ("identity", &b"plain"[..])] {
        let Decision::Respond(hit) = env
            .decide_with(&r, &user("alice"), &Method::GET, &with(enc))
            .0
        else {
            panic!("{enc} should hit")
        };
        assert_eq!(&hit.body[..], body);
    }
    r.cache().unwrap().invalidate_key("alice");
    r.cache().unwrap().counts(); // runs moka's pending invalidations
    for enc in ["gzip", "identity"] {
        assert!(matches!(
            env.decide_with(&r, &user("alice"), &Method::GET, &with(enc))
                .0,
            Decision::Continue
        ));
    }
}

#[test]
fn only_hot_keys_are_cached_without_always_and_cooling_drops_them() {
    let env = Env::new();
    let cfg: HotKeyConfig = serde_yaml::from_str(
        "{ key: user, threshold: 20, window: 1s, hot_ttl: 1s, actions: [cache] }",
    )
    .unwrap();
    let r = cfg
        .compile("goods.hotkey".into(), "p", &env.policy_env())
        .unwrap();
    // A cold key never touches the cache.
    let (d, p) = env.decide(&r, &user("cold"));
    assert!(matches!(d, Decision::Continue) && !p.has_taps());
    // Heat it up.
    let mut served = 0;
    for _ in 0..40 {
        env.clock.advance(Duration::from_millis(10));
        match env.decide(&r, &user("hot")) {
            (Decision::Continue, mut p) if p.has_taps() => answer(&mut p, 200, &[], b"hot"),
            (Decision::Respond(_), _) => served += 1,
            _ => {}
        }
    }
    assert!(served > 10, "served {served} from cache once hot");
    // It cools: its entries go with it.
    env.clock.advance(Duration::from_secs(3));
    r.tick(env.clock.now_nanos());
    assert!(r.hot_keys().is_empty());
    r.cache().unwrap().counts();
    assert_eq!(r.cache().unwrap().counts().entries, 0);
}

#[test]
fn a_max_age_past_u64_nanoseconds_keeps_the_ttl() {
    let env = Env::new();
    let r = rule(&env, "");
    let (_, mut p) = env.decide(&r, &user("alice"));
    // 18446744074 s is just past u64::MAX nanoseconds: cast with `as u64`
    // it wrapped to 0.29 s of freshness instead of the rule's 5 s.
    answer(
        &mut p,
        200,
        &[("cache-control", "max-age=18446744074")],
        b"x",
    );
    drop(p);
    env.clock.advance(Duration::from_secs(4));
    assert!(matches!(
        env.decide(&r, &user("alice")).0,
        Decision::Respond(_)
    ));
}
