//! One request's exchange with its upstream, as the admitted policies see it.
//!
//! The chain's decision leaves an [`Exchange`] behind: everything the
//! policies that let the request through still hold for it. The gateway
//! calls it at fixed points and nowhere else:
//!
//! ```text
//! decide ─▶ attempt* ─▶ response_head ─▶ response_body* ─▶ finish
//!             │              └─ (trailers)
//!             └─▶ attempt_failed ─▶ (retry: attempt) or fail ─▶ finish
//! ```
//!
//! A policy that must see the rest of its request leaves a [`Guard`]: a
//! concurrency slot, a breaker's ticket, a cache fill or a coalesced call's
//! lead. Guards are finished once, with how the request ended, or dropped
//! when it was abandoned (client gone, error path, panic), so releases happen
//! on every path without the gateway knowing which policy holds what. This is
//! Envoy's per-request filter: one object sees the request and its response.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{ErrorKind, LocalResponse, Outcome, Rejection, RejectionKind};

/// What a policy holds for the life of a request it let through.
///
/// Every method has a default, so a guard implements only what it needs: a
/// slot just drops; a breaker's ticket reads [`Guard::finish`]; a response
/// copier (a cache fill, a coalesced call's lead) reads the response.
pub trait Guard: Send + Sync {
    /// Whether the guard reads the response (head, body, trailers). Asked
    /// once, when the guard is handed over: the exchange skips the body
    /// chunks of a request no guard reads.
    fn reads_response(&self) -> bool {
        false
    }

    /// The response head the client gets.
    fn response_head(&mut self, _status: u16, _headers: &HeaderMap) {}

    /// A chunk of the response body the client gets.
    fn response_body(&mut self, _chunk: &[u8], _end_of_stream: bool) {}

    /// The response's trailers (gRPC's status lives there); the body's end
    /// follows.
    fn response_trailers(&mut self, _trailers: &HeaderMap) {}

    /// The request is over. Not called when it was abandoned: then the
    /// guard is dropped, and its `Drop` must release what it holds.
    fn finish(self: Box<Self>, _end: End<'_>) {}
}

/// How a request that was not abandoned ended, for [`Guard::finish`].
#[derive(Debug, Clone, Copy)]
pub enum End<'a> {
    /// It went upstream, and this is how the (last) attempt ended.
    Upstream(&'a Outcome),
    /// It never went upstream: a later policy refused it, or it was answered
    /// locally. Release without counting a success or a failure.
    NotSent,
}

/// A failure of the request, for [`Exchange::fail`]: the cases a policy's
/// fallback may answer instead of the gateway's error.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// A later policy refused the request.
    Refused(&'a Rejection),
    /// The upstream failed, after whatever retries the route allows.
    Upstream(ErrorKind),
    /// The upstream answered with this server error (5xx).
    Status(u16),
}

impl Failure<'_> {
    /// Whether a stale answer beats this failure (stale-if-error, RFC 5861):
    /// the upstream is unavailable or failing, never access control (denied,
    /// blocked, rate limited) and never the caller's own deadline.
    pub fn is_unavailability(&self) -> bool {
        match self {
            Failure::Refused(r) => {
                matches!(
                    r.kind,
                    RejectionKind::CircuitOpen | RejectionKind::Overloaded
                )
            }
            Failure::Upstream(kind) => {
                !matches!(kind, ErrorKind::DeadlineExceeded | ErrorKind::Abandoned)
            }
            Failure::Status(status) => *status >= 500,
        }
    }
}

/// A response to give instead of a failure, and what to do if it is given.
struct Fallback {
    response: LocalResponse,
    on_served: Box<dyn FnOnce() + Send + Sync>,
}

