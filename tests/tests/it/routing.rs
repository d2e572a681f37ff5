//! Routing: host, path (exact, prefix, template), method and headers, first match wins.

use breakwater_tests::{client, MockUpstream};

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
    let body = format!(
        r#"clusters:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
  c: {{ endpoints: ["{c}"] }}
  d: {{ endpoints: ["{d}"] }}
routes:
  - id: canary
    match: {{ path: {{ prefix: /api/ }}, headers: [{{ name: x-canary, value: "1" }}] }}
    cluster: d
  - id: goods-write
    match: {{ path: {{ template: "/api/goods/{{id}}" }}, methods: [POST, PUT] }}
    cluster: c
  - id: goods
    match: {{ path: {{ template: "/api/goods/{{id}}" }} }}
    cluster: b
  - id: shop-host
    match: {{ host: "*.shop.test", path: {{ prefix: / }} }}
    cluster: c
  - id: api
    match: {{ path: {{ prefix: /api/ }} }}
    cluster: a
  - id: health
    match: {{ path: {{ exact: /health }} }}
    cluster: d
"#,
        a = a.addr,
        b = b.addr,
        c = c_up.addr,
        d = d.addr
    );
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
    let body = format!(
        "clusters:\n  both:\n    endpoints: [\"{}\", \"{}\"]\nroutes:\n  - id: all\n    cluster: both\n",
        a.addr, b.addr
    );
    let gw = gateway(&body).start().await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(a.count(), 10);
    assert_eq!(b.count(), 10);
}
