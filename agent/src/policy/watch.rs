//! The policy file, live: an inotify watch on its directory (and on the directory of the file
//! it resolves to), so a changed file is read again without a restart or a timer. A Kubernetes
//! ConfigMap volume holds `policy.toml -> ..data/policy.toml` and `..data -> ..<timestamp>`; an
//! update writes a new timestamped directory and renames a `..data_tmp` symlink over `..data`:
//! the file's own inode never changes, the directory it sits in sees a rename. Any create,
//! rename, close-after-write or delete there only says "read again": the SHA-256 of the bytes
//! decides whether anything changed.
use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{writer_watch, Policy, PolicyError};

/// What a directory on the way to the policy is watched for.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_ONLYDIR;

/// The SHA-256 of `bytes`, lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of the default policy: that of an empty file, which means the same.
pub fn default_digest() -> String {
    digest(b"")
}

/// Reads the policy at `path` once: the policy and the digest of the bytes it was read from.
pub fn load(path: &Path) -> Result<(Policy, String), PolicyError> {
    let bytes = Policy::read(path)?;
    let sum = digest(&bytes);
    Ok((Policy::from_bytes(bytes, path)?, sum))
}

/// What a look at a changed directory found.
#[derive(Debug)]
pub enum Change {
    /// A valid policy with new content: put it in force.
    Apply { policy: Policy, digest: String },
    /// New content that cannot be used: the policy in force stays.
    Reject(PolicyError),
}

/// The policy file's path, the digest in force, and the inotify instance watching it.
pub struct PolicyWatch {
    path: PathBuf,
    /// The digest of the policy in force.
    applied: String,
    /// What the last read saw (a digest, or why it could not read): the same content twice
    /// is one change.
    seen: String,
    fd: OwnedFd,
}

impl PolicyWatch {
    /// Watches `path`, whose content in force has digest `applied`.
    pub fn new(path: &Path, applied: &str) -> io::Result<Self> {
        let mut w = Self {
            path: path.to_path_buf(),
            applied: applied.to_owned(),
            seen: applied.to_owned(),
            fd: writer_watch::inotify()?,
        };
        w.arm();
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the pending notifications and the file; `None` when its content is what was seen
    /// last (or is the policy in force again).
    pub fn changed(&mut self) -> Option<Change> {
        writer_watch::drain(self.fd.as_raw_fd());
        // The file may resolve into a new directory now (a ConfigMap's next timestamp).
        self.arm();
        let bytes = match Policy::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let seen = format!("unreadable: {e}");
                if seen == self.seen {
                    return None;
                }
                self.seen = seen;
                return Some(Change::Reject(e));
            }
        };
        let sum = digest(&bytes);
        if sum == self.seen {
            return None;
        }
        self.seen.clone_from(&sum);
        match Policy::from_bytes(bytes, &self.path) {
            Err(e) => Some(Change::Reject(e)),
            Ok(_) if sum == self.applied => {
                log::info!(
                    "policy {}: back to the content in force ({sum})",
                    self.path.display()
                );
                None
            }
            Ok(policy) => {
                self.applied.clone_from(&sum);
                Some(Change::Apply {
                    policy,
                    digest: sum,
                })
            }
        }
    }

    /// Watches the file's directory and the directory of the file it resolves to. Adding a
    /// watch twice is a no-op in the kernel; one on a directory that went is dropped by it.
    fn arm(&mut self) {
        let fd = self.fd.as_raw_fd();
        let dirs = [
            Some(self.path.clone()),
            std::fs::canonicalize(&self.path).ok(),
        ];
        for file in dirs.into_iter().flatten() {
            let dir = match file.parent() {
                Some(d) if d.as_os_str().is_empty() => Path::new("."),
                Some(d) => d,
                None => continue,
            };
            writer_watch::add_watch(fd, dir, MASK, "policy");
        }
    }
}

