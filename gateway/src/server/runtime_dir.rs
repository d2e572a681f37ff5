//! Where the pid file and the upgrade socket live by default: a private
//! runtime directory.
//!
//! The upgrade socket hands the listening sockets to whoever connects to it
//! when the running process is told to upgrade (`SIGQUIT`); in a directory
//! that other users can write to (`/tmp`), or under one they can rename
//! things in, any local user could put their own socket there and take the
//! gateway's listeners. So the defaults go to the first of:
//!
//! 1. `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`; the first entry if
//!    several are listed), used as is;
//! 2. `$XDG_RUNTIME_DIR/breakwater` (the login session's private directory);
//! 3. `/run/breakwater` when running as root;
//! 4. `$TMPDIR/breakwater-<uid>` (`/tmp` if unset), as tmux does.
//!
//! The directory and each of its ancestors up to `/` must pass
//! [`safe_path::check_private`]: real directories (no symlinks), owned by
//! root or by this user (the directory itself by this user), and not
//! writable by group or others, except for sticky ancestors like `/tmp`.
//! Missing components are created with mode 0700 at startup; `-t` creates
//! nothing. A candidate that fails is an error naming the environment
//! variable it came from, except that root passes over an unsafe
//! `$XDG_RUNTIME_DIR` (kept by `su` from the user who ran it, and owned by
//! that user) for `/run/breakwater`, with a warning: that user could
//! otherwise swap the directory and take root's listeners.
//!
//! `server.upgrade_sock`, when set, is used as given but held to the same
//! rule for the directory it is in (owned by root or this user, created if
//! missing): a socket in `/tmp` itself, or in a directory someone else can
//! write to, is refused, naming the setting. `server.pid_file` is used as
//! given, unchecked. An upgrade (`-u`) must run with the same environment as
//! the process it replaces, so that both pick the same directory.

mod safe_path;

use std::path::{Path, PathBuf};

use crate::config::file::ServerFile;
use safe_path::{check_private, Owner, Why};

/// Root's default when no environment variable names a directory.
const ROOT_DIR: &str = "/run/breakwater";

/// The pid file and upgrade socket the process will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    pub pid_file: String,
    pub upgrade_sock: String,
    /// Candidate directories passed over, with why: warnings for the log.
    pub passed_over: Vec<String>,
}

/// Whether a missing directory is created (startup) or only its absence
/// accepted (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    Create,
    CheckOnly,
}

/// The paths for `server`, from the process environment and effective user.
pub fn resolve(server: &ServerFile, prepare: Prepare) -> Result<RuntimePaths, String> {
    let env = |name: &str| std::env::var(name).ok();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    resolve_with(server, prepare, &env, euid)
}

/// [`resolve`] with an injected environment and user.
pub fn resolve_with(
    server: &ServerFile,
    prepare: Prepare,
    env: &dyn Fn(&str) -> Option<String>,
    euid: u32,
) -> Result<RuntimePaths, String> {
    resolve_in(server, prepare, env, euid, Path::new(ROOT_DIR))
}

/// [`resolve_with`] with root's default directory injected too.
fn resolve_in(
    server: &ServerFile,
    prepare: Prepare,
    env: &dyn Fn(&str) -> Option<String>,
    euid: u32,
    root_dir: &Path,
) -> Result<RuntimePaths, String> {
    if let Some(sock) = &server.upgrade_sock {
        check_upgrade_sock(sock, euid, prepare)?;
    }
    if let (Some(pid_file), Some(upgrade_sock)) = (&server.pid_file, &server.upgrade_sock) {
        return Ok(RuntimePaths {
            pid_file: pid_file.clone(),
            upgrade_sock: upgrade_sock.clone(),
            passed_over: Vec::new(),
        });
    }
    let (dir, passed_over) = choose_dir(env, euid, prepare, root_dir)?;
    let in_dir = |name: &str| dir.join(name).display().to_string();
    Ok(RuntimePaths {
        pid_file: server
            .pid_file
            .clone()
            .unwrap_or_else(|| in_dir("breakwater.pid")),
        upgrade_sock: server
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| in_dir("upgrade.sock")),
        passed_over,
    })
}

