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

/// `offsetof(struct file, f_inode)`.
#[unsafe(no_mangle)]
static OFF_FILE_INODE: u32 = UNRESOLVED;
/// `offsetof(struct inode, i_sb)`.
#[unsafe(no_mangle)]
static OFF_INODE_SB: u32 = UNRESOLVED;
/// `offsetof(struct inode, i_ino)`.
#[unsafe(no_mangle)]
static OFF_INODE_INO: u32 = UNRESOLVED;
/// `offsetof(struct super_block, s_magic)`.
#[unsafe(no_mangle)]
static OFF_SB_MAGIC: u32 = UNRESOLVED;
/// `offsetof(struct super_block, s_dev)`.
#[unsafe(no_mangle)]
static OFF_SB_DEV: u32 = UNRESOLVED;
/// `offsetof(struct task_struct, mm)`.
#[unsafe(no_mangle)]
static OFF_TASK_MM: u32 = UNRESOLVED;
/// `offsetof(struct task_struct, stack)`.
#[unsafe(no_mangle)]
static OFF_TASK_STACK: u32 = UNRESOLVED;
/// `offsetof(struct mm_struct, exe_file)`.
#[unsafe(no_mangle)]
static OFF_MM_EXE_FILE: u32 = UNRESOLVED;

#[inline(always)]
pub fn global(g: &'static u32) -> u32 {
    // Volatile so the compiler cannot fold the default into the code: the loader rewrites .rodata.
    unsafe { core::ptr::read_volatile(g) }
}

/// Reads `*(T *)(base + off)` from kernel memory.
#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, off: u32) -> Option<T> {
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

/// `file->f_inode`, or null.
#[inline(always)]
pub unsafe fn file_inode(file: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(file, global(&OFF_FILE_INODE)) }.unwrap_or(core::ptr::null())
}

/// `inode->i_ino`.
#[inline(always)]
pub unsafe fn inode_ino(inode: *const u8) -> Option<u64> {
    unsafe { read_at::<u64>(inode, global(&OFF_INODE_INO)) }
}

/// `inode->i_sb`, or null.
#[inline(always)]
pub unsafe fn inode_sb(inode: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(inode, global(&OFF_INODE_SB)) }.unwrap_or(core::ptr::null())
}

/// `sb->s_dev` (kernel dev_t).
#[inline(always)]
pub unsafe fn sb_dev(sb: *const u8) -> Option<u32> {
    unsafe { read_at::<u32>(sb, global(&OFF_SB_DEV)) }
}

/// `task->mm->exe_file->f_inode`: the inode of the task's executable, or null.
#[inline(always)]
pub unsafe fn task_exe_inode(task: *const u8) -> *const u8 {
    let Some(mm) = (unsafe { read_at::<*const u8>(task, global(&OFF_TASK_MM)) }) else {
        return core::ptr::null();
    };
    let Some(exe) = (unsafe { read_at::<*const u8>(mm, global(&OFF_MM_EXE_FILE)) }) else {
        return core::ptr::null();
    };
    unsafe { file_inode(exe) }
}

/// `task->stack`, or null.
#[inline(always)]
pub unsafe fn task_stack(task: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(task, global(&OFF_TASK_STACK)) }.unwrap_or(core::ptr::null())
}

/// `*(T *)(base + off)` by a direct load. Only for pointers the verifier types from BTF (an LSM
/// hook's arguments and what is loaded through them): it checks the load against the kernel's
/// BTF (the offsets are frozen constants to it) and makes it fault-safe. No helper call: the
/// LSM hooks run on every open(2) and write(2).
#[inline(always)]
unsafe fn load_direct<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() || off == UNRESOLVED {
        return None;
    }
    Some(unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) })
}

/// `file->f_inode->i_rdev` (0 when unknown), by direct loads from the hook's `file`.
#[inline(always)]
pub unsafe fn file_rdev_direct(file: *const u8) -> u32 {
    unsafe {
        let inode =
            load_direct::<*const u8>(file, global(&OFF_FILE_INODE)).unwrap_or(core::ptr::null());
        load_direct::<u32>(inode, global(&OFF_INODE_RDEV)).unwrap_or(0)
    }
}

/// `file->f_inode->i_ino` when the file lives on a filesystem with `magic`, by direct loads.
#[inline(always)]
pub unsafe fn file_ino_on_direct(file: *const u8, magic: u64) -> Option<u64> {
    unsafe {
        let inode = load_direct::<*const u8>(file, global(&OFF_FILE_INODE))?;
        let sb = load_direct::<*const u8>(inode, global(&OFF_INODE_SB))?;
        if load_direct::<u64>(sb, global(&OFF_SB_MAGIC))? != magic {
            return None;
        }
        load_direct::<u64>(inode, global(&OFF_INODE_INO))
    }
}