/// What the admitted policies left for one request. See the module docs.
#[derive(Default)]
pub struct Exchange {
    /// Guards in order of admission, each with whether it reads the
    /// response; finished in reverse.
    guards: Vec<(Box<dyn Guard>, bool)>,
    /// How many of `guards` read the response (0: body chunks are skipped).
    readers: usize,
    /// The response ended (its last chunk or its trailers were seen).
    response_ended: bool,
    /// The endpoint's guard for the attempt in flight (outlier detection).
    endpoint: Option<Box<dyn Guard>>,
    /// Boxed: most requests have none, and the exchange lives in the
    /// request's context, which Pingora moves (callgrind counted ~400
    /// instructions a request for the extra inline bytes).
    fallback: Option<Box<Fallback>>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Exchange {
    // ---- What policies leave (in `Policy::on_request`). ----

    /// Hands a guard over for the rest of the request.
    pub fn hold(&mut self, guard: Box<dyn Guard>) {
        let reads = guard.reads_response();
        self.readers += usize::from(reads);
        self.guards.push((guard, reads));
    }

    /// A response to give the client instead of a failure that
    /// [`Failure::is_unavailability`]: the hot-key cache leaves its stale
    /// entry here (stale-if-error). `on_served` runs if it is given.
    pub fn set_fallback(
        &mut self,
        response: LocalResponse,
        on_served: impl FnOnce() + Send + Sync + 'static,
    ) {
        self.fallback = Some(Box::new(Fallback {
            response,
            on_served: Box::new(on_served),
        }));
    }

    /// A header for the upstream's response, if the request goes upstream
    /// (the cache's `Cache-Status` on a miss).
    pub fn add_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.response_headers.push((name, value));
    }

    // ---- What the gateway calls, at fixed points. ----

    /// An upstream attempt starts, on an endpoint whose outlier detector
    /// handed out `endpoint` (or none). A guard still held from an earlier
    /// attempt belongs to one that never reached its endpoint (a pooled
    /// connection found closed): it is released unused.
    pub fn attempt(&mut self, endpoint: Option<Box<dyn Guard>>) {
        if let Some(stale) = std::mem::replace(&mut self.endpoint, endpoint) {
            stale.finish(End::NotSent);
        }
    }

    /// The attempt in flight failed with `outcome`: its endpoint learns it
    /// now, whether or not the request is retried elsewhere.
    pub fn attempt_failed(&mut self, outcome: &Outcome) {
        if let Some(guard) = self.endpoint.take() {
            guard.finish(End::Upstream(outcome));
        }
    }

    /// The response head the client gets: guards read it, and the headers
    /// the policies left come back for the gateway to add.
    pub fn response_head(
        &mut self,
        status: u16,
        headers: &HeaderMap,
    ) -> &[(HeaderName, HeaderValue)] {
        if self.readers > 0 {
            for (g, _) in self.guards.iter_mut().filter(|(_, reads)| *reads) {
                g.response_head(status, headers);
            }
        }
        &self.response_headers
    }

    /// A chunk of the response body the client gets.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        if self.readers == 0 || self.response_ended {
            return;
        }
        self.response_ended = end_of_stream;
        for (g, _) in self.guards.iter_mut().filter(|(_, reads)| *reads) {
            g.response_body(chunk, end_of_stream);
        }
    }

    /// The response's trailers: the last part of it.
    pub fn response_trailers(&mut self, trailers: &HeaderMap) {
        if self.readers == 0 || self.response_ended {
            return;
        }
        for (g, _) in self.guards.iter_mut().filter(|(_, reads)| *reads) {
            g.response_trailers(trailers);
        }
        self.response_body(&[], true);
    }

    /// The request is failing: the fallback a policy left, if it answers
    /// this failure (taking it, and counting it served).
    pub fn fail(&mut self, failure: Failure<'_>) -> Option<LocalResponse> {
        if self.fallback.is_none() || !failure.is_unavailability() {
            return None;
        }
        self.fallback.take().map(|f| {
            (f.on_served)();
            f.response
        })
    }

    /// The request went upstream and ended with `outcome`. A response that
    /// completed without its end being seen (no body) is ended for the
    /// guards that read it; then every guard finishes, latest first.
    pub fn finish(&mut self, outcome: &Outcome) {
        if outcome.error.is_none() {
            self.response_body(&[], true);
        }
        if let Some(guard) = self.endpoint.take() {
            guard.finish(End::Upstream(outcome));
        }
        while let Some((g, _)) = self.guards.pop() {
            g.finish(End::Upstream(outcome));
        }
    }

    /// The request never went upstream: every guard is released unused.
    pub fn cancel(&mut self) {
        self.attempt(None);
        while let Some((g, _)) = self.guards.pop() {
            g.finish(End::NotSent);
        }
    }

    /// How many guards are held (for tests and logs).
    pub fn held(&self) -> usize {
        self.guards.len()
    }

    /// Whether any guard reads the response.
    pub fn reads_response(&self) -> bool {
        self.readers > 0
    }
}

