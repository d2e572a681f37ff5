//! The hot-key local cache through the real gateway.

use std::time::Duration;

use breakwater_tests::config::{
    Action, Breaker, Cache, Cluster, Deny, HotKey, KeySource, Keys, Policy, Route,
};
use breakwater_tests::{client, metric_value, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// Route `goods` (`/goods/{id}`, custom key `goods_id`) with the hot-key
/// `rule`, then the `more` policies.
fn cached_route(up: &MockUpstream, rule: HotKey, more: Vec<Policy>) -> Config {
    let mut route = Route::new("goods", "up")
        .path_template("/goods/{id}")
        .policy(rule);
    for policy in more {
        route = route.policy(policy);
    }
    Config::new()
        .keys(
            Keys::new()
                .user(KeySource::header("x-user-id"))
                .custom("goods_id", KeySource::path_capture("id")),
        )
        .cluster(
            "up",
            Cluster::new([up.addr])
                .connect_timeout_ms(300)
                .read_timeout_ms(3000),
        )
        .route(route)
}

/// A rule on `key` that caches every key, hot or not, in `cache`.
fn always_on(key: &str, cache: Cache) -> HotKey {
    HotKey::new(key, 1000, "1s")
        .actions([Action::Cache])
        .cache(cache.always())
}

fn seen(up: &MockUpstream, path: &str) -> usize {
    up.received().iter().filter(|r| r.path == path).count()
}

async fn get(gw: &Gateway, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

fn cache_status(r: &reqwest::Response) -> String {
    r.headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_key_is_served_from_cache_and_cold_keys_are_not() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&cached_route(
        &up,
        HotKey::new("goods_id", 20, "1s")
            .hot_ttl("5s")
            .actions([Action::Cache])
            .cache(Cache::new().ttl("3s")),
        vec![],
    ))
    .start()
    .await;
    // A skewed background (item i 15 / i times, under the threshold of 20
    // even if the whole run fits in one window), with item 123
    // spiking among it: it is cached within the window (+100 ms), the
    // background never is.
    let spike_start = std::time::Instant::now();
    let mut first_hit = None;
    for round in 0..60u32 {
        for i in 1..=12u32 {
            if round % (4 * i) == 0 {
                let r = get(&gw, &format!("/goods/{i}")).await;
                assert_eq!(cache_status(&r), "", "cold item {i} touched the cache");
            }
        }
        let r = get(&gw, "/goods/123").await;
        assert_eq!(r.status(), 200);
        if first_hit.is_none() && cache_status(&r).contains("hit") {
            first_hit = Some(spike_start.elapsed());
        }
    }
    let first_hit = first_hit.expect("item 123 served from cache");
    assert!(
        first_hit <= Duration::from_millis(1100),
        "first cache hit {first_hit:?} after the spike began (window 1 s + 100 ms)"
    );
    // While hot, within one TTL the upstream sees no more requests for it.
    let before = seen(&up, "/goods/123");
    for _ in 0..200 {
        let r = get(&gw, "/goods/123").await;
        assert_eq!(r.status(), 200);
        assert!(
            cache_status(&r).starts_with("breakwater; hit"),
            "{}",
            cache_status(&r)
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["path"], "/goods/123");
    }
    assert!(
        seen(&up, "/goods/123") - before <= 1,
        "at most one refill per TTL; the upstream saw {}",
        seen(&up, "/goods/123") - before
    );
    // A cold item is never cached.
    for _ in 0..5 {
        let r = get(&gw, "/goods/99").await;
        assert_eq!(cache_status(&r), "");
    }
    assert_eq!(seen(&up, "/goods/99"), 5);
    let metrics = gw.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "breakwater_cache_requests_total{result=\"hit\",rule=\"goods.hotkey\"}"
        )
        .is_some_and(|n| n >= 200.0),
        "{metrics}"
    );
    // The admin drops the key's entries: the next request refills.
    let resp = client()
        .delete(gw.admin("/cache/goods.hotkey/123"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let before = seen(&up, "/goods/123");
    let r = get(&gw, "/goods/123").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    assert_eq!(seen(&up, "/goods/123"), before + 1);
    // And a purge empties every cache.
    let resp = client().delete(gw.admin("/cache")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        cache_status(&get(&gw, "/goods/123").await),
        "breakwater; fwd=miss"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let up = MockUpstream::start("a").await;
    up.slow_down(Duration::from_millis(500));
    let gw = gateway(&cached_route(
        &up,
        always_on("goods_id", Cache::new().ttl("10s")),
        vec![],
    ))
    .start()
    .await;
    let c = client();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/goods/77"));
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), cache_status(&r))
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(
        seen(&up, "/goods/77"),
        1,
        "one fill for 100 concurrent misses"
    );
    let collapsed = statuses
        .iter()
        .filter(|(_, c)| c.contains("collapsed"))
        .count();
    assert!(collapsed >= 90, "{collapsed} collapsed: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_store_is_respected() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&cached_route(
        &up,
        always_on("goods_id", Cache::new()),
        vec![],
    ))
    .start()
    .await;
    for _ in 0..5 {
        let r = get(&gw, "/goods/5?cc=no-store").await;
        assert_eq!(r.status(), 200);
        assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    }
    assert_eq!(
        seen(&up, "/goods/5"),
        5,
        "no-store answers are never served from cache"
    );
    // Without it, the second request is a hit.
    get(&gw, "/goods/6").await;
    assert!(cache_status(&get(&gw, "/goods/6").await).contains("hit"));
    assert_eq!(seen(&up, "/goods/6"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_error_is_answered_with_the_stale_copy() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&cached_route(
        &up,
        always_on("goods_id", Cache::new().ttl("1s").stale_ttl("60s")),
        vec![],
    ))
    .start()
    .await;
    assert_eq!(get(&gw, "/goods/3").await.status(), 200);
    up.fail_with(500);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let r = get(&gw, "/goods/3").await;
        assert_eq!(r.status(), 200, "the stale copy, not the 500");
        assert_eq!(cache_status(&r), "breakwater; hit; detail=stale-if-error");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["path"], "/goods/3");
    }
    assert_eq!(seen(&up, "/goods/3"), 4, "each refill still went upstream");
    // The 500 was not stored: once the upstream recovers, a fresh answer.
    up.fail_with(0);
    let r = get(&gw, "/goods/3").await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "breakwater; fwd=stale");
    assert!(cache_status(&get(&gw, "/goods/3").await).contains("hit; ttl="));
    // An item with nothing cached gets the upstream's own error.
    up.fail_with(500);
    assert_eq!(get(&gw, "/goods/4").await.status(), 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_answers_cover_a_dead_upstream_and_an_open_breaker() {
    let mut up = MockUpstream::start("a").await;
    let gw = gateway(&cached_route(
        &up,
        always_on("goods_id", Cache::new().ttl("1s").stale_ttl("60s")),
        vec![
            Deny::new().users(["mallory"]).into(),
            Breaker::consecutive_failures(3).open("30s").into(),
        ],
    ))
    .start()
    .await;
    assert_eq!(get(&gw, "/goods/1").await.status(), 200);
    up.kill();
    // Past the TTL with the upstream dead: the stale copy, not a 502. The
    // failed refills trip the breaker after three; from then on the breaker
    // refuses the refill and the stale copy answers that too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..6 {
        let r = get(&gw, "/goods/1").await;
        assert_eq!(r.status(), 200, "stale-if-error");
        assert_eq!(cache_status(&r), "breakwater; hit; detail=stale-if-error");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["path"], "/goods/1");
    }
    let breakers = gw.admin_json("/breakers").await;
    assert_eq!(breakers["breakers"][0]["state"], "open", "{breakers:#}");
    // An item never cached has nothing to fall back on.
    assert_eq!(get(&gw, "/goods/2").await.status(), 503);
    // Access control is never papered over with a stale copy.
    let denied = client()
        .get(gw.url("/goods/1"))
        .header("x-user-id", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let metrics = gw.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "breakwater_cache_requests_total{result=\"stale\",rule=\"goods.hotkey\"}"
        )
        .is_some_and(|n| n >= 6.0),
        "{metrics}"
    );
}

