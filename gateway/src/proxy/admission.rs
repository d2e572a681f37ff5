//! Admission: what the gateway decides about a request before it goes
//! upstream, without a socket.
//!
//! In order: the route (first match), the request's keys, its deadline (the
//! caller's, cut to the route's `total`), then the chain, whose implicit
//! first entry is the block list. The result is an [`Admission`]: go
//! upstream, answer here, or read the body first for a policy that must see
//! it. What the admitted policies hold is left in the request's exchange.
//! Nothing here writes to the client: `service.rs` does the I/O.

use std::net::IpAddr;
use std::sync::Arc;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::{
    Decision, Failure, Rejection, RejectionKind, RequestBody, RequestKeys, RequestView,
};
use pingora::http::RequestHeader;

use crate::config::snapshot::Snapshot;
use crate::policy::chain::{PolicyChain, Verdict};
use crate::proxy::context::{Disposition, RequestCtx};
use crate::proxy::deadline;
use crate::proxy::overload;
use crate::proxy::responses::{render, GatewayResponse, Scope};
use crate::route::keys::RequestParts;
use crate::route::Route;

/// What admission sees of a request: its header and where it came from.
#[derive(Clone, Copy)]
pub struct Arrival<'a> {
    pub req: &'a RequestHeader,
    pub peer: IpAddr,
    /// It arrived over TLS.
    pub tls: bool,
}

/// What admission concluded.
#[derive(Debug)]
pub enum Admission {
    /// Go upstream.
    Proxy,
    /// Answer here, with this; nothing goes upstream.
    Answer(GatewayResponse),
    /// Policy `at` must see the body: read it, then [`Admit::resume`].
    NeedsBody { at: usize },
}

/// The admission step of one request.
pub struct Admit<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub blocks: &'a BlockList,
    pub arrival: Arrival<'a>,
}

impl Admit<'_> {
    /// Routes the request and runs its chain up to the end, a decision, or
    /// a policy that must see the body. Fills `ctx` with the route, keys,
    /// deadline, disposition and the policies' exchange.
    pub async fn run(&self, ctx: &mut RequestCtx) -> Admission {
        ctx.snapshot = Some(self.snapshot.clone());
        let req = self.arrival.req;
        let Some(matched) = self.snapshot.router.route(
            request_host(req),
            &req.method,
            req.uri.path(),
            &req.headers,
        ) else {
            ctx.disposition = Disposition::NoRoute;
            let r =
                Rejection::gateway(RejectionKind::NoRoute, 404, "no route matches this request");
            return Admission::Answer(render(r, Scope::default(), ctx.grpc));
        };
        let parts = RequestParts {
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
            peer: self.arrival.peer,
        };
        let keys = self
            .snapshot
            .keys
            .extract(&parts, matched.route, &matched.captures);
        ctx.route = Some(matched.index);
        let route = matched.route;
        if !set_deadline(ctx, route, req) {
            ctx.keys = Some(keys);
            ctx.disposition = Disposition::Rejected;
            let r = Rejection::gateway(
                RejectionKind::DeadlineExceeded,
                504,
                "the caller's deadline had already passed",
            );
            return Admission::Answer(render(r, scope(route), ctx.grpc));
        }
        let verdict = if route.chain.is_empty() {
            // Only the block list to ask: no view to build.
            PolicyChain::screen(self.blocks, &keys).unwrap_or_else(|| Verdict::passed(0))
        } else {
            let view = self.view(route, &keys, ctx, RequestBody::Pending);
            let exchange = &mut ctx.exchange;
            route.chain.decide(self.blocks, &view, exchange).await
        };
        let admission = if verdict.needs_body {
            Admission::NeedsBody {
                at: verdict.stopped_at,
            }
        } else {
            ctx.decided_by = verdict.decider(&route.chain);
            settle(verdict.decision, route, &keys, ctx).await
        };
        ctx.keys = Some(keys);
        admission
    }

    /// Goes on from policy `at` with the body read ahead.
    pub async fn resume(
        &self,
        ctx: &mut RequestCtx,
        at: usize,
        body: RequestBody<'_>,
    ) -> Admission {
        let (Some(route), Some(keys)) = (ctx.route_in(self.snapshot), ctx.keys.take()) else {
            return Admission::Proxy;
        };
        let view = self.view(route, &keys, ctx, body);
        let verdict = route.chain.decide_from(at, &view, &mut ctx.exchange).await;
        ctx.decided_by = verdict.decider(&route.chain);
        let admission = settle(verdict.decision, route, &keys, ctx).await;
        ctx.keys = Some(keys);
        admission
    }

    /// What the route's policies are shown of the request.
    fn view<'v>(
        &'v self,
        route: &'v Route,
        keys: &'v RequestKeys,
        ctx: &RequestCtx,
        body: RequestBody<'v>,
    ) -> RequestView<'v> {
        let req = self.arrival.req;
        RequestView {
            route: &route.id,
            host: request_host(req),
            tls: self.arrival.tls,
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
            keys,
            grpc: ctx.grpc,
            now_nanos: self.snapshot.clock.now_nanos(),
            body,
        }
    }
}

