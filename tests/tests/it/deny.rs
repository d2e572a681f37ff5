//! The `deny` policy through the real gateway.

use breakwater_tests::config::{Cluster, Deny, KeySource, Keys, Route};
use breakwater_tests::{client, Config, MockUpstream};
use serde_json::Value;

use crate::gateway;

#[tokio::test(flavor = "multi_thread")]
async fn denied_users_and_ranges_get_403_naming_the_policy_and_never_reach_upstream() {
    let up = MockUpstream::start("a").await;
    let body = Config::new()
        .keys(
            Keys::new()
                .trusted_proxies(["127.0.0.1"])
                .user(KeySource::cookie("uid")),
        )
        .cluster("up", Cluster::new([up.addr]))
        .route(
            Route::new("shop", "up").policy(
                Deny::new()
                    .name("blocklist")
                    .ips(["198.51.100.0/24"])
                    .users(["mallory"]),
            ),
        );
    let gw = gateway(&body).start().await;
    let c = client();

    let resp = c
        .get(gw.url("/a"))
        .header("cookie", "uid=mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-breakwater-policy"], "blocklist");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "denied");
    assert_eq!(v["policy"], "blocklist");
    assert_eq!(v["reason"], "user is denied");

    let resp = c
        .get(gw.url("/a"))
        .header("x-forwarded-for", "198.51.100.77")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["reason"], "client address is denied");
    assert_eq!(up.count(), 0, "denied requests never reach the upstream");

    let resp = c
        .get(gw.url("/a"))
        .header("cookie", "uid=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_callers_get_a_trailers_only_permission_denied() {
    let up = MockUpstream::start("a").await;
    let body = Config::new()
        .cluster("up", Cluster::new([up.addr]))
        .route(Route::new("rpc", "up").policy(Deny::new().ips(["127.0.0.1"])));
    let gw = gateway(&body).start().await;
    let resp = client()
        .post(gw.url("/pkg.Svc/Method"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "7");
    assert!(resp.headers()["grpc-message"]
        .to_str()
        .unwrap()
        .contains("rpc.deny"));
    assert_eq!(up.count(), 0);
}
