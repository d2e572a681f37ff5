//! Real gRPC (tonic client and server) through the gateway over h2c: the
//! four call shapes, status-aware limits and breakers, and deadlines.

use std::time::Duration;

use breakwater_tests::config::{Breaker, Cluster, Listener, Protocol, RateLimit, Retry, Route};
use breakwater_tests::grpc::{EchoClient, GrpcUpstream, Msg};
use breakwater_tests::{ClosedPort, Config, Gateway};
use tonic::{Code, Request};

use crate::gateway;

/// h2c downstream, gRPC to the `endpoints` of cluster `echo`, route `echo`
/// (`/test.Echo/`) finished by `route`.
fn grpc_config<A: std::fmt::Display>(
    endpoints: impl IntoIterator<Item = A>,
    route: impl FnOnce(Route) -> Route,
) -> Config {
    Config::new()
        .listener(Listener::h2c())
        .cluster("echo", Cluster::new(endpoints).protocol(Protocol::Grpc))
        .route(route(Route::new("echo", "echo").path_prefix("/test.Echo/")))
}

async fn grpc_gateway(up: &GrpcUpstream, route: impl FnOnce(Route) -> Route) -> Gateway {
    gateway(&grpc_config([up.addr], route)).start().await
}

fn msg(text: &str, n: u32) -> Msg {
    Msg {
        text: text.into(),
        n,
    }
}

