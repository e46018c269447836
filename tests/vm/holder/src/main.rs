//! `vfio-holder GROUP [DEVICE]`: claims IOMMU group GROUP through the VFIO container API the way
//! QEMU does (open /dev/vfio/GROUP, open /dev/vfio/vfio, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU,
//! optionally VFIO_GROUP_GET_DEVICE_FD for DEVICE), prints `held group GROUP` and then waits until
//! it is killed. Every failing step is printed with its errno and exits non-zero, so guest scripts
//! and their logs show exactly which step the kernel refused.
//!
//! `vfio-holder --park GROUP [DEVICE]` claims the same way, then parks the group, container and
//! device fds in flight: it sends them in one SCM_RIGHTS message over an AF_UNIX SOCK_DGRAM
//! socketpair without ever receiving it, closes all its own VFIO fds, prints `parked group GROUP`
//! and then `held group GROUP`, and waits until killed. The group stays claimed although
//! /proc/PID/fd shows no /dev/vfio node.
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
        libc::EAGAIN => "EAGAIN",
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

/// The fds of a claimed group.
struct Held {
    group_fd: libc::c_int,
    container_fd: libc::c_int,
    device_fd: Option<libc::c_int>,
}

fn hold(group: &str, device: Option<&str>) -> Result<Held, Failure> {
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
        Ok(Held {
            group_fd,
            container_fd,
            device_fd: Some(dev_fd),
        })
    } else {
        Ok(Held {
            group_fd,
            container_fd,
            device_fd: None,
        })
    }
}

/// Sends every fd of `held` in one SCM_RIGHTS message into a socketpair whose receiving end never
/// reads it, then closes them: the in-flight file references keep the group claimed.
fn park(held: &Held) -> Result<(), Failure> {
    let mut sv = [0 as libc::c_int; 2];
    // SAFETY: `sv` has room for the two fds. Both ends stay open until the process exits, so the
    // message stays queued on sv[1].
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } < 0
    {
        return Err(Failure::last("socketpair"));
    }
    let fds: Vec<libc::c_int> = [Some(held.group_fd), Some(held.container_fd), held.device_fd]
        .into_iter()
        .flatten()
        .collect();
    let fds_len = std::mem::size_of_val(fds.as_slice()) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut byte = [b'p'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    // SAFETY: msghdr is plain data; the fields that matter are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `control` holds CMSG_SPACE(fds_len) bytes, so the first header and its data fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fds_len) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fds_len as usize,
        );
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    if unsafe { libc::sendmsg(sv[0], &msg, 0) } < 0 {
        return Err(Failure::last("sendmsg SCM_RIGHTS"));
    }
    println!(
        "sent fds {fds:?} in flight on socketpair ({}, {})",
        sv[0], sv[1]
    );
    for fd in fds {
        // SAFETY: closing our own VFIO fds; the in-flight copies keep the files open.
        if unsafe { libc::close(fd) } < 0 {
            return Err(Failure::last(format!("close fd {fd}")));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (parked, group, device) = match args.as_slice() {
        [p, g] if p == "--park" => (true, g.as_str(), None),
        [p, g, d] if p == "--park" => (true, g.as_str(), Some(d.as_str())),
        [g] if !g.starts_with("--") => (false, g.as_str(), None),
        [g, d] if !g.starts_with("--") => (false, g.as_str(), Some(d.as_str())),
        _ => {
            eprintln!("usage: vfio-holder [--park] GROUP [DEVICE]");
            return ExitCode::from(2);
        }
    };
    let claimed = hold(group, device).and_then(|held| if parked { park(&held) } else { Ok(()) });
    if let Err(f) = claimed {
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
    if parked {
        println!("parked group {group}");
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
