//! The gateway configs the cluster bench runs: one route `/goods/{id}` with a
//! per-user sliding-window rate limit and a hot-key rule on the path's `id`,
//! either counted per instance (`local`) or fleet-wide through the bench's
//! Redis (`global`). Both modes make the same decisions, so a difference in
//! latency or req/s is what cluster mode's bookkeeping costs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Where a policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `cluster` section: every instance counts on its own.
    Local,
    /// A `cluster` section and `scope: global` on both policies.
    Global,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Global => "global",
        }
    }
}

/// The rate limit's policy name: its admitted count is read from `/metrics`
/// as `breakwater_limit_requests_total{policy="per-user",...}`.
pub const LIMIT_POLICY: &str = "per-user";

/// The hot-key rule's threshold per 1 s window. Every id of the mix (~100–300
/// requests/s each across the fleet) stays below it, so nothing turns hot and
/// both modes decide alike; it is low enough that every id becomes a tracked
/// candidate (at a twentieth of it), so in `global` mode their counts travel
/// to Redis every sync.
pub const HOTKEY_THRESHOLD: u64 = 1000;

/// The bench fleet's key-hash seed (`cluster.hash_seed` is required; the
/// bench's Redis is its own, so the seed need not be secret).
const BENCH_HASH_SEED: &str = "cluster-bench-hash-seed";

/// One instance's config.
#[derive(Debug, Clone)]
pub struct GatewaySpec<'a> {
    pub mode: Mode,
    /// `instance_id` in the fleet (`global` only).
    pub instance_id: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    /// The bench's Redis (`global` only).
    pub redis: SocketAddr,
    /// Keys and the event channel start with it, so phases sharing one Redis
    /// do not see each other's counts.
    pub key_prefix: &'a str,
    pub expected_instances: usize,
    /// The per-user limit per 1 s window.
    pub user_limit: u64,
    pub dir: &'a Path,
}

/// The YAML for `spec`: one worker thread, access log off, no config watch.
pub fn gateway_yaml(spec: &GatewaySpec<'_>) -> String {
    let scope = match spec.mode {
        Mode::Local => "",
        Mode::Global => ", scope: global",
    };
    let mut out = crate::gateway_yaml::bench_preamble(
        1,
        spec.dir,
        &spec.listen.to_string(),
        &spec.admin.to_string(),
    );
    out.push_str(
        r#"keys:
  user: { header: x-user-id }
  custom:
    goods_id: { path_capture: id }
"#,
    );
    if spec.mode == Mode::Global {
        let _ = write!(
            out,
            r#"cluster:
  redis: redis://{redis}
  sync_interval: 100ms
  instance_id: {id}
  key_prefix: {prefix}
  expected_instances: {n}
  hash_seed: {seed}
"#,
            redis = spec.redis,
            id = spec.instance_id,
            prefix = spec.key_prefix,
            n = spec.expected_instances,
            seed = BENCH_HASH_SEED,
        );
    }
    let _ = write!(
        out,
        r#"clusters:
  up:
    endpoints: ["{upstream}"]
routes:
  - id: goods
    match: {{ path: {{ template: "/goods/{{id}}" }} }}
    cluster: up
    policies:
      - rate_limit: {{ name: {LIMIT_POLICY}, key: user, limit: {limit}, window: 1s, algorithm: sliding_window{scope} }}
      - hotkey: {{ name: goods-hot, key: goods_id, threshold: {HOTKEY_THRESHOLD}, window: 1s, actions: [observe]{scope} }}
"#,
        upstream = spec.upstream,
        limit = spec.user_limit,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: Mode, dir: &Path) -> GatewaySpec<'_> {
        GatewaySpec {
            mode,
            instance_id: "gw-0".into(),
            listen: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            upstream: "127.0.0.1:3".parse().unwrap(),
            redis: "127.0.0.1:4".parse().unwrap(),
            key_prefix: "bench",
            expected_instances: 2,
            user_limit: 1000,
            dir,
        }
    }

    #[test]
    fn only_global_mode_joins_the_fleet() {
        let dir = Path::new("/tmp/x");
        let local = gateway_yaml(&spec(Mode::Local, dir));
        let global = gateway_yaml(&spec(Mode::Global, dir));
        assert!(!local.contains("\ncluster:") && !local.contains("scope"));
        assert!(global.contains("\ncluster:\n  redis:"));
        assert!(global.contains("redis: redis://127.0.0.1:4"));
        // A fleet needs its seed (16 bytes at least).
        assert!(global.contains(&format!("\n  hash_seed: {BENCH_HASH_SEED}\n")));
        assert!(BENCH_HASH_SEED.len() >= 16);
        assert_eq!(global.matches("scope: global").count(), 2);
        assert!(global.contains("template: \"/goods/{id}\""));
        assert!(global.contains("limit: 1000, window: 1s, algorithm: sliding_window"));
    }
}
