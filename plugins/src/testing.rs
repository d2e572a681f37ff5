//! Helpers for policy unit tests.

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::block_list::BlockList;
use crate::{Clock, Decision, Exchange, FakeClock, Policy, PolicyEnv, RequestKeys, RequestView};

/// Keys for a request from `ip`, optionally as `user`.
pub fn keys(ip: &str, user: Option<&str>) -> RequestKeys {
    RequestKeys {
        endpoint: Arc::from("route"),
        ip: ip.parse().expect("test IP"),
        client: ip.parse().expect("test IP"),
        user: user.map(Into::into),
        custom: vec![],
    }
}

/// A fake clock, a block list on it, and an env for compiling policies.
pub struct Env {
    pub clock: FakeClock,
    pub blocks: Arc<BlockList>,
    pub hub: Arc<crate::hotkey::HotEventHub>,
}

impl Env {
    pub fn new() -> Self {
        let clock = FakeClock::new();
        let blocks = Arc::new(BlockList::new(1_000, Arc::new(clock.clone())));
        Self {
            clock,
            blocks,
            hub: Default::default(),
        }
    }

    pub fn policy_env(&self) -> PolicyEnv<'static> {
        PolicyEnv {
            custom_keys: &[],
            clock: Arc::new(self.clock.clone()),
            blocks: self.blocks.clone(),
            hot_events: self.hub.clone(),
            fleet: None,
            cluster: "upstream",
            cluster_endpoints: &[],
        }
    }

    /// Runs one request through `policy` at the clock's current time.
    pub fn decide(&self, policy: &dyn Policy, keys: &RequestKeys) -> (Decision, Exchange) {
        self.decide_with(policy, keys, &Method::GET, &HeaderMap::new())
    }

    /// [`Env::decide`] with a method and request headers.
    pub fn decide_with(
        &self,
        policy: &dyn Policy,
        keys: &RequestKeys,
        method: &Method,
        headers: &HeaderMap,
    ) -> (Decision, Exchange) {
        let view = RequestView {
            route: "r",
            host: None,
            tls: false,
            method,
            path: "/",
            query: None,
            headers,
            keys,
            grpc: false,
            now_nanos: self.clock.now_nanos(),
            body: crate::RequestBody::Whole(&[]),
        };
        let mut exchange = Exchange::default();
        let d = policy.on_request(&view, &mut exchange);
        (d, exchange)
    }

    /// How many of `n` requests `policy` admits at the current time.
    pub fn admitted(&self, policy: &dyn Policy, keys: &RequestKeys, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(self.decide(policy, keys).0, Decision::Continue))
            .count()
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}
