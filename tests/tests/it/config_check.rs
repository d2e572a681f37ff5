//! `breakwater -t`: validate a config and exit like `nginx -t`.

use std::process::Command;

use crate::BIN;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
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
        let out = Command::new(BIN)
            .args(["-t", "-c", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    let with_cluster = format!("{global}\ncluster:\n  redis: redis://127.0.0.1:1\n");
    let (code, out, err) = check(&with_cluster);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    let gcra = with_cluster.replace("algorithm: sliding_window, ", "");
    let (code, _, err) = check(&gcra);
    assert_eq!(code, 1);
    assert!(
        err.contains(".algorithm: scope: global counts fleet-wide sliding windows"),
        "{err}"
    );
    let bad = format!("{global}\ncluster:\n  redis: http://nope\n");
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
fn numbers_that_would_overflow_are_refused_with_their_path() {
    // The reported config: burst × override limit overflowed (a panic in a
    // debug build, a wrapped limit in release). Now each is range-checked.
    let policy = |burst: &str, limit: &str| {
        format!(
            "{GOOD}    policies:\n      - rate_limit: {{ key: ip, limit: 10, window: 1s, algorithm: gcra, burst: {burst}, overrides: [{{ key: vip, limit: {limit} }}] }}\n"
        )
    };
    for (text, want) in [
        (
            policy("4294967295", "18446744073709551615"),
            "routes[0].policies[0].rate_limit.burst: must be between 1 and 1000000000",
        ),
        (
            policy("20", "18446744073709551615"),
            "routes[0].policies[0].rate_limit.overrides[0].limit: must be between 1 and 1000000000",
        ),
        (
            GOOD.replace(
                "    cluster: orders",
                "    cluster: orders\n    timeouts: { total: 99999999999h }",
            ),
            "routes[0].timeouts.total: duration \"99999999999h\" is too long: at most 365d",
        ),
        (
            GOOD.replace(
                "[127.0.0.1:2]",
                "[127.0.0.1:2]\n    read_timeout_ms: 18446744073709551615",
            ),
            "clusters.orders.read_timeout_ms: must be between 1 and 86400000",
        ),
    ] {
        let (code, _, err) = check(&text);
        assert_eq!(code, 1, "{text}\n{err}");
        assert!(err.contains(want), "stderr {err:?} should contain {want:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
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
