//! Load-aware balancing against real upstreams: weights, least request, a
//! consistent hash on a request key, and each endpoint's cap on requests in
//! flight with the cluster's queue behind it. Counts on bounded runs, not
//! timings.

use std::collections::HashMap;
use std::time::Duration;

use breakwater_tests::config::{Cluster, KeySource, Keys, Route};
use breakwater_tests::{client, Config, MockUpstream};

use crate::gateway;

/// `x-upstream` of `GET path` (with `x-user: user`, if any), or the status.
async fn who(url: String, user: Option<&str>) -> Result<String, u16> {
    let mut req = client().get(url);
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    let r = req.send().await.unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    Ok(r.headers()["x-upstream"].to_str().unwrap().to_string())
}

/// Answers per upstream of `workers` concurrent callers making `each`
/// requests to `url`.
async fn spread(url: String, workers: usize, each: usize) -> HashMap<String, usize> {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..each {
                    seen.push(who(url.clone(), None).await.expect("served"));
                }
                seen
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for t in tasks {
        for name in t.await.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_sends_fewer_requests_to_a_slow_endpoint_than_round_robin() {
    let fast = MockUpstream::start("fast").await;
    let slow = MockUpstream::start("slow").await;
    slow.slow_down(Duration::from_millis(150));
    let config = Config::new()
        .cluster("rr", Cluster::new([fast.addr, slow.addr]).overload_off())
        .cluster(
            "lr",
            Cluster::new([fast.addr, slow.addr])
                .overload_off()
                .set("balance", "least_request"),
        )
        .route(Route::new("rr", "rr").path_prefix("/rr"))
        .route(Route::new("lr", "lr").path_prefix("/lr"));
    let gw = gateway(&config).start().await;
    let rr = spread(gw.url("/rr"), 8, 20).await;
    let lr = spread(gw.url("/lr"), 8, 20).await;
    let slow_rr = rr.get("slow").copied().unwrap_or(0);
    let slow_lr = lr.get("slow").copied().unwrap_or(0);
    // Round robin gives the slow endpoint every other request, however
    // slow it is; least request sees its requests pile up and sends
    // elsewhere.
    assert!(slow_rr >= 70, "round robin: {rr:?}");
    assert!(slow_lr <= 40, "least request: {lr:?}");
    assert!(slow_lr * 2 < slow_rr, "rr {rr:?} lr {lr:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_split_the_traffic_in_proportion() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let config = Config::new()
        .cluster(
            "w",
            Cluster::new([a.addr, b.addr])
                .overload_off()
                .weights(&[3, 1]),
        )
        .route(Route::new("all", "w"));
    let gw = gateway(&config).start().await;
    let mut counts = HashMap::new();
    for _ in 0..40 {
        *counts
            .entry(who(gw.url("/x"), None).await.unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consistent_hash_keeps_each_user_on_one_endpoint() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let c = MockUpstream::start("c").await;
    let config = Config::new()
        .keys(Keys::new().user(KeySource::header("x-user")))
        .cluster(
            "h",
            Cluster::new([a.addr, b.addr, c.addr])
                .overload_off()
                .set("balance", "{ hash: user }"),
        )
        .route(Route::new("all", "h"));
    let gw = gateway(&config).start().await;
    let mut home = HashMap::new();
    for round in 0..3 {
        for u in 0..30 {
            let user = format!("user-{u}");
            let got = who(gw.url("/x"), Some(&user)).await.unwrap();
            let first = home.entry(user.clone()).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "round {round}: {user} moved");
        }
    }
    let used: std::collections::HashSet<_> = home.values().collect();
    assert_eq!(
        used.len(),
        3,
        "thirty users spread over all three: {home:?}"
    );
    // A request without the key is still served (placed at random).
    assert!(who(gw.url("/x"), None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_in_flight_a_request_waits_in_the_queue_and_past_the_queue_it_is_refused() {
    let only = MockUpstream::start("only").await;
    only.slow_down(Duration::from_millis(800));
    let config = Config::new()
        .cluster(
            "capped",
            Cluster::new([only.addr])
                .overload_off()
                .set("max_in_flight", "1")
                .set("endpoint_queue", "{ size: 1, timeout: 5s }"),
        )
        .route(Route::new("all", "capped"));
    let gw = gateway(&config).start().await;
    let call = |gw_url: String| tokio::spawn(async move { client().get(gw_url).send().await });
    let first = call(gw.url("/x"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = call(gw.url("/x"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One in flight, one queued: the third finds the queue full.
    let refused = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let body = refused.text().await.unwrap();
    assert!(body.contains("max_in_flight"), "{body}");
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(queued.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        only.count(),
        2,
        "the refused request never reached the upstream"
    );
}
