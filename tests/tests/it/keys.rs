//! Request keys: client IP with X-Forwarded-For trust, user and custom keys.

use breakwater_tests::config::{Cluster, Deny, KeySource, Keys, RateLimit, Route};
use breakwater_tests::{client, eventually, Config, MockUpstream};
use serde_json::Value;
use std::time::Duration;

use crate::gateway;

fn config(up: &MockUpstream, trusted: &[&str], denied_ip: &str) -> Config {
    Config::new()
        .keys(
            Keys::new()
                .trusted_proxies(trusted)
                .user(KeySource::header("x-user-id"))
                .custom("goods_id", KeySource::path_capture("id"))
                .custom("sku", KeySource::query("sku"))
                .custom("tenant", KeySource::cookie("tenant")),
        )
        .cluster("up", Cluster::new([up.addr]))
        .route(
            Route::new("goods", "up")
                .path_template("/goods/{id}")
                .policy(Deny::new().ips([denied_ip])),
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_forwarded_for_from_untrusted_peer_is_ignored() {
    let up = MockUpstream::start("a").await;
    // The test client (127.0.0.1) is not trusted, and is denied.
    let gw = gateway(&config(&up, &["10.0.0.0/8"], "127.0.0.1"))
        .start()
        .await;
    let resp = client()
        .get(gw.url("/goods/1"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        403,
        "XFF from an untrusted peer must not change the client IP"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_peer_forwarded_for_uses_rightmost_untrusted_hop() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, &["127.0.0.1/32", "10.0.0.0/8"], "203.0.113.5"))
        .start()
        .await;
    let c = client();
    // The real client 203.0.113.5 reached us through proxy 10.0.0.2; it
    // prepended a fake hop to look like someone else.
    let resp = c
        .get(gw.url("/goods/1"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A different real client passes.
    let resp = c
        .get(gw.url("/goods/1"))
        .header("x-forwarded-for", "203.0.113.5, 198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_endpoint_and_custom_keys_are_extracted() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, &[], "192.0.2.1")).start().await;
    let resp = client()
        .get(gw.url("/goods/123?sku=red%2D1"))
        .header("x-user-id", "alice")
        .header("cookie", "a=b; tenant=acme")
        .header("x-request-id", "keys-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line: Value = eventually(Duration::from_secs(5), "the access log line", || async {
        gw.access_log()
            .into_iter()
            .find(|l| l["request_id"] == "keys-test-1")
    })
    .await;
    assert_eq!(line["user"], "alice");
    assert_eq!(line["endpoint"], "goods");
    assert_eq!(line["ip"], "127.0.0.1");
    assert_eq!(line["keys"], "goods_id=123,sku=red-1,tenant=acme");
    assert_eq!(line["route"], "goods");
    assert_eq!(line["status"], 200);
    assert_eq!(line["decision"], "proxied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_mint_endpoint_keys_with_a_grpc_content_type() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(
        &Config::new().cluster("up", Cluster::new([up.addr])).route(
            Route::new("goods", "up")
                .path_prefix("/goods/")
                .policy(RateLimit::new("endpoint", 2, "1m")),
        ),
    )
    .start()
    .await;
    let c = client();
    let mut statuses = Vec::new();
    // Each call names another "method": the endpoint is still the route.
    for i in 0..4 {
        let resp = c
            .post(gw.url(&format!("/goods/{i}")))
            .header("content-type", "application/grpc")
            .body(vec![0u8; 5])
            .send()
            .await
            .unwrap();
        statuses.push(
            resp.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string()),
        );
    }
    assert_eq!(statuses[0], None, "passed to the upstream");
    assert_eq!(statuses[1], None, "passed to the upstream");
    assert_eq!(statuses[2].as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    assert_eq!(statuses[3].as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    assert_eq!(up.count(), 2);
    let line: Value = eventually(Duration::from_secs(5), "an access log line", || async {
        gw.access_log().into_iter().next()
    })
    .await;
    assert_eq!(line["endpoint"], "goods");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_proto_is_the_listeners_unless_a_trusted_proxy_says_otherwise() {
    let up = MockUpstream::start("a").await;
    let proto = |gw: &breakwater_tests::Gateway, sent: Option<&'static str>| {
        let url = gw.url("/goods/1");
        async move {
            let mut req = client().get(url);
            if let Some(p) = sent {
                req = req.header("x-forwarded-proto", p);
            }
            let echo: Value = req.send().await.unwrap().json().await.unwrap();
            echo["headers"]["x-forwarded-proto"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // The test client is not trusted: it cannot claim https.
    let gw = gateway(&config(&up, &["10.0.0.0/8"], "192.0.2.1"))
        .start()
        .await;
    assert_eq!(proto(&gw, Some("https")).await, "http");
    assert_eq!(proto(&gw, None).await, "http");
    drop(gw);
    // A trusted proxy's word is kept, if it is http or https.
    let gw = gateway(&config(&up, &["127.0.0.1/32"], "192.0.2.1"))
        .start()
        .await;
    assert_eq!(proto(&gw, Some("https")).await, "https");
    assert_eq!(proto(&gw, Some("gopher")).await, "http");
    assert_eq!(proto(&gw, None).await, "http");
}

/// IPv6 clients hold a whole /64 each: rotating addresses inside it must
/// not dodge a per-IP limit. The clients arrive through a trusted proxy
/// (the test client), which names them in `X-Forwarded-For`.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_are_limited_per_network_not_per_address() {
    let up = MockUpstream::start("a").await;
    let config = |prefix: Option<u32>| {
        let mut keys = Keys::new().trusted_proxies(["127.0.0.1/32"]);
        if let Some(bits) = prefix {
            keys = keys.ipv6_prefix(bits);
        }
        Config::new()
            .keys(keys)
            .cluster("up", Cluster::new([up.addr]))
            .route(
                Route::new("api", "up")
                    .policy(RateLimit::per_ip(2, "1m"))
                    .policy(Deny::new().ips(["2001:db8:dead:1::66"])),
            )
    };
    let c = client();
    let from = |gw: &breakwater_tests::Gateway, ip: &str| {
        c.get(gw.url("/x"))
            .header("x-forwarded-for", ip.to_string())
            .send()
    };
    let gw = gateway(&config(None)).start().await;
    // Three addresses of one /64: the third is over the limit of 2.
    assert_eq!(from(&gw, "2001:db8:1:2::1").await.unwrap().status(), 200);
    assert_eq!(from(&gw, "2001:db8:1:2::2").await.unwrap().status(), 200);
    assert_eq!(
        from(&gw, "2001:db8:1:2:ffff::3").await.unwrap().status(),
        429
    );
    // Another /64 is another client.
    assert_eq!(from(&gw, "2001:db8:1:3::1").await.unwrap().status(), 200);
    // Deny lists still name single addresses: a neighbour is not denied.
    assert_eq!(
        from(&gw, "2001:db8:dead:1::66").await.unwrap().status(),
        403
    );
    assert_eq!(
        from(&gw, "2001:db8:dead:1::67").await.unwrap().status(),
        200
    );
    // The access log has the client's own address.
    let line: Value = eventually(Duration::from_secs(5), "an access log line", || async {
        gw.access_log()
            .into_iter()
            .find(|l| l["ip"] == "2001:db8:1:2:ffff::3")
    })
    .await;
    assert_eq!(line["status"], 429);
    drop(gw);
    // `ipv6_prefix: 128` counts every address on its own.
    let gw = gateway(&config(Some(128))).start().await;
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"] {
        assert_eq!(from(&gw, ip).await.unwrap().status(), 200, "{ip}");
    }
}
