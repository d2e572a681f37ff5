//! The hot-key cache on a fake clock: hits, freshness and staleness, single
//! flight, what may be stored, vary, invalidation, and what makes two
//! requests the same resource (method, path, query, the upstream's `Vary`).

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::hotkey::{HotKeyConfig, HotKeyRule};
use crate::testing::{keys, Env};
use crate::{
    Clock, Decision, Exchange, LocalResponse, Policy, RequestKeys, RequestView, WaitOutcome,
};

pub(super) fn rule(env: &Env, extra: &str) -> HotKeyRule {
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

pub(super) fn user(name: &str) -> RequestKeys {
    keys("10.0.0.1", Some(name))
}

/// The upstream's answer, fed through the request's taps.
pub(super) fn answer(permits: &mut Exchange, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    permits.response_head(status, &h);
    permits.response_body(body, true);
}

pub(super) fn header<'a>(r: &'a LocalResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

pub(super) fn status_header(p: &Exchange) -> String {
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
    r.cache().unwrap().invalidate(KeyRef::Text("alice"));
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

/// Where a request was sent: its route, the host it named and its scheme.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    pub route: &'static str,
    pub host: Option<&'static str>,
    pub tls: bool,
}

/// Route `r`, no host, plain HTTP.
pub(super) const PLAIN: Origin = Origin {
    route: "r",
    host: None,
    tls: false,
};

/// Runs `method target` (a path with an optional `?query`) for alice, with
/// `headers`, through the rule: tests of what makes two requests the same.
fn send(
    env: &Env,
    r: &HotKeyRule,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> (Decision, Exchange) {
    send_to(env, r, PLAIN, &user("alice"), method, target, headers)
}

/// [`send`] from `keys`, to `origin`.
pub(super) fn send_to(
    env: &Env,
    r: &HotKeyRule,
    origin: Origin,
    keys: &RequestKeys,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> (Decision, Exchange) {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let view = RequestView {
        route: origin.route,
        host: origin.host,
        tls: origin.tls,
        method: &method,
        path,
        query,
        headers: &h,
        keys,
        grpc: false,
        now_nanos: env.clock.now_nanos(),
        body: crate::RequestBody::Unread,
    };
    let mut permits = Exchange::default();
    let d = r.on_request(&view, &mut permits);
    (d, permits)
}

/// `target` is answered from the cache; returns the answer.
fn hit(
    env: &Env,
    r: &HotKeyRule,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> LocalResponse {
    match send(env, r, method.clone(), target, headers).0 {
        Decision::Respond(resp) => resp,
        other => panic!("{method} {target} {headers:?}: expected a hit, got {other:?}"),
    }
}

/// `target` goes upstream (a miss): returns its permits, to answer it.
fn miss(
    env: &Env,
    r: &HotKeyRule,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> Exchange {
    match send(env, r, method.clone(), target, headers) {
        (Decision::Continue, p) => p,
        (other, _) => panic!("{method} {target} {headers:?}: expected a miss, got {other:?}"),
    }
}

#[test]
fn a_head_miss_never_fills_the_cache_and_a_get_then_gets_the_body() {
    let env = Env::new();
    let r = rule(&env, "");
    // The HEAD goes upstream on its own: no fill, no flight for GETs to join.
    let mut head = miss(&env, &r, Method::HEAD, "/goods/1", &[]);
    assert_eq!(status_header(&head), "breakwater; fwd=miss; detail=head");
    assert!(!head.has_taps(), "a HEAD answer is never stored");
    // A GET meanwhile leads its own fill rather than waiting for the HEAD.
    let mut get = miss(&env, &r, Method::GET, "/goods/1", &[]);
    assert_eq!(status_header(&get), "breakwater; fwd=miss");
    answer(&mut head, 200, &[("content-type", "text/html")], b"");
    answer(
        &mut get,
        200,
        &[("content-type", "text/html")],
        b"<h1>goods</h1>",
    );
    // The GET answer serves both: GET with its body, HEAD without.
    let full = hit(&env, &r, Method::GET, "/goods/1", &[]);
    assert_eq!(&full.body[..], b"<h1>goods</h1>");
    let head = hit(&env, &r, Method::HEAD, "/goods/1", &[]);
    assert!(head.body.is_empty());
    assert_eq!(header(&head, "content-type"), Some("text/html"));
    assert_eq!(r.cache().unwrap().counts().stored, 1);
}

#[test]
fn a_head_alone_never_stores_an_empty_answer_for_a_get() {
    let env = Env::new();
    let r = rule(&env, "");
    let mut head = miss(&env, &r, Method::HEAD, "/goods/1", &[]);
    answer(&mut head, 200, &[("content-type", "text/html")], b"");
    drop(head);
    let mut get = miss(&env, &r, Method::GET, "/goods/1", &[]);
    answer(&mut get, 200, &[], b"<h1>goods</h1>");
    assert_eq!(
        &hit(&env, &r, Method::GET, "/goods/1", &[]).body[..],
        b"<h1>goods</h1>"
    );
}

#[test]
fn the_path_and_query_are_part_of_the_key() {
    let env = Env::new();
    let r = rule(&env, "");
    let mut evil = miss(&env, &r, Method::GET, "/goods/2?x=evil", &[]);
    answer(&mut evil, 200, &[], b"evil");
    let mut bare = miss(&env, &r, Method::GET, "/goods/2", &[]);
    answer(&mut bare, 200, &[], b"plain");
    let mut other = miss(&env, &r, Method::GET, "/goods/3", &[]);
    answer(&mut other, 200, &[], b"three");
    assert_eq!(
        &hit(&env, &r, Method::GET, "/goods/2", &[]).body[..],
        b"plain"
    );
    assert_eq!(
        &hit(&env, &r, Method::GET, "/goods/2?x=evil", &[]).body[..],
        b"evil"
    );
    assert_eq!(
        &hit(&env, &r, Method::GET, "/goods/3", &[]).body[..],
        b"three"
    );
}

#[test]
fn query_strings_that_normalize_equal_share_an_entry_and_others_do_not() {
    let env = Env::new();
    let r = rule(&env, "");
    let mut p = miss(&env, &r, Method::GET, "/s?b=2&a=1&a=0&q=%2f", &[]);
    answer(&mut p, 200, &[], b"stored");
    // Parameters sorted by name (repeated names keep their order), empty
    // pieces dropped, unreserved characters decoded, hex in upper case.
    for same in [
        "/s?a=1&a=0&b=2&q=%2F",
        "/s?&a=1&&a=%30&q=%2f&b=%32&",
        "/s?%61=1&a=0&q=%2F&b=2",
    ] {
        assert_eq!(
            &hit(&env, &r, Method::GET, same, &[]).body[..],
            b"stored",
            "{same}"
        );
    }
    for different in [
        "/s?a=0&a=1&b=2&q=%2F", // repeated names in another order
        "/s?a=1&a=0&b=3&q=%2F", // another value
        "/s?a=1&a=0&b=2&q=/",   // `/` is reserved: %2F is not decoded
        "/s?a=1&a=0&b=2&q=%2F&c",
        "/s?a=1&a=0&b=2&q=%2F&c=",
        "/s?A=1&a=0&b=2&q=%2F", // names are case-sensitive
        "/s",
    ] {
        let p = miss(&env, &r, Method::GET, different, &[]);
        assert_eq!(status_header(&p), "breakwater; fwd=miss", "{different}");
        drop(p);
    }
}

#[test]
fn the_upstreams_vary_keeps_variants_apart_and_serves_each_its_own() {
    let env = Env::new();
    let r = rule(&env, "");
    let varies = [("vary", "Accept-Language"), ("content-type", "text/plain")];
    let mut en = miss(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "en")],
    );
    answer(&mut en, 200, &varies, b"hello");
    // Another value of a header the upstream varies on is another variant.
    let mut de = miss(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "de")],
    );
    answer(&mut de, 200, &varies, b"hallo");
    let mut none = miss(&env, &r, Method::GET, "/goods/1", &[]);
    answer(&mut none, 200, &varies, b"hi");
    for (lang, body) in [
        (Some("en"), &b"hello"[..]),
        (Some("de"), b"hallo"),
        (None, b"hi"),
    ] {
        let headers: Vec<_> = lang.map(|l| ("accept-language", l)).into_iter().collect();
        assert_eq!(
            &hit(&env, &r, Method::GET, "/goods/1", &headers).body[..],
            body,
            "{lang:?}"
        );
    }
    let head = hit(
        &env,
        &r,
        Method::HEAD,
        "/goods/1",
        &[("accept-language", "de")],
    );
    assert!(head.body.is_empty());
    // A value never seen is a miss.
    drop(miss(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "fr")],
    ));
    // Invalidation drops the key's every variant.
    r.cache().unwrap().invalidate(KeyRef::Text("alice"));
    r.cache().unwrap().counts();
    for lang in ["en", "de"] {
        drop(miss(
            &env,
            &r,
            Method::GET,
            "/goods/1",
            &[("accept-language", lang)],
        ));
    }
    assert_eq!(r.cache().unwrap().counts().entries, 0);
}

