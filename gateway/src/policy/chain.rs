//! A route's compiled policy chain.

use std::sync::Arc;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::{
    Decision, Exchange, Policy, RequestBody, RequestKeys, RequestView, WaitOutcome,
};

use crate::metrics::DecisionCounters;

/// One policy in a chain, with its decision counters resolved.
pub struct ChainEntry {
    pub policy: Arc<dyn Policy>,
    pub counters: DecisionCounters,
}

/// The policies of one route, run in declared order.
#[derive(Default)]
pub struct PolicyChain {
    pub entries: Vec<ChainEntry>,
}

/// What the chain decided, and where it stopped.
pub struct Verdict {
    pub decision: Decision,
    /// The policy the chain stopped at: the one that decided, or with
    /// `needs_body` the one that must see the body; the chain's length when
    /// every policy let the request through.
    pub stopped_at: usize,
    /// The chain stopped before policy `stopped_at`, which must see the
    /// body (the view's body was [`RequestBody::Pending`]): read it, then
    /// [`PolicyChain::decide_from`] there.
    pub needs_body: bool,
    /// The block list refused the request, before any policy.
    pub blocked: bool,
}

impl Verdict {
    /// Every policy from `start` on let the request through.
    pub fn passed(stopped_at: usize) -> Self {
        Verdict {
            decision: Decision::Continue,
            stopped_at,
            needs_body: false,
            blocked: false,
        }
    }

    /// The policy that ended the chain, when one did.
    pub fn decided_by<'c>(&self, chain: &'c PolicyChain) -> Option<&'c dyn Policy> {
        match self.decision {
            Decision::Continue => None,
            _ if self.blocked => None,
            _ => chain
                .entries
                .get(self.stopped_at)
                .map(|e| e.policy.as_ref()),
        }
    }

    /// The name of what ended the chain, for logs: the policy, or for a
    /// block the rule or admin that placed it.
    pub fn decider(&self, chain: &PolicyChain) -> Option<String> {
        match &self.decision {
            Decision::Reject(r) if self.blocked => Some(r.policy.clone()),
            _ => self.decided_by(chain).map(|p| p.name().to_string()),
        }
    }
}

impl PolicyChain {
    /// Runs the policies until one does not continue. A policy that asks to
    /// wait (a queue) is awaited here, and the chain goes on after it; the
    /// chain never returns [`Decision::Wait`]. Without waits, no await point
    /// is reached. With a [`RequestBody::Pending`] body the chain stops
    /// before the first policy that wants it ([`Verdict::needs_body`]).
    /// What the admitted policies hold for the request is left in
    /// `exchange`.
    ///
    /// The block list (abuse detection's and the admin's blocks) is every
    /// chain's implicit first entry: a blocked `ip` or `user` is refused
    /// before any policy runs, on every route.
    pub async fn decide(
        &self,
        blocks: &BlockList,
        view: &RequestView<'_>,
        exchange: &mut Exchange,
    ) -> Verdict {
        match Self::screen(blocks, view.keys) {
            Some(blocked) => blocked,
            None => self.decide_from(0, view, exchange).await,
        }
    }

    /// The implicit first entry alone: the block list's refusal, if the
    /// request's `ip` or `user` is blocked. A chain with no policies needs
    /// nothing else, and no view of the request (no clock read).
    pub fn screen(blocks: &BlockList, keys: &RequestKeys) -> Option<Verdict> {
        blocks.refuse(keys).map(|r| Verdict {
            decision: Decision::Reject(r),
            stopped_at: 0,
            needs_body: false,
            blocked: true,
        })
    }

