//! Compilation as a whole: routes, keys, clusters and policies together,
//! and carrying state over.

use std::sync::Arc;
use std::time::Duration;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::{Clock, ConfigError, MonotonicClock};
use http::Method;

use super::{compile, parse_str, CompileContext};
use crate::config::snapshot::Snapshot;
use crate::metrics::Metrics;
use crate::route::RouteTimeouts;

const BASE: &str = "\
listeners:
  - address: 127.0.0.1:8080
keys:
  trusted_proxies: [10.0.0.0/8]
  user: { header: x-user-id }
  custom:
    goods_id: { path_capture: id }
clusters:
  orders:
    endpoints: [127.0.0.1:9000, 127.0.0.1:9001]
routes:
  - id: goods
    match: { path: { template: '/goods/{id}' }, methods: [get] }
    cluster: orders
    policies:
      - deny: { ips: [203.0.113.0/24] }
  - id: all
    cluster: orders
";

fn compile_text(
    text: &str,
    previous: Option<&Snapshot>,
    metrics: &Metrics,
) -> Result<Snapshot, ConfigError> {
    let file = parse_str(text)?;
    let env = |_: &str| None;
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let blocks = Arc::new(BlockList::new(100, clock.clone()));
    let cx = CompileContext::new(metrics, clock, blocks, Default::default(), None)
        .after(previous)
        .with_env(&env);
    compile(file, text, cx)
}

#[test]
fn compiles_routes_keys_clusters_and_policies() {
    let m = Metrics::new();
    let s = compile_text(BASE, None, &m).unwrap();
    assert_eq!(s.router.routes.len(), 2);
    assert_eq!(s.router.routes[0].capture_slots, vec![Some(0)]);
    assert_eq!(s.router.routes[1].capture_slots, vec![None]);
    assert_eq!(s.router.routes[0].matcher.methods, vec![Method::GET]);
    assert!(s.policies.contains_key("goods.deny"));
    assert_eq!(s.generation, 1);
}

#[test]
fn every_route_has_a_total_deadline_unless_it_turns_it_off() {
    let m = Metrics::new();
    let s = compile_text(BASE, None, &m).unwrap();
    let total = |s: &Snapshot, i: usize| s.router.routes[i].timeouts.total;
    assert_eq!(total(&s, 0), Some(RouteTimeouts::DEFAULT_TOTAL));
    assert_eq!(RouteTimeouts::DEFAULT_TOTAL, Duration::from_secs(15));
    let text = BASE
        .replace(
            "  - id: all\n    cluster: orders",
            "  - id: all\n    cluster: orders\n    timeouts: { total: 0s }",
        )
        .replace(
            "    cluster: orders\n    policies:",
            "    cluster: orders\n    timeouts: { total: 2s }\n    policies:",
        );
    let s = compile_text(&text, None, &m).unwrap();
    assert_eq!(total(&s, 0), Some(Duration::from_secs(2)));
    assert_eq!(
        total(&s, 1),
        None,
        "0s turns it off, for long-lived streams"
    );
}

#[test]
fn unknown_cluster_names_path_and_known_clusters() {
    let m = Metrics::new();
    let text = BASE.replace(
        "  - id: all\n    cluster: orders",
        "  - id: all\n    cluster: ordrs",
    );
    let err = compile_text(&text, None, &m).unwrap_err();
    assert_eq!(err.path, "routes[1].cluster");
    assert_eq!(err.message, "unknown cluster \"ordrs\" (known: orders)");
}

#[test]
fn validation_errors_name_their_paths() {
    let m = Metrics::new();
    let cases = [
        (
            "- address: 127.0.0.1:8080",
            "- address: localhost",
            "listeners[0].address",
        ),
        ("[10.0.0.0/8]", "[10.0.0.0/33]", "keys.trusted_proxies[0]"),
        (
            "127.0.0.1:9001]",
            "127.0.0.1]",
            "clusters.orders.endpoints[1]",
        ),
        (
            "methods: [get]",
            "methods: [\"g t\"]",
            "routes[0].match.methods[0]",
        ),
        ("/goods/{id}", "/goods/{id", "routes[0].match.path.template"),
        (
            "[203.0.113.0/24]",
            "[nope]",
            "routes[0].policies[0].deny.ips[0]",
        ),
        ("  - id: all", "  - id: goods", "routes[1].id"),
        (
            "{ header: x-user-id }",
            "{ header: \"bad header\" }",
            "keys.user.header",
        ),
    ];
    for (from, to, want) in cases {
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "replacement {from:?} did not apply");
        let err = compile_text(&text, None, &m).unwrap_err();
        assert_eq!(err.path, want, "for {to:?}: {err}");
    }
}

