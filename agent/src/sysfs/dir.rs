//! A device directory held open (`O_PATH`) while its attributes are read: each read, stat and
//! readlink then walks one path component instead of the whole path from the root, which on a
//! 100,000-device tree was most of the scan's system time (issue 20).
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::bounded::{self, BoundedError};

pub(super) struct DeviceDir {
    fd: OwnedFd,
    pub(super) path: PathBuf,
}

fn c_path(path: &OsStr) -> io::Result<CString> {
    CString::new(path.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl DeviceDir {
    /// Opens the directory `path` (ENOENT when it is gone).
    pub(super) fn open(path: PathBuf) -> io::Result<DeviceDir> {
        let c = c_path(path.as_os_str())?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `c` is NUL-terminated; the descriptor is owned at once.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned nowhere else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(DeviceDir { fd, path })
    }

    /// A bounded read of the attribute `name` ([`bounded::read_at`]).
    pub(super) fn read(&self, name: &CStr, limit: usize) -> Result<Vec<u8>, BoundedError> {
        bounded::read_at(self.fd.as_fd(), name, limit)
    }

    /// The target of the link `name`.
    pub(super) fn read_link(&self, name: &CStr) -> io::Result<PathBuf> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` has `buf.len()` writable bytes; `name` is NUL-terminated.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        if n >= buf.len() {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.truncate(n);
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }

    /// `path/name`, for messages.
    pub(super) fn join(&self, name: &CStr) -> PathBuf {
        self.path
            .join(Path::new(OsStr::from_bytes(name.to_bytes())))
    }
}
