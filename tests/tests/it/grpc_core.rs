//! gRPC through the gateway with grpc-core (Python `grpcio`) on both ends:
//! every row of the README's refusal table in the four call shapes, upstream
//! errors in trailers, failures after the response began, and refusals that
//! must not wedge a connection. tonic accepted malformed trailers-only
//! answers that grpc-core clients could not read, so these tests use a
//! client (and an upstream) this project did not write.

use std::time::Duration;

use breakwater_tests::config::{
    Breaker, Cluster, Concurrency, Dedupe, Deny, KeySource, Keys, Listener, Protocol, RateLimit,
    Route,
};
use breakwater_tests::grpc_core::{
    call_async, require_dubbo, require_grpcio, triple_calls, CallResult, GrpcCall, PyGrpcUpstream,
    SHAPES,
};
use breakwater_tests::{client, eventually, ClosedPort, Config, Gateway};

use crate::gateway;

/// A gRPC cluster of these endpoints.
fn grpc<A: std::fmt::Display>(endpoints: impl IntoIterator<Item = A>) -> Cluster {
    Cluster::new(endpoints).protocol(Protocol::Grpc)
}

/// h2c downstream, gRPC cluster `echo` to `up`, routes `echo`
/// (`/test.Echo/`) finished by `route`.
fn echo_config(up: std::net::SocketAddr, route: impl FnOnce(Route) -> Route) -> Config {
    Config::new()
        .listener(Listener::h2c())
        .cluster("echo", grpc([up]))
        .route(route(Route::new("echo", "echo").path_prefix("/test.Echo/")))
}

/// A route selected by `x-case: <id>` on `test.Echo`.
fn case(id: &str, cluster: &str) -> Route {
    Route::new(id, cluster)
        .path_prefix("/test.Echo/")
        .header("x-case", id)
}

/// A gateway with a route for each refusal; its `down` cluster is the
/// closed port, which must live as long as the gateway.
async fn refusal_gateway(up: &PyGrpcUpstream) -> (Gateway, ClosedPort) {
    let down = ClosedPort::new();
    let config = Config::new()
        .listener(Listener::h2c())
        .keys(Keys::new().user(KeySource::header("x-user-id")))
        .cluster("echo", grpc([up.addr]))
        .cluster("guarded", grpc([up.addr]))
        .cluster("sluggish", grpc([up.addr]).read_timeout_ms(300))
        .cluster("down", grpc([down.addr()]))
        .cluster("gated", grpc([up.addr]).overload_fixed(1, 0, "50ms"))
        .route(case("ok", "echo"))
        .route(case("denied", "echo").policy(Deny::new().users(["mallory"])))
        .route(case("limited", "echo").policy(RateLimit::new("endpoint", 1, "1m")))
        .route(case("overloaded", "echo").policy(Concurrency::max(1)))
        .route(case("open", "guarded").policy(Breaker::consecutive_failures(5)))
        .route(case("down", "down"))
        .route(case("slow", "sluggish"))
        .route(case("gate", "gated"));
    (gateway(&config).start().await, down)
}

/// The four call shapes, each sending `text` under `x-case: case`.
fn every_shape(case: &str, user: &str, text: &str) -> Vec<GrpcCall> {
    SHAPES
        .iter()
        .map(|m| {
            GrpcCall::new(m, text)
                .n(2)
                .messages(&[(text, 1), (text, 2)])
                .metadata("x-case", case)
                .metadata("x-user-id", user)
        })
        .collect()
}

fn check(results: &[CallResult], code: &str, details: &str) {
    assert_eq!(results.len(), 4, "{results:?}");
    for r in results {
        assert_eq!(r.code, code, "{}: {r:?}", r.method);
        assert!(
            r.details.contains(details),
            "{}: details {:?} should name {details:?}",
            r.method,
            r.details
        );
        assert!(r.messages.is_empty(), "{}: {r:?}", r.method);
    }
}

