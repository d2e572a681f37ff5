//! Routing: host, path (exact, prefix, template), method and headers, first match wins.

use breakwater_tests::config::{Cluster, Route};
use breakwater_tests::{client, Config, MockUpstream};

use crate::gateway;

async fn upstream_of(req: reqwest::RequestBuilder) -> String {
    let resp = req.send().await.unwrap();
    if resp.status() == 404 {
        return "404".into();
    }
    resp.headers()["x-upstream"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_match_in_declared_order() {
    let (a, b, c_up, d) = (
        MockUpstream::start("a").await,
        MockUpstream::start("b").await,
        MockUpstream::start("c").await,
        MockUpstream::start("d").await,
    );
    let body = Config::new()
        .cluster("a", Cluster::new([a.addr]))
        .cluster("b", Cluster::new([b.addr]))
        .cluster("c", Cluster::new([c_up.addr]))
        .cluster("d", Cluster::new([d.addr]))
        .route(
            Route::new("canary", "d")
                .path_prefix("/api/")
                .header("x-canary", "1"),
        )
        .route(
            Route::new("goods-write", "c")
                .path_template("/api/goods/{id}")
                .methods(["POST", "PUT"]),
        )
        .route(Route::new("goods", "b").path_template("/api/goods/{id}"))
        .route(
            Route::new("shop-host", "c")
                .host("*.shop.test")
                .path_prefix("/"),
        )
        .route(Route::new("api", "a").path_prefix("/api/"))
        .route(Route::new("health", "d").path_exact("/health"));
    let gw = gateway(&body).start().await;
    let c = client();
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (c.get(gw.url("/api/goods/1")), "b"),
        (c.post(gw.url("/api/goods/1")), "c"),
        (c.get(gw.url("/api/goods/1")).header("x-canary", "1"), "d"),
        (c.get(gw.url("/api/goods/1")).header("x-canary", "0"), "b"),
        (c.get(gw.url("/api/goods/1/extra")), "a"),
        (c.get(gw.url("/api/users")), "a"),
        (c.get(gw.url("/x")).header("host", "www.shop.test"), "c"),
        (c.get(gw.url("/x")).header("host", "shop.test"), "404"),
        (c.get(gw.url("/health")), "d"),
        (c.get(gw.url("/health/deep")), "404"),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        assert_eq!(upstream_of(req).await, want, "case {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_over_endpoints() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let body = Config::new()
        .cluster("both", Cluster::new([a.addr, b.addr]))
        .route(Route::new("all", "both"));
    let gw = gateway(&body).start().await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(a.count(), 10);
    assert_eq!(b.count(), 10);
}
