//! `dedupe`'s unit tests: different requests with one key, and the same
//! request twice.

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::testing::keys;
use crate::{Decision, Exchange, Outcome, Policy, RequestBody, RequestView, WaitOutcome};

fn dedupe(yaml: &str) -> Dedupe {
    let cfg: DedupeConfig = serde_yaml::from_str(yaml).unwrap();
    cfg.compile("orders.dedupe".into(), "p").unwrap()
}

/// One request to the policy: everything that makes it "the same request".
#[derive(Clone)]
struct Call {
    key: Option<&'static str>,
    route: &'static str,
    host: Option<&'static str>,
    /// The client's own address (its `ip` key is its /64, for IPv6).
    ip: &'static str,
    user: Option<&'static str>,
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    /// `None`: the gateway could not read it ahead.
    body: Option<&'static [u8]>,
}

/// Alice paying: the request the others are compared with.
fn alice() -> Call {
    Call {
        key: Some("k1"),
        route: "pay",
        host: Some("shop.example"),
        ip: "10.0.0.1",
        user: Some("alice"),
        method: Method::POST,
        path: "/private/alice",
        query: Some("order=1"),
        body: Some(b"{\"amount\":10}"),
    }
}

fn send(p: &Dedupe, c: &Call) -> (Decision, Exchange) {
    let mut headers = HeaderMap::new();
    if let Some(k) = c.key {
        headers.insert("idempotency-key", HeaderValue::from_static(k));
    }
    let mut k = keys(c.ip, c.user);
    k.endpoint = c.route.into();
    k.ip = crate::keys::ip_key(k.client, 64);
    let view = RequestView {
        route: c.route,
        host: c.host,
        tls: false,
        method: &c.method,
        path: c.path,
        query: c.query,
        headers: &headers,
        keys: &k,
        grpc: false,
        now_nanos: 0,
        body: c.body.map_or(RequestBody::Unread, RequestBody::Whole),
    };
    let mut permits = Exchange::default();
    let d = p.on_request(&view, &mut permits);
    (d, permits)
}

/// A client's `POST /pay` with `key`, from 10.0.0.1.
fn request(p: &Dedupe, key: Option<&'static str>) -> (Decision, Exchange) {
    let call = Call {
        key,
        user: None,
        path: "/pay",
        query: None,
        body: Some(b"pay 10"),
        ..alice()
    };
    send(p, &call)
}

/// Each of these differs from alice's request in one thing only, and
/// carries her idempotency key: none may get her answer.
fn others() -> Vec<(&'static str, Call)> {
    let a = alice();
    vec![
        (
            "another user, same ip",
            Call {
                user: Some("mallory"),
                ..a.clone()
            },
        ),
        (
            "no user, another ip",
            Call {
                user: None,
                ip: "10.0.0.2",
                ..a.clone()
            },
        ),
        (
            "another route",
            Call {
                route: "admin",
                ..a.clone()
            },
        ),
        (
            "another host",
            Call {
                host: Some("other.example"),
                ..a.clone()
            },
        ),
        (
            "another path",
            Call {
                path: "/other/mallory",
                ..a.clone()
            },
        ),
        (
            "another query",
            Call {
                query: Some("order=2"),
                ..a.clone()
            },
        ),
        (
            "no query",
            Call {
                query: None,
                ..a.clone()
            },
        ),
        (
            "another method",
            Call {
                method: Method::PUT,
                ..a.clone()
            },
        ),
        (
            "another body",
            Call {
                body: Some(b"{\"amount\":1000}"),
                ..a.clone()
            },
        ),
        (
            "an empty body",
            Call {
                body: Some(b""),
                ..a.clone()
            },
        ),
    ]
}

fn respond(permits: &mut Exchange, body: &[u8]) {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-request-id", HeaderValue::from_static("leader"));
    permits.response_head(201, &h);
    let (a, b) = body.split_at(body.len() / 2);
    permits.response_body(a, false);
    permits.response_body(b, true);
}

#[tokio::test]
async fn a_different_request_with_the_same_key_is_its_own_call() {
    let mut joined_wrongly = Vec::new();
    for (what, other) in others() {
        let p = dedupe("{ header: idempotency-key }");
        let (lead, mut leader) = send(&p, &alice());
        assert!(matches!(lead, Decision::Continue), "{what}");
        // Not joined: it goes upstream, and leads its own flight...
        let (d, mut own) = send(&p, &other);
        if !matches!(d, Decision::Continue) {
            joined_wrongly.push(what);
            continue;
        }
        assert!(own.has_taps(), "{what}: leads its own call");
        // ...which its own duplicate joins, and gets its own answer.
        let Decision::Wait(dup) = send(&p, &other).0 else {
            panic!("{what}: its own duplicate should join it")
        };
        // Alice's duplicate still joins alice.
        let Decision::Wait(alices_dup) = send(&p, &alice()).0 else {
            panic!("{what}: alice's duplicate should join her call")
        };
        respond(&mut own, b"mallory's answer");
        respond(&mut leader, b"alice's answer");
        let WaitOutcome::Respond(r) = dup.await else {
            panic!("{what}: expected the shared answer")
        };
        assert_eq!(&r.body[..], b"mallory's answer", "{what}");
        let WaitOutcome::Respond(r) = alices_dup.await else {
            panic!("{what}: expected the shared answer")
        };
        assert_eq!(&r.body[..], b"alice's answer", "{what}");
        assert_eq!(p.joined(), 2, "{what}");
        assert_eq!(p.in_flight(), 0, "{what}");
    }
    assert!(
        joined_wrongly.is_empty(),
        "joined alice's call: {joined_wrongly:?}"
    );
}

