//! Where the pid file and the upgrade socket live by default: a private
//! runtime directory.
//!
//! The upgrade socket hands the listening sockets to whoever connects to it
//! when the running process is told to upgrade (`SIGQUIT`); in a directory
//! that other users can write to (`/tmp`), any local user could bind it
//! first and take the gateway's listeners. So the defaults go to the first of:
//!
//! 1. `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`; the first entry if
//!    several are listed), used as is;
//! 2. `$XDG_RUNTIME_DIR/breakwater` (the login session's private directory);
//! 3. `/run/breakwater` when running as root;
//! 4. `$TMPDIR/breakwater-<uid>` (`/tmp` if unset), as tmux does.
//!
//! The directory is created with mode 0700 if missing. If it exists it must
//! be a real directory (not a symlink) owned by this user and not writable
//! by group or others, or startup is refused: a directory someone else made
//! or can write to is theirs to plant a socket in. Paths set in the config
//! (`server.pid_file`, `server.upgrade_sock`) are used as given, unchecked.
//! An upgrade (`-u`) must run with the same environment as the process it
//! replaces, so that both pick the same directory.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::file::ServerFile;

/// The pid file and upgrade socket the process will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    pub pid_file: String,
    pub upgrade_sock: String,
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
    if let (Some(pid_file), Some(upgrade_sock)) = (&server.pid_file, &server.upgrade_sock) {
        return Ok(RuntimePaths {
            pid_file: pid_file.clone(),
            upgrade_sock: upgrade_sock.clone(),
        });
    }
    let dir = default_dir(env, euid);
    ensure_private(&dir, euid, prepare)?;
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
    })
}

/// The private runtime directory (see the module doc for the order).
pub fn default_dir(env: &dyn Fn(&str) -> Option<String>, euid: u32) -> PathBuf {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(first) = set("RUNTIME_DIRECTORY")
        .and_then(|v| v.split(':').find(|p| !p.is_empty()).map(str::to_string))
    {
        return PathBuf::from(first);
    }
    if let Some(xdg) = set("XDG_RUNTIME_DIR") {
        return Path::new(&xdg).join("breakwater");
    }
    if euid == 0 {
        return PathBuf::from("/run/breakwater");
    }
    let tmp = set("TMPDIR").unwrap_or_else(|| "/tmp".into());
    Path::new(&tmp).join(format!("breakwater-{euid}"))
}

/// Creates `dir` (mode 0700) if missing and `prepare` allows, then checks
/// that only `euid` can write to it.
pub fn ensure_private(dir: &Path, euid: u32, prepare: Prepare) -> Result<(), String> {
    let shown = dir.display();
    let fix = "or set server.pid_file and server.upgrade_sock";
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if prepare == Prepare::CheckOnly {
                return Ok(());
            }
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create the runtime directory {shown}: {e} ({fix})"))?;
            // Checked again below: another user may have made it first.
            std::fs::symlink_metadata(dir)
                .map_err(|e| format!("cannot read the runtime directory {shown}: {e}"))?
        }
        Err(e) => return Err(format!("cannot read the runtime directory {shown}: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "the runtime directory {shown} is a symlink; remove it, {fix}"
        ));
    }
    if !meta.is_dir() {
        return Err(format!(
            "the runtime directory {shown} is not a directory; remove it, {fix}"
        ));
    }
    if meta.uid() != euid {
        return Err(format!(
            "the runtime directory {shown} belongs to uid {}, not to this user (uid {euid}); \
             remove it, {fix}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "the runtime directory {shown} is writable by group or others (mode {mode:04o}); \
             chmod 700 it, {fix}"
        ));
    }
    Ok(())
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

    #[test]
    fn the_directory_is_chosen_in_order() {
        let all = env_of(&[
            ("RUNTIME_DIRECTORY", "/run/bw-svc:/run/other"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("TMPDIR", "/var/tmp"),
        ]);
        assert_eq!(default_dir(&all, 1000), PathBuf::from("/run/bw-svc"));
        let xdg = env_of(&[
            ("RUNTIME_DIRECTORY", ""),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]);
        assert_eq!(
            default_dir(&xdg, 1000),
            PathBuf::from("/run/user/1000/breakwater")
        );
        let none = env_of(&[("TMPDIR", "/var/tmp")]);
        assert_eq!(default_dir(&none, 0), PathBuf::from("/run/breakwater"));
        assert_eq!(
            default_dir(&none, 1000),
            PathBuf::from("/var/tmp/breakwater-1000")
        );
        assert_eq!(
            default_dir(&env_of(&[]), 7),
            PathBuf::from("/tmp/breakwater-7")
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
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_directory_others_can_write_to_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o770, 0o702] {
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = ensure_private(tmp.path(), euid(), Prepare::Create).unwrap_err();
            assert!(err.contains("writable by group or others"), "{err}");
            assert!(err.contains("server.upgrade_sock"), "{err}");
        }
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
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
    fn explicit_paths_are_used_as_given() {
        let server = ServerFile {
            pid_file: Some("/srv/bw.pid".into()),
            upgrade_sock: Some("/srv/bw.sock".into()),
            ..ServerFile::default()
        };
        // The environment names a directory that would be refused: untouched.
        let env = env_of(&[("RUNTIME_DIRECTORY", "/proc/nonexistent")]);
        let paths = resolve_with(&server, Prepare::Create, &env, euid()).unwrap();
        assert_eq!(paths.pid_file, "/srv/bw.pid");
        assert_eq!(paths.upgrade_sock, "/srv/bw.sock");
    }
}
