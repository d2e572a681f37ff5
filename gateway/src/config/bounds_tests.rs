//! Every number in the config is range-checked: a table-driven sweep.
//!
//! [`FULL`] sets every numeric and duration field the file knows. The sweep
//! finds each such leaf in it, writes extreme values there one at a time and
//! compiles: the result must be a snapshot or an error naming exactly that
//! field, and never a panic (debug builds panic on integer overflow, so a
//! wrapping product of two config values fails here too).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::{Clock, ConfigError, FakeClock};
use serde_yaml::Value;

use super::parse_str;
use super::{compile, CompileContext};
use crate::metrics::Metrics;

/// A valid config that sets every numeric and duration field.
const FULL: &str = r#"
server:
  threads: 2
  drain_delay_secs: 0
  max_connections: 1000
  max_connections_per_ip: 10
  grace_period_secs: 10
  graceful_shutdown_timeout_secs: 5
  upstream_keepalive_pool_size: 512
listeners:
  - address: 127.0.0.1:8080
keys:
  user: { header: x-user-id }
  custom:
    goods_id: { path_capture: id }
block_list:
  max_entries: 1000
cluster:
  redis: redis://127.0.0.1:6379
  sync_interval: 100ms
  timeout: 250ms
  instance_id: gw-1
  expected_instances: 3
  shards: 2
  hash_seed: "a fleet secret of 16 bytes or more"
  max_keys_per_sync: 4096
clusters:
  orders:
    endpoints: [127.0.0.1:9000, 127.0.0.1:9001]
    connect_timeout_ms: 1000
    read_timeout_ms: 30000
    write_timeout_ms: 30000
    idle_timeout_ms: 60000
    protocol: h2c
    h2_streams: 100
    retry_budget: { budget_percent: 20, min_retries_per_sec: 3 }
routes:
  - id: goods
    match: { path: { template: "/goods/{id}" } }
    cluster: orders
    timeouts: { connect: 1s, response: 5s, total: 10s }
    retry:
      attempts: 2
      backoff: 25ms
      max_backoff: 250ms
      on_statuses: [502]
    policies:
      - deny: { ips: [192.0.2.0/24], status: 403 }
      - rate_limit:
          key: ip
          limit: 100
          window: 1s
          algorithm: gcra
          burst: 20
          max_keys: 1000
          overrides: [{ key: 10.0.0.1, limit: 1000 }]
          status: 429
      - rate_limit:
          key: user
          limit: 120
          window: 1m
          algorithm: sliding_window
          max_keys: 1000
          overrides: [{ key: vip, limit: 1000 }]
      - concurrency_limit:
          max: 50
          queue: { max: 100, timeout: 50ms }
          status: 503
      - abuse:
          key: ip
          threshold: 300
          window: 10s
          block_for: 10m
          max_keys: 1000
          status: 403
      - circuit_breaker:
          window: 10s
          min_requests: 20
          error_ratio: 0.5
          slow_call: 1s
          slow_ratio: 0.8
          consecutive_failures: 5
          failure_statuses: [500, 502]
          failure_grpc_statuses: [13, 14]
          open: 5s
          max_open: 1m
          backoff_multiplier: 2
          half_open_max_probes: 1
          half_open_successes: 3
          fallback: { status: 200, body: "{}" }
          status: 503
      - circuit_breaker:
          scope: endpoint
          consecutive_failures: 5
          max_ejection_percent: 50
      - dedupe:
          header: idempotency-key
          wait: 10s
          max_body: 1048576
          max_in_flight: 10000
      - hotkey:
          key: goods_id
          threshold: 1000
          window: 1s
          hot_ttl: 10s
          cool_ratio: 0.8
          max_tracked: 1024
          actions: [cache, limit]
          limit: { limit: 100, window: 1s, burst: 10 }
          cache:
            ttl: 5s
            stale_ttl: 30s
            max_bytes: 67108864
            max_body: 1048576
            statuses: [200]
            wait: 5s
          status: 429
      - hotkey:
          name: goods-block
          key: ip
          threshold: 1000
          window: 1s
          actions: [block]
          block_for: 5m
