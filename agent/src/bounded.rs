//! Reading a file whose contents the kernel or a user controls, with a bound on its size and
//! no way to block: opened with `O_NONBLOCK`, refused unless it is a regular file (a FIFO, a
//! device node such as `/dev/zero` or a socket could hang the read or never end), and read to at
//! most the bound. sysfs attributes are at most a page ([`ATTRIBUTE_LIMIT`]; `config` is the
//! 4 KiB PCI Express configuration space, [`CONFIG_LIMIT`]).
//!
//! Kept rather than `std::fs::read` (issue 23): that opens whatever the path names and reads
//! to the end, so a FIFO blocks forever and `/dev/zero` behind an attribute's name fills
//! memory; the tests below show both refused without a blocking read.
use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// A sysfs (or procfs) attribute: one page.
pub const ATTRIBUTE_LIMIT: usize = 4096;
/// A PCI device's `config`: the extended configuration space.
pub const CONFIG_LIMIT: usize = 4096;

/// Why a bounded read failed. The path is left to the caller's error, which carries it.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    /// ENOENT: the file (or a directory above it) does not exist.
    #[error("does not exist (ENOENT)")]
    NotFound,
    /// Not a regular file: refused without reading.
    #[error("is a {0}, not a regular file: not read")]
    NotRegular(&'static str),
    /// More than `limit` bytes: the rest was not read.
    #[error("is longer than {limit} bytes: not read")]
    TooLong { limit: usize },
    /// Any other error, with its errno.
    #[error("{}: {source}", errno_name(source))]
    Io {
        #[source]
        source: io::Error,
    },
}

impl From<io::Error> for BoundedError {
    fn from(source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            BoundedError::NotFound
        } else {
            BoundedError::Io { source }
        }
    }
}

/// The symbolic errno of an I/O error (`EACCES`), or `errno N`, or `no errno`.
pub fn errno_name(e: &io::Error) -> String {
    crate::errno::of_io(e)
}

/// What kind of non-regular file `t` is.
fn kind_of(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// Opens `path` for a bounded read: refused unless a regular file, checked before the open
/// (opening a device node can have effects) and again on the open descriptor (the path may
/// have been replaced in between).
fn open_regular(path: &Path) -> Result<File, BoundedError> {
    if let Some(kind) = kind_of(std::fs::metadata(path)?.file_type()) {
        return Err(BoundedError::NotRegular(kind));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    if let Some(kind) = kind_of(file.metadata()?.file_type()) {
        return Err(BoundedError::NotRegular(kind));
    }
    Ok(file)
}

/// Reads at most `limit` bytes of the regular file at `path`; a longer file is
/// [`BoundedError::TooLong`] (one byte past the bound is read to tell).
pub fn read(path: &Path, limit: usize) -> Result<Vec<u8>, BoundedError> {
    let file = open_regular(path)?;
    let mut data = Vec::with_capacity(limit.min(ATTRIBUTE_LIMIT) + 1);
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(bound).read_to_end(&mut data)?;
    if data.len() > limit {
        return Err(BoundedError::TooLong { limit });
    }
    Ok(data)
}

/// What kind of non-regular file a `st_mode` is.
fn kind_of_mode(mode: libc::mode_t) -> Option<&'static str> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFDIR => Some("directory"),
        libc::S_IFIFO => Some("FIFO"),
        libc::S_IFCHR => Some("character device"),
        libc::S_IFBLK => Some("block device"),
        libc::S_IFSOCK => Some("socket"),
        _ => Some("special file"),
    }
}

fn last_error() -> BoundedError {
    BoundedError::from(io::Error::last_os_error())
}

