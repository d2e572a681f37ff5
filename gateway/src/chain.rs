//! A route's compiled policy chain.

use std::sync::Arc;

use breakwater_plugins::{
    Decision, Outcome, Permits, Policy, RequestBody, RequestKeys, RequestView, WaitOutcome,
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

/// What the chain decided, and who decided it.
pub struct Verdict {
    pub decision: Decision,
    /// How many policies let the request through. Those, and only those, are
    /// told the outcome later.
    pub admitted_by: usize,
    /// The chain stopped before policy `admitted_by`, which must see the
    /// body (the view's body was [`RequestBody::Pending`]): read it, then
    /// [`PolicyChain::decide_from`] there.
    pub needs_body: bool,
}

impl Verdict {
    /// The policy that ended the chain, when one did.
    pub fn decided_by<'c>(&self, chain: &'c PolicyChain) -> Option<&'c dyn Policy> {
        match self.decision {
            Decision::Continue => None,
            _ => chain
                .entries
                .get(self.admitted_by)
                .map(|e| e.policy.as_ref()),
        }
    }
}

impl PolicyChain {
    /// Runs the policies until one does not continue. A policy that asks to
    /// wait (a queue) is awaited here, and the chain goes on after it; the
    /// chain never returns [`Decision::Wait`]. Without waits, no await point
    /// is reached. With a [`RequestBody::Pending`] body the chain stops
    /// before the first policy that wants it ([`Verdict::needs_body`]).
    pub async fn decide(&self, view: &RequestView<'_>, permits: &mut Permits) -> Verdict {
        self.decide_from(0, view, permits).await
    }

    /// [`Self::decide`] from policy `start` on (the policies before it have
    /// let the request through).
    pub async fn decide_from(
        &self,
        start: usize,
        view: &RequestView<'_>,
        permits: &mut Permits,
    ) -> Verdict {
        for (i, entry) in self.entries.iter().enumerate().skip(start) {
            if view.body == RequestBody::Pending && entry.policy.wants_body(view.headers) {
                return Verdict {
                    decision: Decision::Continue,
                    admitted_by: i,
                    needs_body: true,
                };
            }
            let decision = match entry.policy.on_request(view, permits) {
                Decision::Wait(waiter) => match waiter.await {
                    WaitOutcome::Admit(permit) => {
                        if let Some(p) = permit {
                            permits.push(p);
                        }
                        Decision::Continue
                    }
                    WaitOutcome::Reject(r) => Decision::Reject(r),
                    WaitOutcome::Respond(r) => Decision::Respond(r),
                },
                other => other,
            };
            match decision {
                Decision::Continue => entry.counters.allowed.inc(),
                other => {
                    match other {
                        Decision::Reject(_) => entry.counters.rejected.inc(),
                        _ => entry.counters.responded.inc(),
                    }
                    return Verdict {
                        decision: other,
                        admitted_by: i,
                        needs_body: false,
                    };
                }
            }
        }
        Verdict {
            decision: Decision::Continue,
            admitted_by: self.entries.len(),
            needs_body: false,
        }
    }

    /// Tells the first `admitted_by` policies how the request ended.
    pub fn on_outcome(&self, admitted_by: usize, keys: &RequestKeys, outcome: &Outcome) {
        for entry in self.entries.iter().take(admitted_by) {
            entry.policy.on_outcome(keys, outcome);
        }
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
    use breakwater_plugins::{LocalResponse, Rejection};
    use http::{HeaderMap, Method};
    use std::any::Any;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A test policy that answers a fixed decision and counts outcomes.
    struct Fixed {
        name: &'static str,
        answer: fn() -> Decision,
        outcomes: AtomicUsize,
    }

    impl Policy for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> &'static str {
            "fixed"
        }
        fn on_request(&self, _: &RequestView<'_>, _: &mut Permits) -> Decision {
            (self.answer)()
        }
        fn on_outcome(&self, _: &RequestKeys, _: &Outcome) {
            self.outcomes.fetch_add(1, Ordering::SeqCst);
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn fixed(name: &'static str, answer: fn() -> Decision) -> Arc<Fixed> {
        Arc::new(Fixed {
            name,
            answer,
            outcomes: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn first_non_continue_ends_the_chain_and_only_admitters_see_outcomes() {
        let metrics = Metrics::new();
        let pass = fixed("pass", || Decision::Continue);
        let reject = fixed("reject", || {
            Decision::Reject(Rejection {
                status: 403,
                grpc_status: 7,
                kind: "denied",
                policy: "reject".into(),
                reason: "no".into(),
                headers: vec![],
            })
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
        let verdict = chain.decide(&view, &mut Permits::default()).await;
        assert!(matches!(verdict.decision, Decision::Reject(_)));
        assert_eq!(verdict.admitted_by, 1);
        assert_eq!(verdict.decided_by(&chain).unwrap().name(), "reject");
        chain.on_outcome(verdict.admitted_by, &keys, &Outcome::default());
        assert_eq!(pass.outcomes.load(Ordering::SeqCst), 1);
        assert_eq!(reject.outcomes.load(Ordering::SeqCst), 0);
        assert_eq!(never.outcomes.load(Ordering::SeqCst), 0);
        let d = &metrics.decisions;
        assert_eq!(d.with_label_values(&["pass", "fixed", "allow"]).get(), 1);
        assert_eq!(d.with_label_values(&["reject", "fixed", "reject"]).get(), 1);
        assert_eq!(d.with_label_values(&["never", "fixed", "respond"]).get(), 0);
    }
}