/// A default directory and the environment variable it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub dir: PathBuf,
    /// `$XDG_RUNTIME_DIR=/run/user/1000`, or `root's default`.
    pub from: String,
}

/// The default directories in the order they are tried (module doc): one,
/// or for root with `$XDG_RUNTIME_DIR` set, that and then `root_dir`.
pub fn candidates(
    env: &dyn Fn(&str) -> Option<String>,
    euid: u32,
    root_dir: &Path,
) -> Vec<Candidate> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let from_env = |name: &str, value: &str, dir: PathBuf| Candidate {
        dir,
        from: format!("${name}={value}"),
    };
    let root_default = Candidate {
        dir: root_dir.to_path_buf(),
        from: "root's default".into(),
    };
    if let Some(first) = set("RUNTIME_DIRECTORY")
        .and_then(|v| v.split(':').find(|p| !p.is_empty()).map(str::to_string))
    {
        return vec![from_env("RUNTIME_DIRECTORY", &first, first.clone().into())];
    }
    if let Some(xdg) = set("XDG_RUNTIME_DIR") {
        let from_xdg = from_env("XDG_RUNTIME_DIR", &xdg, Path::new(&xdg).join("breakwater"));
        if euid != 0 {
            return vec![from_xdg];
        }
        return vec![from_xdg, root_default];
    }
    if euid == 0 {
        return vec![root_default];
    }
    let tmp = set("TMPDIR").unwrap_or_else(|| "/tmp".into());
    let dir = Path::new(&tmp).join(format!("breakwater-{euid}"));
    vec![from_env("TMPDIR", &tmp, dir)]
}

/// The first candidate that is private (created if `prepare` allows), and
/// the ones passed over on the way. Only the last one's failure is an error.
fn choose_dir(
    env: &dyn Fn(&str) -> Option<String>,
    euid: u32,
    prepare: Prepare,
    root_dir: &Path,
) -> Result<(PathBuf, Vec<String>), String> {
    let mut passed_over = Vec::new();
    let mut list = candidates(env, euid, root_dir).into_iter().peekable();
    while let Some(candidate) = list.next() {
        let failure = match ensure_private(&candidate.dir, euid, prepare) {
            Ok(()) => return Ok((candidate.dir, passed_over)),
            Err(e) => format!("{}: {e}", candidate.from),
        };
        match list.peek() {
            Some(next) => {
                passed_over.push(format!("{failure}; using {} instead", next.dir.display()))
            }
            None if passed_over.is_empty() => return Err(failure),
            None => return Err(format!("{}; then {failure}", passed_over.join("; "))),
        }
    }
    Err("no runtime directory to try".into())
}

/// Creates `dir` (mode 0700) if missing and `prepare` allows, then checks
/// that only `euid` can write to it or rename it or any of its ancestors
/// (module doc). The error says what to do about it.
pub fn ensure_private(dir: &Path, euid: u32, prepare: Prepare) -> Result<(), String> {
    let create = prepare == Prepare::Create;
    let unsafe_dir = match check_private(dir, euid, Owner::Us, create) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let fix = "or set server.pid_file and server.upgrade_sock";
    if unsafe_dir.path == dir {
        let remedy = match unsafe_dir.why {
            Why::Writable { .. } => "chmod 700 it, ",
            Why::Owner { .. } | Why::NotADirectory => "remove it, ",
            Why::Symlink { .. } => "use the path it points to, ",
            Why::Relative | Why::DotDot => "write it out in full, ",
            _ => "fix that, ",
        };
        return Err(format!("the runtime directory {unsafe_dir}; {remedy}{fix}"));
    }
    let risk = match unsafe_dir.why {
        Why::Owner { .. } | Why::WritableParent { .. } => {
            "; another user could put a directory of theirs in its place and take the \
             listeners: use a private path, "
        }
        Why::Symlink { .. } => "; use the path it points to, ",
        _ => "; fix that, ",
    };
    Err(format!(
        "the runtime directory {} is not private: {unsafe_dir}{risk}{fix}",
        dir.display()
    ))
}