/// [`read`] of the file `name` in the directory open as `dir` (an `O_PATH` descriptor is
/// enough): the same checks (regular before the open and again after it, `O_NONBLOCK`, the
/// bound), but each call walks one path component instead of the whole path. The sysfs scan
/// reads five attributes of each device this way: the path walks were most of its system time.
pub fn read_at(dir: BorrowedFd<'_>, name: &CStr, limit: usize) -> Result<Vec<u8>, BoundedError> {
    // SAFETY: `stat` is plain data, written by the kernel; `name` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, 0) } != 0 {
        return Err(last_error());
    }
    if let Some(kind) = kind_of_mode(st.st_mode) {
        return Err(BoundedError::NotRegular(kind));
    }
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: as above; the descriptor returned is owned by `file` at once.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `fd` was just opened and is not owned elsewhere.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if let Some(kind) = kind_of(file.metadata()?.file_type()) {
        return Err(BoundedError::NotRegular(kind));
    }
    // One byte past the bound tells a file that is too long; no growth, no probe reads.
    let mut data = vec![0u8; limit + 1];
    let mut len = 0;
    while len < data.len() {
        match (&file).read(&mut data[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if len > limit {
        return Err(BoundedError::TooLong { limit });
    }
    data.truncate(len);
    Ok(data)
}

/// [`read`] as text; bytes that are not UTF-8 become U+FFFD.
pub fn read_text(path: &Path, limit: usize) -> Result<String, BoundedError> {
    read(path, limit).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `text` cut to `max` characters, with control characters escaped, for messages that quote
/// what a file held (never echo a whole attribute).
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reads_up_to_the_bound_and_refuses_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let page = dir.path().join("page");
        std::fs::write(&page, vec![b'a'; 4096]).expect("write");
        assert_eq!(read(&page, 4096).expect("reads").len(), 4096);
        let more = dir.path().join("more");
        std::fs::write(&more, vec![b'a'; 4097]).expect("write");
        assert!(matches!(
            read(&more, 4096),
            Err(BoundedError::TooLong { limit: 4096 })
        ));
    }

    #[test]
    fn refuses_fifos_devices_and_directories_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read(&fifo, 4096).expect_err("a FIFO is refused");
        assert_eq!(e.to_string(), "is a FIFO, not a regular file: not read");
        assert!(matches!(
            read(Path::new("/dev/zero"), 4096),
            Err(BoundedError::NotRegular("character device"))
        ));
        assert!(matches!(
            read(dir.path(), 4096),
            Err(BoundedError::NotRegular("directory"))
        ));
        assert!(matches!(
            read(&dir.path().join("absent"), 4096),
            Err(BoundedError::NotFound)
        ));
    }

    #[test]
    fn reads_relative_to_a_directory_with_the_same_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("vendor"), "0x10de\n").expect("write");
        std::fs::write(dir.path().join("long"), vec![b'a'; 4097]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let c = std::ffi::CString::new(dir.path().join("fifo").as_os_str().as_encoded_bytes())
            .expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let d = File::open(dir.path()).expect("open dir");
        let at = |name: &CStr| read_at(d.as_fd(), name, 4096);
        assert_eq!(at(c"vendor").expect("reads"), b"0x10de\n");
        assert!(matches!(
            at(c"long"),
            Err(BoundedError::TooLong { limit: 4096 })
        ));
        assert!(matches!(at(c"fifo"), Err(BoundedError::NotRegular("FIFO"))));
        assert!(matches!(
            at(c"sub"),
            Err(BoundedError::NotRegular("directory"))
        ));
        assert!(matches!(at(c"absent"), Err(BoundedError::NotFound)));
    }

    #[test]
    fn other_errors_name_their_errno() {
        let e = BoundedError::from(io::Error::from_raw_os_error(libc::EACCES));
        assert!(e.to_string().starts_with("EACCES: "), "{e}");
        let e = BoundedError::from(io::Error::from_raw_os_error(4000));
        assert!(e.to_string().starts_with("errno 4000: "), "{e}");
    }

    #[test]
    fn excerpts_are_cut_and_escaped() {
        assert_eq!(excerpt("abc", 8), "abc");
        assert_eq!(excerpt("a\nbcdef", 3), "a\\nb…");
    }
}
