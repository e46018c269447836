//! Policy paths (`trusted_writers`) name files of the host, but the agent runs in a container
//! whose root is its own (scratch) image; the DaemonSet mounts the host's `/` at `/host`
//! (`--host-root`). [`resolve`] walks a host path under that root the way the host's kernel would,
//! component by component, and re-roots absolute symlink targets at the host root instead of the
//! container's (`/usr/bin/x -> /opt/x` means `/host/opt/x`, not the container's `/opt/x`). `..`
//! never climbs above the host root. Only reads metadata and links under the root it is given.
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
    time::SystemTime,
};

/// Symlinks followed before giving up, as the kernel's ELOOP limit.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("{path}: not an absolute path")]
    NotAbsolute { path: PathBuf },
    #[error("{path}: more than {MAX_LINKS} symbolic links")]
    Loop { path: PathBuf },
    #[error("{path}: {at}: {error}")]
    Io {
        path: PathBuf,
        at: PathBuf,
        error: io::Error,
    },
}

/// The path, inside `host_root`, of the file the host knows as `path` (absolute), with every
/// symlink followed relative to the host's root. The file itself must exist.
pub fn resolve(host_root: &Path, path: &Path) -> Result<PathBuf, HostPathError> {
    if !path.is_absolute() {
        return Err(HostPathError::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    // Components still to walk, last first; the resolved host path so far.
    let mut todo: Vec<PathBuf> = components(path);
    todo.reverse();
    let mut done = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name.as_os_str() == ".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&name);
        let inside = under(host_root, &candidate);
        let meta = fs::symlink_metadata(&inside).map_err(|error| HostPathError::Io {
            path: path.to_path_buf(),
            at: candidate.clone(),
            error,
        })?;
        if !meta.file_type().is_symlink() {
            done = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(HostPathError::Loop {
                path: path.to_path_buf(),
            });
        }
        let target = fs::read_link(&inside).map_err(|error| HostPathError::Io {
            path: path.to_path_buf(),
            at: candidate.clone(),
            error,
        })?;
        if target.is_absolute() {
            done = PathBuf::from("/");
        }
        for c in components(&target).into_iter().rev() {
            todo.push(c);
        }
    }
    Ok(under(host_root, &done))
}

/// The normal and `..` components of a path (root and `.` dropped).
fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// `host_path` (absolute, resolved) under `host_root`.
fn under(host_root: &Path, host_path: &Path) -> PathBuf {
    host_root.join(host_path.strip_prefix("/").unwrap_or(host_path))
}

/// `policy` with its `trusted_writers` resolved under `host_root` (the agent's view of the
/// host's files). A path that does not resolve is kept under the host root as written, so that
/// the enforcer reports it by name; the reason is logged here.
pub fn for_host(host_root: &Path, mut policy: super::Policy) -> super::Policy {
    for w in &mut policy.trusted_writers {
        *w = match resolve(host_root, w) {
            Ok(inside) => inside,
            Err(e) => {
                log::warn!(
                    "trusted writer on the host (--host-root {}): {e}",
                    host_root.display()
                );
                under(host_root, w)
            }
        };
    }
    policy
}

/// What a re-check compares: the identity and change time of every link and file on the way to
/// each policy path (so a replaced binary, a moved symlink or a file that appears all count),
/// `None` where something is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Option<FileStamp>>);

/// dev, inode, ctime (s, ns), mtime of one file or link.
type FileStamp = (u64, u64, i64, i64, Option<SystemTime>);

/// The [`Stamp`] of `paths` under `host_root`: cheap (lstat and stat per path) so that the agent
/// re-resolves only when it changed.
pub fn stamp(host_root: &Path, paths: &[PathBuf]) -> Stamp {
    let one = |p: &Path| {
        fs::metadata(p).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.ctime(),
                m.ctime_nsec(),
                m.modified().ok(),
            )
        })
    };
    Stamp(
        paths
            .iter()
            .flat_map(|p| {
                let inside = under(host_root, p);
                let link = fs::symlink_metadata(&inside)
                    .ok()
                    .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec(), None));
                let file = resolve(host_root, p).ok().and_then(|r| one(&r));
                [link, file]
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A host root with /usr/bin/vfio-manage, /bin -> usr/bin (relative), /usr/local/bin/tool ->
    /// /usr/bin/vfio-manage (absolute: the host's, not the container's), and a loop.
    fn host() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(root.join("usr/local/bin")).expect("mkdir");
        fs::write(root.join("usr/bin/vfio-manage"), "#!/bin/sh\n").expect("write");
        symlink("usr/bin", root.join("bin")).expect("symlink");
        symlink("/usr/bin/vfio-manage", root.join("usr/local/bin/tool")).expect("symlink");
        symlink("/loop-b", root.join("loop-a")).expect("symlink");
        symlink("/loop-a", root.join("loop-b")).expect("symlink");
        symlink(
            "../../../../usr/bin/vfio-manage",
            root.join("usr/local/bin/up"),
        )
        .expect("ln");
        dir
    }

    #[test]
    fn plain_paths_and_symlinks_resolve_under_the_host_root() {
        let h = host();
        let root = h.path();
        let want = root.join("usr/bin/vfio-manage");
        for p in [
            "/usr/bin/vfio-manage",
            "/bin/vfio-manage",
            "/usr/local/bin/tool",
            "/usr/./bin/../bin/vfio-manage",
            // `..` stops at the host root, as at the real root.
            "/usr/local/bin/up",
        ] {
            assert_eq!(resolve(root, Path::new(p)).expect(p), want, "{p}");
        }
    }

    #[test]
    fn an_absolute_symlink_never_reaches_the_containers_own_files() {
        let h = host();
        let root = h.path();
        // /etc/hostname exists in the container (and on this machine) but not in the host root.
        symlink("/etc/hostname", root.join("usr/bin/escape")).expect("symlink");
        let e = resolve(root, Path::new("/usr/bin/escape")).expect_err("not in the host root");
        assert!(
            matches!(&e, HostPathError::Io { at, .. } if at == Path::new("/etc")),
            "{e}"
        );
    }

    #[test]
    fn missing_files_loops_and_relative_paths_are_errors() {
        let h = host();
        let root = h.path();
        let e = resolve(root, Path::new("/usr/bin/nvidia-smi")).expect_err("missing");
        assert!(e.to_string().contains("/usr/bin/nvidia-smi"), "{e}");
        assert!(matches!(
            resolve(root, Path::new("/loop-a")),
            Err(HostPathError::Loop { .. })
        ));
        assert!(matches!(
            resolve(root, Path::new("usr/bin/vfio-manage")),
            Err(HostPathError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn a_policy_is_rewritten_to_the_agents_view_of_the_host() {
        let h = host();
        let root = h.path();
        let policy = crate::policy::Policy {
            trusted_writers: vec![
                PathBuf::from("/usr/local/bin/tool"),
                PathBuf::from("/usr/bin/absent"),
            ],
            ..Default::default()
        };
        let policy = for_host(root, policy);
        assert_eq!(
            policy.trusted_writers,
            [
                root.join("usr/bin/vfio-manage"),
                root.join("usr/bin/absent")
            ]
        );
    }

    #[test]
    fn the_stamp_changes_when_a_file_appears_is_replaced_or_a_link_moves() {
        let h = host();
        let root = h.path();
        let paths = vec![
            PathBuf::from("/usr/local/bin/tool"),
            PathBuf::from("/usr/bin/later"),
        ];
        let s0 = stamp(root, &paths);
        assert_eq!(stamp(root, &paths), s0, "nothing changed");
        fs::write(root.join("usr/bin/later"), "x").expect("write");
        let s1 = stamp(root, &paths);
        assert_ne!(s1, s0, "a file appeared");
        // Replaced by rename, as package managers do: a new inode.
        fs::write(root.join("usr/bin/new"), "y").expect("write");
        fs::rename(root.join("usr/bin/new"), root.join("usr/bin/vfio-manage")).expect("mv");
        let s2 = stamp(root, &paths);
        assert_ne!(s2, s1, "the link's target was replaced");
        fs::remove_file(root.join("usr/local/bin/tool")).expect("rm");
        symlink("/usr/bin/later", root.join("usr/local/bin/tool")).expect("symlink");
        assert_ne!(stamp(root, &paths), s2, "the link moved");
    }
}
