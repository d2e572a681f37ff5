//! Deadlines: the caller's deadline bounds the upstream call, and what is
//! left of it is forwarded so the provider can drop abandoned work.

use std::time::{Duration, Instant};

use breakwater_tests::config::{Breaker, Cluster, Concurrency, Route};
use breakwater_tests::{client, Config, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// Route `api` reading the caller's deadline from `x-timeout-ms`, as
/// `route` finishes it.
fn config(up: &MockUpstream, route: impl FnOnce(Route) -> Route) -> Config {
    Config::new()
        .cluster("orders", Cluster::new([up.addr]).read_timeout_ms(10000))
        .route(route(
            Route::new("api", "orders").deadline_header("x-timeout-ms"),
        ))
}

#[tokio::test(flavor = "multi_thread")]
async fn remaining_deadline_is_forwarded_decreased() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, |r| r)).start().await;
    let echo: Value = client()
        .get(gw.url("/echo"))
        .header("x-timeout-ms", "2000")
        .header("grpc-timeout", "3S")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let forwarded: u64 = echo["headers"]["x-timeout-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(forwarded <= 2000 && forwarded > 1000, "{forwarded}");
    let grpc = echo["headers"]["grpc-timeout"].as_str().unwrap();
    let ms: u64 = grpc.trim_end_matches('m').parse().unwrap();
    assert!(
        grpc.ends_with('m') && ms <= 2000,
        "the smaller deadline wins: {grpc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_deadline_never_reaches_the_upstream() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, |r| r)).start().await;
    let resp = client()
        .get(gw.url("/x"))
        .header("x-timeout-ms", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "deadline_exceeded");
    let resp = client()
        .post(gw.url("/pkg.Svc/M"))
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "0m")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["grpc-status"], "4");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_timeout_is_the_smaller_of_caller_and_route() {
    let up = MockUpstream::start("a").await;
    // Route total 300 ms, caller allows 10 s.
    let gw = gateway(&config(&up, |r| r.total_timeout("300ms")))
        .start()
        .await;
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/slow?ms=3000"))
        .header("x-timeout-ms", "10000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // Route allows 10 s, caller only 300 ms.
    let gw = gateway(&config(&up, |r| r.total_timeout("10s")))
        .start()
        .await;
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/slow?ms=3000"))
        .header("x-timeout-ms", "300")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

/// An upstream that sends its headers, then one byte just inside the read
/// timeout, for ever: the route's total deadline still ends the request,
/// and frees its concurrency slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_upstream_is_cut_at_the_deadline_and_frees_its_slot() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(
        &Config::new()
            .cluster("orders", Cluster::new([up.addr]).read_timeout_ms(400))
            .route(
                Route::new("api", "orders")
                    .total_timeout("1s")
                    .policy(Concurrency::max(1)),
            ),
    )
    .start()
    .await;
    let c = client();
    let started = Instant::now();
    // 100 bytes, one every 250 ms: 25 s if nothing stops it.
    let resp = c
        .get(gw.url("/trickle?every_ms=250&bytes=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the headers came in time");
    let body = resp.bytes().await;
    assert!(body.is_err(), "the body was cut short: {body:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "cut near the 1 s deadline (at most one read timeout late), not after 25 s: {took:?}"
    );
    // The slot was released: the next request is admitted.
    let resp = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// A caller's own short deadline is not the upstream's failure: it is
/// answered `504 deadline_exceeded` and never trips a breaker (a client
/// sending tiny deadlines would otherwise open it for everyone).
#[tokio::test(flavor = "multi_thread")]
async fn callers_short_deadlines_do_not_trip_the_breaker() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, |r| {
        r.policy(Breaker::consecutive_failures(3).open("1m"))
    }))
    .start()
    .await;
    let c = client();
    for _ in 0..5 {
        let resp = c
            .get(gw.url("/slow?ms=1000"))
            .header("x-timeout-ms", "100")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 504);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "deadline_exceeded", "{v}");
    }
    // The breaker saw nothing wrong with the upstream.
    let resp = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
