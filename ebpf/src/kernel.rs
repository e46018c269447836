//! Reading kernel structures without CO-RE (aya issue 349): only first-field reads at offset 0,
//! plus offsets the agent resolved from the running kernel's BTF and wrote into the globals of
//! the kernel-field table (`iommu_enforcer_common::kernel_fields`) before load
//! (`EbpfLoader::override_global`). The agent refuses to load the object when one
//! is unresolved, so no read tests for it.
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use iommu_enforcer_common::offsets::UNRESOLVED;

use crate::record::NO_GROUP;

/// Defines one `u32` global per row of the kernel-field table, `UNRESOLVED` until the agent
/// writes it (`#[no_mangle]` keeps each in the object under its name).
macro_rules! define_globals {
    ($($(#[$doc:meta])* $name:ident = [$($lookup:tt)+];)+) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            pub static $name: u32 = UNRESOLVED;
        )+
    };
}

iommu_enforcer_common::kernel_fields!(define_globals);

#[inline(always)]
pub fn global(g: &'static u32) -> u32 {
    // Volatile so the compiler cannot fold the default into the code: the loader rewrites .rodata.
    unsafe { core::ptr::read_volatile(g) }
}

/// Reads `*(T *)(base + off)` from kernel memory.
#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
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

/// `dev->devt` (kernel dev_t; 0 for a device without a node).
#[inline(always)]
pub unsafe fn device_devt(dev: *const u8) -> u32 {
    unsafe { read_at::<u32>(dev, global(&OFF_DEVICE_DEVT)) }.unwrap_or(0)
}

/// `dev->class`, or null.
#[inline(always)]
pub unsafe fn device_class(dev: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(dev, global(&OFF_DEVICE_CLASS)) }.unwrap_or(core::ptr::null())
}

/// `mnt->mnt_sb`, or null.
#[inline(always)]
pub unsafe fn mnt_sb(mnt: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(mnt, global(&OFF_MNT_SB)) }.unwrap_or(core::ptr::null())
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
    if base.is_null() {
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

/// Reads the NUL-terminated string at `ptr` into `out` (zero-filled first by the caller).
#[inline(always)]
pub unsafe fn read_str(ptr: *const u8, out: &mut [u8]) -> bool {
    !ptr.is_null() && unsafe { bpf_probe_read_kernel_str_bytes(ptr, out) }.is_ok()
}

/// `kn->name` into `out`.
#[inline(always)]
pub unsafe fn kn_name(kn: *const u8, out: &mut [u8]) -> bool {
    match unsafe { read_at::<*const u8>(kn, global(&OFF_KN_NAME)) } {
        Some(name) => unsafe { read_str(name, out) },
        None => false,
    }
}

/// `kn->parent`, or null.
#[inline(always)]
pub unsafe fn kn_parent(kn: *const u8) -> *const u8 {
    unsafe { read_at::<*const u8>(kn, global(&OFF_KN_PARENT)) }.unwrap_or(core::ptr::null())
}

/// The kernfs node of a sysfs file: `file->f_inode->i_private`.
#[inline(always)]
pub unsafe fn file_kn(file: *const u8) -> *const u8 {
    let inode = unsafe { file_inode(file) };
    unsafe { read_at::<*const u8>(inode, global(&OFF_INODE_PRIVATE)) }.unwrap_or(core::ptr::null())
}

/// `task->flags` (PF_*).
#[inline(always)]
pub unsafe fn task_flags(task: *const u8) -> u32 {
    unsafe { read_at::<u32>(task, global(&OFF_TASK_FLAGS)) }.unwrap_or(0)
}

/// `task->ptrace`: nonzero while the task is traced. Unknown reads as traced.
#[inline(always)]
pub unsafe fn task_traced(task: *const u8) -> bool {
    unsafe { read_at::<u32>(task, global(&OFF_TASK_PTRACE)) }.is_none_or(|p| p != 0)
}

/// Whether descriptor `fd` of `task` is `file`: `task->files->fdt->fd[fd] == file`.
#[inline(always)]
pub unsafe fn fd_is(task: *const u8, fd: u64, file: *const u8) -> bool {
    unsafe {
        let Some(files) = read_at::<*const u8>(task, global(&OFF_TASK_FILES)) else {
            return false;
        };
        let Some(fdt) = read_at::<*const u8>(files, global(&OFF_FILES_FDT)) else {
            return false;
        };
        let Some(max) = read_at::<u32>(fdt, global(&OFF_FDT_MAX_FDS)) else {
            return false;
        };
        if fd >= max as u64 {
            return false;
        }
        let Some(array) = read_at::<*const u8>(fdt, global(&OFF_FDT_FD)) else {
            return false;
        };
        if array.is_null() {
            return false;
        }
        match bpf_probe_read_kernel(array.add(fd as usize * 8) as *const *const u8) {
            Ok(f) => f == file,
            Err(_) => false,
        }
    }
}

/// `to_pci_dev(dev)->driver_override` into `out`; false when unset or unreadable.
#[inline(always)]
pub unsafe fn pci_driver_override(dev: *const u8, out: &mut [u8]) -> bool {
    let (off_dev, off_override) = (global(&OFF_PCI_DEV_DEV), global(&OFF_PCI_DEV_OVERRIDE));
    if dev.is_null() || off_dev == UNRESOLVED || off_override == UNRESOLVED {
        return false;
    }
    let pdev = unsafe { dev.sub(off_dev as usize) };
    match unsafe { read_at::<*const u8>(pdev, off_override) } {
        Some(p) => unsafe { read_str(p, out) },
        None => false,
    }
}

/// The counter's value for a single reference: 1 in `f_count`; 0 in `f_ref`, which stores the
/// count minus one (`file_ref_init(ref, cnt)` sets `cnt - 1`).
#[unsafe(no_mangle)]
static FILE_COUNT_ONE: u32 = 1;

/// Whether the current task is inside the write(2) syscall on `file` itself: a file with one
/// reference has no other user (io_uring requests hold their own), and with more the syscall
/// holds `f_pos_lock` (`fdget_pos`), which io_uring, its workers and task work never do.
#[inline(always)]
pub unsafe fn in_own_write(file: *const u8, task: *const u8) -> bool {
    let Some(count) = (unsafe { read_at::<i64>(file, global(&OFF_FILE_COUNT)) }) else {
        return false;
    };
    if count == global(&FILE_COUNT_ONE) as i64 {
        return true;
    }
    match unsafe { read_at::<u64>(file, global(&OFF_FILE_POS_OWNER)) } {
        // The low three bits are mutex flags.
        Some(owner) => owner & !7 == task as u64,
        None => false,
    }
}

/// `file->f_mode` by a direct load from an LSM hook's `file` argument, which the kernel never
/// passes null (the load is fault-safe all the same): no test before it.
#[inline(always)]
pub unsafe fn file_mode_unchecked(file: *const u8) -> u32 {
    unsafe { core::ptr::read_volatile(file.add(global(&OFF_FILE_MODE) as usize) as *const u32) }
}

/// `file->f_mode` by a direct load from the hook's `file`.
#[inline(always)]
pub unsafe fn file_mode_direct(file: *const u8) -> u32 {
    unsafe { load_direct::<u32>(file, global(&OFF_FILE_MODE)) }.unwrap_or(0)
}