async fn client(gw: &Gateway) -> EchoClient {
    EchoClient::connect(([127, 0, 0, 1], gw.port).into()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_and_streaming_calls_pass_through() {
    let up = GrpcUpstream::start().await;
    let gw = grpc_gateway(&up, |r| r).await;
    let mut c = client(&gw).await;
    let r = c.unary(Request::new(msg("hello", 7))).await.unwrap();
    assert_eq!(r.into_inner(), msg("hello", 7));
    let streamed = c.server_stream(Request::new(msg("s", 50))).await.unwrap();
    assert_eq!(streamed.len(), 50);
    assert_eq!(streamed[49], msg("s", 49));
    let joined = c
        .client_stream((0..20).map(|i| msg(&i.to_string(), i)).collect())
        .await
        .unwrap();
    assert_eq!(joined.n, 20);
    assert!(joined.text.starts_with("012345"));
    let echoed = c.bidi(vec![msg("a", 1), msg("b", 2)]).await.unwrap();
    assert_eq!(echoed, vec![msg("A", 1), msg("B", 2)]);
    // Upstream errors reach the client with their code and trailers intact.
    up.fail_with(Code::NotFound);
    let e = c.unary(Request::new(msg("x", 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "told to fail");
    // The access log has the method's path; the endpoint key is the route.
    assert!(gw
        .access_log()
        .iter()
        .any(|l| l["path"] == "/test.Echo/ServerStream" && l["endpoint"] == "echo"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_answers_resource_exhausted_with_pushback() {
    let up = GrpcUpstream::start().await;
    let gw = grpc_gateway(&up, |r| r.policy(RateLimit::new("endpoint", 3, "1m"))).await;
    let mut c = client(&gw).await;
    for _ in 0..3 {
        c.unary(Request::new(msg("ok", 1))).await.unwrap();
    }
    let e = c.unary(Request::new(msg("no", 1))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("echo.rate_limit"), "{}", e.message());
    let pushback: i64 = e
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0);
    assert_eq!(up.calls(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn unavailable_answers_open_the_breaker_which_then_answers_unavailable_itself() {
    let up = GrpcUpstream::start().await;
    let gw = grpc_gateway(&up, |r| {
        r.policy(Breaker::consecutive_failures(3).open("30s"))
    })
    .await;
    let mut c = client(&gw).await;
    up.fail_with(Code::Unavailable);
    for _ in 0..3 {
        let e = c.unary(Request::new(msg("x", 1))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.message(), "told to fail", "the upstream's own answer");
    }
    assert_eq!(up.calls(), 3);
    let e = c.unary(Request::new(msg("x", 1))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("circuit"), "{}", e.message());
    assert_eq!(
        e.metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap()),
        Some("-1"),
        "do not retry"
    );
    assert_eq!(
        up.calls(),
        3,
        "the open breaker kept the call off the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_are_forwarded_decreased_and_expired_ones_are_not_forwarded() {
    let up = GrpcUpstream::start().await;
    let gw = grpc_gateway(&up, |r| r.total_timeout("10s")).await;
    let mut c = client(&gw).await;
    let mut req = Request::new(msg("t", 1));
    req.set_timeout(Duration::from_secs(5));
    c.unary(req).await.unwrap();
    let forwarded = up
        .timeouts()
        .pop()
        .flatten()
        .expect("a grpc-timeout upstream");
    let unit = forwarded.chars().last().unwrap();
    let value: u64 = forwarded[..forwarded.len() - 1].parse().unwrap();
    let nanos = value
        * match unit {
            'H' => 3_600_000_000_000,
            'M' => 60_000_000_000,
            'S' => 1_000_000_000,
            'm' => 1_000_000,
            'u' => 1_000,
            'n' => 1,
            other => panic!("unit {other}"),
        };
    assert!(
        nanos < 5_000_000_000 && nanos > 4_000_000_000,
        "forwarded {forwarded}: the caller's 5 s less the time spent"
    );
    // The smaller of the caller's and the route's: the route's 10 s caps 60 s.
    let mut req = Request::new(msg("t", 1));
    req.set_timeout(Duration::from_secs(60));
    c.unary(req).await.unwrap();
    let forwarded = up.timeouts().pop().flatten().unwrap();
    assert!(forwarded.ends_with('m') || forwarded.ends_with('S') || forwarded.ends_with('u'));
    // An expired deadline is answered without calling the upstream. (A tonic
    // client gives up on such a call itself, so this one is sent raw.)
    let calls = up.calls();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = h2
        .post(gw.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "0n")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(up.calls(), calls, "never forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_are_retried_only_on_routes_that_call_them_idempotent() {
    let up = GrpcUpstream::start().await;
    // An endpoint that refuses connections, beside the live one.
    let dead = ClosedPort::new();
    let config = |idempotent: bool| {
        grpc_config([dead.addr(), up.addr], |r| {
            r.retry(
                Retry::attempts(1)
                    .backoff("1ms", "2ms")
                    .idempotent(idempotent),
            )
        })
    };
    // Not declared idempotent: a call that lands on the dead endpoint fails.
    let gw = gateway(&config(false)).start().await;
    let mut c = client(&gw).await;
    let mut failed = 0;
    for _ in 0..6 {
        if let Err(e) = c.unary(Request::new(msg("x", 1))).await {
            assert_eq!(e.code(), Code::Unavailable);
            failed += 1;
        }
    }
    assert!(
        failed >= 2,
        "round robin sent calls to the dead endpoint: {failed} failed"
    );
    drop(gw);
    // Declared idempotent: those calls are retried on the live endpoint.
    let gw = gateway(&config(true)).start().await;
    let mut c = client(&gw).await;
    for _ in 0..6 {
        c.unary(Request::new(msg("x", 1))).await.unwrap();
    }
}

/// The gateway's own gRPC answers, at the frame level: a trailers-only
/// answer is one HEADERS frame with END_STREAM (gRPC over HTTP/2), never
/// HEADERS then an empty DATA frame, which grpc-core clients reject.
#[tokio::test(flavor = "multi_thread")]
async fn trailers_only_answers_are_one_headers_frame_with_end_stream() {
    let up = GrpcUpstream::start().await;
    let gw = grpc_gateway(&up, |r| r.policy(RateLimit::new("endpoint", 1, "1m"))).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let mut call = |path: &str, timeout: Option<&str>| {
        let mut req = http::Request::post(format!("http://127.0.0.1:{}{path}", gw.port))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        let (resp, mut body) = h2.send_request(req.body(()).unwrap(), false).unwrap();
        // One empty message, and the end of the request.
        body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        resp
    };
    // Passes: the upstream's own answer, with a body.
    let ok = call("/test.Echo/Unary", None).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(!ok.body().is_end_stream(), "a real answer has a body");
    // Each of the gateway's refusals: rate limited, no route, a deadline
    // that already passed.
    for (path, timeout, status) in [
        ("/test.Echo/Unary", None, "8"),
        ("/other.Svc/M", None, "12"),
        ("/test.Echo/Unary", Some("0n"), "4"),
    ] {
        let resp = call(path, timeout).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["grpc-status"], status, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(
            resp.body().is_end_stream(),
            "{path}: END_STREAM on the HEADERS frame, no DATA frame"
        );
    }
}
