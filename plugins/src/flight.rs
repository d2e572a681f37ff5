//! Single-flight: one upstream call per key in flight, its response shared.
//!
//! The first request for a key *leads*: it goes upstream with a
//! [`Guard`] that copies the response. Requests for the same key that
//! arrive meanwhile *join*: they wait for the leader's copy. `dedupe` (client
//! retries) and the hot-key cache (concurrent misses) both use it.
//!
//! A leader that ends without a complete response (upstream error, client
//! gone) or whose response its `accept` hook refuses, publishes a failure;
//! each user decides what a joiner does then. The table is bounded: past
//! `max_in_flight` keys, requests are not tracked at all.
//!
//! Two requests share an answer exactly when their keys are equal, so a key
//! must hold everything that makes two requests the same request. The key
//! type is the user's: `dedupe` keys by a 128-bit fingerprint of the whole
//! request, the cache by its 64-bit key hash.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;

use crate::{Guard, LocalResponse};

/// What joiners receive.
#[derive(Debug)]
enum Shared {
    Pending,
    Done(Arc<LocalResponse>),
    Failed(&'static str),
}

/// Decides, at the end of the leader's response, whether joiners get it
/// (`Ok`) or a failure (`Err(why)`) — the cache stores it here too.
pub type Accept = Box<dyn FnOnce(&Arc<LocalResponse>) -> Result<(), &'static str> + Send + Sync>;

/// The in-flight table, by request key.
pub struct Flights<K = u64> {
    table: Arc<DashMap<K, watch::Receiver<Shared>>>,
    len: Arc<AtomicUsize>,
    max_in_flight: usize,
    max_body: usize,
}

/// How a request takes part.
pub enum Role {
    /// Go upstream with this tap registered on the response.
    Lead(Box<dyn Guard>),
    /// Wait for the leader with [`Joiner::wait`].
    Join(Joiner),
    /// Not tracked (the table is full).
    Untracked,
}

pub struct Joiner(watch::Receiver<Shared>);

impl Joiner {
    /// Waits up to `wait` for the leader's response.
    pub async fn wait(mut self, wait: Duration) -> Result<Arc<LocalResponse>, &'static str> {
        match tokio::time::timeout(wait, self.0.wait_for(|s| !matches!(s, Shared::Pending))).await {
            Ok(Ok(s)) => match &*s {
                Shared::Done(resp) => Ok(resp.clone()),
                Shared::Failed(why) => Err(why),
                Shared::Pending => Err("the original request is still running"),
            },
            Ok(Err(_)) => Err("the original request failed"),
            Err(_) => Err("the original request is still running"),
        }
    }
}

impl<K: Hash + Eq + Copy + Send + Sync + 'static> Flights<K> {
    pub fn new(max_in_flight: usize, max_body: usize) -> Self {
        Self {
            table: Arc::new(DashMap::new()),
            len: Arc::new(AtomicUsize::new(0)),
            max_in_flight,
            max_body,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether `key` has a leader in flight now.
    pub fn is_in_flight(&self, key: K) -> bool {
        self.table.contains_key(&key)
    }

    /// Leads or joins the call for `key`. `accept` runs on the leader's
    /// complete response.
    pub fn begin(&self, key: K, accept: impl FnOnce() -> Option<Accept>) -> Role {
        if let Some(rx) = self.table.get(&key).map(|r| r.clone()) {
            return Role::Join(Joiner(rx));
        }
        if self.len.load(Ordering::Acquire) >= self.max_in_flight {
            return Role::Untracked;
        }
        let (tx, rx) = watch::channel(Shared::Pending);
        // Two first requests can race here; the entry API picks one leader.
        let mut lead = false;
        let existing = self.table.entry(key).or_insert_with(|| {
            lead = true;
            rx
        });
        if !lead {
            let rx = existing.clone();
            drop(existing);
            return Role::Join(Joiner(rx));
        }
        drop(existing);
        self.len.fetch_add(1, Ordering::AcqRel);
        Role::Lead(Box::new(Leader {
            key,
            tx: Some(tx),
            table: self.table.clone(),
            len: self.len.clone(),
            accept: accept(),
            status: 0,
            headers: Vec::new(),
            body: BytesMut::new(),
            trailers: None,
            max_body: self.max_body,
            too_large: false,
        }))
    }
}

/// Headers not copied into a shared answer: per-connection ones, and the
/// leader's request id. `Age` is kept: it says how old the upstream's answer
/// is, which the hot-key cache counts against its max-age.
pub fn shareable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "x-request-id"
            | "date"
            | "cache-status"
    )
}

/// The leader's tap: copies the response and publishes it when complete.
/// Dropped before that (error, client gone), it publishes a failure.
struct Leader<K: Hash + Eq> {
    key: K,
    tx: Option<watch::Sender<Shared>>,
    table: Arc<DashMap<K, watch::Receiver<Shared>>>,
    len: Arc<AtomicUsize>,
    accept: Option<Accept>,
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BytesMut,
    trailers: Option<HeaderMap>,
    max_body: usize,
    too_large: bool,
}

impl<K: Hash + Eq> Leader<K> {
    fn finish(&mut self, shared: Shared) {
        if let Some(tx) = self.tx.take() {
            // Forget the key first: a request after this point is a new call.
            if self.table.remove(&self.key).is_some() {
                self.len.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = tx.send(shared);
        }
    }
}

impl<K: Hash + Eq + Send + Sync> Guard for Leader<K> {
    fn reads_response(&self) -> bool {
        true
    }

    fn response_head(&mut self, status: u16, headers: &HeaderMap) {
        self.status = status;
        self.headers = headers
            .iter()
            .filter(|(n, _)| shareable(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
    }

    fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        if !self.too_large {
            if self.body.len() + chunk.len() > self.max_body {
                self.too_large = true;
                self.body = BytesMut::new();
            } else {
                self.body.extend_from_slice(chunk);
            }
        }
        if end_of_stream {
            let shared = if self.too_large {
                Shared::Failed("the response is too large to share")
            } else {
                let resp = Arc::new(LocalResponse {
                    status: self.status,
                    headers: std::mem::take(&mut self.headers),
                    body: Bytes::from(std::mem::take(&mut self.body)),
                    trailers: self.trailers.take(),
                });
                match self.accept.take().map_or(Ok(()), |accept| accept(&resp)) {
                    Ok(()) => Shared::Done(resp),
                    Err(why) => Shared::Failed(why),
                }
            };
            self.finish(shared);
        }
    }

    fn response_trailers(&mut self, trailers: &HeaderMap) {
        self.trailers = Some(trailers.clone());
    }
}

impl<K: Hash + Eq> Drop for Leader<K> {
    fn drop(&mut self) {
        self.finish(Shared::Failed("the original request failed"));
    }
}
