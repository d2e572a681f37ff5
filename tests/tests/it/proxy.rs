//! Proxying: bodies both ways, headers, and the gateway's own error answers.

use breakwater_tests::config::{Cluster, Route};
use breakwater_tests::upstream::{fnv, pattern_byte};
use breakwater_tests::{client, ClosedPort, Config, MockUpstream};
use serde_json::Value;

use crate::{gateway, single_route};

#[tokio::test(flavor = "multi_thread")]
async fn get_and_post_with_large_bodies_stream_through() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let c = client();

    // 8 MiB upload, content-length framed.
    let body: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let resp = c
        .post(gw.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_fnv"], fnv(&body).to_string());

    // 4 MiB upload, chunked (a stream of unknown length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|i| Ok(vec![i as u8; 64 * 1024])).collect();
    let expected: Vec<u8> = (0..64).flat_map(|i| vec![i as u8; 64 * 1024]).collect();
    let resp = c
        .put(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], expected.len());
    assert_eq!(echo["body_fnv"], fnv(&expected).to_string());

    // 16 MiB download, chunked by the upstream.
    let n = 16 * 1024 * 1024;
    let resp = c
        .get(gw.url(&format!("/download?bytes={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern_byte(i)));
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_pass_both_ways_and_forwarding_headers_are_added() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let resp = client()
        .get(gw.url("/h?q=1"))
        .header("x-custom", "kept")
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-request-id", "req-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream-custom"], "yes");
    assert_eq!(resp.headers()["x-request-id"], "req-abc");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["query"], "q=1");
    let h = &echo["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "req-abc");
    assert!(h["host"].as_str().unwrap().starts_with("127.0.0.1:"));

    // Without a client id (or with one that is not sane), one is generated
    // and sent both ways: 128 bits as 32 lowercase hex digits, like a W3C
    // trace id, and a new one per request.
    let mut ids = std::collections::HashSet::new();
    for sent in [None, Some("two words"), Some(&*"x".repeat(129))] {
        let mut req = client().get(gw.url("/h"));
        if let Some(v) = sent {
            req = req.header("x-request-id", v);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let echo: Value = resp.json().await.unwrap();
        assert_eq!(echo["headers"]["x-request-id"], id);
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
        assert!(id.bytes().any(|b| b != b'0'), "{id}");
        assert!(ids.insert(id), "a repeated id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(up.count(), 20);
    // Sequential requests ride pooled keep-alive connections, not one each.
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 20 requests",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_a_404_json() {
    let up = MockUpstream::start("a").await;
    let body = Config::new()
        .cluster("up", Cluster::new([up.addr]))
        .route(Route::new("only", "up").path_exact("/only"));
    let gw = gateway(&body).start().await;
    let resp = client().get(gw.url("/other")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "no_route");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_upstream_is_a_502_naming_the_cluster() {
    let dead = ClosedPort::new();
    let body = Config::new()
        .cluster("orders", Cluster::new([dead.addr()]))
        .route(Route::new("all", "orders"));
    let gw = gateway(&body).start().await;
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unavailable");
    assert_eq!(v["cluster"], "orders");
    assert_eq!(v["route"], "all");
    assert!(v["reason"].as_str().unwrap().contains("refused"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_a_504_naming_the_cluster() {
    let up = MockUpstream::start("a").await;
    let body = Config::new()
        .cluster("slowpoke", Cluster::new([up.addr]).read_timeout_ms(200))
        .route(Route::new("all", "slowpoke"));
    let gw = gateway(&body).start().await;
    let resp = client().get(gw.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_timeout");
    assert_eq!(v["cluster"], "slowpoke");
}

/// Sends `raw` on a fresh connection and returns everything the gateway
/// answers until it closes (requests say `Connection: close`).
async fn raw_exchange(port: u16, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// Hop-by-hop headers (and the ones `Connection` names) never reach the
/// upstream (Pingora strips them: a regression guard), and a request with
/// both `Content-Length` and `Transfer-Encoding` (the request smuggling
/// shape) is refused with 400, as nginx does, and its connection closed, so
/// what follows its body is never read as a request.
#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_stripped_and_smuggling_shapes_refused() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let answer = raw_exchange(
        gw.port,
        "GET /hop HTTP/1.1\r\nHost: x\r\nConnection: close, x-private\r\nx-private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nx-kept: yes\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let echo: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let h = &echo["headers"];
    assert_eq!(h["x-kept"], "yes");
    for hop in ["x-private", "keep-alive", "proxy-connection", "te"] {
        assert!(h.get(hop).is_none(), "{hop} reached the upstream: {h}");
    }
    assert_ne!(h["connection"], "close, x-private");

    let before = up.count();
    let answer = raw_exchange(
        gw.port,
        "POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(up.count(), before, "neither request reached the upstream");
    assert!(up.received().iter().all(|r| r.path != "/smuggled"));
}
