//! Active health checks: an endpoint that fails its probes leaves rotation
//! before users' requests meet it, and comes back after `rise` passes; with
//! HTTP probes against the mock upstream, and gRPC health probes against
//! gRPC's own health service (grpcio-health-checking) in a grpcio server.

use std::net::SocketAddr;
use std::time::Duration;

use breakwater_tests::config::{Cluster, Listener, Protocol, Route};
use breakwater_tests::grpc_core::{call_async, require_grpc_health, GrpcCall, PyGrpcUpstream};
use breakwater_tests::{client, eventually, Config, Gateway, MockUpstream};

use crate::gateway;

/// The `/endpoints` entry of `addr` in `cluster`.
async fn endpoint(gw: &Gateway, cluster: &str, addr: SocketAddr) -> serde_json::Value {
    let all = gw.admin_json("/endpoints").await;
    all["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["cluster"] == cluster)
        .flat_map(|c| c["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no endpoint {addr} in {all}"))
}

async fn up(gw: &Gateway, cluster: &str, addr: SocketAddr) -> bool {
    endpoint(gw, cluster, addr).await["health"]["up"] == true
}

/// Which upstream answered a `GET /x`, or its status when it failed.
async fn who(gw: &Gateway) -> Result<String, u16> {
    let r = client().get(gw.url("/x")).send().await.unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    Ok(r.headers()["x-upstream"].to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_failing_its_http_check_leaves_rotation_before_users_meet_it() {
    let a = MockUpstream::start("a").await;
    let mut b = MockUpstream::start("b").await;
    let config = Config::new()
        .cluster(
            "up",
            Cluster::new([a.addr, b.addr]).overload_off().health_check(
                "{ http: /health, interval: 200ms, timeout: 200ms, rise: 2, fall: 2 }",
            ),
        )
        .route(Route::new("all", "up"));
    let gw = gateway(&config).start().await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(who(&gw).await.expect("both endpoints serve"));
    }
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "{seen:?}"
    );

    b.kill();
    eventually(Duration::from_secs(10), "b to fail its checks", || async {
        (!up(&gw, "up", b.addr).await).then_some(())
    })
    .await;
    // Round robin would send every other request to the dead endpoint;
    // the probes took it out, so no user request meets it.
    for _ in 0..40 {
        assert_eq!(who(&gw).await, Ok("a".to_string()));
    }
    let e = endpoint(&gw, "up", b.addr).await;
    assert_eq!(e["in_rotation"], false, "{e}");
    assert!(
        e["health"]["last"].as_str().unwrap_or_default() != "ok",
        "{e}"
    );
    let metrics = gw.metrics().await;
    let series = format!(
        "breakwater_upstream_endpoint_up{{cluster=\"up\",endpoint=\"{}\"}} 0",
        b.addr
    );
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
    assert!(gw.log().contains("endpoint down"), "{}", gw.log());

    b.revive().await;
    eventually(Duration::from_secs(10), "b back in rotation", || async {
        let mut answered = Vec::new();
        for _ in 0..4 {
            answered.push(who(&gw).await.ok()?);
        }
        answered.contains(&"b".to_string()).then_some(())
    })
    .await;
    let e = endpoint(&gw, "up", b.addr).await;
    assert_eq!(e["health"]["ups"], 1, "{e}");
    assert!(gw.log().contains("endpoint up"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_down_routes_to_all_rather_than_refuse_everything() {
    let a = MockUpstream::start("a").await;
    // A health path that always fails while the endpoint serves users:
    // the probes are wrong, and routing to all keeps the service up.
    let config = Config::new()
        .cluster(
            "up",
            Cluster::new([a.addr]).overload_off().health_check(
                "{ http: { path: /status/503 }, interval: 300ms, timeout: 300ms, fall: 1 }",
            ),
        )
        .route(Route::new("all", "up"));
    let gw = gateway(&config).start().await;
    eventually(Duration::from_secs(10), "a to fail its checks", || async {
        (!up(&gw, "up", a.addr).await).then_some(())
    })
    .await;
    assert_eq!(who(&gw).await, Ok("a".to_string()));
    let e = endpoint(&gw, "up", a.addr).await;
    assert_eq!(e["health"]["last"], "status 503", "{e}");
    assert_eq!(e["in_rotation"], true, "panic routing: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_probes_follow_the_servers_own_health_service() {
    require_grpc_health();
    let x = PyGrpcUpstream::start();
    let mut y = PyGrpcUpstream::start();
    let config = Config::new()
        .listener(Listener::h2c())
        .cluster(
            "echo",
            Cluster::new([x.addr, y.addr])
                .protocol(Protocol::Grpc)
                .overload_off()
                .health_check(
                    "{ grpc: test.Echo, interval: 250ms, timeout: 250ms, rise: 1, fall: 2 }",
                ),
        )
        .route(Route::new("echo", "echo").path_prefix("/test.Echo/"));
    let gw = gateway(&config).start().await;
    eventually(Duration::from_secs(10), "both to pass a probe", || async {
        let (ex, ey) = (
            endpoint(&gw, "echo", x.addr).await,
            endpoint(&gw, "echo", y.addr).await,
        );
        (ex["health"]["last"] == "ok" && ey["health"]["last"] == "ok").then_some(())
    })
    .await;

    // The service, not the server: y's server stays up, its test.Echo
    // reports NOT_SERVING through grpcio-health-checking.
    y.set_health("test.Echo", "NOT_SERVING");
    eventually(Duration::from_secs(10), "y out of rotation", || async {
        (!up(&gw, "echo", y.addr).await).then_some(())
    })
    .await;
    assert_eq!(
        endpoint(&gw, "echo", y.addr).await["health"]["last"],
        "NOT_SERVING"
    );
    let before = y.calls();
    let target: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let results = call_async(target, vec![GrpcCall::new("Unary", "hi").parallel(10)]).await;
    assert!(results.iter().all(|r| r.code == "OK"), "{results:?}");
    assert_eq!(
        y.calls(),
        before,
        "no call reached the endpoint out of rotation"
    );

    y.set_health("test.Echo", "SERVING");
    eventually(Duration::from_secs(10), "y back in rotation", || async {
        up(&gw, "echo", y.addr).await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_back_in_rotation_ramps_up_its_share() {
    let a = MockUpstream::start("a").await;
    let mut b = MockUpstream::start("b").await;
    let config = Config::new()
        .cluster(
            "up",
            Cluster::new([a.addr, b.addr])
                .overload_off()
                // `fall: 3`: one slow probe on a loaded machine must not
                // take `a` out while b ramps (b would then take all).
                .health_check(
                    "{ http: /health, interval: 100ms, timeout: 100ms, rise: 1, fall: 3 }",
                )
                .slow_start("30s"),
        )
        .route(Route::new("all", "up"));
    let gw = gateway(&config).start().await;
    b.kill();
    eventually(Duration::from_secs(10), "b out of rotation", || async {
        (!up(&gw, "up", b.addr).await).then_some(())
    })
    .await;
    b.revive().await;
    eventually(Duration::from_secs(10), "b back in rotation", || async {
        up(&gw, "up", b.addr).await.then_some(())
    })
    .await;
    let share = endpoint(&gw, "up", b.addr).await["share"].as_f64().unwrap();
    assert!((0.1..0.3).contains(&share), "b's share {share}");
    // Round robin would give b half; in the first seconds of a 30 s slow
    // start its share is a tenth to a fifth of that, and never nothing.
    let mut to_b = 0;
    for _ in 0..100 {
        if who(&gw).await.expect("served") == "b" {
            to_b += 1;
        }
    }
    assert!((1..35).contains(&to_b), "b took {to_b} of 100");
}
