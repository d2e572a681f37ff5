//! Hot-key detection against exact counting, and a rule's memory.
//!
//! For Zipf s = 0.9, 1.1 and 1.3 over 1M distinct keys, 10M events arrive
//! evenly over 10 s (1M events/s). The rule: threshold 100 per 1 s window,
//! default sketch and `max_tracked` (4096). Two ground truths:
//! - *same windows*: every key counted, without any memory bound, in the
//!   detector's own sliding windows (10 sub-buckets, interpolated); hot if
//!   the count reached 100 at any event. This isolates what the bounded
//!   pipeline (sketch, admission, capped candidates) loses.
//! - *event-exact*: the keys whose exact count over (t - 1 s, t] reached 100
//!   at any event. This adds the windows' own interpolation error (at most
//!   one sub-bucket's events), which matters only for keys that peak within
//!   a tenth of the threshold.
//!
//! Detected: the keys the detector declared hot. Precision = detected and
//! true / detected; recall = detected and true / true. Memory: heap bytes the rule holds after the
//! stream (a counting allocator), and its stated bound.
//!
//! Run: `cargo bench -p breakwater-plugins --bench hotkey_accuracy`
//! (`MAX_TRACKED=24576` to size the candidate table differently).

// Benches measure real time against a naive baseline.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use breakwater_plugins::hotkey::{DetectorConfig, HotKeyDetector};
use breakwater_plugins::window::{SlidingWindow, WindowSpec};

#[path = "zipf.rs"]
mod zipf;
use zipf::Zipf;

#[path = "counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: usize = 1_000_000;
const EVENTS: usize = 10_000_000;
const THRESHOLD: u64 = 100;
const WINDOW: u64 = 1_000_000_000;
const STEP: u64 = 1_000; // ns between events: 1M events/s

fn config() -> DetectorConfig {
    DetectorConfig {
        threshold: THRESHOLD,
        window: Duration::from_nanos(WINDOW),
        hot_ttl: Duration::from_secs(10),
        cool_ratio: 0.8,
        max_tracked: std::env::var("MAX_TRACKED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096),
        sketch_width: 8192,
    }
}

fn main() {
    println!("| Zipf s | keys over the threshold (same windows / event-exact) | detected | precision / recall vs same windows | precision / recall vs event-exact | detector ns/event | rule memory (heap) | stated bound |");
    println!("|---|---|---|---|---|---|---|---|");
    for s in [0.9, 1.1, 1.3] {
        let stream = Zipf::new(KEYS, s, 7).keys(EVENTS);

        // Exact: the last THRESHOLD arrival times of each key.
        let mut last: HashMap<u64, VecDeque<u64>> = HashMap::new();
        let mut truth: HashSet<u64> = HashSet::new();
        for (i, &k) in stream.iter().enumerate() {
            let now = WINDOW + i as u64 * STEP;
            let q = last.entry(k).or_default();
            q.push_back(now);
            if q.len() as u64 > THRESHOLD {
                q.pop_front();
            }
            if q.len() as u64 == THRESHOLD && now - q[0] < WINDOW {
                truth.insert(k);
            }
        }
        drop(last);

        // The same windows as the detector (10 sub-buckets, interpolated),
        // on every key, unbounded: what the bounded pipeline should match.
        let spec = WindowSpec::new(Duration::from_nanos(WINDOW), 10);
        let mut windows: HashMap<u64, SlidingWindow<11>> = HashMap::new();
        let mut same_window: HashSet<u64> = HashSet::new();
        for (i, &k) in stream.iter().enumerate() {
            let tick = spec.tick(WINDOW + i as u64 * STEP);
            let w = windows.entry(k).or_default();
            w.add_at(tick, 1);
            if w.estimate_scaled_at(tick) >= tick.scaled(THRESHOLD) {
                same_window.insert(k);
            }
        }
        drop(windows);

        let before = live();
        let d = HotKeyDetector::new(config());
        let mut detected: HashSet<u64> = HashSet::new();
        let started = Instant::now();
        for (i, &k) in stream.iter().enumerate() {
            let now = WINDOW + i as u64 * STEP;
            if d.observe(k, now, || None).became_hot.is_some() {
                detected.insert(k);
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / EVENTS as f64;
        let held = live() - before;
        let pr = |truth: &HashSet<u64>| {
            let hits = detected.intersection(truth).count() as f64;
            (
                hits / detected.len().max(1) as f64,
                hits / truth.len().max(1) as f64,
            )
        };
        let (p_same, r_same) = pr(&same_window);
        let (p_exact, r_exact) = pr(&truth);
        println!(
            "| {s} | {} / {} | {} | {p_same:.4} / {r_same:.4} | {p_exact:.4} / {r_exact:.4} | {ns:.0} | {:.0} KiB | {:.0} KiB |",
            same_window.len(),
            truth.len(),
            detected.len(),
            held as f64 / 1024.0,
            d.memory_bound_bytes() as f64 / 1024.0,
        );
        drop(d);
    }
}
