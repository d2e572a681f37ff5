//! The builders write the file's own spelling: compared with YAML written
//! by hand, as the gateway's docs and the older tests write it.

use serde_yaml::Value;

use super::*;

fn parsed(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// The builder's YAML, parsed, against `want` (YAML by hand).
fn assert_writes(config: &Config, want: &str) {
    let written = config.to_yaml();
    assert_eq!(parsed(&written), parsed(want), "written:\n{written}");
}

const HARNESS_SECTIONS: &str = "server:
  threads: 1
  grace_period_secs: 5
  graceful_shutdown_timeout_secs: 1
  pid_file: '{dir}/bw.pid'
  upgrade_sock: '{dir}/upgrade.sock'
listeners:
  - address: '{listen}'
admin:
  address: '{admin}'
logging:
  format: json
  level: info
  access_log: true
";

#[test]
fn an_empty_config_is_the_harness_sections() {
    assert_writes(
        &Config::new(),
        &format!("{HARNESS_SECTIONS}clusters: {{}}\nroutes: []\n"),
    );
}

#[test]
fn a_route_with_a_policy_is_written_as_the_file_spells_it() {
    let config = Config::new()
        .keys(
            Keys::new()
                .trusted_proxies(["127.0.0.1/32"])
                .user(KeySource::header("x-user-id"))
                .custom("goods_id", KeySource::path_capture("id")),
        )
        .cluster(
            "up",
            Cluster::new(["127.0.0.1:1", "127.0.0.1:2"]).read_timeout_ms(3000),
        )
        .route(
            Route::new("goods", "up")
                .path_template("/goods/{id}")
                .header("x-canary", "1")
                .total_timeout("1s")
                .retry(Retry::attempts(1).backoff("1ms", "5ms").on_statuses([502]))
                .policy(RateLimit::per_ip(5, "1m").burst(5))
                .policy(Deny::new().users(["mallory"]))
                .policy(
                    HotKey::new("goods_id", 20, "1s")
                        .actions([Action::Cache])
                        .cache(Cache::new().ttl("3s").always()),
                ),
        );
    assert_writes(
        &config,
        &format!(
            "{HARNESS_SECTIONS}keys:
  trusted_proxies: [127.0.0.1/32]
  user: {{ header: x-user-id }}
  custom:
    goods_id: {{ path_capture: id }}
clusters:
  up:
    endpoints: ['127.0.0.1:1', '127.0.0.1:2']
    read_timeout_ms: 3000
routes:
  - id: goods
    match: {{ path: {{ template: '/goods/{{id}}' }}, headers: [{{ name: x-canary, value: '1' }}] }}
    cluster: up
    timeouts: {{ total: 1s }}
    retry: {{ attempts: 1, backoff: 1ms, max_backoff: 5ms, on_statuses: [502] }}
    policies:
      - rate_limit: {{ key: ip, limit: 5, window: 1m, burst: 5 }}
      - deny: {{ users: [mallory] }}
      - hotkey: {{ key: goods_id, threshold: 20, window: 1s, actions: [cache], cache: {{ ttl: 3s, always: true }} }}
"
        ),
    );
}

#[test]
fn listeners_admin_and_server_replace_the_defaults() {
    let config = Config::new()
        .server(Server::default().threads(2).watch_config(false))
        .listener(Listener::h2c())
        .admin(Admin::default().on_all_interfaces().token("t0k"))
        .fleet(Fleet::redis("redis://127.0.0.1:1").hash_seed("s"));
    let written = parsed(&config.to_yaml());
    assert_eq!(written["server"]["threads"], 2);
    assert_eq!(written["server"]["watch_config"], false);
    assert_eq!(
        written["listeners"],
        parsed("[{ address: '{listen}', protocol: h2c }]")
    );
    assert_eq!(
        written["admin"],
        parsed("{ address: '0.0.0.0:{admin_port}', token: t0k }")
    );
    assert_eq!(
        written["fleet"],
        parsed("{ redis: 'redis://127.0.0.1:1', hash_seed: s }")
    );
}

#[test]
fn a_raw_policy_is_kept_as_written() {
    let raw = Policy::raw("circuit_breaker: { consecutive_failures: 5, open: 30s }");
    let built: Policy = Breaker::consecutive_failures(5).open("30s").into();
    assert_eq!(raw, built);
    let set: Policy = Breaker::consecutive_failures(5).set("open", "30s").into();
    assert_eq!(set, built);
}

#[test]
#[should_panic(expected = "not one `kind: { fields }` entry")]
fn a_raw_policy_must_be_one_entry() {
    Policy::raw("deny: { ips: [] }\nabuse: {}");
}
