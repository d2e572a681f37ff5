//! The gate's queue, priorities and refusals, on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use super::gate::{Change, Class, Gate, GateSettings, Refused};
use super::limit::{AdaptiveLimit, LimitSettings, Sample};
use crate::{FakeClock, RejectionKind};

/// A gate over a limit fixed at `n` (min = max = n), queueing `queue`.
fn gate(n: u32, queue: usize) -> Arc<Gate> {
    gate_on(n, queue, Arc::new(FakeClock::new()))
}

fn gate_on(n: u32, queue: usize, clock: Arc<FakeClock>) -> Arc<Gate> {
    let limit = AdaptiveLimit::new(
        LimitSettings {
            initial: n,
            min: n,
            max: n,
            ..LimitSettings::default()
        },
        clock.clone(),
    );
    Arc::new(Gate::new(
        "up.overload",
        Arc::new(limit),
        GateSettings {
            max_queue: queue,
            max_wait: Duration::from_millis(50),
        },
        clock,
    ))
}

#[tokio::test(start_paused = true)]
async fn a_full_limit_queues_and_a_freed_place_goes_to_the_oldest_waiter() {
    let g = gate(1, 8);
    let first = g.admit(Class::Default, None).await.expect("a place");
    let (a, b) = (g.clone(), g.clone());
    let older = tokio::spawn(async move { a.admit(Class::Default, None).await });
    tokio::task::yield_now().await;
    let younger = tokio::spawn(async move { b.admit(Class::Default, None).await.is_ok() });
    tokio::task::yield_now().await;
    assert_eq!(g.queued(), 2);
    first.finish(Sample::Answered);
    let held = older.await.unwrap();
    assert!(held.is_ok(), "the oldest waiter got the place");
    // The younger one waited its 50 ms for a place that never came.
    assert!(!younger.await.unwrap());
    assert_eq!(g.shed(Class::Default), 1);
    assert_eq!(g.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_highest_class_waiting_gets_the_next_place() {
    let g = gate(1, 8);
    let first = g.admit(Class::Default, None).await.unwrap();
    let (low, high) = (g.clone(), g.clone());
    let low = tokio::spawn(async move { low.admit(Class::Sheddable, None).await.map(drop) });
    tokio::task::yield_now().await;
    let high = tokio::spawn(async move { high.admit(Class::Critical, None).await });
    tokio::task::yield_now().await;
    drop(first);
    let held = high.await.unwrap();
    assert!(held.is_ok(), "critical first, though it came later");
    assert_eq!(low.await.unwrap(), Err(Refused::Timeout));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_sheds_the_lowest_class_first() {
    let g = gate(1, 2);
    let _held = g.admit(Class::Default, None).await.unwrap();
    let spawn = |class| {
        let g = g.clone();
        tokio::spawn(async move { g.admit(class, None).await.map(drop) })
    };
    let sheddable = spawn(Class::Sheddable);
    tokio::task::yield_now().await;
    let default = spawn(Class::Default);
    tokio::task::yield_now().await;
    // Full: an important call evicts the sheddable one...
    let important = spawn(Class::Important);
    tokio::task::yield_now().await;
    assert_eq!(sheddable.await.unwrap(), Err(Refused::Evicted));
    // ...and a sheddable arrival finds nobody lower: refused at once.
    assert_eq!(
        g.admit(Class::Sheddable, None).await.err(),
        Some(Refused::QueueFull)
    );
    assert_eq!(g.shed(Class::Sheddable), 2);
    assert_eq!(g.queued(), 2);
    drop((default, important));
}

#[tokio::test(start_paused = true)]
async fn the_wait_never_outlasts_the_callers_deadline() {
    let g = gate(1, 8);
    let _held = g.admit(Class::Default, None).await.unwrap();
    let started = tokio::time::Instant::now();
    let refused = g
        .admit(Class::Default, Some(Duration::from_millis(5)))
        .await;
    assert_eq!(refused.err(), Some(Refused::Timeout));
    assert_eq!(started.elapsed(), Duration::from_millis(5));
    let r = g.rejection(Refused::Timeout);
    assert_eq!((r.status, r.kind), (503, RejectionKind::Overloaded));
    assert!(r
        .headers
        .iter()
        .any(|(n, _)| n == http::header::RETRY_AFTER));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_leaves_passes_its_place_on() {
    let g = gate(1, 8);
    let first = g.admit(Class::Default, None).await.unwrap();
    let gone = {
        let g = g.clone();
        tokio::spawn(async move { g.admit(Class::Default, None).await.map(drop) })
    };
    tokio::task::yield_now().await;
    let next = {
        let g = g.clone();
        tokio::spawn(async move { g.admit(Class::Default, None).await.map(drop) })
    };
    tokio::task::yield_now().await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(g.queued(), 1, "the aborted waiter left the queue");
    drop(first);
    assert_eq!(next.await.unwrap(), Ok(()));
    assert_eq!(g.limit().in_flight(), 0);
}

#[test]
fn the_gate_enters_overload_at_its_first_refusal_and_leaves_after_a_quiet_second() {
    let clock = Arc::new(FakeClock::new());
    let g = gate_on(1, 0, clock.clone());
    assert_eq!(g.note(true), None, "admitting is no news");
    assert_eq!(g.note(false), Some(Change::Entered));
    assert_eq!(g.note(false), None, "already in");
    assert!(g.overloaded());
    clock.advance(Duration::from_millis(900));
    assert_eq!(g.note(true), None, "refused 0.9 s ago: still overloaded");
    clock.advance(Duration::from_millis(200));
    assert_eq!(g.note(true), Some(Change::Left));
    assert_eq!(g.note(true), None, "one caller sees the move");
    assert!(!g.overloaded());
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_cut_to_half_the_learned_round_trip() {
    let clock = Arc::new(FakeClock::new());
    let g = gate_on(1, 8, clock.clone());
    // Teach the limit a 20 ms round trip: one call, then an interval ends.
    let slot = g.admit(Class::Default, None).await.expect("a place");
    clock.advance(Duration::from_millis(20));
    slot.finish(Sample::Answered);
    clock.advance(Duration::from_millis(100));
    let slot = g.admit(Class::Default, None).await.expect("a place");
    clock.advance(Duration::from_millis(20));
    slot.finish(Sample::Answered);
    assert_eq!(g.limit().rtts().0, Duration::from_millis(20));
    let _held = g.admit(Class::Default, None).await.expect("a place");
    let started = tokio::time::Instant::now();
    let refused = g.admit(Class::Default, None).await;
    assert_eq!(refused.err(), Some(Refused::Timeout));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(10),
        "waited half the round trip, not max_wait (50 ms)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_place_held_for_a_gone_client_frees_when_the_hold_ends() {
    let g = gate(1, 0);
    let slot = g.admit(Class::Default, None).await.expect("a place");
    slot.hold_for(Duration::from_millis(30));
    tokio::time::sleep(Duration::from_millis(29)).await;
    assert_eq!(g.limit().in_flight(), 1, "the provider is still working");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(g.limit().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn past_half_full_the_queue_serves_its_newest_waiter_first() {
    let g = gate(1, 4);
    let holder = g.admit(Class::Default, None).await.expect("a place");
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let g = g.clone();
        waiters.push(tokio::spawn(async move {
            g.admit(Class::Default, None).await.map(drop).is_ok()
        }));
        tokio::task::yield_now().await;
    }
    assert_eq!(g.queued(), 3, "three of four queue places taken");
    holder.finish(Sample::Answered);
    let newest = waiters.pop().unwrap();
    assert!(newest.await.unwrap(), "the newest waiter got the place");
    // Its place, freed at once, goes on: the queue is short again, so to
    // the oldest first, and so on.
    for w in waiters {
        assert!(w.await.unwrap());
    }
    assert_eq!(g.queued(), 0);
}
