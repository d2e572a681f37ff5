//! Client-retry suppression: duplicate idempotency keys reach the upstream
//! once, and only the same request (route, method, path and query, caller and
//! body) joins another. Bodies the gateway cannot read ahead still reach the
//! upstream intact, over HTTP/1 and h2c.

use std::time::Duration;

use breakwater_tests::config::{
    Cluster, Dedupe, KeySource, Keys, Listener, Protocol, RateLimit, Route,
};
use breakwater_tests::upstream::fnv;
use breakwater_tests::{client, eventually, metric_value, Config, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// How the client and the upstream are spoken to.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Http1,
    /// h2c on the listener and to the upstream; the listener takes HTTP/1 too.
    H2c,
}

fn config(up: &MockUpstream, dedupe: Dedupe) -> Config {
    config_over(up, dedupe, Proto::Http1)
}

fn config_over(up: &MockUpstream, dedupe: Dedupe, proto: Proto) -> Config {
    let mut config = Config::new();
    let mut cluster = Cluster::new([up.addr]);
    if let Proto::H2c = proto {
        config = config.listener(Listener::h2c());
        cluster = cluster.protocol(Protocol::H2c);
    }
    config
        .keys(Keys::new().user(KeySource::header("x-user-id")))
        .cluster("orders", cluster)
        .route(Route::new("pay", "orders").policy(dedupe))
}

/// Joins duplicates (the default, written out).
fn join() -> Dedupe {
    Dedupe::header("idempotency-key").join()
}

fn client_for(proto: Proto) -> reqwest::Client {
    match proto {
        Proto::Http1 => client(),
        Proto::H2c => reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap(),
    }
}

/// What a client got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    joined: bool,
    text: String,
}

impl Answer {
    /// The upstream's echo of the request it saw.
    fn echo(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        joined: resp.headers().contains_key("x-breakwater-joined"),
        text: resp.text().await.unwrap(),
    }
}

/// `user`'s call to `path` with idempotency key `key`.
fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    user: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    c.request(method, url)
        .header("x-user-id", user)
        .header("idempotency-key", key)
}