fn always_cached(up: &MockUpstream) -> Config {
    cached_route(up, always_on("goods_id", Cache::new().ttl("30s")), vec![])
}

async fn get_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_never_fills_the_cache_for_a_get() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&always_cached(&up)).start().await;
    let head = client().head(gw.url("/goods/1")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    // The GET after it gets the full answer, from upstream.
    let r = get(&gw, "/goods/1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["method"].as_str(), body["path"].as_str()),
        (Some("GET"), Some("/goods/1"))
    );
    assert_eq!(cache_status(&head), "breakwater; fwd=miss; detail=head");
    // The GET answer is stored: it answers GETs in full and HEADs without a body.
    let r = get(&gw, "/goods/1").await;
    assert!(
        cache_status(&r).starts_with("breakwater; hit"),
        "{}",
        cache_status(&r)
    );
    let full = r.bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&full).unwrap();
    assert_eq!(body["method"], "GET");
    let head = client().head(gw.url("/goods/1")).send().await.unwrap();
    assert!(
        cache_status(&head).starts_with("breakwater; hit"),
        "{}",
        cache_status(&head)
    );
    assert_eq!(
        head.headers()["content-length"],
        full.len().to_string().as_str(),
        "a HEAD says the length of the GET's body"
    );
    assert!(head.bytes().await.unwrap().is_empty());
    let methods: Vec<String> = up
        .received()
        .into_iter()
        .filter(|r| r.path == "/goods/1")
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_variant_is_never_served_for_another_query() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&always_cached(&up)).start().await;
    let query_of = |body: &Value| body["query"].as_str().map(str::to_string);
    let r = get(&gw, "/goods/2?x=evil").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    // The bare path is another resource: it goes upstream and gets its own.
    let r = get(&gw, "/goods/2").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    assert_eq!(query_of(&r.json().await.unwrap()), None);
    // Each is then served its own from the cache.
    for (path, query) in [("/goods/2?x=evil", Some("x=evil")), ("/goods/2", None)] {
        let r = get(&gw, path).await;
        assert!(
            cache_status(&r).starts_with("breakwater; hit"),
            "{path}: {}",
            cache_status(&r)
        );
        assert_eq!(
            query_of(&r.json().await.unwrap()).as_deref(),
            query,
            "{path}"
        );
    }
    // Parameters in another order, or with unreserved characters escaped,
    // are the same resource; another value is not.
    get(&gw, "/goods/2?b=2&a=1").await;
    let r = get(&gw, "/goods/2?a=%31&b=2").await;
    assert!(
        cache_status(&r).starts_with("breakwater; hit"),
        "{}",
        cache_status(&r)
    );
    assert_eq!(
        query_of(&r.json().await.unwrap()).as_deref(),
        Some("b=2&a=1")
    );
    let r = get(&gw, "/goods/2?a=1&b=3").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    assert_eq!(seen(&up, "/goods/2"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstreams_vary_keeps_variants_apart() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&always_cached(&up)).start().await;
    let path = "/goods/3?vary=accept-language";
    let lang_of = |body: &Value| {
        body["headers"]["accept-language"]
            .as_str()
            .map(str::to_string)
    };
    for lang in ["en", "de"] {
        let r = get_with(&gw, path, &[("accept-language", lang)]).await;
        assert_eq!(cache_status(&r), "breakwater; fwd=miss", "{lang}");
        assert_eq!(lang_of(&r.json().await.unwrap()).as_deref(), Some(lang));
    }
    // Both variants are stored, each served to its own requesters.
    for lang in ["en", "de", "en"] {
        let r = get_with(&gw, path, &[("accept-language", lang)]).await;
        assert!(
            cache_status(&r).starts_with("breakwater; hit"),
            "{lang}: {}",
            cache_status(&r)
        );
        assert_eq!(r.headers()["vary"], "accept-language");
        assert_eq!(lang_of(&r.json().await.unwrap()).as_deref(), Some(lang));
    }
    assert_eq!(seen(&up, "/goods/3"), 2);
    // An answer with `Vary: *` is never stored.
    for _ in 0..2 {
        let r = get(&gw, "/goods/4?vary=*").await;
        assert_eq!(r.status(), 200);
        assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    }
    assert_eq!(seen(&up, "/goods/4"), 2);
}

