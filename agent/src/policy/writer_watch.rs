//! `trusted_writers` that appear or change after start: inotify watches on every directory on
//! the way to each writer (as written and as resolved, under `--host-root`), so a writer
//! installed, replaced or re-linked later is re-resolved when it happens, without a timer. An
//! event only says "look again": the [`super::host_path::stamp`] of the paths decides whether
//! anything that matters changed.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use super::host_path::{self, Stamp};

/// What a directory is watched for: entries made, removed, renamed or changed (a chmod, a
/// rewrite), and the directory itself going.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// The writers' host paths, their last stamp and the inotify instance watching them.
pub struct WriterWatch {
    host_root: PathBuf,
    paths: Vec<PathBuf>,
    stamp: Stamp,
    fd: OwnedFd,
}

impl WriterWatch {
    /// Watches `paths` (host paths, as in the policy) under `host_root`. `None` without writers.
    pub fn new(host_root: &Path, paths: &[PathBuf]) -> io::Result<Option<Self>> {
        if paths.is_empty() {
            return Ok(None);
        }
        let fd = inotify()?;
        let mut w = Self {
            host_root: host_root.to_path_buf(),
            paths: paths.to_vec(),
            stamp: host_path::stamp(host_root, paths),
            fd,
        };
        w.arm();
        Ok(Some(w))
    }

    /// The writers as the agent sees them (resolved under the host root), as of now.
    pub fn resolved(&self) -> Vec<PathBuf> {
        let policy = super::Policy {
            trusted_writers: self.paths.clone(),
            ..Default::default()
        };
        host_path::for_host(&self.host_root, policy).trusted_writers
    }

    /// Reads the pending notifications; `true` when a writer appeared, went or changed since
    /// the last time (the watches then follow the new paths).
    pub fn changed(&mut self) -> bool {
        drain(self.fd.as_raw_fd());
        // A directory on the way may have appeared: watch it too, changed or not.
        self.arm();
        let now = host_path::stamp(&self.host_root, &self.paths);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        true
    }

    /// Watches every existing directory on the way to each path, as written and as resolved
    /// (a symlink's target directory too). Adding a watch twice is a no-op in the kernel.
    fn arm(&mut self) {
        // Resolved quietly: a writer still missing is logged when it is re-resolved, not here.
        let resolved: Vec<PathBuf> = self
            .paths
            .iter()
            .filter_map(|p| host_path::resolve(&self.host_root, p).ok())
            .collect();
        let inside: Vec<PathBuf> = self
            .paths
            .iter()
            .map(|p| self.host_root.join(p.strip_prefix("/").unwrap_or(p)))
            .chain(resolved)
            .collect();
        for path in inside {
            for dir in path.ancestors().skip(1) {
                if !dir.starts_with(&self.host_root) {
                    break;
                }
                if dir.is_dir() {
                    add_watch(self.fd.as_raw_fd(), dir, MASK, "trusted writers");
                }
            }
        }
    }
}

impl AsRawFd for WriterWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A non-blocking inotify instance (also the policy file's, [`super::watch`]).
pub(super) fn inotify() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the fd returned is owned below.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Reads every pending notification: they only say "look again".
pub(super) fn drain(fd: RawFd) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a buffer of the length given.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
    }
}

/// Watches `dir` for `mask`; a failure is logged (for `what`) and the directory left unwatched.
pub(super) fn add_watch(fd: RawFd, dir: &Path, mask: u32, what: &str) {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) } < 0 {
        log::debug!(
            "{what}: cannot watch {}: {}",
            dir.display(),
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink, time::Duration};

    use super::*;

    /// Waits (bounded) until the inotify fd is readable.
    fn readable(w: &WriterWatch) -> bool {
        let mut p = libc::pollfd {
            fd: w.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, its length given.
        unsafe { libc::poll(&mut p, 1, Duration::from_secs(5).as_millis() as i32) == 1 }
    }

    #[test]
    fn a_writer_installed_after_start_is_seen_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/local")).unwrap();
        let paths = [PathBuf::from("/usr/local/bin/vfio-manage")];
        let mut w = WriterWatch::new(root, &paths).unwrap().unwrap();
        // Not there yet: resolved to where it would be, and nothing changed.
        assert!(!w.changed());
        // Its directory appears first (watched through /usr/local), then the file.
        fs::create_dir(root.join("usr/local/bin")).unwrap();
        assert!(readable(&w));
        assert!(!w.changed(), "a directory on the way is not the writer");
        fs::write(root.join("usr/local/bin/vfio-manage"), "#!/bin/sh\n").unwrap();
        assert!(readable(&w), "the new directory is watched too");
        assert!(w.changed());
        assert_eq!(w.resolved(), [root.join("usr/local/bin/vfio-manage")]);
        // Replaced by a symlink to a file elsewhere: followed, and that directory watched.
        fs::create_dir_all(root.join("opt/gpu")).unwrap();
        fs::write(root.join("opt/gpu/vfio-manage"), "#!/bin/sh\n").unwrap();
        fs::remove_file(root.join("usr/local/bin/vfio-manage")).unwrap();
        symlink(
            "/opt/gpu/vfio-manage",
            root.join("usr/local/bin/vfio-manage"),
        )
        .unwrap();
        assert!(readable(&w));
        assert!(w.changed());
        assert_eq!(w.resolved(), [root.join("opt/gpu/vfio-manage")]);
        // The target is replaced by rename (a new inode), as package managers do.
        fs::write(root.join("opt/gpu/new"), "#!/bin/sh\n").unwrap();
        fs::rename(root.join("opt/gpu/new"), root.join("opt/gpu/vfio-manage")).unwrap();
        assert!(readable(&w));
        assert!(w.changed());
    }

    #[test]
    fn no_writers_no_watch() {
        let dir = tempfile::tempdir().unwrap();
        assert!(WriterWatch::new(dir.path(), &[]).unwrap().is_none());
    }
}