impl AsRawFd for PolicyWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink, time::Duration};

    use super::*;

    /// Waits (bounded) until the inotify fd is readable.
    fn readable(w: &PolicyWatch) -> bool {
        let mut p = libc::pollfd {
            fd: w.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, its length given.
        unsafe { libc::poll(&mut p, 1, Duration::from_secs(5).as_millis() as i32) == 1 }
    }

    /// A ConfigMap volume as the kubelet lays it out: `..<ts>/policy.toml`, `..data -> ..<ts>`,
    /// `policy.toml -> ..data/policy.toml`.
    fn configmap(dir: &Path, ts: &str, text: &str) {
        fs::create_dir(dir.join(ts)).unwrap();
        fs::write(dir.join(ts).join("policy.toml"), text).unwrap();
        symlink(ts, dir.join("..data")).unwrap();
        symlink("..data/policy.toml", dir.join("policy.toml")).unwrap();
    }

    /// The kubelet's atomic update: a new timestamped directory, `..data_tmp` renamed over
    /// `..data`, the old directory removed.
    fn swap(dir: &Path, old: &str, ts: &str, text: &str) {
        fs::create_dir(dir.join(ts)).unwrap();
        fs::write(dir.join(ts).join("policy.toml"), text).unwrap();
        symlink(ts, dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        fs::remove_dir_all(dir.join(old)).unwrap();
    }

    #[test]
    fn a_configmap_swap_is_seen_and_applied_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        configmap(dir, "..2026_12_07_10_00_00.1", "");
        let path = dir.join("policy.toml");
        let (policy, first) = load(&path).unwrap();
        assert!(policy.reserve.is_empty());
        assert_eq!(first, default_digest());
        let mut w = PolicyWatch::new(&path, &first).unwrap();

        let text = "[[reserve]]\ngroup = \"14\"\ndriver = \"none\"\n";
        swap(
            dir,
            "..2026_12_07_10_00_00.1",
            "..2026_12_07_10_05_00.2",
            text,
        );
        assert!(readable(&w), "the rename over ..data is seen");
        let Some(Change::Apply { policy, digest: d }) = w.changed() else {
            panic!("the new policy is applied");
        };
        assert_eq!(d, digest(text.as_bytes()));
        assert_eq!(policy.reserve.len(), 1);
        assert_eq!(w.changed().map(|_| ()), None, "nothing new: nothing to do");

        // The same bytes swapped in again (a ConfigMap touched, not changed): nothing.
        swap(
            dir,
            "..2026_12_07_10_05_00.2",
            "..2026_12_07_10_06_00.3",
            text,
        );
        assert!(readable(&w));
        assert!(w.changed().is_none());
    }

    #[test]
    fn a_broken_file_is_rejected_with_its_line_and_column_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        configmap(dir, "..a", "protect_user_groups = true\n");
        let path = dir.join("policy.toml");
        let (_, first) = load(&path).unwrap();
        let mut w = PolicyWatch::new(&path, &first).unwrap();
        swap(
            dir,
            "..a",
            "..b",
            "protect_user_groups = true\n[[reserve]\n",
        );
        assert!(readable(&w));
        match w.changed() {
            Some(Change::Reject(PolicyError::Invalid { line, column, .. })) => {
                assert_eq!((line, column), (2, 11));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        // Written again, byte for byte: said once.
        swap(
            dir,
            "..b",
            "..c",
            "protect_user_groups = true\n[[reserve]\n",
        );
        assert!(readable(&w));
        assert!(w.changed().is_none());
        // Back to the content in force: nothing to apply.
        swap(dir, "..c", "..d", "protect_user_groups = true\n");
        assert!(readable(&w));
        assert!(w.changed().is_none());
    }

    #[test]
    fn a_plain_file_rewritten_in_place_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("policy.toml");
        fs::write(&path, "").unwrap();
        let mut w = PolicyWatch::new(&path, &default_digest()).unwrap();
        fs::write(&path, "protect_user_groups = false\n").unwrap();
        assert!(readable(&w));
        let Some(Change::Apply { policy, .. }) = w.changed() else {
            panic!("applied");
        };
        assert!(!policy.protect_user_groups);
        // Deleted: reported (the old policy stays), once.
        fs::remove_file(&path).unwrap();
        assert!(readable(&w));
        assert!(matches!(
            w.changed(),
            Some(Change::Reject(PolicyError::Read { .. }))
        ));
        assert!(w.changed().is_none());
    }
}
