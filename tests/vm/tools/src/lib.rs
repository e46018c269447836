//! Helpers shared by the guest-side test tools: errno names for the `ok` / `error ERRNO` verdict
//! lines the VM scenarios record as facts.
use std::io;

/// The symbolic name of `errno` (`EPERM`, `EBUSY`, ...), or `E<n>` for one not listed here.
pub fn errno_name(errno: i32) -> String {
    iommu_enforcer_common::errno::name(errno).map_or_else(|| format!("E{errno}"), str::to_string)
}

/// [`errno_name`] of an `io::Error`; `EOTHER` when it carries no errno.
pub fn io_errno_name(e: &io::Error) -> String {
    e.raw_os_error()
        .map(errno_name)
        .unwrap_or_else(|| "EOTHER".into())
}

/// The errno of the last failed libc call.
pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The `ok` / `error ERRNO` verdict line for a result whose error is an errno (0 = success).
pub fn verdict(errno: i32) -> String {
    if errno == 0 {
        "ok".into()
    } else {
        format!("error {}", errno_name(errno))
    }
}