/// Sets the request's deadline: the caller's (`grpc-timeout`, the route's
/// deadline header), cut to the route's `total`. False when it has already
/// passed.
fn set_deadline(ctx: &mut RequestCtx, route: &Route, req: &RequestHeader) -> bool {
    let caller = deadline::caller_deadline(&req.headers, route.deadline_header.as_ref());
    let budget = deadline::earliest(caller, route.timeouts.total);
    ctx.deadline = budget.map(|b| ctx.started + b);
    ctx.deadline_is_callers = caller.is_some_and(|c| route.timeouts.total.is_none_or(|t| c < t));
    !budget.is_some_and(|b| b.is_zero())
}

/// The chain let the request through: it still needs a place at its
/// cluster's overload gate, taken last so that a request a policy refuses
/// or answers costs the provider nothing.
async fn settle(
    decision: Decision,
    route: &Route,
    keys: &RequestKeys,
    ctx: &mut RequestCtx,
) -> Admission {
    let (decision, scope) = match decision {
        Decision::Continue | Decision::Wait(_) => match overload::admit(route, keys, ctx).await {
            None => return Admission::Proxy,
            Some(refusal) => {
                ctx.decided_by = Some(overload::NAME.into());
                let scope = Scope {
                    route: Some(&route.id),
                    cluster: Some(&route.cluster.name),
                };
                (refusal, scope)
            }
        },
        other => (other, scope(route)),
    };
    conclude(decision, scope, ctx)
}

/// Turns the chain's decision into an admission. A refusal for
/// unavailability (an open breaker, a full queue) is answered with a
/// policy's stale copy when one was left (stale-if-error).
fn conclude(decision: Decision, scope: Scope<'_>, ctx: &mut RequestCtx) -> Admission {
    let answer = match decision {
        Decision::Continue | Decision::Wait(_) => return Admission::Proxy,
        Decision::Reject(r) => match ctx.exchange.fail(Failure::Refused(&r)) {
            Some(stale) => {
                ctx.disposition = Disposition::Responded;
                GatewayResponse::from(stale)
            }
            None => {
                ctx.disposition = Disposition::Rejected;
                render(r, scope, ctx.grpc)
            }
        },
        Decision::Respond(lr) => {
            ctx.disposition = Disposition::Responded;
            GatewayResponse::from(lr)
        }
    };
    Admission::Answer(answer)
}

fn scope(route: &Route) -> Scope<'_> {
    Scope {
        route: Some(&route.id),
        cluster: None,
    }
}

/// The request's host without port, from the `Host` header or the URI.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())?;
    // `[v6]:port`, `host:port` or a bare host.
    Some(if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    })
}

