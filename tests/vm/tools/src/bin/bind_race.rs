//! `bind-race GROUP HELD_DEVICE SIBLING DRIVER`: measures the window between a VFIO claim and any
//! protection a userspace agent would add only after seeing it. It opens
//! /sys/bus/pci/drivers/DRIVER/bind, claims IOMMU group GROUP exactly as vfio-holder does (open
//! /dev/vfio/GROUP and /dev/vfio/vfio, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU type1v2 or type1,
//! VFIO_GROUP_GET_DEVICE_FD HELD_DEVICE) and immediately write(2)s SIBLING into the bind file.
//! Prints `first_bind ok after N us` or `first_bind error ERRNO after N us` (N: microseconds from
//! the end of the claim to the return of the write), then the verdict `ok` or `error ERRNO` of the
//! bind on the last line, keeps holding the group for BIND_RACE_HOLD seconds (default 3) and exits
//! 0 (bind ok) or 1 (bind refused). A failed claim prints `claim error ERRNO at STEP` and exits 1;
//! a bind file that cannot be opened prints `first_bind error ERRNO at open` and `error ERRNO`
//! and exits 1; 2 on bad usage.
use std::{
    ffi::CString,
    io::Write,
    process::ExitCode,
    time::{Duration, Instant},
};

use vm_tools::{errno_name, last_errno, verdict};

// <linux/vfio.h>, as in tests/vm/holder/src/main.rs: _IO(';', 100 + n).
const VFIO_TYPE: libc::c_ulong = b';' as libc::c_ulong;
const fn vfio_io(nr: libc::c_ulong) -> libc::c_ulong {
    (VFIO_TYPE << 8) | (100 + nr)
}
const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_API_VERSION: libc::c_int = 0;
const VFIO_TYPE1_IOMMU: libc::c_ulong = 1;
const VFIO_TYPE1V2_IOMMU: libc::c_ulong = 3;

#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// A failed claim step and its errno.
type Failure = (String, i32);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, group, device, sibling, driver] = args.as_slice() else {
        eprintln!("usage: bind-race GROUP HELD_DEVICE SIBLING DRIVER");
        return ExitCode::from(2);
    };
    let hold = std::env::var("BIND_RACE_HOLD")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(3u64);

    // Opened before the claim so that only the write(2) itself falls inside the window.
    let bind_path = format!("/sys/bus/pci/drivers/{driver}/bind");
    let bind_fd = match open(&bind_path, libc::O_WRONLY) {
        Ok(fd) => fd,
        Err((_, errno)) => {
            println!("first_bind error {} at open", errno_name(errno));
            println!("{}", verdict(errno));
            eprintln!("bind-race: open {bind_path}: {}", errno_name(errno));
            return ExitCode::from(1);
        }
    };

    let fds = match claim(group, device) {
        Ok(fds) => fds,
        Err((step, errno)) => {
            println!("claim error {} at {step}", errno_name(errno));
            return ExitCode::from(1);
        }
    };
    let claimed = Instant::now();
    // SAFETY: `sibling` is valid for its length; `bind_fd` is open for writing.
    let n = unsafe { libc::write(bind_fd, sibling.as_ptr().cast(), sibling.len()) };
    let errno = if n < 0 { last_errno() } else { 0 };
    let us = claimed.elapsed().as_micros();

    println!("first_bind {} after {us} us", verdict(errno));
    println!("{}", verdict(errno));
    let _ = std::io::stdout().flush();
    eprintln!(
        "bind-race: group {group} claimed (fds {fds:?}); bind of {sibling} to {driver}: {}; \
         holding {hold} s",
        verdict(errno)
    );
    std::thread::sleep(Duration::from_secs(hold));
    // The fds close at exit, releasing the group as a VM's exit would.
    ExitCode::from(if errno == 0 { 0 } else { 1 })
}

fn open(path: &str, flags: libc::c_int) -> Result<libc::c_int, Failure> {
    let c = CString::new(path).map_err(|_| (format!("open {path}"), libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated and lives across the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err((format!("open {path}"), last_errno()));
    }
    Ok(fd)
}

/// Claims the group as vfio-holder does; returns the group, container and device fds.
fn claim(group: &str, device: &str) -> Result<[libc::c_int; 3], Failure> {
    let group_fd = open(&format!("/dev/vfio/{group}"), libc::O_RDWR)?;
    let container_fd = open("/dev/vfio/vfio", libc::O_RDWR)?;
    let fail = |step: &str| (step.to_string(), last_errno());
    // SAFETY (all ioctls below): fds we own; argument types follow <linux/vfio.h>.
    let api = unsafe { libc::ioctl(container_fd, VFIO_GET_API_VERSION as _) };
    if api != VFIO_API_VERSION {
        return Err(("VFIO_GET_API_VERSION".into(), libc::EINVAL));
    }
    let mut status = GroupStatus {
        argsz: std::mem::size_of::<GroupStatus>() as u32,
        flags: 0,
    };
    if unsafe { libc::ioctl(group_fd, VFIO_GROUP_GET_STATUS as _, &mut status) } < 0 {
        return Err(fail("VFIO_GROUP_GET_STATUS"));
    }
    if unsafe { libc::ioctl(group_fd, VFIO_GROUP_SET_CONTAINER as _, &container_fd) } < 0 {
        return Err(fail("VFIO_GROUP_SET_CONTAINER"));
    }
    let v2 =
        unsafe { libc::ioctl(container_fd, VFIO_CHECK_EXTENSION as _, VFIO_TYPE1V2_IOMMU) } > 0;
    let iommu = if v2 {
        VFIO_TYPE1V2_IOMMU
    } else {
        VFIO_TYPE1_IOMMU
    };
    if unsafe { libc::ioctl(container_fd, VFIO_SET_IOMMU as _, iommu) } < 0 {
        return Err(fail("VFIO_SET_IOMMU"));
    }
    let c = CString::new(device).map_err(|_| ("VFIO_GROUP_GET_DEVICE_FD".into(), libc::EINVAL))?;
    let dev_fd = unsafe { libc::ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD as _, c.as_ptr()) };
    if dev_fd < 0 {
        return Err(fail("VFIO_GROUP_GET_DEVICE_FD"));
    }
    Ok([group_fd, container_fd, dev_fd])
}