    /// [`Self::decide`] from policy `start` on (the policies before it have
    /// let the request through).
    pub async fn decide_from(
        &self,
        start: usize,
        view: &RequestView<'_>,
        exchange: &mut Exchange,
    ) -> Verdict {
        for (i, entry) in self.entries.iter().enumerate().skip(start) {
            if view.body == RequestBody::Pending && entry.policy.wants_body(view.headers) {
                return Verdict {
                    decision: Decision::Continue,
                    stopped_at: i,
                    needs_body: true,
                    blocked: false,
                };
            }
            let decision = match entry.policy.on_request(view, exchange) {
                Decision::Wait(waiter) => match waiter.await {
                    WaitOutcome::Admit(guard) => {
                        if let Some(g) = guard {
                            exchange.hold(g);
                        }
                        Decision::Continue
                    }
                    WaitOutcome::Reject(r) => Decision::Reject(r),
                    WaitOutcome::Respond(r) => Decision::Respond(r),
                },
                other => other,
            };
            let counter = match &decision {
                Decision::Continue => {
                    entry.counters.allowed.inc();
                    continue;
                }
                Decision::Reject(_) => &entry.counters.rejected,
                _ => &entry.counters.responded,
            };
            counter.inc();
            return Verdict {
                decision,
                stopped_at: i,
                needs_body: false,
                blocked: false,
            };
        }
        Verdict::passed(self.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::fmt::Debug for PolicyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.policy.name()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use breakwater_plugins::{
        End, Guard, LocalResponse, Outcome, Rejection, RejectionKind, RequestKeys,
    };
    use http::{HeaderMap, Method};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A test policy that answers a fixed decision and, when it lets a
    /// request through, leaves a guard that counts how requests end.
    struct Fixed {
        name: &'static str,
        answer: fn() -> Decision,
        outcomes: Arc<AtomicUsize>,
    }

    struct Count(Arc<AtomicUsize>);

    impl Guard for Count {
        fn finish(self: Box<Self>, end: End<'_>) {
            if let End::Upstream(_) = end {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    impl Policy for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> &'static str {
            "fixed"
        }
        fn on_request(&self, _: &RequestView<'_>, exchange: &mut Exchange) -> Decision {
            let decision = (self.answer)();
            if let Decision::Continue = decision {
                exchange.hold(Box::new(Count(self.outcomes.clone())));
            }
            decision
        }
    }

    fn fixed(name: &'static str, answer: fn() -> Decision) -> Arc<Fixed> {
        Arc::new(Fixed {
            name,
            answer,
            outcomes: Arc::default(),
        })
    }

    #[tokio::test]
    async fn first_non_continue_ends_the_chain_and_only_admitters_see_outcomes() {
        let metrics = Metrics::new();
        let pass = fixed("pass", || Decision::Continue);
        let reject = fixed("reject", || {
            Decision::Reject(Rejection::new(RejectionKind::Denied, 403, "reject", "no"))
        });
        let never = fixed("never", || {
            Decision::Respond(LocalResponse {
                trailers: None,
                status: 200,
                headers: vec![],
                body: "x".into(),
            })
        });
        let entry = |p: Arc<Fixed>| ChainEntry {
            counters: metrics.decision_counters(p.name, "fixed"),
            policy: p,
        };
        let chain = PolicyChain {
            entries: vec![
                entry(pass.clone()),
                entry(reject.clone()),
                entry(never.clone()),
            ],
        };
        let keys = RequestKeys {
            endpoint: Arc::from("r"),
            ip: "127.0.0.1".parse().unwrap(),
            client: "127.0.0.1".parse().unwrap(),
            user: None,
            custom: vec![],
        };
        let headers = HeaderMap::new();
        let view = RequestView {
            route: "r",
            host: None,
            tls: false,
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            keys: &keys,
            grpc: false,
            now_nanos: 0,
            body: breakwater_plugins::RequestBody::Unread,
        };
        let mut exchange = Exchange::default();
        let blocks = BlockList::new(16, Arc::new(breakwater_plugins::FakeClock::new()));
        let verdict = chain.decide(&blocks, &view, &mut exchange).await;
        assert!(matches!(verdict.decision, Decision::Reject(_)));
        assert_eq!(verdict.stopped_at, 1);
        assert_eq!(verdict.decided_by(&chain).unwrap().name(), "reject");
        exchange.finish(&Outcome::default());
        assert_eq!(pass.outcomes.load(Ordering::SeqCst), 1);
        assert_eq!(reject.outcomes.load(Ordering::SeqCst), 0);
        assert_eq!(never.outcomes.load(Ordering::SeqCst), 0);
        let d = &metrics.decisions;
        assert_eq!(d.with_label_values(&["pass", "fixed", "allow"]).get(), 1);
        assert_eq!(d.with_label_values(&["reject", "fixed", "reject"]).get(), 1);
        assert_eq!(d.with_label_values(&["never", "fixed", "respond"]).get(), 0);
    }
}