/// What the policies' unit tests read back.
#[cfg(test)]
impl Exchange {
    pub(crate) fn has_taps(&self) -> bool {
        self.reads_response()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    pub(crate) fn take_fallback(&mut self) -> Option<LocalResponse> {
        self.fail(Failure::Upstream(ErrorKind::Timeout))
    }

    pub(crate) fn response_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.response_headers
    }

    pub(crate) fn complete(&mut self, outcome: &Outcome) {
        self.finish(outcome);
    }
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("guards", &self.guards.len())
            .field("readers", &self.readers)
            .field("endpoint", &self.endpoint.is_some())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Records what it was told, in order, into a shared log.
    struct Recorder {
        name: &'static str,
        reads: bool,
        log: Arc<Mutex<Vec<String>>>,
        dropped: Arc<AtomicUsize>,
    }

    impl Recorder {
        fn say(&self, what: String) {
            self.log.lock().push(format!("{}:{what}", self.name));
        }
    }

    impl Guard for Recorder {
        fn reads_response(&self) -> bool {
            self.reads
        }
        fn response_head(&mut self, status: u16, _: &HeaderMap) {
            self.say(format!("head {status}"));
        }
        fn response_body(&mut self, chunk: &[u8], end: bool) {
            self.say(format!("body {} {end}", chunk.len()));
        }
        fn response_trailers(&mut self, _: &HeaderMap) {
            self.say("trailers".into());
        }
        fn finish(self: Box<Self>, end: End<'_>) {
            let what = match end {
                End::Upstream(o) => format!("finish {:?}", o.status),
                End::NotSent => "not sent".into(),
            };
            self.say(what);
        }
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        log: Arc<Mutex<Vec<String>>>,
        dropped: Arc<AtomicUsize>,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                log: Arc::default(),
                dropped: Arc::default(),
            }
        }
        fn guard(&self, name: &'static str, reads: bool) -> Box<dyn Guard> {
            Box::new(Recorder {
                name,
                reads,
                log: self.log.clone(),
                dropped: self.dropped.clone(),
            })
        }
        fn log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock())
        }
    }

    fn ok(status: u16) -> Outcome {
        Outcome {
            status: Some(status),
            ..Outcome::default()
        }
    }

    #[test]
    fn only_readers_see_the_response_and_guards_finish_latest_first() {
        let h = Harness::new();
        let mut x = Exchange::default();
        x.hold(h.guard("slot", false));
        x.hold(h.guard("fill", true));
        x.add_response_header(
            HeaderName::from_static("cache-status"),
            HeaderValue::from_static("miss"),
        );
        x.attempt(Some(h.guard("endpoint", false)));
        let added = x.response_head(200, &HeaderMap::new()).to_vec();
        assert_eq!(added.len(), 1);
        x.response_body(b"abc", false);
        x.finish(&ok(200));
        assert_eq!(
            h.log(),
            [
                "fill:head 200",
                "fill:body 3 false",
                // No end of stream was seen: the exchange ends the body.
                "fill:body 0 true",
                "endpoint:finish Some(200)",
                "fill:finish Some(200)",
                "slot:finish Some(200)",
            ]
        );
    }

    #[test]
    fn without_readers_no_response_part_reaches_a_guard() {
        let h = Harness::new();
        let mut x = Exchange::default();
        x.hold(h.guard("slot", false));
        x.response_head(200, &HeaderMap::new());
        x.response_body(b"abc", true);
        x.response_trailers(&HeaderMap::new());
        x.finish(&ok(200));
        assert_eq!(h.log(), ["slot:finish Some(200)"]);
    }

    #[test]
    fn trailers_end_the_response_once() {
        let h = Harness::new();
        let mut x = Exchange::default();
        x.hold(h.guard("fill", true));
        x.response_trailers(&HeaderMap::new());
        x.response_body(b"late", true);
        x.finish(&ok(200));
        assert_eq!(
            h.log(),
            ["fill:trailers", "fill:body 0 true", "fill:finish Some(200)"]
        );
    }

    #[test]
    fn a_failed_attempt_tells_its_endpoint_and_a_retry_releases_a_stale_one() {
        let h = Harness::new();
        let mut x = Exchange::default();
        x.attempt(Some(h.guard("first", false)));
        x.attempt_failed(&Outcome {
            error: Some(ErrorKind::ConnectRefused),
            ..Outcome::default()
        });
        x.attempt(Some(h.guard("second", false)));
        // Pingora retried on a pooled connection found closed: the second
        // endpoint never saw the request.
        x.attempt(Some(h.guard("third", false)));
        x.finish(&ok(204));
        assert_eq!(
            h.log(),
            [
                "first:finish None",
                "second:not sent",
                "third:finish Some(204)"
            ]
        );
    }

    #[test]
    fn cancel_releases_unused_and_drop_abandons() {
        let h = Harness::new();
        let mut x = Exchange::default();
        x.hold(h.guard("a", false));
        x.attempt(Some(h.guard("endpoint", false)));
        x.cancel();
        assert_eq!(h.log(), ["endpoint:not sent", "a:not sent"]);
        assert_eq!(x.held(), 0);

        let mut abandoned = Exchange::default();
        abandoned.hold(h.guard("b", false));
        let before = h.dropped.load(Ordering::SeqCst);
        drop(abandoned);
        assert!(
            h.log().is_empty(),
            "an abandoned guard is dropped, not finished"
        );
        assert_eq!(h.dropped.load(Ordering::SeqCst), before + 1);
    }

    fn rejection(kind: RejectionKind) -> Rejection {
        Rejection::new(kind, 503, "p", "r")
    }

    #[test]
    fn the_fallback_answers_unavailability_only_and_once() {
        let served = Arc::new(AtomicUsize::new(0));
        let mut x = Exchange::default();
        let s = served.clone();
        x.set_fallback(
            LocalResponse {
                status: 200,
                headers: vec![],
                body: "stale".into(),
                trailers: None,
            },
            move || {
                s.fetch_add(1, Ordering::SeqCst);
            },
        );
        for not_for_stale in [
            Failure::Refused(&rejection(RejectionKind::RateLimited)),
            Failure::Refused(&rejection(RejectionKind::Denied)),
            Failure::Upstream(ErrorKind::DeadlineExceeded),
            Failure::Upstream(ErrorKind::Abandoned),
            Failure::Status(404),
        ] {
            assert!(x.fail(not_for_stale).is_none(), "{not_for_stale:?}");
        }
        assert_eq!(served.load(Ordering::SeqCst), 0);
        let stale = x.fail(Failure::Status(503)).expect("the stale answer");
        assert_eq!(stale.body, "stale");
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert!(x.fail(Failure::Upstream(ErrorKind::Timeout)).is_none());
    }

    #[test]
    fn unavailability_is_what_a_stale_answer_may_cover() {
        for (failure, stale_ok) in [
            (
                Failure::Refused(&rejection(RejectionKind::CircuitOpen)),
                true,
            ),
            (
                Failure::Refused(&rejection(RejectionKind::Overloaded)),
                true,
            ),
            (Failure::Refused(&rejection(RejectionKind::Blocked)), false),
            (Failure::Upstream(ErrorKind::ConnectRefused), true),
            (Failure::Upstream(ErrorKind::Timeout), true),
            (Failure::Upstream(ErrorKind::Reset), true),
            (Failure::Status(500), true),
            (Failure::Status(499), false),
        ] {
            assert_eq!(failure.is_unavailability(), stale_ok, "{failure:?}");
        }
    }
}
