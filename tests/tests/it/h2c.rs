//! HTTP/2 with prior knowledge (h2c), downstream and upstream, beside
//! HTTP/1.1 on the same listener, and gRPC-shaped refusals over it.

use breakwater_tests::config::{Cluster, Listener, Protocol, RateLimit, Route};
use breakwater_tests::{client, Config, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// h2c both ways, route `all` finished by `route`.
fn h2c_config(up: &MockUpstream, route: impl FnOnce(Route) -> Route) -> Config {
    Config::new()
        .listener(Listener::h2c())
        .cluster("up", Cluster::new([up.addr]).protocol(Protocol::H2c))
        .route(route(Route::new("all", "up")))
}

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_and_http1_share_a_listener_and_the_upstream_speaks_h2c() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&h2c_config(&up, |r| r)).start().await;
    let h2 = h2_client();
    // Concurrent HTTP/2 requests, with a 1 MiB body each way.
    let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (h2, url, body) = (h2.clone(), gw.url("/upload"), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = h2.post(url).body(body).send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }));
    }
    for t in tasks {
        let echo = t.await.unwrap();
        assert_eq!(echo["body_len"], 1 << 20);
        assert_eq!(
            echo["version"], "HTTP/2.0",
            "the upstream was spoken to in h2c"
        );
    }
    let r = h2
        .get(gw.url("/download?bytes=3000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 3_000_000);
    // HTTP/1.1 on the same port.
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");
    // Upstream HTTP/2 connections are reused: more calls open none.
    let opened = up.connections();
    for _ in 0..20 {
        assert_eq!(h2.get(gw.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(up.connections(), opened, "calls reuse the h2c connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_refusals_are_trailers_only_with_pushback() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&h2c_config(&up, |r| r.policy(RateLimit::per_ip(2, "1m"))))
        .start()
        .await;
    let h2 = h2_client();
    let call = || {
        h2.post(gw.url("/shop.Goods/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
    };
    for _ in 0..2 {
        assert_eq!(call().await.unwrap().status(), 200);
    }
    let r = call().await.unwrap();
    assert_eq!(r.status(), 200, "gRPC refusals are HTTP 200");
    let h = r.headers();
    assert_eq!(h["grpc-status"], "8", "RESOURCE_EXHAUSTED");
    assert!(h["grpc-message"]
        .to_str()
        .unwrap()
        .contains("all.rate_limit"));
    let pushback: i64 = h["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0, "{pushback}");
    assert_eq!(up.count(), 2, "the refused call never reached the upstream");
    // A gRPC call's endpoint key is its route, named by the config.
    let log = gw.access_log();
    assert!(
        log.iter()
            .any(|l| l["endpoint"] == "all" && l["path"] == "/shop.Goods/Get"),
        "{log:?}"
    );
}

/// The gateway's own answers to HEAD over HTTP/2 have no body, only its
/// length: HEADERS with END_STREAM (a DATA frame on a HEAD is a protocol
/// error to nghttp2 and others).
#[tokio::test(flavor = "multi_thread")]
async fn answers_to_head_over_http2_carry_no_body() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&h2c_config(&up, |r| r.policy(RateLimit::per_ip(1, "1m"))))
        .start()
        .await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let mut head = |path: &str| {
        let req = http::Request::head(format!("http://127.0.0.1:{}{path}", gw.port))
            .body(())
            .unwrap();
        h2.send_request(req, true).unwrap().0
    };
    // The first passes; the second is the gateway's own 429.
    let ok = head("/x").await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = head("/x").await.unwrap();
    assert_eq!(refused.status(), 429);
    let length: usize = refused.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 0, "the length of the JSON a GET would get");
    assert!(refused.body().is_end_stream(), "no DATA frame");
}