fn pushback(r: &CallResult) -> i64 {
    r.trailer("grpc-retry-pushback-ms")
        .unwrap_or_else(|| panic!("{}: no grpc-retry-pushback-ms: {r:?}", r.method))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_row_is_a_status_grpc_core_clients_read() {
    require_grpcio();
    let up = PyGrpcUpstream::start();
    let (gw, _down) = refusal_gateway(&up).await;
    let target = ([127, 0, 0, 1], gw.port).into();
    // Refusals an operator makes: a block, and a breaker forced open.
    let c = client();
    let block = serde_json::json!({ "key": "user:eve", "ttl": "10m", "reason": "fraud" });
    let resp = c
        .post(gw.admin("/blocks"))
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = c
        .post(gw.admin("/breakers/guarded.circuit_breaker/open"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    // The rate limit's one call passes; the refusals never reach upstream.
    let first = call_async(
        target,
        vec![GrpcCall::new("Unary", "first").metadata("x-case", "limited")],
    )
    .await;
    assert_eq!(first[0].code, "OK", "{first:?}");
    let no_route = call_async(target, every_shape("nomatch", "alice", "x")).await;
    check(&no_route, "UNIMPLEMENTED", "no route");
    let denied = call_async(target, every_shape("denied", "mallory", "x")).await;
    check(&denied, "PERMISSION_DENIED", "denied.deny");
    for r in &denied {
        assert_eq!(pushback(r), -1, "a retry cannot fix a denial");
    }
    let limited = call_async(target, every_shape("limited", "alice", "x")).await;
    check(&limited, "RESOURCE_EXHAUSTED", "limited.rate_limit");
    for r in &limited {
        assert!(pushback(r) > 0, "{r:?}");
        assert_eq!(r.trailer("x-breakwater-error"), Some("rate_limited"));
    }
    let blocked = call_async(target, every_shape("ok", "eve", "x")).await;
    check(&blocked, "PERMISSION_DENIED", "");
    for r in &blocked {
        assert_eq!(r.trailer("x-breakwater-error"), Some("blocked"), "{r:?}");
    }
    let open = call_async(target, every_shape("open", "alice", "x")).await;
    check(&open, "UNAVAILABLE", "guarded.circuit_breaker");
    for r in &open {
        assert_eq!(pushback(r), -1, "do not retry into an open breaker");
    }
    // A call that passes after them all: the refusals never reached the
    // upstream, which has seen the first call and this one.
    let ok = call_async(
        target,
        vec![GrpcCall::new("Unary", "sentinel").metadata("x-case", "ok")],
    )
    .await;
    assert_eq!(ok[0].code, "OK", "{ok:?}");
    eventually(
        Duration::from_secs(5),
        "the sentinel call upstream",
        || async { (up.calls() >= 2).then_some(()) },
    )
    .await;
    assert_eq!(up.calls(), 2, "refusals reached the upstream");

    // Failures of the upstream name its cluster.
    let down = call_async(target, every_shape("down", "alice", "x")).await;
    check(&down, "UNAVAILABLE", "(down)");
    let slow = call_async(target, every_shape("slow", "alice", "sleep:2000")).await;
    check(&slow, "DEADLINE_EXCEEDED", "(sluggish)");
    // One slot: of two calls at once, one passes and one is refused.
    for shape in ["Unary", "ServerStream"] {
        let pair = call_async(
            target,
            vec![GrpcCall::new(shape, "sleep:1500")
                .metadata("x-case", "overloaded")
                .parallel(2)],
        )
        .await;
        let mut codes: Vec<&str> = pair.iter().map(|r| r.code.as_str()).collect();
        codes.sort();
        assert_eq!(codes, ["OK", "UNAVAILABLE"], "{shape}: {pair:?}");
        let refused = pair.iter().find(|r| r.code == "UNAVAILABLE").unwrap();
        assert!(
            refused.details.contains("overloaded.concurrency_limit"),
            "{refused:?}"
        );
    }
    // The cluster's overload gate, held at one place: the same, naming the
    // cluster, with a second of pushback.
    let pair = call_async(
        target,
        vec![GrpcCall::new("Unary", "sleep:1500")
            .metadata("x-case", "gate")
            .parallel(2)],
    )
    .await;
    let mut codes: Vec<&str> = pair.iter().map(|r| r.code.as_str()).collect();
    codes.sort();
    assert_eq!(codes, ["OK", "UNAVAILABLE"], "{pair:?}");
    let refused = pair.iter().find(|r| r.code == "UNAVAILABLE").unwrap();
    assert!(refused.details.contains("(gated)"), "{refused:?}");
    assert_eq!(refused.trailer("x-breakwater-error"), Some("overloaded"));
    assert_eq!(pushback(refused), 1000, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_statuses_in_trailers_reach_grpc_core_clients() {
    require_grpcio();
    let up = PyGrpcUpstream::start();
    let (gw, _down) = refusal_gateway(&up).await;
    let target = ([127, 0, 0, 1], gw.port).into();
    let results = call_async(
        target,
        vec![
            GrpcCall::new("Unary", "hello")
                .n(7)
                .metadata("x-case", "ok"),
            GrpcCall::new("ServerStream", "s")
                .n(50)
                .metadata("x-case", "ok"),
            GrpcCall::new("Unary", "fail:NOT_FOUND:0").metadata("x-case", "ok"),
            GrpcCall::new("ServerStream", "fail:ABORTED:3").metadata("x-case", "ok"),
            GrpcCall::new("ClientStream", "")
                .messages(&[("a", 1), ("b", 2), ("fail:OUT_OF_RANGE:0", 3)])
                .metadata("x-case", "ok"),
            GrpcCall::new("Bidi", "")
                .messages(&[("a", 1), ("fail:DATA_LOSS:0", 2)])
                .metadata("x-case", "ok"),
        ],
    )
    .await;
    assert_eq!(results[0].code, "OK");
    assert_eq!(results[0].messages, [("hello".to_string(), 7)]);
    assert_eq!(results[1].code, "OK");
    assert_eq!(results[1].messages.len(), 50);
    assert_eq!(results[2].code, "NOT_FOUND", "{:?}", results[2]);
    assert_eq!(results[2].details, "failed as told");
    // Streams that the upstream ends with an error status after messages.
    assert_eq!(results[3].code, "ABORTED", "{:?}", results[3]);
    assert_eq!(results[3].details, "failed after 3 messages");
    assert_eq!(results[3].messages.len(), 3);
    assert_eq!(results[4].code, "OUT_OF_RANGE", "{:?}", results[4]);
    assert_eq!(results[4].details, "failed after 2 messages");
    assert_eq!(results[5].code, "DATA_LOSS", "{:?}", results[5]);
    assert_eq!(results[5].messages, [("A".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_past_its_deadline_ends_with_deadline_exceeded_trailers() {
    require_grpcio();
    // tonic's upstream ignores the forwarded grpc-timeout, so the gateway's
    // own deadline is what ends the call (grpcio's server would end it
    // itself, the forwarded deadline at work).
    let up = breakwater_tests::grpc::GrpcUpstream::start().await;
    let gw = gateway(&echo_config(up.addr, |r| r.total_timeout("1s")))
        .start()
        .await;
    let target = ([127, 0, 0, 1], gw.port).into();
    // Two messages, then the upstream stalls past the route's 1 s: the
    // client gets both, then the gateway's status in trailers (not a reset).
    let r = call_async(target, vec![GrpcCall::new("ServerStream", "stall").n(2)]).await;
    assert_eq!(r[0].code, "DEADLINE_EXCEEDED", "{:?}", r[0]);
    assert_eq!(r[0].messages.len(), 2, "{:?}", r[0]);
    assert!(r[0].details.contains("(echo)"), "the gateway's: {:?}", r[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_with_unread_bodies_do_not_wedge_the_connection() {
    require_grpcio();
    let up = PyGrpcUpstream::start();
    let gw = gateway(&echo_config(up.addr, |r| {
        r.policy(RateLimit::new("endpoint", 40, "1m").sliding_window())
    }))
    .start()
    .await;
    let target = ([127, 0, 0, 1], gw.port).into();
    // One channel, 20 calls at a time, bodies of 2 KiB to 40 KiB: 40 pass,
    // the rest are refused before their bodies are read.
    let big = "x".repeat(2048);
    let mut calls = Vec::new();
    for round in 0..10 {
        calls.push(GrpcCall::new("Unary", &big).parallel(20));
        let parts: Vec<(&str, u32)> = (0..=round).map(|i| (big.as_str(), i)).collect();
        calls.push(
            GrpcCall::new("ClientStream", "")
                .messages(&parts)
                .parallel(20),
        );
    }
    let results = call_async(target, calls).await;
    assert_eq!(results.len(), 400);
    let ok = results.iter().filter(|r| r.code == "OK").count();
    let refused = results
        .iter()
        .filter(|r| r.code == "RESOURCE_EXHAUSTED")
        .count();
    assert_eq!(ok, 40, "{:?}", results.iter().find(|r| r.code != "OK"));
    assert_eq!(
        ok + refused,
        400,
        "every call ended with its status: {:?}",
        results
            .iter()
            .find(|r| r.code != "OK" && r.code != "RESOURCE_EXHAUSTED")
    );
}

/// Unary gRPC calls carry no content-length: dedupe still reads their one
/// message (it ends the stream at once) and joins only the same call, and a
/// joined call gets the leader's whole answer, status trailers included.
#[tokio::test(flavor = "multi_thread")]
async fn unary_calls_with_an_idempotency_key_join_only_the_same_call() {
    require_grpcio();
    let up = PyGrpcUpstream::start();
    let gw = gateway(&echo_config(up.addr, |r| {
        r.policy(Dedupe::header("idempotency-key"))
    }))
    .start()
    .await;
    let target = ([127, 0, 0, 1], gw.port).into();
    let keyed = |text: &str, key: &str| {
        vec![GrpcCall::new("Unary", text)
            .n(3)
            .metadata("idempotency-key", key)]
    };
    // Two clients send the same call with the same key while it runs.
    let (a, b) = tokio::join!(
        call_async(target, keyed("sleep:3000", "k1")),
        call_async(target, keyed("sleep:3000", "k1")),
    );
    for r in [&a[0], &b[0]] {
        assert_eq!(r.code, "OK", "{r:?}");
        assert_eq!(r.messages, [("sleep:3000".to_string(), 3)]);
    }
    let joined = [&a[0], &b[0]]
        .iter()
        .filter(|r| r.initial.get("x-breakwater-joined").is_some())
        .count();
    assert_eq!(joined, 1, "one led, one joined: {a:?} {b:?}");
    // Another message under the same key is another call: its own answer.
    let (c, d) = tokio::join!(
        call_async(target, keyed("sleep:3000", "k2")),
        call_async(target, keyed("sleep:2900", "k2")),
    );
    assert_eq!(c[0].messages, [("sleep:3000".to_string(), 3)], "{c:?}");
    assert_eq!(d[0].messages, [("sleep:2900".to_string(), 3)], "{d:?}");
    eventually(Duration::from_secs(5), "three upstream calls", || async {
        (up.calls() >= 3).then_some(())
    })
    .await;
    assert_eq!(up.calls(), 3);
}

/// Apache Dubbo's own Triple client (Python `apache-dubbo`) reads the
/// gateway's refusals as statuses; on malformed trailers-only answers it
/// waited for ever.
#[tokio::test(flavor = "multi_thread")]
async fn the_dubbo_triple_client_reads_the_gateways_answers() {
    require_grpcio();
    require_dubbo();
    let up = PyGrpcUpstream::start();
    let down = ClosedPort::new();
    let gw = gateway(
        &Config::new()
            .listener(Listener::h2c())
            .cluster("echo", grpc([up.addr]))
            .cluster("down", grpc([down.addr()]))
            .route(
                Route::new("limited", "echo")
                    .path_prefix("/limited.Echo/")
                    .policy(RateLimit::new("endpoint", 1, "1m")),
            )
            .route(Route::new("down", "down").path_prefix("/down.Echo/"))
            .route(Route::new("echo", "echo").path_prefix("/test.Echo/")),
    )
    .start()
    .await;
    let ok = triple_calls(gw.port, "test.Echo", 2).await;
    assert_eq!(ok, vec![("OK".to_string(), String::new()); 2]);
    // The first passes the limit (the upstream has no such service); the
    // second is the gateway's refusal.
    let limited = triple_calls(gw.port, "limited.Echo", 2).await;
    assert_eq!(limited[0].0, "UNIMPLEMENTED", "the upstream's: {limited:?}");
    assert_eq!(limited[1].0, "RESOURCE_EXHAUSTED", "{limited:?}");
    assert!(limited[1].1.contains("limited.rate_limit"), "{limited:?}");
    let down = triple_calls(gw.port, "down.Echo", 1).await;
    assert_eq!(down[0].0, "UNAVAILABLE", "{down:?}");
    assert!(down[0].1.contains("(down)"), "{down:?}");
    let unrouted = triple_calls(gw.port, "nothing.Echo", 1).await;
    assert_eq!(unrouted[0].0, "UNIMPLEMENTED", "{unrouted:?}");
    assert!(unrouted[0].1.contains("no route"), "{unrouted:?}");
}
