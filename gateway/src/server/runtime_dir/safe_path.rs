//! Is a directory private all the way up from `/`?
//!
//! Checking only the directory itself is not enough: whoever may write to
//! one of its ancestors can rename the checked directory away and put their
//! own in its place, between the check and the bind or at any time before a
//! later upgrade. So, as OpenSSH's `safe_path` does for `authorized_keys`,
//! every component from `/` down is checked with `lstat`:
//!
//! - it is a real directory, not a symlink (see below);
//! - it belongs to root or to this process's effective user; the directory
//!   itself, when [`Owner::Us`], to this user only;
//! - it is not writable by group or others, except that an ancestor with
//!   the sticky bit (`/tmp`) may be: there only an entry's owner, the
//!   directory's owner or root may rename or remove an entry, and both the
//!   entry under it and the sticky directory itself are held to the owner
//!   rule above. The directory itself gets no such exception: in `/tmp`
//!   anyone could bind a socket of the name we are about to use.
//!
//! Once the chain passes, no other (non-root) user can change any of it, so
//! the answer stays true until the process connects to or binds the socket,
//! unlike a check of the last component alone.
//!
//! Symlinks are refused, not resolved: the path that is checked is then the
//! very path the kernel walks at bind and connect time, and nothing about a
//! link's own location needs judging. Canonicalizing first would accept a
//! link planted in a directory someone else owns (`/run/user/1000/breakwater
//! -> /etc` would have root put its socket in `/etc`). The cost: a path that
//! goes through a symlink such as `/var/run` must be written out resolved;
//! the error names the link and its target.
//!
//! Missing components are created with mode 0700 one at a time when asked
//! (each then checked like any other: another user may have made it first),
//! or else accepted: they would be created private at startup, and checked
//! then. Limits: ACLs and group membership are not read (a group-writable
//! directory is refused even if the group is yours), and root can of course
//! change anything.
//!
//! Not the `fs-mistrust` crate (Tor's Arti), which has the same sticky rule:
//! it follows symlinks rather than refusing them, trusts groups it looks up
//! in `/etc/group`, and brings a builder-macro dependency tree for what is
//! here one walk down the path.

use std::fs::{DirBuilder, Metadata};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

const STICKY: u32 = 0o1000;
const GROUP_OR_OTHER_WRITE: u32 = 0o022;

/// Who may own the directory itself. Its ancestors may always belong to
/// root or to this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This user only: a directory we keep our own files in.
    Us,
    /// Root or this user: a directory named in the config.
    RootOrUs,
}

/// Why a directory is not private, and which component is at fault.
#[derive(Debug)]
pub struct Unsafe {
    /// The component at fault: the directory itself or one of its ancestors.
    pub path: PathBuf,
    pub why: Why,
}

#[derive(Debug)]
pub enum Why {
    Relative,
    DotDot,
    Symlink {
        target: Option<PathBuf>,
    },
    NotADirectory,
    /// `only_us`: the rule was "this user", not "root or this user".
    Owner {
        uid: u32,
        euid: u32,
        only_us: bool,
    },
    /// The directory itself is writable by group or others.
    Writable {
        mode: u32,
    },
    /// An ancestor is writable by group or others and is not sticky.
    WritableParent {
        mode: u32,
    },
    Unreadable(std::io::Error),
    Uncreatable(std::io::Error),
}

impl std::fmt::Display for Unsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.why {
            Why::Relative => write!(f, "{path} is not an absolute path"),
            Why::DotDot => write!(f, "{path} contains `..`"),
            Why::Symlink { target } => {
                write!(f, "{path} is a symlink")?;
                if let Some(target) = target {
                    write!(f, " (to {})", target.display())?;
                }
                Ok(())
            }
            Why::NotADirectory => write!(f, "{path} is not a directory"),
            Why::Owner { uid, euid, only_us } => {
                let allowed = if *only_us { "" } else { "root or " };
                write!(
                    f,
                    "{path} belongs to uid {uid}, not to {allowed}this user (uid {euid})"
                )
            }
            Why::Writable { mode } => {
                write!(f, "{path} is writable by group or others (mode {mode:04o})")
            }
            Why::WritableParent { mode } => write!(
                f,
                "{path} is writable by group or others (mode {mode:04o}) and not sticky"
            ),
            Why::Unreadable(e) => write!(f, "cannot read {path}: {e}"),
            Why::Uncreatable(e) => write!(f, "cannot create {path}: {e}"),
        }
    }
}

/// Checks that `dir` and every ancestor up to `/` are private to `euid`
/// (module doc), creating missing components with mode 0700 if `create`.
pub fn check_private(dir: &Path, euid: u32, owner: Owner, create: bool) -> Result<(), Unsafe> {
    let fail = |path: &Path, why| {
        Err(Unsafe {
            path: path.to_path_buf(),
            why,
        })
    };
    if !dir.is_absolute() {
        return fail(dir, Why::Relative);
    }
    let mut names = Vec::new();
    for component in dir.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return fail(dir, Why::DotDot),
        }
    }
    let root = Path::new("/");
    let mut parent = lstat(root).map_err(|why| Unsafe {
        path: root.into(),
        why,
    })?;
    check_component(root, &parent, euid, owner, names.is_empty())?;
    let mut here = PathBuf::from(root);
    for (i, name) in names.iter().enumerate() {
        let mode = parent.mode() & 0o7777;
        if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return fail(&here, Why::WritableParent { mode });
        }
        here.push(name);
        let meta = match lstat(&here) {
            Err(Why::Unreadable(e)) if e.kind() == ErrorKind::NotFound => {
                if !create {
                    // The rest would be created private at startup.
                    return Ok(());
                }
                match DirBuilder::new().mode(0o700).create(&here) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return fail(&here, Why::Uncreatable(e)),
                }
                lstat(&here).map_err(|why| Unsafe {
                    path: here.clone(),
                    why,
                })?
            }
            Err(why) => return fail(&here, why),
            Ok(meta) => meta,
        };
        check_component(&here, &meta, euid, owner, i + 1 == names.len())?;
        parent = meta;
    }
    Ok(())
}

fn lstat(path: &Path) -> Result<Metadata, Why> {
    std::fs::symlink_metadata(path).map_err(Why::Unreadable)
}

/// The rules for one component; `last` when it is the directory itself.
fn check_component(
    path: &Path,
    meta: &Metadata,
    euid: u32,
    owner: Owner,
    last: bool,
) -> Result<(), Unsafe> {
    let fail = |why| {
        Err(Unsafe {
            path: path.to_path_buf(),
            why,
        })
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).ok();
        return fail(Why::Symlink { target });
    }
    if !meta.is_dir() {
        return fail(Why::NotADirectory);
    }
    let only_us = last && owner == Owner::Us;
    let uid = meta.uid();
    if uid != euid && (uid != 0 || only_us) {
        return fail(Why::Owner { uid, euid, only_us });
    }
    let mode = meta.mode() & 0o7777;
    if last && mode & GROUP_OR_OTHER_WRITE != 0 {
        return fail(Why::Writable { mode });
    }
    Ok(())
}