#[tokio::test]
async fn duplicates_join_the_leader_and_get_its_answer() {
    let p = dedupe("{ header: idempotency-key }");
    let (lead, mut leader) = request(&p, Some("k1"));
    assert!(matches!(lead, Decision::Continue));
    assert!(leader.has_taps());
    let Decision::Wait(w1) = request(&p, Some("k1")).0 else {
        panic!("expected to join")
    };
    let Decision::Wait(w2) = request(&p, Some("k1")).0 else {
        panic!("expected to join")
    };
    // Another key, or no key, is its own call.
    assert!(matches!(request(&p, Some("k2")).0, Decision::Continue));
    assert!(matches!(request(&p, None).0, Decision::Continue));
    respond(&mut leader, b"{\"paid\":true}");
    for w in [w1, w2] {
        let WaitOutcome::Respond(r) = w.await else {
            panic!("expected the shared answer")
        };
        assert_eq!(r.status, 201);
        assert_eq!(&r.body[..], b"{\"paid\":true}");
        assert!(r.headers.iter().any(|(n, _)| n == "x-breakwater-joined"));
        assert!(!r.headers.iter().any(|(n, _)| n == "x-request-id"));
    }
    assert_eq!(p.joined(), 2);
    // Completed: the key is free again.
    assert!(matches!(request(&p, Some("k1")).0, Decision::Continue));
}

#[test]
fn a_path_without_a_query_is_not_the_path_with_an_empty_one() {
    let p = dedupe("{ header: idempotency-key }");
    let bare = Call {
        query: None,
        ..alice()
    };
    let (_, _leader) = send(&p, &bare);
    let empty = Call {
        query: Some(""),
        ..alice()
    };
    assert!(matches!(send(&p, &empty).0, Decision::Continue));
}

#[test]
fn a_body_not_read_ahead_is_not_deduplicated_and_is_counted() {
    for mode in ["join", "reject"] {
        let p = dedupe(&format!(
            "{{ header: idempotency-key, on_duplicate: {mode} }}"
        ));
        let unread = Call {
            body: None,
            ..alice()
        };
        for _ in 0..3 {
            let (d, permits) = send(&p, &unread);
            assert!(matches!(d, Decision::Continue), "{mode}");
            assert!(!permits.has_taps() && permits.is_empty(), "{mode}");
        }
        assert_eq!(p.counts().unhashable, 3, "{mode}");
        assert_eq!(p.in_flight(), 0, "{mode}");
    }
}

#[test]
fn the_body_is_wanted_only_with_the_key() {
    let p = dedupe("{ header: idempotency-key }");
    let mut headers = HeaderMap::new();
    assert!(!p.wants_body(&headers));
    headers.insert("idempotency-key", HeaderValue::from_static(""));
    assert!(!p.wants_body(&headers), "an empty key is no key");
    headers.insert("idempotency-key", HeaderValue::from_static("k"));
    assert!(p.wants_body(&headers));
}

#[tokio::test]
async fn a_failed_leader_fails_its_joiners_instead_of_calling_again() {
    let p = dedupe("{ header: idempotency-key }");
    let (_, leader) = request(&p, Some("k"));
    let Decision::Wait(w) = request(&p, Some("k")).0 else {
        panic!("expected to join")
    };
    drop(leader); // upstream error or client gone
    let WaitOutcome::Reject(r) = w.await else {
        panic!("expected a refusal")
    };
    assert_eq!(r.status, 503);
    assert!(r.reason.contains("original request failed"), "{}", r.reason);
    assert_eq!(p.in_flight(), 0);
}

#[tokio::test]
async fn reject_mode_tells_a_duplicate_from_a_reused_key() {
    let mut wrong = Vec::new();
    for (what, other) in others() {
        let p = dedupe("{ header: idempotency-key, on_duplicate: reject }");
        let (lead, leader) = send(&p, &alice());
        assert!(matches!(lead, Decision::Continue), "{what}");
        let Decision::Reject(same) = send(&p, &alice()).0 else {
            panic!("{what}: the same request in flight is refused")
        };
        assert_eq!((same.status, same.kind.as_str()), (409, "duplicate"));
        assert!(same.reason.contains("already in flight"), "{}", same.reason);
        let Decision::Reject(reused) = send(&p, &other).0 else {
            panic!("{what}: a reused key is refused")
        };
        assert_eq!(reused.status, 409);
        if reused.kind != "idempotency_key_reused" {
            wrong.push(what);
            continue;
        }
        assert!(
            reused.reason.contains("different request"),
            "{what}: {}",
            reused.reason
        );
        assert_eq!(p.counts().refused, 2);
        // The leader's end frees the key, for any request.
        drop(leader);
        assert_eq!(p.in_flight(), 0);
        let (d, _other_leader) = send(&p, &other);
        assert!(matches!(d, Decision::Continue), "{what}");
    }
    assert!(wrong.is_empty(), "taken for alice's request: {wrong:?}");
}

