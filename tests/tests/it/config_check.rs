//! `breakwater -t`: validate a config and exit like `nginx -t`.

use std::process::Command;

use crate::BIN;

fn check(text: &str) -> (i32, String, String) {
    check_with_env(text, &[])
}

fn check_with_env(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "\
listeners:
  - address: 127.0.0.1:1
clusters:
  orders:
    endpoints: [127.0.0.1:2]
routes:
  - id: a
    cluster: orders
";

#[test]
fn good_file_prints_ok_and_exits_zero() {
    let (code, out, _) = check(GOOD);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn the_shipped_configs_are_valid() {
    for name in ["gateway.yaml", "cluster.yaml"] {
        let path = format!("{}/../conf/{name}", env!("CARGO_MANIFEST_DIR"));
        // cluster.yaml takes the fleet's seed from the environment.
        let out = Command::new(BIN)
            .args(["-t", "-c", &path])
            .env("BREAKWATER_HASH_SEED", "0123456789abcdef0123456789abcdef")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = format!("{}/../conf/cluster.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["-t", "-c", &path])
        .env_remove("BREAKWATER_HASH_SEED")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cluster.hash_seed_env: environment variable BREAKWATER_HASH_SEED is not set"),
        "{err}"
    );
}

#[test]
fn global_scope_needs_a_cluster_section_and_the_section_is_checked() {
    let global = format!(
        "{GOOD}    policies:\n      - rate_limit: {{ key: ip, limit: 5, window: 1s, algorithm: sliding_window, scope: global }}\n"
    );
    let (code, _, err) = check(&global);
    assert_eq!(code, 1);
    assert!(
        err.contains(".scope: scope: global needs a top-level `cluster` section"),
        "{err}"
    );
    // A fleet must name its secret key-hash seed: a default would be public.
    let unseeded = format!("{global}\ncluster:\n  redis: redis://127.0.0.1:1\n");
    let (code, _, err) = check(&unseeded);
    assert_eq!(code, 1);
    assert!(err.contains("cluster.hash_seed: required"), "{err}");
    let (code, _, err) = check(&format!("{unseeded}  hash_seed: 24301\n"));
    assert_eq!(code, 1);
    assert!(
        err.contains("cluster.hash_seed: is 5 bytes long; must be 16 to 1024 bytes"),
        "{err}"
    );
    let with_cluster = format!("{unseeded}  hash_seed: 0123456789abcdef0123\n");
    let (code, out, err) = check(&with_cluster);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    let from_env = format!("{unseeded}  hash_seed_env: BW_TEST_SEED\n");
    let (code, out, err) = check_with_env(&from_env, &[("BW_TEST_SEED", "0123456789abcdef0123")]);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    let gcra = with_cluster.replace("algorithm: sliding_window, ", "");
    let (code, _, err) = check(&gcra);
    assert_eq!(code, 1);
    assert!(
        err.contains(".algorithm: scope: global counts fleet-wide sliding windows"),
        "{err}"
    );
    let bad =
        format!("{global}\ncluster:\n  redis: http://nope\n  hash_seed: 0123456789abcdef0123\n");
    let (code, _, err) = check(&bad);
    assert_eq!(code, 1);
    assert!(
        err.contains("cluster.redis: \"http://nope\" is not a redis:// URL"),
        "{err}"
    );
}

#[test]
fn bad_files_name_the_path_and_exit_one() {
    let cases = [
        (
            GOOD.replace("cluster: orders", "cluster: ordrs"),
            "routes[0].cluster: unknown cluster \"ordrs\"",
        ),
        (
            GOOD.replace("    cluster: orders", "    clustr: orders"),
            "routes[0].clustr: unknown field `clustr`",
        ),
        (
            GOOD.replace("127.0.0.1:2", "127.0.0.1"),
            "clusters.orders.endpoints[0]",
        ),
        ("listeners: [\n".to_string(), "line "),
    ];
    for (text, want) in cases {
        let (code, out, err) = check(&text);
        assert_eq!(code, 1, "{text}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(want), "stderr {err:?} should contain {want:?}");
    }
    // A syntax error carries the position.
    let (_, _, err) = check(&GOOD.replace("    cluster: orders", "    clustr: orders"));
    assert!(err.contains("(line 8, column"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["-t", "-c", "/nonexistent/gw.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/gw.yaml"));
}