/// A gRPC call (`content-type: application/grpc*`): its refusals are gRPC
/// statuses.
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use breakwater_plugins::hotkey::HotEventHub;
    use breakwater_plugins::{Clock, FakeClock};

    use crate::config::CompileContext;
    use crate::metrics::Metrics;
    use crate::state::build_snapshot;

    /// A compiled snapshot and the process-wide parts admission needs.
    struct World {
        snapshot: Arc<Snapshot>,
        blocks: Arc<BlockList>,
        metrics: Metrics,
    }

    fn world(routes: &str) -> World {
        let text = format!(
            "listeners:\n  - address: \"127.0.0.1:0\"\nkeys:\n  user: {{ header: x-user-id }}\nclusters:\n  up: {{ endpoints: [\"127.0.0.1:9\"] }}\nroutes:\n{routes}"
        );
        let metrics = Metrics::new();
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new());
        let blocks = Arc::new(BlockList::new(64, clock.clone()));
        let cx = CompileContext::new(
            &metrics,
            clock,
            blocks.clone(),
            Arc::new(HotEventHub::default()),
            None,
        );
        let snapshot = build_snapshot(&text, cx).expect("the test config compiles");
        World {
            snapshot: Arc::new(snapshot),
            blocks,
            metrics,
        }
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        req.insert_header("host", "shop.example").unwrap();
        for (name, value) in headers {
            req.insert_header(name.to_string(), *value).unwrap();
        }
        req
    }

    async fn admit(w: &World, req: &RequestHeader, ctx: &mut RequestCtx) -> Admission {
        let step = Admit {
            snapshot: &w.snapshot,
            blocks: &w.blocks,
            arrival: Arrival {
                req,
                peer: "192.0.2.7".parse().unwrap(),
                tls: false,
            },
        };
        step.run(ctx).await
    }

    fn answered(a: &Admission) -> u16 {
        match a {
            Admission::Answer(resp) => resp.status,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    const DENY: &str = "  - id: shop\n    cluster: up\n    match: { path: { prefix: /goods } }\n    policies:\n      - deny: { name: no-mallory, users: [mallory] }\n";

    #[tokio::test]
    async fn a_request_no_route_matches_is_answered_404_without_keys() {
        let w = world(DENY);
        let mut ctx = RequestCtx::new(crate::time::now());
        let a = admit(&w, &request("GET", "/other", &[]), &mut ctx).await;
        assert_eq!(answered(&a), 404);
        assert_eq!(ctx.disposition, Disposition::NoRoute);
        assert!(ctx.route.is_none() && ctx.keys.is_none());
    }

    #[tokio::test]
    async fn an_admitted_request_carries_its_route_keys_and_deadline() {
        let w = world(DENY);
        let started = crate::time::now();
        let mut ctx = RequestCtx::new(started);
        let req = request("GET", "/goods", &[("grpc-timeout", "2S")]);
        let a = admit(&w, &req, &mut ctx).await;
        assert!(matches!(a, Admission::Proxy), "{a:?}");
        assert_eq!(ctx.route().map(|r| &*r.id), Some("shop"));
        let keys = ctx.keys.as_ref().expect("keys");
        assert_eq!(keys.ip.to_string(), "192.0.2.7");
        assert_eq!(ctx.deadline, Some(started + Duration::from_secs(2)));
        assert!(
            ctx.deadline_is_callers,
            "2 s is shorter than the route's total"
        );
        assert_eq!(ctx.disposition, Disposition::Proxied);
        assert_eq!(ctx.decided_by, None);
    }

    #[tokio::test]
    async fn a_policy_refusal_is_answered_and_names_the_policy() {
        let w = world(DENY);
        let mut ctx = RequestCtx::new(crate::time::now());
        let req = request("GET", "/goods", &[("x-user-id", "mallory")]);
        let a = admit(&w, &req, &mut ctx).await;
        assert_eq!(answered(&a), 403);
        assert_eq!(ctx.disposition, Disposition::Rejected);
        assert_eq!(ctx.decided_by.as_deref(), Some("no-mallory"));
    }

    #[tokio::test]
    async fn the_block_list_refuses_before_any_policy_runs() {
        let w = world(DENY);
        w.blocks
            .block_text(
                "ip:192.0.2.7",
                Duration::from_secs(60),
                "abuse".into(),
                "crawler",
                429,
            )
            .unwrap();
        let mut ctx = RequestCtx::new(crate::time::now());
        let a = admit(&w, &request("GET", "/goods", &[]), &mut ctx).await;
        assert_eq!(answered(&a), 429);
        assert_eq!(ctx.decided_by.as_deref(), Some("crawler"));
        // The route's policy never saw the request.
        let seen = w
            .metrics
            .decisions
            .with_label_values(&["no-mallory", "deny", "allow"])
            .get();
        assert_eq!(seen, 0);
    }

    #[tokio::test]
    async fn a_route_without_policies_still_asks_the_block_list() {
        let w = world("  - id: open\n    cluster: up\n");
        let mut ctx = RequestCtx::new(crate::time::now());
        let a = admit(&w, &request("GET", "/", &[]), &mut ctx).await;
        assert!(matches!(a, Admission::Proxy), "{a:?}");
        w.blocks
            .block_text(
                "user:eve",
                Duration::from_secs(60),
                "abuse".into(),
                "admin",
                403,
            )
            .unwrap();
        let mut ctx = RequestCtx::new(crate::time::now());
        let a = admit(&w, &request("GET", "/", &[("x-user-id", "eve")]), &mut ctx).await;
        assert_eq!(answered(&a), 403);
        assert_eq!(ctx.decided_by.as_deref(), Some("admin"));
    }

    #[tokio::test]
    async fn a_deadline_already_spent_is_answered_504_before_the_chain() {
        let w = world(DENY);
        let mut ctx = RequestCtx::new(crate::time::now());
        let req = request("GET", "/goods", &[("grpc-timeout", "0S")]);
        let a = admit(&w, &req, &mut ctx).await;
        assert_eq!(answered(&a), 504);
        assert_eq!(ctx.disposition, Disposition::Rejected);
    }

    #[tokio::test]
    async fn a_policy_that_must_see_the_body_stops_the_chain_until_it_is_read() {
        let w = world(
            "  - id: pay\n    cluster: up\n    policies:\n      - dedupe: { name: once, header: idempotency-key }\n",
        );
        let req = request(
            "POST",
            "/pay",
            &[("idempotency-key", "k1"), ("content-length", "2")],
        );
        let mut ctx = RequestCtx::new(crate::time::now());
        let a = admit(&w, &req, &mut ctx).await;
        let Admission::NeedsBody { at } = a else {
            panic!("expected to need the body, got {a:?}");
        };
        assert_eq!(at, 0);
        let step = Admit {
            snapshot: &w.snapshot,
            blocks: &w.blocks,
            arrival: Arrival {
                req: &req,
                peer: "192.0.2.7".parse().unwrap(),
                tls: false,
            },
        };
        let a = step.resume(&mut ctx, at, RequestBody::Whole(b"{}")).await;
        assert!(matches!(a, Admission::Proxy), "{a:?}");
        assert_eq!(
            ctx.exchange.held(),
            1,
            "the lead's guard waits for the response"
        );
    }
}