#[tokio::test]
async fn an_answer_with_vary_star_is_never_stored_or_shared() {
    let env = Env::new();
    let r = rule(&env, "");
    let mut leader = miss(&env, &r, Method::GET, "/goods/1", &[]);
    let Decision::Wait(w) = send(&env, &r, Method::GET, "/goods/1", &[]).0 else {
        panic!("expected to wait for the fill")
    };
    answer(&mut leader, 200, &[("vary", "accept-encoding, *")], b"x");
    assert!(matches!(w.await, WaitOutcome::Admit(None)));
    drop(miss(&env, &r, Method::GET, "/goods/1", &[]));
    assert_eq!(r.cache().unwrap().counts().stored, 0);
}

#[tokio::test]
async fn a_waiter_shares_the_fill_only_if_it_matches_on_every_varied_header() {
    let env = Env::new();
    let r = rule(&env, "");
    let en = [("accept-language", "en")];
    // Nothing known of the resource yet: the waiter was matched on no
    // header, so an answer that varies goes to the leader only.
    let mut leader = miss(&env, &r, Method::GET, "/goods/1", &en);
    let Decision::Wait(de) = send(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "de")],
    )
    .0
    else {
        panic!("expected to wait for the fill")
    };
    answer(&mut leader, 200, &[("vary", "accept-language")], b"hello");
    assert!(
        matches!(de.await, WaitOutcome::Admit(None)),
        "de got en's answer"
    );
    // Now the stored answer says what the resource varies on: requests with
    // another value fill on their own, the same value waits and shares.
    env.clock.advance(Duration::from_secs(6));
    let mut en_fill = miss(&env, &r, Method::GET, "/goods/1", &en);
    assert_eq!(status_header(&en_fill), "breakwater; fwd=stale");
    let mut de_fill = miss(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "de")],
    );
    let Decision::Wait(en_waiter) = send(&env, &r, Method::GET, "/goods/1", &en).0 else {
        panic!("the same variant waits for its fill")
    };
    answer(&mut de_fill, 200, &[("vary", "accept-language")], b"hallo");
    answer(
        &mut en_fill,
        200,
        &[("vary", "accept-language")],
        b"hello again",
    );
    let WaitOutcome::Respond(shared) = en_waiter.await else {
        panic!("expected the en fill")
    };
    assert_eq!(&shared.body[..], b"hello again");
    // But if the upstream starts to vary on a header the waiters were not
    // matched on, they go upstream themselves.
    env.clock.advance(Duration::from_secs(6));
    let mut leader = miss(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "en"), ("cookie", "a")],
    );
    let Decision::Wait(other_cookie) = send(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "en"), ("cookie", "b")],
    )
    .0
    else {
        panic!("expected to wait")
    };
    answer(
        &mut leader,
        200,
        &[("vary", "accept-language, cookie")],
        b"a's",
    );
    assert!(matches!(other_cookie.await, WaitOutcome::Admit(None)));
    assert_eq!(
        &hit(
            &env,
            &r,
            Method::GET,
            "/goods/1",
            &[("accept-language", "en"), ("cookie", "a")]
        )
        .body[..],
        b"a's"
    );
    drop(miss(
        &env,
        &r,
        Method::GET,
        "/goods/1",
        &[("accept-language", "en"), ("cookie", "b")],
    ));
}

