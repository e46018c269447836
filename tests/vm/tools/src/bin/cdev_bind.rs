//! `cdev-bind DEVICE`: takes PCI device DEVICE (`0000:05:00.0`, bound to vfio-pci) the iommufd
//! way, as QEMU does with `-device vfio-pci,fd=` and `-object iommufd`: opens its VFIO device
//! cdev `/dev/vfio/devices/vfioN` (N from `/sys/bus/pci/devices/DEVICE/vfio-dev/`), opens
//! `/dev/iommu`, and binds the two with VFIO_DEVICE_BIND_IOMMUFD (the kernel claims DMA ownership
//! of the device there: `iommu_device_claim_dma_owner`). Prints one line per step, `open ok` /
//! `open error ERRNO`, then `bind ok` / `bind error ERRNO`, with the cdev path first
//! (`cdev /dev/vfio/devices/vfio0`), and exits 0 when both steps succeed, 1 when one fails, 2 on
//! bad usage. The fds are closed on exit, which releases the claim.
use std::ffi::CString;
use std::process::ExitCode;

use vm_tools::{last_errno, verdict};

// <linux/vfio.h>: VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18).
const VFIO_DEVICE_BIND_IOMMUFD: libc::c_ulong = ((b';' as libc::c_ulong) << 8) | (100 + 18);

/// `struct vfio_device_bind_iommufd`.
#[repr(C)]
struct BindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
}

/// The `vfioN` cdev name of `device`, from sysfs.
fn cdev_of(device: &str) -> Option<String> {
    let dir = format!("/sys/bus/pci/devices/{device}/vfio-dev");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vfio"))
}

fn open(path: &str) -> Result<libc::c_int, i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(last_errno())
    } else {
        Ok(fd)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, device] = args.as_slice() else {
        eprintln!("usage: cdev-bind DEVICE");
        return ExitCode::from(2);
    };
    let Some(cdev) = cdev_of(device) else {
        println!("open error ENOENT");
        eprintln!("cdev-bind: {device} has no vfio-dev/vfioN in sysfs (not on vfio-pci, or no CONFIG_VFIO_DEVICE_CDEV)");
        return ExitCode::from(1);
    };
    let path = format!("/dev/vfio/devices/{cdev}");
    println!("cdev {path}");
    let device_fd = match open(&path) {
        Ok(fd) => fd,
        Err(e) => {
            println!("open {}", verdict(e));
            return ExitCode::from(1);
        }
    };
    println!("open ok");
    let iommufd = match open("/dev/iommu") {
        Ok(fd) => fd,
        Err(e) => {
            println!("iommu {}", verdict(e));
            return ExitCode::from(1);
        }
    };
    let mut bind = BindIommufd {
        argsz: std::mem::size_of::<BindIommufd>() as u32,
        flags: 0,
        iommufd,
        out_devid: 0,
    };
    // SAFETY: `bind` is a live, correctly sized vfio_device_bind_iommufd for the call.
    let r = unsafe { libc::ioctl(device_fd, VFIO_DEVICE_BIND_IOMMUFD as _, &mut bind) };
    let errno = if r < 0 { last_errno() } else { 0 };
    println!("bind {}", verdict(errno));
    if errno == 0 {
        eprintln!(
            "cdev-bind: {device} bound to iommufd, devid {}",
            bind.out_devid
        );
    }
    // SAFETY: both fds are ours and closed once.
    unsafe {
        libc::close(device_fd);
        libc::close(iommufd);
    }
    if errno == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
