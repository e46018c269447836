//! VFIO opens: the legacy group node (`/dev/vfio/N`) and the iommufd device cdev
//! (`/dev/vfio/devices/vfioX`). vfio is a module, which aya's fentry cannot reach (docs/design.md
//! section 2), so these are kprobe/kretprobe pairs; the entry stashes the inode's device number
//! per thread for the return.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use iommu_enforcer_common::EventKind;

use crate::{
    kernel,
    record::{emit, NO_GROUP},
    state,
};
// Opens are reported here (the kprobes see VFIO's own result); they are counted in `lsm_hooks`.

/// What the entry of an open stashes for its return.
#[repr(C)]
#[derive(Clone, Copy)]
struct Opening {
    file: u64,
    rdev: u32,
    _pad: u32,
}

/// pid_tgid -> the node being opened. Opens do not nest within a thread.
#[map(name = "VFIO_OPENING")]
static VFIO_OPENING: HashMap<u64, Opening> = HashMap::with_max_entries(1024, 0);

/// `int device_add(struct device *dev)`: VFIO's group node `/dev/vfio/<group>` is a device of
/// class `vfio` named after its group; naming its dev_t here, in the kernel, means an open of
/// it is the group's use from the node's first instant, whatever the agent is doing.
#[fexit(function = "device_add")]
pub fn vfio_node_added(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if ret != 0 {
        return 0;
    }
    let mut class = [0u8; 8];
    kernel::read_first_field_name(kernel::device_class(dev), &mut class);
    if class != *b"vfio\0\0\0\0" {
        return 0;
    }
    let mut name = [0u8; 12];
    kernel::read_first_field_name(dev, &mut name);
    let Some(group) = decimal(&name) else {
        // `noiommu-N`: no IOMMU, nothing to protect.
        return 0;
    };
    let devt = kernel::device_devt(dev);
    if devt != 0 {
        state::name_node(group, devt);
    }
    0
}

/// A NUL-terminated decimal number (a group id), or `None`.
#[inline(always)]
fn decimal(s: &[u8; 12]) -> Option<u32> {
    let mut n: u32 = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() || n > 100_000_000 {
            return None;
        }
        n = n * 10 + (c - b'0') as u32;
        i += 1;
    }
    if i == 0 {
        return None;
    }
    Some(n)
}

#[kprobe(function = "vfio_group_fops_open")]
pub fn vfio_group_open_entry(ctx: ProbeContext) -> u32 {
    remember(&ctx)
}

#[kretprobe(function = "vfio_group_fops_open")]
pub fn vfio_group_open_exit(ctx: RetProbeContext) -> u32 {
    let opening = report(&ctx, EventKind::VfioGroupOpen);
    // A failed open is freed without its release: the count `file_open` made goes now.
    let ret: i64 = ctx.ret();
    if ret != 0 {
        if let Some(o) = opening {
            state::count_free(o.file);
        }
    }
    0
}

/// `vfio_group_fops_release(struct inode *, struct file *)`: the last reference to the file is
/// gone (an fd parked in an SCM_RIGHTS message still holds it, so this is the positive
/// release event, not a /proc scan). Uncounts the open `file_open` counted (where kprobes are
/// pinned links, 5.15+, this is the only uncount: no program runs on every close), or one
/// seeded from /proc before the hooks ran.
#[kprobe(function = "vfio_group_fops_release")]
pub fn vfio_group_release(ctx: ProbeContext) -> u32 {
    let Some(inode) = ctx.arg::<*const u8>(0) else {
        return 0;
    };
    let file = ctx.arg::<u64>(1).unwrap_or(0);
    let rdev = kernel::inode_rdev(inode);
    // Seeded first: it tells a counted file from a seeded one by the count being there.
    state::seeded_release(file, rdev);
    state::count_free(file);
    emit(&ctx, EventKind::VfioGroupRelease, 0, NO_GROUP, |ev| {
        ev.rdev = rdev
    });
    0
}

/// `vfio_device_fops_release(struct inode *, struct file *)` serves the cdev and the device
/// fds `VFIO_GROUP_GET_DEVICE_FD` hands out; only a cdev's inode has a device number, so only
/// the last close of a `/dev/vfio/devices/vfioX` file is reported.
#[kprobe(function = "vfio_device_fops_release")]
pub fn vfio_cdev_release(ctx: ProbeContext) -> u32 {
    let Some(inode) = ctx.arg::<*const u8>(0) else {
        return 0;
    };
    let rdev = kernel::inode_rdev(inode);
    if rdev != 0 {
        emit(&ctx, EventKind::VfioCdevRelease, 0, NO_GROUP, |ev| {
            ev.rdev = rdev
        });
    }
    0
}

#[kprobe(function = "vfio_device_fops_cdev_open")]
pub fn vfio_cdev_open_entry(ctx: ProbeContext) -> u32 {
    remember(&ctx)
}

#[kretprobe(function = "vfio_device_fops_cdev_open")]
pub fn vfio_cdev_open_exit(ctx: RetProbeContext) -> u32 {
    report(&ctx, EventKind::VfioCdevOpen);
    0
}

#[inline(always)]
fn remember(ctx: &ProbeContext) -> u32 {
    let Some(inode) = ctx.arg::<*const u8>(0) else {
        return 0;
    };
    let rdev = kernel::inode_rdev(inode);
    let file = ctx.arg::<u64>(1).unwrap_or(0);
    let o = Opening {
        file,
        rdev,
        _pad: 0,
    };
    let _ = VFIO_OPENING.insert(&bpf_get_current_pid_tgid(), &o, 0);
    0
}

/// Reports the open's result; returns what its entry stashed.
#[inline(always)]
fn report(ctx: &RetProbeContext, kind: EventKind) -> Option<Opening> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let opening = unsafe { VFIO_OPENING.get(&key) }.copied();
    let _ = VFIO_OPENING.remove(&key);
    let ret: i64 = ctx.ret();
    let rdev = opening.map_or(0, |o| o.rdev);
    emit(ctx, kind, ret as i32, NO_GROUP, |ev| ev.rdev = rdev);
    opening
}