#[tokio::test]
async fn a_configured_vary_header_lets_waiters_share_an_answer_that_varies_on_it() {
    let env = Env::new();
    let r = rule(&env, ", vary: [accept-language]");
    let en = [("accept-language", "en")];
    let mut leader = miss(&env, &r, Method::GET, "/goods/1", &en);
    let Decision::Wait(w) = send(&env, &r, Method::GET, "/goods/1", &en).0 else {
        panic!("expected to wait")
    };
    answer(&mut leader, 200, &[("vary", "Accept-Language")], b"hello");
    let WaitOutcome::Respond(shared) = w.await else {
        panic!("matched on accept-language through the configured vary")
    };
    assert_eq!(&shared.body[..], b"hello");
}

#[test]
fn partial_and_not_modified_statuses_cannot_be_configured() {
    let env = Env::new();
    for status in [206, 304] {
        let yaml = format!(
            "{{ key: user, threshold: 1000, window: 1s, actions: [cache], cache: {{ statuses: [200, {status}] }} }}"
        );
        let cfg: HotKeyConfig = serde_yaml::from_str(&yaml).unwrap();
        let err = cfg
            .compile(
                "h".into(),
                "routes[0].policies[0].hotkey",
                &env.policy_env(),
            )
            .err()
            .expect("rejected");
        assert_eq!(
            err.to_string().split(':').next(),
            Some("routes[0].policies[0].hotkey.cache.statuses"),
            "{err}"
        );
    }
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

#[test]
fn a_max_body_past_1_gib_is_a_config_error() {
    let env = Env::new();
    // Entries are weighed in u32 bytes: a larger body would weigh as 4 GiB.
    let yaml = "{ key: user, threshold: 1000, window: 1s, actions: [cache], cache: { max_bytes: 68719476736, max_body: 8589934592 } }";
    let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
    let err = cfg
        .compile(
            "h".into(),
            "routes[0].policies[0].hotkey",
            &env.policy_env(),
        )
        .err()
        .expect("rejected");
    assert_eq!(
        err.to_string(),
        "routes[0].policies[0].hotkey.cache.max_body: must be between 1 and 1073741824 (1 GiB) and at most max_bytes"
    );
    let yaml = "{ key: user, threshold: 1000, window: 1s, actions: [cache], cache: { max_bytes: 68719476736, max_body: 1073741824 } }";
    let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
    assert!(cfg
        .compile(
            "h".into(),
            "routes[0].policies[0].hotkey",
            &env.policy_env()
        )
        .is_ok());
}

#[test]
fn a_miss_past_the_fill_table_says_so_and_keeps_its_stale_fallback() {
    let env = Env::new();
    let r = rule(&env, "");
    let mut p = miss(&env, &r, Method::GET, "/goods/1", &[]);
    answer(&mut p, 200, &[], b"goods");
    drop(p);
    env.clock.advance(Duration::from_secs(6));
    // Fill the single-flight table with other resources' fills in flight.
    let in_flight: Vec<Exchange> = (0..super::store::MAX_FILLS)
        .map(|i| miss(&env, &r, Method::GET, &format!("/other/{i}"), &[]))
        .collect();
    // The stale resource's refill is not tracked, but still a cache miss
    // with its stale copy for errors.
    let mut p = miss(&env, &r, Method::GET, "/goods/1", &[]);
    assert!(!p.has_taps(), "not tracked: the table is full");
    assert_eq!(status_header(&p), "breakwater; fwd=stale");
    let stale = p.take_fallback().expect("stale-if-error fallback");
    assert_eq!(&stale.body[..], b"goods");
    // And a new resource's miss says so too.
    let p = miss(&env, &r, Method::GET, "/new", &[]);
    assert_eq!(status_header(&p), "breakwater; fwd=miss");
    drop(in_flight);
}

/// A rule whose own `ttl` is longer than the upstream's `max-age`.
fn long_ttl_rule(env: &Env) -> HotKeyRule {
    let yaml = "{ key: user, threshold: 1000, window: 1s, actions: [cache], cache: { always: true, ttl: 300s, stale_ttl: 30s } }";
    let cfg: HotKeyConfig = serde_yaml::from_str(yaml).unwrap();
    cfg.compile("goods.hotkey".into(), "p", &env.policy_env())
        .unwrap()
}

#[test]
fn the_upstreams_age_counts_against_its_max_age() {
    let env = Env::new();
    let r = long_ttl_rule(&env);
    let mut p = miss(&env, &r, Method::GET, "/goods/1", &[]);
    // The answer spent 50 of its 60 s in caches before this one.
    answer(
        &mut p,
        200,
        &[("cache-control", "max-age=60"), ("age", "50")],
        b"goods",
    );
    drop(p);
    env.clock.advance(Duration::from_secs(9));
    let fresh = hit(&env, &r, Method::GET, "/goods/1", &[]);
    assert_eq!(
        header(&fresh, "cache-status"),
        Some("breakwater; hit; ttl=1")
    );
    // One `Age`, counting its time upstream and here.
    let ages: Vec<_> = fresh.headers.iter().filter(|(n, _)| n == "age").collect();
    assert_eq!(ages.len(), 1, "{:?}", fresh.headers);
    assert_eq!(header(&fresh, "age"), Some("59"));
    env.clock.advance(Duration::from_secs(2));
    let p = miss(&env, &r, Method::GET, "/goods/1", &[]);
    assert_eq!(
        status_header(&p),
        "breakwater; fwd=stale",
        "stale after 10 s"
    );
}

#[test]
fn an_answer_as_old_as_its_max_age_is_not_stored_as_fresh() {
    let env = Env::new();
    let r = long_ttl_rule(&env);
    for (i, age) in ["60", "61", "99999999999999999999999"].iter().enumerate() {
        let path = format!("/goods/{i}");
        let mut p = miss(&env, &r, Method::GET, &path, &[]);
        answer(
            &mut p,
            200,
            &[("cache-control", "max-age=60"), ("age", age)],
            b"old",
        );
        drop(p);
        let p = miss(&env, &r, Method::GET, &path, &[]);
        assert_eq!(status_header(&p), "breakwater; fwd=miss", "Age: {age}");
    }
    assert_eq!(r.cache().unwrap().counts().stored, 0);
}

#[test]
fn a_full_cache_counts_what_it_evicts_and_stays_within_max_bytes() {
    let env = Env::new();
    let r = rule(&env, ", max_bytes: 4096, max_body: 1024");
    for i in 0..40 {
        let (_, mut p) = env.decide(&r, &user(&format!("user-{i}")));
        answer(&mut p, 200, &[], &[b'x'; 512]);
    }
    let c = r.cache().unwrap().counts();
    assert_eq!(c.max_bytes, 4096);
    assert!(c.bytes <= 4096, "{} bytes", c.bytes);
    assert!(c.evicted > 0 && c.evicted < 40, "{} evicted", c.evicted);
    assert!(c.entries + c.evicted <= 40);
}