#[test]
fn reject_mode_frees_the_key_when_the_request_ends_either_way() {
    let p = dedupe("{ header: idempotency-key, on_duplicate: reject }");
    let (_, mut completed) = request(&p, Some("k"));
    assert!(!completed.has_taps(), "reject mode copies no response");
    completed.complete(&Outcome::default());
    let (_, mut cancelled) = request(&p, Some("k"));
    assert_eq!(p.in_flight(), 1);
    cancelled.cancel(); // a later policy refused it
    assert_eq!(p.in_flight(), 0);
    assert!(matches!(request(&p, Some("k")).0, Decision::Continue));
}

#[tokio::test]
async fn oversized_responses_are_not_shared() {
    let p = dedupe("{ header: idempotency-key, max_body: 4 }");
    let (_, mut leader) = request(&p, Some("k"));
    let Decision::Wait(w) = request(&p, Some("k")).0 else {
        panic!("expected to join")
    };
    respond(&mut leader, b"far too long");
    let WaitOutcome::Reject(r) = w.await else {
        panic!("expected a refusal")
    };
    assert!(r.reason.contains("too large"), "{}", r.reason);
}

#[test]
fn the_table_is_bounded() {
    for mode in ["join", "reject"] {
        let p = dedupe(&format!(
            "{{ header: idempotency-key, max_in_flight: 2, on_duplicate: {mode} }}"
        ));
        let _a = request(&p, Some("a"));
        let _b = request(&p, Some("b"));
        let (d, permits) = request(&p, Some("c"));
        assert!(matches!(d, Decision::Continue), "{mode}");
        assert!(
            !permits.has_taps() && permits.is_empty(),
            "{mode}: past the bound, keys are not tracked"
        );
        assert_eq!(p.in_flight(), 2, "{mode}");
        assert_eq!(p.counts().untracked, 1, "{mode}");
    }
}

/// A gRPC answer's status is in its trailers: a joiner gets them too, and
/// the leader's answer is complete only once they came.
#[tokio::test]
async fn a_joiner_gets_the_leaders_trailers() {
    let p = dedupe("{ header: idempotency-key }");
    let (_, mut leader) = send(&p, &alice());
    let Decision::Wait(dup) = send(&p, &alice()).0 else {
        panic!("expected to join")
    };
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    leader.response_head(200, &h);
    leader.response_body(b"\0\0\0\0\x02hi", false);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    leader.response_trailers(&trailers);
    let WaitOutcome::Respond(r) = dup.await else {
        panic!("expected the shared answer")
    };
    assert_eq!(&r.body[..], b"\0\0\0\0\x02hi");
    assert_eq!(r.trailers.as_ref().unwrap()["grpc-status"], "0");
}

#[test]
fn sizes_past_their_bounds_are_config_errors() {
    for (yaml, path) in [
        ("{ header: k, max_in_flight: 0 }", "p.max_in_flight"),
        (
            "{ header: k, max_in_flight: 18446744073709551615 }",
            "p.max_in_flight",
        ),
        (
            "{ header: k, max_body: 18446744073709551615 }",
            "p.max_body",
        ),
    ] {
        let cfg: DedupeConfig = serde_yaml::from_str(yaml).unwrap();
        let err = cfg.compile("n".into(), "p").err().expect(yaml);
        assert_eq!(err.path, path, "{yaml}: {err}");
    }
}

/// Anonymous IPv6 callers are told apart by their own address, not by the
/// /64 the `ip` key counts: a neighbour on the same network is another
/// caller.
#[tokio::test]
async fn anonymous_ipv6_callers_are_told_apart_by_their_own_address() {
    let p = dedupe("{ header: idempotency-key }");
    let anon = |ip| Call {
        user: None,
        ip,
        ..alice()
    };
    let (lead, _leader) = send(&p, &anon("2001:db8:1:2::a"));
    assert!(matches!(lead, Decision::Continue));
    let (neighbour, _own) = send(&p, &anon("2001:db8:1:2::b"));
    assert!(
        matches!(neighbour, Decision::Continue),
        "a neighbour in the same /64 is another caller"
    );
    let (same, _) = send(&p, &anon("2001:db8:1:2::a"));
    assert!(matches!(same, Decision::Wait(_)), "the same caller joins");
}

/// The host is part of the request; its case is not.
#[tokio::test]
async fn the_host_is_compared_without_its_case() {
    let p = dedupe("{ header: idempotency-key }");
    let (_, _leader) = send(&p, &alice());
    let shouting = Call {
        host: Some("SHOP.Example"),
        ..alice()
    };
    assert!(matches!(send(&p, &shouting).0, Decision::Wait(_)));
}