/// Checks the directory of an explicit `server.upgrade_sock` like the
/// default one, but it may be root's (`/run`): whoever can replace the
/// socket there can take the listeners on the next upgrade.
fn check_upgrade_sock(sock: &str, euid: u32, prepare: Prepare) -> Result<(), String> {
    let path = Path::new(sock);
    if !path.is_absolute() {
        return Err(format!(
            "server.upgrade_sock: {sock} is not an absolute path"
        ));
    }
    let Some(dir) = path.parent() else {
        return Err(format!("server.upgrade_sock: {sock} names no file"));
    };
    check_private(dir, euid, Owner::RootOrUs, prepare == Prepare::Create).map_err(|e| {
        let remedy = match e.why {
            Why::Owner { .. } | Why::Writable { .. } | Why::WritableParent { .. } => {
                ", so another user could put their own socket there and take the listeners; \
                 use a directory only root and this user can write to"
            }
            Why::Symlink { .. } => "; use the path it points to",
            Why::Relative | Why::DotDot => "; write it out in full",
            Why::NotADirectory | Why::Unreadable(_) | Why::Uncreatable(_) => "",
        };
        format!("server.upgrade_sock: {sock} is not in a private directory: {e}{remedy}")
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// A non-root uid whose checks pass on this process's temp dirs: this
    /// user's own, or any non-root one if we are root (then the temp dirs
    /// are root's, which every user may rely on).
    fn a_user() -> u32 {
        match euid() {
            0 => 1000,
            uid => uid,
        }
    }

    /// Another user's uid for a directory, which only root can make.
    const NOBODY: u32 = 65534;

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    fn mkdir(path: &Path, mode: u32) {
        std::fs::create_dir(path).unwrap();
        chmod(path, mode);
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn sock_at(path: &Path) -> ServerFile {
        ServerFile {
            upgrade_sock: Some(path.display().to_string()),
            ..ServerFile::default()
        }
    }

    #[test]
    fn the_directory_is_chosen_in_order() {
        let root_dir = Path::new("/run/breakwater");
        let dirs = |env: &dyn Fn(&str) -> Option<String>, euid: u32| {
            candidates(env, euid, root_dir)
                .into_iter()
                .map(|c| (c.dir.display().to_string(), c.from))
                .collect::<Vec<_>>()
        };
        let pair = |dir: &str, from: &str| (dir.to_string(), from.to_string());
        let all = env_of(&[
            ("RUNTIME_DIRECTORY", "/run/bw-svc:/run/other"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("TMPDIR", "/var/tmp"),
        ]);
        let svc = pair("/run/bw-svc", "$RUNTIME_DIRECTORY=/run/bw-svc");
        assert_eq!(dirs(&all, 1000), dirs(&all, 0));
        assert_eq!(dirs(&all, 0), [svc]);
        let xdg = env_of(&[
            ("RUNTIME_DIRECTORY", ""),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]);
        let user = pair(
            "/run/user/1000/breakwater",
            "$XDG_RUNTIME_DIR=/run/user/1000",
        );
        let root = pair("/run/breakwater", "root's default");
        assert_eq!(dirs(&xdg, 1000)[..], dirs(&xdg, 0)[..1]);
        // Root tries its own directory if the session's is not private.
        assert_eq!(dirs(&xdg, 0), [user, root.clone()]);
        let none = env_of(&[("TMPDIR", "/var/tmp")]);
        assert_eq!(dirs(&none, 0), [root]);
        assert_eq!(
            dirs(&none, 1000),
            [pair("/var/tmp/breakwater-1000", "$TMPDIR=/var/tmp")]
        );
        assert_eq!(
            dirs(&env_of(&[]), 7),
            [pair("/tmp/breakwater-7", "$TMPDIR=/tmp")]
        );
    }

    #[test]
    fn a_missing_directory_is_created_private_and_the_defaults_land_there() {
        let tmp = tempfile::tempdir().unwrap();
        let xdg = tmp.path().display().to_string();
        let env = env_of(&[("XDG_RUNTIME_DIR", &xdg)]);
        let dir = tmp.path().join("breakwater");
        let checked =
            resolve_with(&ServerFile::default(), Prepare::CheckOnly, &env, euid()).unwrap();
        assert!(!dir.exists(), "-t creates nothing");
        let paths = resolve_with(&ServerFile::default(), Prepare::Create, &env, euid()).unwrap();
        assert_eq!(paths, checked);
        assert_eq!(
            paths.pid_file,
            dir.join("breakwater.pid").display().to_string()
        );
        assert_eq!(
            paths.upgrade_sock,
            dir.join("upgrade.sock").display().to_string()
        );
        assert!(paths.passed_over.is_empty());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_directory_others_can_write_to_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o770, 0o702, 0o1777] {
            chmod(tmp.path(), mode);
            let err = ensure_private(tmp.path(), euid(), Prepare::Create).unwrap_err();
            assert!(err.contains("writable by group or others"), "{err}");
            assert!(err.contains("server.upgrade_sock"), "{err}");
        }
        chmod(tmp.path(), 0o755);
        assert_eq!(ensure_private(tmp.path(), euid(), Prepare::Create), Ok(()));
    }

    #[test]
    fn a_directory_of_another_user_a_symlink_or_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ensure_private(tmp.path(), euid() + 1, Prepare::CheckOnly).unwrap_err();
        assert!(err.contains("belongs to uid"), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let err = ensure_private(&link, euid(), Prepare::Create).unwrap_err();
        assert!(err.contains("is a symlink"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = ensure_private(&file, euid(), Prepare::Create).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn a_parent_others_can_write_to_is_refused_unless_it_is_sticky() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("shared");
        mkdir(&parent, 0o700);
        let run = parent.join("run");
        mkdir(&run, 0o700);
        let fresh = parent.join("fresh");
        for mode in [0o777, 0o770, 0o702] {
            chmod(&parent, mode);
            for prepare in [Prepare::CheckOnly, Prepare::Create] {
                // Another user could rename `run` away and put theirs there.
                let err = ensure_private(&run, euid(), prepare).unwrap_err();
                let want = format!(
                    "the runtime directory {} is not private: {} is writable by group or \
                     others (mode {mode:04o}) and not sticky",
                    run.display(),
                    parent.display()
                );
                assert!(err.starts_with(&want), "{err}");
                // A missing one is refused too, and not made there.
                let err = ensure_private(&fresh, euid(), prepare).unwrap_err();
                assert!(err.contains("not sticky"), "{err}");
                assert!(!fresh.exists());
            }
        }
        // Sticky, like /tmp: only the owner of `run` may rename it.
        for mode in [0o1777, 0o1770] {
            chmod(&parent, mode);
            assert_eq!(ensure_private(&run, euid(), Prepare::CheckOnly), Ok(()));
            assert_eq!(ensure_private(&fresh, euid(), Prepare::Create), Ok(()));
            let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o700);
            std::fs::remove_dir(&fresh).unwrap();
        }
    }

    #[test]
    fn a_parent_of_another_user_is_refused_even_under_a_sticky_one() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        mkdir(&theirs, 0o755);
        let run = theirs.join("run");
        mkdir(&run, 0o700);
        let sticky = tmp.path().join("sticky");
        mkdir(&sticky, 0o1777);
        let theirs_in_sticky = sticky.join("theirs");
        mkdir(&theirs_in_sticky, 0o755);
        let run_in_sticky = theirs_in_sticky.join("run");
        mkdir(&run_in_sticky, 0o700);
        // Which directory is someone else's, and whose, as seen by `us`.
        let (us, them, bad) = if euid() == 0 {
            chown(&theirs, NOBODY);
            chown(&theirs_in_sticky, NOBODY);
            (0, NOBODY, [theirs, theirs_in_sticky])
        } else {
            // Without root no directory can be given away: check as
            // another user instead, to whom all of ours are someone
            // else's, the temp dir first.
            eprintln!(
                "not root: checking as uid {} instead of chowning",
                euid() + 1
            );
            let tmp = tmp.path().to_path_buf();
            (euid() + 1, euid(), [tmp.clone(), tmp])
        };
        for (bad, run) in bad.iter().zip([&run, &run_in_sticky]) {
            let err = ensure_private(run, us, Prepare::CheckOnly).unwrap_err();
            let want = format!(
                "is not private: {} belongs to uid {them}, not to root or this user (uid {us})",
                bad.display()
            );
            assert!(err.contains(&want), "{err}");
            assert!(err.contains("take the listeners"), "{err}");
        }
    }

    #[test]
    fn a_symlink_anywhere_on_the_path_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        mkdir(&real, 0o700);
        mkdir(&real.join("run"), 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_private(&link.join("run"), euid(), Prepare::Create).unwrap_err();
        let want = format!(
            "is not private: {} is a symlink (to {}); use the path it points to",
            link.display(),
            real.display()
        );
        assert!(err.contains(&want), "{err}");
        let err = resolve_with(
            &sock_at(&link.join("run/u.sock")),
            Prepare::CheckOnly,
            &env_of(&[]),
            euid(),
        )
        .unwrap_err();
        assert!(err.contains("server.upgrade_sock"), "{err}");
        assert!(err.contains("is a symlink"), "{err}");
        // The same place, written out, is fine.
        assert_eq!(
            ensure_private(&real.join("run"), euid(), Prepare::Create),
            Ok(())
        );
    }

    #[test]
    fn an_unsafe_directory_from_the_environment_names_the_variable() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        mkdir(&open, 0o777);
        let shown = open.display().to_string();
        let sub = format!("{shown}/sub");
        for (var, value) in [
            ("RUNTIME_DIRECTORY", &sub),
            ("XDG_RUNTIME_DIR", &shown),
            ("TMPDIR", &shown),
        ] {
            let env = env_of(&[(var, value)]);
            for prepare in [Prepare::CheckOnly, Prepare::Create] {
                let err =
                    resolve_with(&ServerFile::default(), prepare, &env, a_user()).unwrap_err();
                assert!(
                    err.starts_with(&format!("${var}={value}: the runtime directory {shown}/")),
                    "{err}"
                );
                let want = format!("is not private: {shown} is writable by group or others");
                assert!(err.contains(&want), "{err}");
            }
        }
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0, "nothing made");
        let err = resolve_with(
            &ServerFile::default(),
            Prepare::CheckOnly,
            &env_of(&[("XDG_RUNTIME_DIR", "run/user/1000")]),
            a_user(),
        )
        .unwrap_err();
        assert!(err.contains("is not an absolute path"), "{err}");
    }

    #[test]
    fn root_passes_over_a_session_directory_of_another_user() {
        if euid() != 0 {
            eprintln!("skipped: only root can make a directory of another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // `su` keeps the user's XDG_RUNTIME_DIR: theirs, mode 0700.
        let session = tmp.path().join("user-1000");
        mkdir(&session, 0o700);
        chown(&session, NOBODY);
        let root_dir = tmp.path().join("run-breakwater");
        let env = env_of(&[("XDG_RUNTIME_DIR", &session.display().to_string())]);
        let paths =
            resolve_in(&ServerFile::default(), Prepare::Create, &env, 0, &root_dir).unwrap();
        assert_eq!(
            paths.upgrade_sock,
            root_dir.join("upgrade.sock").display().to_string()
        );
        assert!(!session.join("breakwater").exists());
        let [warning] = &paths.passed_over[..] else {
            panic!("one warning: {:?}", paths.passed_over)
        };
        let want = format!(
            "$XDG_RUNTIME_DIR={0}: the runtime directory {0}/breakwater is not private: \
             {0} belongs to uid {NOBODY}, not to root or this user (uid 0)",
            session.display()
        );
        assert!(warning.starts_with(&want), "{warning}");
        assert!(
            warning.ends_with(&format!("using {} instead", root_dir.display())),
            "{warning}"
        );
        // If root's own is not private either, that is the error.
        chmod(&root_dir, 0o777);
        let err = resolve_in(
            &ServerFile::default(),
            Prepare::CheckOnly,
            &env,
            0,
            &root_dir,
        )
        .unwrap_err();
        assert!(err.starts_with(&want), "{err}");
        let want = format!(
            "; then root's default: the runtime directory {} is writable",
            root_dir.display()
        );
        assert!(err.contains(&want), "{err}");
    }

    #[test]
    fn an_explicit_upgrade_socket_must_be_in_a_private_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_of(&[("XDG_RUNTIME_DIR", &tmp.path().display().to_string())]);
        let check = |sock: &Path, prepare| resolve_with(&sock_at(sock), prepare, &env, euid());
        // Where the test harness puts them: in a temp dir under sticky /tmp.
        let sock = tmp.path().join("u.sock");
        assert_eq!(
            check(&sock, Prepare::Create).unwrap().upgrade_sock,
            sock.display().to_string()
        );
        // A missing directory is created private at startup.
        let sock = tmp.path().join("made/u.sock");
        check(&sock, Prepare::CheckOnly).unwrap();
        assert!(!tmp.path().join("made").exists(), "-t creates nothing");
        check(&sock, Prepare::Create).unwrap();
        let mode = std::fs::metadata(tmp.path().join("made"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o700);
        // Anyone could bind it first in a shared directory, sticky or not,
        // or rename the private one under an open parent.
        for (dir, mode, sock) in [
            ("open", 0o777, "open/u.sock"),
            ("sticky", 0o1777, "sticky/u.sock"),
            ("group", 0o770, "group/private/u.sock"),
        ] {
            mkdir(&tmp.path().join(dir), mode);
            let sock = tmp.path().join(sock);
            if let Some(private) = sock.parent().filter(|p| !p.exists()) {
                mkdir(private, 0o700);
            }
            for prepare in [Prepare::CheckOnly, Prepare::Create] {
                let err = check(&sock, prepare).unwrap_err();
                let want = format!(
                    "server.upgrade_sock: {} is not in a private directory: {} is writable \
                     by group or others (mode {mode:04o})",
                    sock.display(),
                    tmp.path().join(dir).display()
                );
                assert!(err.starts_with(&want), "{err}");
            }
        }
        let err = check(Path::new("u.sock"), Prepare::CheckOnly).unwrap_err();
        assert_eq!(err, "server.upgrade_sock: u.sock is not an absolute path");
    }

    #[test]
    fn explicit_paths_are_used_as_given() {
        let tmp = tempfile::tempdir().unwrap();
        let server = ServerFile {
            pid_file: Some(tmp.path().join("bw.pid").display().to_string()),
            upgrade_sock: Some(tmp.path().join("bw.sock").display().to_string()),
            ..ServerFile::default()
        };
        // The environment names a directory that would be refused: untouched.
        let env = env_of(&[("RUNTIME_DIRECTORY", "/proc/nonexistent")]);
        let paths = resolve_with(&server, Prepare::Create, &env, euid()).unwrap();
        assert_eq!(Some(paths.pid_file), server.pid_file);
        assert_eq!(Some(paths.upgrade_sock), server.upgrade_sock);
    }
}
