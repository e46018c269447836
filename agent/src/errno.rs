//! The symbolic names of the errnos the agent can see, in one table: kernel return values in
//! ring-buffer records (`-16` -> `EBUSY`), the agent's own syscalls (sysfs reads and writes,
//! pins, the metrics socket: `EMFILE` when it runs out of descriptors) and the events and logs
//! that report them. Every place that names an errno reads this table.
use std::io;

/// (errno, name): the one table ([`iommu_enforcer_common::errno`]), shared with the test
/// node's tools.
pub use iommu_enforcer_common::errno::NAMES;

/// The symbolic name of a (positive) errno: `None` for one the table does not name.
pub fn name(errno: i32) -> Option<&'static str> {
    iommu_enforcer_common::errno::name(errno)
}

/// The symbolic errno of an I/O error (`EACCES`), or `errno N`, or `no errno`.
pub fn of_io(e: &io::Error) -> String {
    match e.raw_os_error() {
        None => "no errno".to_string(),
        Some(n) => name(n).map_or_else(|| format!("errno {n}"), str::to_owned),
    }
}

/// Whether `e` says the thing read does not exist (ENOENT, ENOTDIR): the one answer a reader
/// may take as "nothing there". Any other failure (EMFILE, EIO, a stall) leaves it unknown.
pub fn is_absent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
        || (e.raw_os_error().is_none() && e.kind() == io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cover_the_descriptor_limits() {
        let mut seen = std::collections::BTreeSet::new();
        for (n, s) in NAMES {
            assert!(seen.insert(*n), "errno {n} ({s}) twice");
            assert!(s.starts_with('E'), "{s}");
        }
        assert_eq!(name(24), Some("EMFILE"));
        assert_eq!(name(23), Some("ENFILE"));
        assert_eq!(name(16), Some("EBUSY"));
        assert_eq!(name(517), Some("EPROBE_DEFER"));
        assert_eq!(name(4095), None);
        assert_eq!(of_io(&io::Error::from_raw_os_error(24)), "EMFILE");
        assert_eq!(of_io(&io::Error::from_raw_os_error(4000)), "errno 4000");
        assert_eq!(of_io(&io::Error::other("x")), "no errno");
    }

    /// The shared table is written in numbers (no libc in `no_std`): each is libc's.
    #[test]
    fn the_table_agrees_with_libc() {
        for (n, s) in [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::ESRCH, "ESRCH"),
            (libc::EINTR, "EINTR"),
            (libc::EIO, "EIO"),
            (libc::ENXIO, "ENXIO"),
            (libc::E2BIG, "E2BIG"),
            (libc::ENOEXEC, "ENOEXEC"),
            (libc::EBADF, "EBADF"),
            (libc::ECHILD, "ECHILD"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::ENOMEM, "ENOMEM"),
            (libc::EACCES, "EACCES"),
            (libc::EFAULT, "EFAULT"),
            (libc::EBUSY, "EBUSY"),
            (libc::EEXIST, "EEXIST"),
            (libc::EXDEV, "EXDEV"),
            (libc::ENODEV, "ENODEV"),
            (libc::ENOTDIR, "ENOTDIR"),
            (libc::EISDIR, "EISDIR"),
            (libc::EINVAL, "EINVAL"),
            (libc::ENFILE, "ENFILE"),
            (libc::EMFILE, "EMFILE"),
            (libc::ENOTTY, "ENOTTY"),
            (libc::ETXTBSY, "ETXTBSY"),
            (libc::EFBIG, "EFBIG"),
            (libc::ENOSPC, "ENOSPC"),
            (libc::ESPIPE, "ESPIPE"),
            (libc::EROFS, "EROFS"),
            (libc::EPIPE, "EPIPE"),
            (libc::ERANGE, "ERANGE"),
            (libc::EDEADLK, "EDEADLK"),
            (libc::ENAMETOOLONG, "ENAMETOOLONG"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::ENOTEMPTY, "ENOTEMPTY"),
            (libc::ELOOP, "ELOOP"),
            (libc::ENODATA, "ENODATA"),
            (libc::EOVERFLOW, "EOVERFLOW"),
            (libc::ENOTSOCK, "ENOTSOCK"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::EADDRINUSE, "EADDRINUSE"),
            (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
            (libc::ENETDOWN, "ENETDOWN"),
            (libc::ECONNABORTED, "ECONNABORTED"),
            (libc::ECONNRESET, "ECONNRESET"),
            (libc::ENOBUFS, "ENOBUFS"),
            (libc::ENOTCONN, "ENOTCONN"),
            (libc::ETIMEDOUT, "ETIMEDOUT"),
            (libc::ETIME, "ETIME"),
            (libc::ECONNREFUSED, "ECONNREFUSED"),
            (libc::EHOSTUNREACH, "EHOSTUNREACH"),
            (libc::EALREADY, "EALREADY"),
            (libc::EINPROGRESS, "EINPROGRESS"),
            (libc::ESTALE, "ESTALE"),
            (libc::EDQUOT, "EDQUOT"),
            (libc::ECANCELED, "ECANCELED"),
            (libc::EKEYREJECTED, "EKEYREJECTED"),
            (libc::EOWNERDEAD, "EOWNERDEAD"),
        ] {
            assert_eq!(name(n), Some(s), "{s}");
        }
    }

    #[test]
    fn only_enoent_and_enotdir_are_absence() {
        assert!(is_absent(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(is_absent(&io::Error::from_raw_os_error(libc::ENOTDIR)));
        for e in [
            libc::EMFILE,
            libc::ENFILE,
            libc::EIO,
            libc::EACCES,
            libc::ETIMEDOUT,
        ] {
            assert!(!is_absent(&io::Error::from_raw_os_error(e)), "{e}");
        }
    }
}