/// A hotkey rule on `ip` that caches every key for 30 s.
fn always_on_ip() -> HotKey {
    always_on("ip", Cache::new().ttl("30s"))
}

/// Cluster `up` (3 s read timeout) and `routes`, no keys section.
fn with_routes(up: &MockUpstream, routes: impl IntoIterator<Item = Route>) -> Config {
    let config = Config::new().cluster("up", Cluster::new([up.addr]).read_timeout_ms(3000));
    routes.into_iter().fold(config, Config::route)
}

async fn get_host(gw: &Gateway, path: &str, host: &str) -> reqwest::Response {
    get_with(gw, path, &[("host", host)]).await
}

fn host_of(body: &Value) -> String {
    body["headers"]["host"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_behind_one_route_never_share_an_answer() {
    let up = MockUpstream::start("a").await;
    let config = with_routes(&up, [Route::new("shop", "up").policy(always_on_ip())]);
    let gw = gateway(&config).start().await;
    // One client (one ip key), one path: only the host differs.
    let r = get_host(&gw, "/", "tenant-a.shop.test").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    let r = get_host(&gw, "/", "tenant-b.shop.test").await;
    assert_eq!(
        cache_status(&r),
        "breakwater; fwd=miss",
        "tenant a's answer"
    );
    assert_eq!(host_of(&r.json().await.unwrap()), "tenant-b.shop.test");
    // Each tenant is then served its own; the host's case does not matter.
    for (host, own) in [
        ("tenant-a.shop.test", "tenant-a.shop.test"),
        ("TENANT-A.shop.test", "tenant-a.shop.test"),
        ("tenant-b.shop.test", "tenant-b.shop.test"),
    ] {
        let r = get_host(&gw, "/", host).await;
        assert!(
            cache_status(&r).starts_with("breakwater; hit"),
            "{host}: {}",
            cache_status(&r)
        );
        assert_eq!(host_of(&r.json().await.unwrap()), own, "{host}");
    }
    assert_eq!(seen(&up, "/"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_that_share_a_named_rule_keep_their_own_answers() {
    let up = MockUpstream::start("a").await;
    let route = |id: &str, host: &str| {
        Route::new(id, "up")
            .host(host)
            .policy(always_on_ip().name("goods-hot"))
    };
    let config = with_routes(&up, [route("shop-a", "a.test"), route("shop-b", "b.test")]);
    let gw = gateway(&config).start().await;
    assert_eq!(
        cache_status(&get_host(&gw, "/goods/1", "a.test").await),
        "breakwater; fwd=miss"
    );
    let r = get_host(&gw, "/goods/1", "b.test").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss", "route a's answer");
    assert_eq!(host_of(&r.json().await.unwrap()), "b.test");
    for host in ["a.test", "b.test"] {
        let r = get_host(&gw, "/goods/1", host).await;
        assert!(cache_status(&r).starts_with("breakwater; hit"), "{host}");
        assert_eq!(host_of(&r.json().await.unwrap()), host);
    }
    assert_eq!(seen(&up, "/goods/1"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_authorized_each_credential_gets_its_own_answer() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&cached_route(
        &up,
        always_on("goods_id", Cache::new().ttl("30s").authorized()),
        vec![],
    ))
    .start()
    .await;
    let auth_of = |body: &Value| {
        body["headers"]["authorization"]
            .as_str()
            .map(str::to_string)
    };
    for token in ["Bearer alice", "Bearer mallory"] {
        let r = get_with(&gw, "/goods/1", &[("authorization", token)]).await;
        assert_eq!(cache_status(&r), "breakwater; fwd=miss", "{token}");
        assert_eq!(auth_of(&r.json().await.unwrap()).as_deref(), Some(token));
    }
    for token in ["Bearer alice", "Bearer mallory", "Bearer alice"] {
        let r = get_with(&gw, "/goods/1", &[("authorization", token)]).await;
        assert!(cache_status(&r).starts_with("breakwater; hit"), "{token}");
        assert_eq!(auth_of(&r.json().await.unwrap()).as_deref(), Some(token));
    }
    // Without a credential: another resource, not anyone's answer.
    let r = get(&gw, "/goods/1").await;
    assert_eq!(cache_status(&r), "breakwater; fwd=miss");
    assert_eq!(auth_of(&r.json().await.unwrap()), None);
    assert_eq!(seen(&up, "/goods/1"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_drops_a_long_keys_answers_by_its_hash() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&cached_route(
        &up,
        HotKey::new("user", 5, "10s")
            .hot_ttl("60s")
            .actions([Action::Cache])
            .cache(Cache::new().ttl("30s")),
        vec![],
    ))
    .start()
    .await;
    // A user id of 300 bytes: its text is cut to 128 in every listing.
    let long = "u".repeat(300);
    let as_long = [("x-user-id", long.as_str())];
    breakwater_tests::eventually(
        Duration::from_secs(10),
        "the long key served from cache once hot",
        || async {
            let r = get_with(&gw, "/goods/1", &as_long).await;
            cache_status(&r)
                .starts_with("breakwater; hit")
                .then_some(())
        },
    )
    .await;
    let hotkeys = gw.admin_json("/hotkeys").await;
    let hot = &hotkeys["rules"][0]["hot"][0];
    let shown = hot["key"].as_str().unwrap();
    assert_eq!(shown.len(), 128, "{hot}");
    assert!(shown.ends_with('…'), "{hot}");
    let hash = hot["hash"].as_str().expect("the hot key's hash is listed");
    assert_eq!(hash.len(), 16, "{hot}");
    let resp = client()
        .delete(gw.admin(&format!("/cache/goods.hotkey/%23{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["by"], "hash", "{body}");
    let r = get_with(&gw, "/goods/1", &as_long).await;
    assert_eq!(
        cache_status(&r),
        "breakwater; fwd=miss",
        "dropped by its hash"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstreams_age_counts_against_its_max_age() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&always_cached(&up)).start().await;
    // 50 of its 60 s spent upstream: fresh here for at most 10 more.
    let path = "/goods/1?cc=max-age=60&age=50";
    assert_eq!(cache_status(&get(&gw, path).await), "breakwater; fwd=miss");
    let r = get(&gw, path).await;
    let status = cache_status(&r);
    let ttl: u64 = status
        .strip_prefix("breakwater; hit; ttl=")
        .unwrap_or_else(|| panic!("a hit: {status}"))
        .parse()
        .unwrap();
    assert!(ttl <= 10, "{status}");
    let ages: Vec<_> = r.headers().get_all("age").iter().collect();
    assert_eq!(ages.len(), 1, "{ages:?}");
    let age: u64 = ages[0].to_str().unwrap().parse().unwrap();
    assert!((50..60).contains(&age), "Age: {age}");
    // As old as its max-age: already stale, never stored.
    let path = "/goods/2?cc=max-age=60&age=60";
    for _ in 0..2 {
        assert_eq!(cache_status(&get(&gw, path).await), "breakwater; fwd=miss");
    }
    assert_eq!(seen(&up, "/goods/2"), 2);
}