#[test]
fn unchanged_policies_carry_over_and_changed_ones_are_rebuilt() {
    let m = Metrics::new();
    let first = compile_text(BASE, None, &m).unwrap();
    let same = compile_text(
        &BASE.replace("  - id: all", "  - id: all2"),
        Some(&first),
        &m,
    )
    .unwrap();
    assert_eq!(same.generation, 2);
    assert!(Arc::ptr_eq(
        &first.policies["goods.deny"].policy,
        &same.policies["goods.deny"].policy
    ));
    let changed = compile_text(
        &BASE.replace("203.0.113.0/24", "203.0.114.0/24"),
        Some(&same),
        &m,
    )
    .unwrap();
    assert!(!Arc::ptr_eq(
        &same.policies["goods.deny"].policy,
        &changed.policies["goods.deny"].policy
    ));
}

#[test]
fn admin_token_env_must_resolve() {
    let m = Metrics::new();
    let text = format!("{BASE}admin:\n  token_env: BW_TOKEN\n");
    let err = compile_text(&text, None, &m).unwrap_err();
    assert_eq!(err.path, "admin.token_env");
}

const TYPED: &str = "\
listeners:
  - address: 127.0.0.1:8080
clusters:
  orders:
    endpoints: [127.0.0.1:9000, 127.0.0.1:9001]
routes:
  - id: goods
    cluster: orders
    policies:
      - circuit_breaker: { scope: endpoint, consecutive_failures: 3 }
      - rate_limit: { key: ip, limit: 100, window: 1s }
      - circuit_breaker: { consecutive_failures: 5 }
      - dedupe: { header: idempotency-key }
      - hotkey: { key: ip, threshold: 100, window: 1s }
  - id: all
    cluster: orders
    policies:
      - circuit_breaker: { scope: endpoint, consecutive_failures: 3 }
";