"#;

fn compile_text(text: &str, metrics: &Metrics) -> Result<(), ConfigError> {
    let file = parse_str(text)?;
    let clock: Arc<dyn Clock> = Arc::new(FakeClock::new());
    let env = |_: &str| None;
    let blocks = Arc::new(BlockList::new(100, clock.clone()));
    let cx = CompileContext::new(metrics, clock, blocks, Default::default(), None).with_env(&env);
    compile(file, text, cx).map(|_| ())
}

/// What a leaf of the file holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf {
    Number,
    Duration,
}

/// Every numeric and duration leaf under `v`, with its config path
/// (`routes[0].policies[1].rate_limit.limit`).
fn leaves(v: &Value, path: String, out: &mut Vec<(String, Leaf)>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        Value::Number(_) => out.push((path, Leaf::Number)),
        Value::String(s) if humantime::parse_duration(s).is_ok() => {
            out.push((path, Leaf::Duration))
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map {
                if let Some(k) = k.as_str() {
                    leaves(item, join(k), out);
                }
            }
        }
        _ => {}
    }
}

/// The leaf at `path` in `v` (the syntax [`leaves`] writes).
fn leaf_mut<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    let mut cur = v;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        cur = cur
            .get_mut(key)
            .unwrap_or_else(|| panic!("{path}: no {key}"));
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            cur = cur.get_mut(index.parse::<usize>().unwrap()).unwrap();
        }
    }
    cur
}

/// Extreme values for a leaf of this kind, as YAML, and whether every
/// field must refuse it (no bound is that generous).
fn extremes(kind: Leaf) -> &'static [(&'static str, bool)] {
    match kind {
        Leaf::Number => &[
            ("0", false),
            ("1", false),
            ("-1", true),
            ("4294967295", false),          // u32::MAX
            ("4294967296", false),          // u32::MAX + 1
            ("18446744073709551615", true), // u64::MAX
            ("1.0e300", true),
            (".nan", true),
        ],
        Leaf::Duration => &[
            ("0s", false),
            ("1ns", false),
            ("99999999999h", true),
            ("18446744073709551615s", true), // Duration::MAX, give or take
        ],
    }
}

/// Fields that take any value of their type (none: the fleet's hash seed is
/// a string now, checked by length).
const UNBOUNDED: &[&str] = &[];

#[test]
fn the_full_config_compiles() {
    let m = Metrics::new();
    compile_text(FULL, &m).unwrap();
}

#[test]
fn every_number_is_range_checked_with_its_path_and_never_panics() {
    let metrics = Metrics::new();
    let base: Value = serde_yaml::from_str(FULL).unwrap();
    let mut fields = Vec::new();
    leaves(&base, String::new(), &mut fields);
    assert!(fields.len() > 80, "only {} fields found", fields.len());
    // Panics on this thread are the failures reported below: keep their
    // noise out of the log (other tests' panics still print).
    let me = std::thread::current().id();
    let hook: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let others = hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            others(info)
        }
    }));
    let mut failures = Vec::new();
    for (field, kind) in &fields {
        for (extreme, refused) in extremes(*kind) {
            let mut file = base.clone();
            *leaf_mut(&mut file, field) = serde_yaml::from_str(extreme).unwrap();
            let text = serde_yaml::to_string(&file).unwrap();
            match catch_unwind(AssertUnwindSafe(|| compile_text(&text, &metrics))) {
                Ok(Ok(())) if *refused && !UNBOUNDED.contains(&field.as_str()) => {
                    failures.push(format!("{field} = {extreme}: accepted, has no upper bound"))
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.path == *field => {}
                Ok(Err(e)) => failures.push(format!("{field} = {extreme}: error names {e}")),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{field} = {extreme}: PANIC {why}"));
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| hook(info)));
    assert!(
        failures.is_empty(),
        "{} cases failed, over {} fields:\n{}",
        failures.len(),
        fields.len(),
        failures.join("\n")
    );
}
