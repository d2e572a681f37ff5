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
    // A private runtime directory of the test's own (none is created by -t).
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .env("RUNTIME_DIRECTORY", "")
        .env("XDG_RUNTIME_DIR", dir.path())
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
    for name in ["gateway.yaml", "fleet.yaml"] {
        let path = format!("{}/../conf/{name}", env!("CARGO_MANIFEST_DIR"));
        // fleet.yaml takes the fleet's seed from the environment.
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
    let path = format!("{}/../conf/fleet.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["-t", "-c", &path])
        .env_remove("BREAKWATER_HASH_SEED")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fleet.hash_seed_env: environment variable BREAKWATER_HASH_SEED is not set"),
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

#[test]
fn a_reachable_admin_without_a_token_is_refused_unless_opted_out() {
    for address in ["0.0.0.0:9901", "[::]:9901", "192.0.2.10:9901"] {
        let open = format!("{GOOD}admin:\n  address: \"{address}\"\n");
        let (code, out, err) = check(&open);
        assert_eq!(code, 1, "{address}: {out}");
        assert!(
            err.contains(&format!(
                "admin.address: {address} is reachable from other hosts"
            )) && err.contains("admin.token")
                && err.contains("admin.insecure_no_token"),
            "{err}"
        );
        let (code, out, err) = check(&format!("{open}  token: t\n"));
        assert_eq!((code, out.trim()), (0, "ok"), "{err}");
        let (code, out, err) = check(&format!("{open}  insecure_no_token: true\n"));
        assert_eq!((code, out.trim()), (0, "ok"), "{err}");
        assert!(
            err.contains("warning: the admin on") && err.contains("has no token"),
            "{err}"
        );
    }
    // Loopback needs no token and gets no warning.
    let (code, _, err) = check(&format!("{GOOD}admin:\n  address: \"[::1]:9901\"\n"));
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn a_reachable_admin_without_a_token_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, format!("{GOOD}admin:\n  address: 0.0.0.0:1\n")).unwrap();
    let out = run_briefly(
        Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .env("XDG_RUNTIME_DIR", dir.path()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.address: 0.0.0.0:1 is reachable"));
}

#[test]
fn admin_token_rules_name_their_paths() {
    let cases = [
        ("  read_token: r\n", "admin.read_token: needs a write token"),
        (
            "  token: same\n  read_token: same\n",
            "admin.read_token: must differ",
        ),
        (
            "  max_stream_subscribers: 0\n",
            "admin.max_stream_subscribers: must be between 1 and 1024",
        ),
        (
            "  allowed_hosts: [\"http://gw\"]\n",
            "admin.allowed_hosts[0]: \"http://gw\" is not a host name",
        ),
    ];
    for (section, want) in cases {
        let (code, _, err) = check(&format!("{GOOD}admin:\n{section}"));
        assert_eq!(code, 1, "{section}");
        assert!(err.contains(want), "stderr {err:?} should contain {want:?}");
    }
}

/// Runs `cmd` to its end, killing it if it is still up after 20 s (a
/// gateway that should have refused to start but did not).
fn run_briefly(cmd: &mut Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_runtime_directory_others_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, format!("{GOOD}admin:\n  address: 127.0.0.1:1\n")).unwrap();
    let want = format!(
        "the runtime directory {} is writable by group or others (mode 0777)",
        runtime.display()
    );
    // `-t` checks it; startup refuses it, before binding anything.
    for args in [&["-t"][..], &[][..]] {
        let out = run_briefly(
            Command::new(BIN)
                .args(args)
                .arg("-c")
                .arg(&path)
                .env("RUNTIME_DIRECTORY", &runtime),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // Explicit paths are the operator's choice and are used as given, but
    // the upgrade socket's directory is held to the same rule.
    let write_paths = |dir: &std::path::Path| {
        std::fs::write(
            &path,
            format!(
                "server:\n  pid_file: {0}/bw.pid\n  upgrade_sock: {0}/u.sock\n{GOOD}",
                dir.display()
            ),
        )
        .unwrap()
    };
    let check = || {
        run_briefly(
            Command::new(BIN)
                .args(["-t", "-c"])
                .arg(&path)
                .env("RUNTIME_DIRECTORY", &runtime),
        )
    };
    write_paths(&runtime);
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "server.upgrade_sock: {}/u.sock is not in a private directory: {} is writable by \
         group or others (mode 0777)",
        runtime.display(),
        runtime.display()
    );
    assert!(err.contains(&want), "{err}");
    write_paths(dir.path());
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_runtime_directory_under_a_parent_others_can_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // The directory is private, but anyone may rename it and put theirs
    // in its place.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtime = open.join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, _, err) = check_with_env(GOOD, &[("RUNTIME_DIRECTORY", runtime.to_str().unwrap())]);
    assert_eq!(code, 1, "{err}");
    let want = format!(
        "the runtime directory {} is not private: {} is writable by group or others (mode 0777) \
         and not sticky",
        runtime.display(),
        open.display()
    );
    assert!(err.contains(&want), "{err}");
}
