//! Reading kernel structures without CO-RE (aya issue 349): only first-field reads at offset 0,
//! plus offsets the agent resolved from the running kernel's BTF and wrote into these globals
//! before load (`EbpfLoader::override_global`).
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use iommu_enforcer_common::offsets::UNRESOLVED;

use crate::record::NO_GROUP;

/// `offsetof(struct device, driver)`.
#[unsafe(no_mangle)]
static OFF_DEVICE_DRIVER: u32 = UNRESOLVED;
/// `offsetof(struct device, iommu_group)`.
#[unsafe(no_mangle)]
static OFF_DEVICE_IOMMU_GROUP: u32 = UNRESOLVED;
/// `offsetof(struct iommu_group, id)`.
#[unsafe(no_mangle)]
static OFF_GROUP_ID: u32 = UNRESOLVED;
/// `offsetof(struct inode, i_rdev)`.
#[unsafe(no_mangle)]
static OFF_INODE_RDEV: u32 = UNRESOLVED;

#[inline(always)]
fn global(g: &'static u32) -> u32 {
    // Volatile so the compiler cannot fold the default into the code: the loader rewrites .rodata.
    unsafe { core::ptr::read_volatile(g) }
}

/// Reads `*(T *)(base + off)` from kernel memory.
#[inline(always)]
unsafe fn read_at<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() || off == UNRESOLVED {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T).ok() }
}

/// Copies the C string whose pointer is the first field of `obj` (`dev->kobj.name`,
/// `drv->name`) into `out`.
#[inline(always)]
pub unsafe fn read_first_field_name(obj: *const u8, out: &mut [u8]) {
    if obj.is_null() {
        return;
    }
    let Ok(name) = (unsafe { bpf_probe_read_kernel(obj as *const *const u8) }) else {
        return;
    };
    if !name.is_null() {
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, out) };
    }
}

/// `dev->driver`, or null.
#[inline(always)]
pub unsafe fn device_driver(dev: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(dev, global(&OFF_DEVICE_DRIVER)) }.unwrap_or(core::ptr::null())
}

/// `group->id`, or NO_GROUP.
#[inline(always)]
pub unsafe fn group_id(group: *const u8) -> i32 {
    unsafe { read_at::<i32>(group, global(&OFF_GROUP_ID)) }.unwrap_or(NO_GROUP)
}

/// `dev->iommu_group->id`, or NO_GROUP when the device has no group.
#[inline(always)]
pub unsafe fn device_group_id(dev: *const u8) -> i32 {
    match unsafe { read_at::<*const u8>(dev, global(&OFF_DEVICE_IOMMU_GROUP)) } {
        Some(group) => unsafe { group_id(group) },
        None => NO_GROUP,
    }
}

/// `inode->i_rdev` (kernel dev_t encoding: major << 20 | minor), or 0.
#[inline(always)]
pub unsafe fn inode_rdev(inode: *const u8) -> u32 {
    unsafe { read_at::<u32>(inode, global(&OFF_INODE_RDEV)) }.unwrap_or(0)
}