async fn first_call_upstream(up: &MockUpstream, n: usize) {
    eventually(
        Duration::from_secs(10),
        "the first call upstream",
        || async { (up.count() >= n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_in_flight_join_the_first_call() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, join())).start().await;
    let call = |url: String| {
        tokio::spawn(async move {
            let resp = client()
                .post(url)
                .header("idempotency-key", "order-42")
                .body("pay 10")
                .send()
                .await
                .unwrap();
            let joined = resp.headers().contains_key("x-breakwater-joined");
            (resp.status().as_u16(), joined, resp.text().await.unwrap())
        })
    };
    // The first call reaches the upstream; the others are the client's retries.
    let mut calls = vec![call(gw.url("/slow?ms=800"))];
    first_call_upstream(&up, 1).await;
    calls.extend((0..4).map(|_| call(gw.url("/slow?ms=800"))));
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    assert_eq!(up.count(), 1, "the upstream saw the call once");
    assert!(results.iter().all(|(s, _, _)| *s == 200), "{results:?}");
    assert_eq!(results.iter().filter(|(_, joined, _)| *joined).count(), 4);
    assert!(
        results.iter().all(|(_, _, body)| body == &results[0].2),
        "everyone got the same answer"
    );
    // Later, the same key is a new call.
    let resp = client()
        .post(gw.url("/x"))
        .header("idempotency-key", "order-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.count(), 2);
}

/// The incident: alice's private call is in flight, and another user's call
/// to another path with the same key got alice's answer.
#[tokio::test(flavor = "multi_thread")]
async fn another_callers_request_with_the_same_key_gets_its_own_answer() {
    let up = MockUpstream::start("a").await;
    up.slow_down(Duration::from_millis(1500));
    let gw = gateway(&config(&up, join())).start().await;
    let url = gw.url("/private/alice");
    let alice = tokio::spawn(async move {
        send(call(&client(), reqwest::Method::GET, url, "alice", "k1")).await
    });
    first_call_upstream(&up, 1).await;
    let mallory = send(call(
        &client(),
        reqwest::Method::GET,
        gw.url("/other/mallory"),
        "mallory",
        "k1",
    ))
    .await;
    let alice = alice.await.unwrap();
    assert_eq!((alice.status, mallory.status), (200, 200));
    assert!(!mallory.joined, "{mallory:?}");
    assert_eq!(mallory.echo()["path"], "/other/mallory");
    assert_eq!(mallory.echo()["headers"]["x-user-id"], "mallory");
    assert_eq!(alice.echo()["path"], "/private/alice");
    assert_ne!(alice.text, mallory.text);
    let mut seen: Vec<String> = up.received().into_iter().map(|r| r.path).collect();
    seen.sort();
    assert_eq!(seen, ["/other/mallory", "/private/alice"]);
}

/// Same caller, same path, same key: a different body is a different call;
/// the same body joins. The body is read ahead and still reaches the upstream.
async fn the_body_is_part_of_the_request(proto: Proto) {
    let up = MockUpstream::start("a").await;
    up.slow_down(Duration::from_millis(1500));
    let gw = gateway(&config_over(&up, join(), proto)).start().await;
    let c = client_for(proto);
    let post = |body: &'static str| {
        let req = call(&c, reqwest::Method::POST, gw.url("/pay"), "u1", "k2").body(body);
        tokio::spawn(send(req))
    };
    let first = post("pay 10");
    first_call_upstream(&up, 1).await;
    let (retry, other) = (post("pay 10"), post("pay 1000"));
    let (first, retry, other) = (
        first.await.unwrap(),
        retry.await.unwrap(),
        other.await.unwrap(),
    );
    assert!(!other.joined, "{other:?}");
    assert_eq!(other.echo()["body_fnv"], fnv(b"pay 1000").to_string());
    assert_eq!(first.echo()["body_fnv"], fnv(b"pay 10").to_string());
    assert!(retry.joined, "the same request joins: {retry:?}");
    assert_eq!(retry.text, first.text);
    assert_eq!(up.count(), 2, "{:?}", up.received());
    if let Proto::H2c = proto {
        assert_eq!(first.echo()["version"], "HTTP/2.0");
    }
    // A request without a body (HTTP/1 without a length, HTTP/2 HEADERS
    // ending the stream) is deduplicated as one with an empty body.
    let get = send(call(&c, reqwest::Method::GET, gw.url("/pay"), "u1", "k3")).await;
    assert_eq!(get.status, 200);
    let metrics = gw.metrics().await;
    let count = |result: &str| {
        let name = format!(
            "breakwater_dedupe_requests_total{{policy=\"pay.dedupe\",result=\"{result}\"}}"
        );
        metric_value(&metrics, &name)
    };
    assert_eq!(count("unhashable"), Some(0.0), "{metrics}");
    assert_eq!(count("joined"), Some(1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_is_part_of_the_request_over_http1() {
    the_body_is_part_of_the_request(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_is_part_of_the_request_over_h2c() {
    the_body_is_part_of_the_request(Proto::H2c).await;
}

/// Bodies of `len` bytes, distinct per `seed`.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// A body of unknown length: chunked over HTTP/1, DATA frames without
/// `content-length` over HTTP/2.
fn streamed(data: Vec<u8>, chunk: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Every body the gateway cannot read ahead (over 64 KiB, or of unknown
/// length, or over HTTP/2 one that does not end soon, whose first part the
/// gateway read) goes upstream as its own call, byte for byte, even with
/// the key of a call in flight; the largest body it reads ahead (64 KiB) too.
async fn bodies_not_read_ahead_reach_the_upstream_intact(proto: Proto) {
    let up = MockUpstream::start("a").await;
    up.slow_down(Duration::from_millis(1500));
    let gw = gateway(&config_over(&up, join(), proto)).start().await;
    let mut clients = vec![("h1", client_for(Proto::Http1))];
    if let Proto::H2c = proto {
        clients.push(("h2", client_for(Proto::H2c)));
    }
    let mut calls = Vec::new();
    let mut unread = 0;
    for (i, (name, c)) in clients.iter().enumerate() {
        let key = format!("k-{name}");
        let seed = 10 * i as u8;
        let post = |data: Vec<u8>, as_stream: bool| {
            let req = call(c, reqwest::Method::POST, gw.url("/upload"), "u1", &key);
            let (len, hash) = (data.len(), fnv(&data));
            let req = if as_stream {
                req.body(streamed(data, 4096))
            } else {
                req.body(data)
            };
            (
                format!("{name} {len} B stream={as_stream}"),
                len,
                hash,
                tokio::spawn(send(req)),
            )
        };
        // All at once, with one key: today's gateway let the first lead and
        // handed its answer to the rest.
        calls.push(post(body(200 << 10, seed), false));
        calls.push(post(body(200 << 10, seed + 1), false));
        calls.push(post(body((64 << 10) + 1, seed + 2), false));
        calls.push(post(body(100 << 10, seed + 3), true));
        calls.push(post(body(20, seed + 4), true));
        calls.push(post(body(64 << 10, seed + 5), false)); // read ahead: its own call
                                                           // Over HTTP/2 a short body of unknown length that ends at once (as a
                                                           // unary gRPC call's) is read ahead too.
        unread += if *name == "h2" { 4 } else { 5 };
    }
    let n = calls.len();
    for (what, len, hash, task) in calls {
        let a = task.await.unwrap();
        assert_eq!(a.status, 200, "{what}: {a:?}");
        assert!(!a.joined, "{what}: got another request's answer");
        let echo = a.echo();
        assert_eq!(echo["body_len"], len, "{what}");
        assert_eq!(echo["body_fnv"], hash.to_string(), "{what}");
    }
    assert_eq!(up.count(), n, "each went upstream");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "breakwater_dedupe_requests_total{policy=\"pay.dedupe\",result=\"unhashable\"}"
        ),
        Some(unread as f64),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_not_read_ahead_reach_the_upstream_intact_over_http1() {
    bodies_not_read_ahead_reach_the_upstream_intact(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_not_read_ahead_reach_the_upstream_intact_over_h2c() {
    bodies_not_read_ahead_reach_the_upstream_intact(Proto::H2c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_mode_answers_409_to_duplicates_and_to_a_reused_key() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, Dedupe::header("idempotency-key").reject()))
        .start()
        .await;
    let url = gw.url("/slow?ms=1500");
    let first = tokio::spawn(async move {
        send(call(&client(), reqwest::Method::POST, url, "u1", "k").body("pay 10")).await
    });
    first_call_upstream(&up, 1).await;
    let dup = send(
        call(
            &client(),
            reqwest::Method::POST,
            gw.url("/slow?ms=1500"),
            "u1",
            "k",
        )
        .body("pay 10"),
    )
    .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.echo()["error"], "duplicate", "{dup:?}");
    let reused = send(
        call(
            &client(),
            reqwest::Method::POST,
            gw.url("/slow?ms=1500"),
            "u1",
            "k",
        )
        .body("pay 99"),
    )
    .await;
    assert_eq!(reused.status, 409);
    assert_eq!(
        reused.echo()["error"],
        "idempotency_key_reused",
        "{reused:?}"
    );
    assert!(
        reused.echo()["reason"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{reused:?}"
    );
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(up.count(), 1);
}

/// The body is read ahead only when the chain reaches `dedupe`: a limiter
/// listed before it refuses a request whose body never comes at once,
/// instead of waiting for the body first.
#[tokio::test(flavor = "multi_thread")]
async fn limiters_before_dedupe_decide_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = MockUpstream::start("a").await;
    let gw = gateway(
        &Config::new()
            .cluster("orders", Cluster::new([up.addr]))
            .route(
                Route::new("pay", "orders")
                    .policy(RateLimit::per_ip(1, "1m"))
                    .policy(Dedupe::header("idempotency-key")),
            ),
    )
    .start()
    .await;
    let ok = client()
        .post(gw.url("/pay"))
        .header("idempotency-key", "k0")
        .body("pay 1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Over the limit, and the 100 bytes it announces never come.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(
        b"POST /pay HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k1\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await;
    assert!(read.is_ok(), "refused at once, not after the body");
    assert_eq!(&head, b"HTTP/1.1 429");
}
