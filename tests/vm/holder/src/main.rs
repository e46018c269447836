//! `vfio-holder GROUP [DEVICE]`: claims IOMMU group GROUP through the VFIO container API the way
//! QEMU does (open /dev/vfio/GROUP, open /dev/vfio/vfio, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU,
//! optionally VFIO_GROUP_GET_DEVICE_FD for DEVICE), prints `held group GROUP` and then waits until
//! it is killed. Every failing step is printed with its errno and exits non-zero, so guest scripts
//! and their logs show exactly which step the kernel refused.
use std::ffi::CString;
use std::io::Write;
use std::process::ExitCode;

// <linux/vfio.h>: _IO(VFIO_TYPE = ';', VFIO_BASE + n) with VFIO_BASE = 100.
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
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;

#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// A failed step: what was attempted and the errno the kernel gave.
struct Failure {
    step: String,
    errno: i32,
}

impl Failure {
    fn last(step: impl Into<String>) -> Self {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Failure {
            step: step.into(),
            errno,
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::ENXIO => "ENXIO",
        _ => "E?",
    }
}

fn open(path: &str) -> Result<libc::c_int, Failure> {
    let c = CString::new(path).map_err(|_| Failure {
        step: format!("open {path}"),
        errno: libc::EINVAL,
    })?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Failure::last(format!("open {path}")));
    }
    Ok(fd)
}

fn hold(group: &str, device: Option<&str>) -> Result<(), Failure> {
    let group_path = format!("/dev/vfio/{group}");
    let group_fd = open(&group_path)?;
    println!("opened {group_path} (fd {group_fd})");

    let container_fd = open("/dev/vfio/vfio")?;
    // SAFETY: plain ioctls on fds we own; argument types follow <linux/vfio.h>.
    let api = unsafe { libc::ioctl(container_fd, VFIO_GET_API_VERSION as _) };
    if api != VFIO_API_VERSION {
        return Err(Failure {
            step: format!("VFIO_GET_API_VERSION returned {api}"),
            errno: libc::EINVAL,
        });
    }

    let mut status = GroupStatus {
        argsz: std::mem::size_of::<GroupStatus>() as u32,
        flags: 0,
    };
    // SAFETY: `status` is a valid vfio_group_status for the kernel to fill.
    if unsafe { libc::ioctl(group_fd, VFIO_GROUP_GET_STATUS as _, &mut status) } < 0 {
        return Err(Failure::last("VFIO_GROUP_GET_STATUS"));
    }
    let viable = status.flags & VFIO_GROUP_FLAGS_VIABLE != 0;
    println!(
        "group {group} status: flags {:#x} ({})",
        status.flags,
        if viable { "viable" } else { "NOT viable" }
    );

    // SAFETY: the kernel reads an int holding the container fd.
    if unsafe { libc::ioctl(group_fd, VFIO_GROUP_SET_CONTAINER as _, &container_fd) } < 0 {
        return Err(Failure::last("VFIO_GROUP_SET_CONTAINER"));
    }
    println!("group {group} set into container (fd {container_fd})");

    // SAFETY: VFIO_CHECK_EXTENSION takes the extension number by value.
    let v2 =
        unsafe { libc::ioctl(container_fd, VFIO_CHECK_EXTENSION as _, VFIO_TYPE1V2_IOMMU) } > 0;
    let (iommu, name) = if v2 {
        (VFIO_TYPE1V2_IOMMU, "type1v2")
    } else {
        (VFIO_TYPE1_IOMMU, "type1")
    };
    // SAFETY: VFIO_SET_IOMMU takes the IOMMU type by value.
    if unsafe { libc::ioctl(container_fd, VFIO_SET_IOMMU as _, iommu) } < 0 {
        return Err(Failure::last(format!("VFIO_SET_IOMMU {name}")));
    }
    println!("container IOMMU set to {name}");

    if let Some(device) = device {
        let c = CString::new(device).map_err(|_| Failure {
            step: format!("VFIO_GROUP_GET_DEVICE_FD {device}"),
            errno: libc::EINVAL,
        })?;
        // SAFETY: the kernel reads a NUL-terminated device name.
        let dev_fd = unsafe { libc::ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD as _, c.as_ptr()) };
        if dev_fd < 0 {
            return Err(Failure::last(format!("VFIO_GROUP_GET_DEVICE_FD {device}")));
        }
        println!("device {device} opened (fd {dev_fd})");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (group, device) = match args.as_slice() {
        [g] => (g.as_str(), None),
        [g, d] => (g.as_str(), Some(d.as_str())),
        _ => {
            eprintln!("usage: vfio-holder GROUP [DEVICE]");
            return ExitCode::from(2);
        }
    };
    if let Err(f) = hold(group, device) {
        let text = std::io::Error::from_raw_os_error(f.errno).to_string();
        // io::Error appends " (os error N)"; the errno is printed by name and number instead.
        let text = text.split(" (os error").next().unwrap_or(&text);
        eprintln!(
            "vfio-holder: group {group}: {} failed: {} (errno {}, {text})",
            f.step,
            errno_name(f.errno),
            f.errno
        );
        return ExitCode::from(1);
    }
    // Scripts wait for this line before acting on the held group.
    println!("held group {group}");
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: pause() has no preconditions; SIGTERM/SIGKILL end the process and the kernel
        // releases the group as a VM's exit would.
        unsafe { libc::pause() };
    }
}
