//! Retry discipline: none by default, only idempotent requests, only what the
//! upstream provably did not process, and never past the budget.

use breakwater_tests::config::{Cluster, Retry, Route};
use breakwater_tests::{client, ClosedPort, Config, Gateway, MockUpstream};

use crate::gateway;

/// Cluster `orders`: a dead endpoint, then `good`; route `api` to it.
fn config(
    dead: &ClosedPort,
    good: &MockUpstream,
    retry: Option<Retry>,
    cluster: impl FnOnce(Cluster) -> Cluster,
) -> Config {
    let mut route = Route::new("api", "orders");
    if let Some(retry) = retry {
        route = route.retry(retry);
    }
    Config::new()
        .cluster("orders", cluster(Cluster::new([dead.addr(), good.addr])))
        .route(route)
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    breakwater_tests::metric_value(
        &gw.metrics().await,
        &format!("{name}{{cluster=\"orders\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_retries_unless_the_route_asks() {
    let good = MockUpstream::start("good").await;
    let dead = ClosedPort::new();
    let gw = gateway(&config(&dead, &good, None, |c| c)).start().await;
    let mut failed = 0;
    for _ in 0..10 {
        if client().get(gw.url("/x")).send().await.unwrap().status() == 502 {
            failed += 1;
        }
    }
    assert_eq!(failed, 5, "every request sent to the dead endpoint fails");
    assert_eq!(metric(&gw, "breakwater_upstream_retries_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_gets_are_retried_on_the_other_endpoint_posts_never() {
    let good = MockUpstream::start("good").await;
    let dead = ClosedPort::new();
    let gw = gateway(&config(
        &dead,
        &good,
        Some(Retry::attempts(1).backoff("1ms", "5ms")),
        |c| c,
    ))
    .start()
    .await;
    for _ in 0..10 {
        assert_eq!(
            client().get(gw.url("/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(good.count(), 10);
    // Round-robin moves on at each pick, retries included, so between half
    // and all of the first tries met the dead endpoint.
    let retries = metric(&gw, "breakwater_upstream_retries_total").await;
    assert!((5.0..=10.0).contains(&retries), "{retries}");
    let mut failed = 0;
    for _ in 0..10 {
        if client()
            .post(gw.url("/x"))
            .body("order")
            .send()
            .await
            .unwrap()
            .status()
            == 502
        {
            failed += 1;
        }
    }
    assert_eq!(failed, 5, "a POST is never retried");
    assert_eq!(
        metric(&gw, "breakwater_upstream_retries_total").await,
        retries
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_never_exceed_the_budget() {
    let good = MockUpstream::start("good").await;
    let dead = ClosedPort::new();
    let gw = gateway(&config(
        &dead,
        &good,
        Some(Retry::attempts(2).backoff("1ms", "2ms")),
        |c| c.retry_budget(10.0, 0),
    ))
    .start()
    .await;
    let requests = 100;
    for _ in 0..requests {
        client().get(gw.url("/x")).send().await.unwrap();
    }
    let retries = metric(&gw, "breakwater_upstream_retries_total").await;
    let exhausted = metric(&gw, "breakwater_retry_budget_exhausted_total").await;
    assert!(
        retries <= 10.0 + 1.0,
        "{retries} retries for {requests} requests at 10%"
    );
    assert!(retries >= 5.0, "the budget does allow some: {retries}");
    assert!(exhausted > 0.0);
    // The upstream sees first tries plus budgeted retries, nothing more.
    assert!(
        good.count() as f64 <= requests as f64 / 2.0 + retries + 1.0,
        "{}",
        good.count()
    );
    assert_eq!(
        metric(&gw, "breakwater_upstream_attempts_total").await,
        requests as f64 + retries
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opted_in_statuses_are_retried_elsewhere() {
    let bad = MockUpstream::start("bad").await;
    let good = MockUpstream::start("good").await;
    bad.fail_with(502);
    let body = Config::new()
        .cluster("orders", Cluster::new([bad.addr, good.addr]))
        .route(
            Route::new("api", "orders")
                .retry(Retry::attempts(1).backoff("1ms", "2ms").on_statuses([502])),
        );
    let gw = gateway(&body).start().await;
    for _ in 0..10 {
        assert_eq!(
            client().get(gw.url("/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(good.count(), 10);
    let retried = metric(&gw, "breakwater_upstream_retries_total").await;
    assert_eq!(
        retried as usize,
        bad.count(),
        "every 502 was retried, each once"
    );
    // A POST still gets the 502: never retried.
    let mut got_502 = false;
    for _ in 0..4 {
        got_502 |= client().post(gw.url("/x")).send().await.unwrap().status() == 502;
    }
    assert!(got_502);
}