fn names<V>(m: &std::collections::BTreeMap<String, V>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[test]
fn registries_hold_each_policy_by_type_and_outliers_stay_out_of_chains() {
    let m = Metrics::new();
    let s = compile_text(TYPED, None, &m).unwrap();
    let r = &s.registries;
    assert_eq!(names(&r.breakers), ["orders.circuit_breaker"]);
    assert_eq!(names(&r.outliers), ["orders.endpoint_breaker"]);
    assert_eq!(names(&r.dedupes), ["goods.dedupe"]);
    assert_eq!(names(&r.hot_keys), ["goods.hotkey"]);
    assert_eq!(names(&r.limits), ["goods.hotkey", "goods.rate_limit"]);
    let breakers: Vec<String> = r
        .every_breaker()
        .iter()
        .map(|b| b.name().to_string())
        .collect();
    assert_eq!(
        breakers,
        [
            "orders.circuit_breaker",
            "orders.endpoint_breaker/127.0.0.1:9000",
            "orders.endpoint_breaker/127.0.0.1:9001",
        ]
    );
    let goods = &s.router.routes[0];
    let chain: Vec<&str> = goods
        .chain
        .entries
        .iter()
        .map(|e| e.policy.name())
        .collect();
    assert_eq!(
        chain,
        [
            "goods.rate_limit",
            "orders.circuit_breaker",
            "goods.dedupe",
            "goods.hotkey"
        ],
        "the endpoint breaker steers endpoint choice; it is not a chain entry"
    );
    let outlier = goods.outlier.as_ref().expect("an outlier detector");
    assert!(Arc::ptr_eq(outlier, &r.outliers["orders.endpoint_breaker"]));
    let breaker = goods.cluster_breaker.as_ref().expect("a cluster breaker");
    assert!(Arc::ptr_eq(breaker, &r.breakers["orders.circuit_breaker"]));
    let all = &s.router.routes[1];
    assert!(all.chain.entries.is_empty());
    assert!(
        Arc::ptr_eq(all.outlier.as_ref().unwrap(), outlier),
        "shared by name"
    );
    assert!(all.cluster_breaker.is_none());
}

#[test]
fn carried_policies_keep_their_typed_arcs() {
    let m = Metrics::new();
    let first = compile_text(TYPED, None, &m).unwrap();
    let next = compile_text(&TYPED.replace("limit: 100", "limit: 200"), Some(&first), &m).unwrap();
    let (a, b) = (&first.registries, &next.registries);
    assert!(Arc::ptr_eq(
        &a.outliers["orders.endpoint_breaker"],
        &b.outliers["orders.endpoint_breaker"]
    ));
    assert!(Arc::ptr_eq(
        &a.hot_keys["goods.hotkey"],
        &b.hot_keys["goods.hotkey"]
    ));
    assert!(Arc::ptr_eq(
        next.router.routes[0].outlier.as_ref().unwrap(),
        &b.outliers["orders.endpoint_breaker"]
    ));
    let report = |s: &Snapshot| s.registries.limits["goods.rate_limit"].report(0).unwrap();
    assert_eq!(report(&first).config["limit"], 100);
    assert_eq!(
        report(&next).config["limit"],
        200,
        "a changed limit is rebuilt"
    );
    // New endpoints, new endpoint breakers.
    let moved = TYPED.replace("127.0.0.1:9001", "127.0.0.1:9002");
    let moved = compile_text(&moved, Some(&next), &m).unwrap();
    assert!(!Arc::ptr_eq(
        &b.outliers["orders.endpoint_breaker"],
        &moved.registries.outliers["orders.endpoint_breaker"]
    ));
}

const FLEET: &str = "\
fleet:
  redis: redis://127.0.0.1:6379
  instance_id: gw-1
  hash_seed: \"a fleet secret of 16 bytes or more\"
";

#[test]
fn the_fleet_section_is_fleet_and_cluster_is_its_deprecated_name() {
    let m = Metrics::new();
    let new = format!("{BASE}{FLEET}");
    let s = compile_text(&new, None, &m).unwrap();
    assert_eq!(
        s.source.fleet_section().map(|(name, _)| name),
        Some("fleet")
    );
    assert!(s.source.deprecations().is_empty());
    let old = new.replace("fleet:\n", "cluster:\n");
    let s = compile_text(&old, None, &m).unwrap();
    assert_eq!(
        s.source.fleet_section().map(|(name, _)| name),
        Some("cluster")
    );
    assert_eq!(s.source.deprecations().len(), 1);
    // Errors name the key the file used.
    for (text, want) in [(&new, "fleet.instance_id"), (&old, "cluster.instance_id")] {
        let err = compile_text(&text.replace("gw-1", "gw 1"), None, &m).unwrap_err();
        assert_eq!(err.path, want);
    }
    let both = format!("{new}{}", FLEET.replace("fleet:", "cluster:"));
    let err = compile_text(&both, None, &m).unwrap_err();
    assert_eq!(err.path, "cluster");
}

#[test]
fn renaming_the_fleet_section_is_no_change_but_changing_it_needs_a_restart() {
    let m = Metrics::new();
    let old = format!("{BASE}{}", FLEET.replace("fleet:", "cluster:"));
    let first = compile_text(&old, None, &m).unwrap();
    let renamed = old.replace("cluster:\n", "fleet:\n");
    let second = compile_text(&renamed, Some(&first), &m).unwrap();
    let err = compile_text(&renamed.replace("gw-1", "gw-2"), Some(&second), &m).unwrap_err();
    assert_eq!(err.path, "fleet");
    assert!(err.message.contains("need a restart"), "{err}");
    let err = compile_text(BASE, Some(&second), &m).unwrap_err();
    assert_eq!(err.path, "fleet", "removing it is a change too");
}

#[test]
fn a_reload_keeps_a_clusters_gate_unless_its_settings_or_endpoints_change() {
    let m = Metrics::new();
    let gate = |s: &Snapshot| s.clusters["orders"].overload.as_ref().unwrap().gate.clone();
    let first = compile_text(TYPED, None, &m).unwrap();
    assert_eq!(gate(&first).limit().limit(), 20, "on by default");
    let next = compile_text(&TYPED.replace("limit: 100", "limit: 200"), Some(&first), &m).unwrap();
    assert!(
        Arc::ptr_eq(&gate(&first), &gate(&next)),
        "what it learned survives a reload that does not touch the cluster"
    );
    let bounded = TYPED.replace(
        "127.0.0.1:9001]",
        "127.0.0.1:9001]\n    overload: { max: 64 }",
    );
    let bounded = compile_text(&bounded, Some(&next), &m).unwrap();
    assert!(!Arc::ptr_eq(&gate(&next), &gate(&bounded)), "new settings");
    let moved = TYPED.replace("127.0.0.1:9001", "127.0.0.1:9002");
    let moved = compile_text(&moved, Some(&next), &m).unwrap();
    assert!(!Arc::ptr_eq(&gate(&next), &gate(&moved)), "new endpoints");
    let off = TYPED.replace("127.0.0.1:9001]", "127.0.0.1:9001]\n    overload: off");
    let off = compile_text(&off, Some(&next), &m).unwrap();
    assert!(off.clusters["orders"].overload.is_none());
}
