//! Reading kernel structures without CO-RE (aya issue 349): only first-field reads at offset 0,
//! plus offsets the agent resolved from the running kernel's BTF and wrote into the globals of
//! the kernel-field table (`iommu_enforcer_common::kernel_fields`) before load
//! (`EbpfLoader::override_global`). The agent refuses to load the object when one is
//! unresolved, so no read tests for it.
//!
//! Two ways to read a field:
//! - `field_u32(ptr, &OFF_X)` and its siblings: `bpf_probe_read_kernel`, for any kernel
//!   address, null or stale included: the helper copies with fault handling and fails instead
//!   of faulting, and integers and raw pointers are valid for any bytes, so these and the
//!   accessors built on them are safe functions.
//! - [`load_direct`]: a plain load, only from pointers the verifier types from BTF (an LSM
//!   hook's arguments and what is loaded through them), on the hot open/write paths where a
//!   helper call per field costs too much. The verifier checks each such load and makes it
//!   fault-safe; to Rust it is a raw dereference, so those functions stay `unsafe`.
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

/// The value the agent wrote into an offset global.
#[inline(always)]
pub fn global(g: &'static u32) -> u32 {
    // Volatile so the compiler cannot fold the default into the code: the loader rewrites .rodata.
    // SAFETY: `g` is a reference to a `u32` static: valid and aligned for the whole program.
    unsafe { core::ptr::read_volatile(g) }
}

/// The current task (`bpf_get_current_task`), as an address to read fields from.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a helper without arguments that returns an address; Rust never dereferences it,
    // only bpf_probe_read_kernel reads through it.
    unsafe { aya_ebpf::helpers::bpf_get_current_task() as *const u8 }
}

/// Reads `*(T *)(base + off)` from kernel memory; `None` for a null `base` or an address the
/// kernel cannot read.
///
/// # Safety
/// `T` must be valid for every bit pattern (an integer or a raw pointer): the bytes come from
/// wherever `base + off` points. Use the typed `field_*` functions, which are safe.
#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-handling accessor, so any
    // address gives Err rather than a fault, and the caller vouches that any bytes make a `T`.
    // The pointer `base + off` is never dereferenced by Rust, only handed to the helper.
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T).ok() }
}

/// Safe typed reads of `base->field` by `bpf_probe_read_kernel`, the field's offset being a
/// global of the kernel-field table: `None` when `base` is null or unreadable.
macro_rules! typed_fields {
    ($($name:ident: $t:ty),+) => {
        $(
            #[doc = concat!("`*(", stringify!($t), " *)(base + *off)`, by `bpf_probe_read_kernel`.")]
            #[inline(always)]
            pub fn $name(base: *const u8, off: &'static u32) -> Option<$t> {
                // SAFETY: the type is an integer or a raw pointer, valid for any bytes the
                // helper copies; read_at's helper read cannot fault.
                unsafe { read_at::<$t>(base, global(off)) }
            }
        )+
    };
}

typed_fields!(
    field_u32: u32,
    field_i32: i32,
    field_u64: u64,
    field_i64: i64,
    field_ptr: *const u8
);

/// Copies the C string whose pointer is the first field of `obj` (`dev->kobj.name`,
/// `drv->name`) into `out`.
#[inline(always)]
pub fn read_first_field_name(obj: *const u8, out: &mut [u8]) {
    if obj.is_null() {
        return;
    }
    // SAFETY: a pointer is valid for any bytes, and bpf_probe_read_kernel fails instead of
    // faulting on a bad `obj`.
    let Ok(name) = (unsafe { bpf_probe_read_kernel(obj as *const *const u8) }) else {
        return;
    };
    if !name.is_null() {
        // SAFETY: the helper writes at most `out.len()` bytes into `out`, a valid mutable
        // slice, and fails instead of faulting on a bad `name`.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, out) };
    }
}

/// `dev->driver`, or null.
#[inline(always)]
pub fn device_driver(dev: *const u8) -> *const u8 {
    field_ptr(dev, &OFF_DEVICE_DRIVER).unwrap_or(core::ptr::null())
}

/// `group->id`, or NO_GROUP.
#[inline(always)]
pub fn group_id(group: *const u8) -> i32 {
    field_i32(group, &OFF_GROUP_ID).unwrap_or(NO_GROUP)
}

/// `dev->iommu_group->id`, or NO_GROUP when the device has no group.
#[inline(always)]
pub fn device_group_id(dev: *const u8) -> i32 {
    match field_ptr(dev, &OFF_DEVICE_IOMMU_GROUP) {
        Some(group) => group_id(group),
        None => NO_GROUP,
    }
}

/// `inode->i_rdev` (kernel dev_t encoding: major << 20 | minor), or 0.
#[inline(always)]
pub fn inode_rdev(inode: *const u8) -> u32 {
    field_u32(inode, &OFF_INODE_RDEV).unwrap_or(0)
}

/// `file->f_inode`, or null.
#[inline(always)]
pub fn file_inode(file: *const u8) -> *const u8 {
    field_ptr(file, &OFF_FILE_INODE).unwrap_or(core::ptr::null())
}

/// `inode->i_ino`.
#[inline(always)]
pub fn inode_ino(inode: *const u8) -> Option<u64> {
    field_u64(inode, &OFF_INODE_INO)
}

/// `inode->i_sb`, or null.
#[inline(always)]
pub fn inode_sb(inode: *const u8) -> *const u8 {
    field_ptr(inode, &OFF_INODE_SB).unwrap_or(core::ptr::null())
}

/// `sb->s_dev` (kernel dev_t).
#[inline(always)]
pub fn sb_dev(sb: *const u8) -> Option<u32> {
    field_u32(sb, &OFF_SB_DEV)
}

/// `dev->devt` (kernel dev_t; 0 for a device without a node).
#[inline(always)]
pub fn device_devt(dev: *const u8) -> u32 {
    field_u32(dev, &OFF_DEVICE_DEVT).unwrap_or(0)
}

/// `dev->class`, or null.
#[inline(always)]
pub fn device_class(dev: *const u8) -> *const u8 {
    field_ptr(dev, &OFF_DEVICE_CLASS).unwrap_or(core::ptr::null())
}

/// `mnt->mnt_sb`, or null.
#[inline(always)]
pub fn mnt_sb(mnt: *const u8) -> *const u8 {
    field_ptr(mnt, &OFF_MNT_SB).unwrap_or(core::ptr::null())
}

/// `task->mm->exe_file->f_inode`: the inode of the task's executable, or null.
#[inline(always)]
pub fn task_exe_inode(task: *const u8) -> *const u8 {
    let Some(mm) = field_ptr(task, &OFF_TASK_MM) else {
        return core::ptr::null();
    };
    let Some(exe) = field_ptr(mm, &OFF_MM_EXE_FILE) else {
        return core::ptr::null();
    };
    file_inode(exe)
}

/// `task->stack`, or null.
#[inline(always)]
pub fn task_stack(task: *const u8) -> *const u8 {
    field_ptr(task, &OFF_TASK_STACK).unwrap_or(core::ptr::null())
}

/// `*(T *)(base + off)` by a direct load. Only for pointers the verifier types from BTF (an LSM
/// hook's arguments and what is loaded through them): it checks the load against the kernel's
/// BTF (the offsets are frozen constants to it) and makes it fault-safe. No helper call: the
/// LSM hooks run on every open(2) and write(2).
///
/// # Safety
/// `base` is null or a BTF-typed kernel pointer the verifier tracks (a hook argument, or loaded
/// through one by this function), `off` the offset of a `T` field of its struct, and `T` valid
/// for any bytes.
#[inline(always)]
unsafe fn load_direct<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: by the caller's contract the verifier types `base` from BTF: it checks this load
    // against the struct's layout and makes a faulting one read zero instead (PTR_TO_BTF_ID).
    Some(unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) })
}

/// `file->f_inode->i_rdev` (0 when unknown), by direct loads from the hook's `file`.
///
/// # Safety
/// `file` is an LSM hook's `struct file *` argument (see [`load_direct`]).
#[inline(always)]
pub unsafe fn file_rdev_direct(file: *const u8) -> u32 {
    // SAFETY: `file` is the hook's BTF-typed argument (this function's contract) and `inode` is
    // loaded through it, so both loads are BTF-typed; both fields are integers or pointers.
    unsafe {
        let inode =
            load_direct::<*const u8>(file, global(&OFF_FILE_INODE)).unwrap_or(core::ptr::null());
        load_direct::<u32>(inode, global(&OFF_INODE_RDEV)).unwrap_or(0)
    }
}

/// `file->f_inode->i_ino` when the file lives on a filesystem with `magic`, by direct loads.
///
/// # Safety
/// `file` is an LSM hook's `struct file *` argument (see [`load_direct`]).
#[inline(always)]
pub unsafe fn file_ino_on_direct(file: *const u8, magic: u64) -> Option<u64> {
    // SAFETY: `file` is the hook's BTF-typed argument (this function's contract); `inode` and
    // `sb` are loaded through it, so every load is BTF-typed.
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
pub fn read_str(ptr: *const u8, out: &mut [u8]) -> bool {
    // SAFETY: the helper writes at most `out.len()` bytes into `out`, a valid mutable slice,
    // and fails instead of faulting on a bad `ptr`.
    !ptr.is_null() && unsafe { bpf_probe_read_kernel_str_bytes(ptr, out) }.is_ok()
}

/// `kn->name` into `out`.
#[inline(always)]
pub fn kn_name(kn: *const u8, out: &mut [u8]) -> bool {
    match field_ptr(kn, &OFF_KN_NAME) {
        Some(name) => read_str(name, out),
        None => false,
    }
}

/// `kn->parent`, or null.
#[inline(always)]
pub fn kn_parent(kn: *const u8) -> *const u8 {
    field_ptr(kn, &OFF_KN_PARENT).unwrap_or(core::ptr::null())
}

/// The kernfs node of a sysfs file: `file->f_inode->i_private`.
#[inline(always)]
pub fn file_kn(file: *const u8) -> *const u8 {
    let inode = file_inode(file);
    field_ptr(inode, &OFF_INODE_PRIVATE).unwrap_or(core::ptr::null())
}

/// `task->flags` (PF_*).
#[inline(always)]
pub fn task_flags(task: *const u8) -> u32 {
    field_u32(task, &OFF_TASK_FLAGS).unwrap_or(0)
}

/// `task->ptrace`: nonzero while the task is traced. Unknown reads as traced.
#[inline(always)]
pub fn task_traced(task: *const u8) -> bool {
    field_u32(task, &OFF_TASK_PTRACE).is_none_or(|p| p != 0)
}

/// Whether descriptor `fd` of `task` is `file`: `task->files->fdt->fd[fd] == file`.
#[inline(always)]
pub fn fd_is(task: *const u8, fd: u64, file: *const u8) -> bool {
    // SAFETY: the only unsafe operations are the pointer arithmetic on `array` and the helper
    // read of a pointer there: Rust never dereferences the address, and bpf_probe_read_kernel
    // fails instead of faulting on it.
    unsafe {
        let Some(files) = field_ptr(task, &OFF_TASK_FILES) else {
            return false;
        };
        let Some(fdt) = field_ptr(files, &OFF_FILES_FDT) else {
            return false;
        };
        let Some(max) = field_u32(fdt, &OFF_FDT_MAX_FDS) else {
            return false;
        };
        if fd >= max as u64 {
            return false;
        }
        let Some(array) = field_ptr(fdt, &OFF_FDT_FD) else {
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
pub fn pci_driver_override(dev: *const u8, out: &mut [u8]) -> bool {
    let (off_dev, off_override) = (global(&OFF_PCI_DEV_DEV), global(&OFF_PCI_DEV_OVERRIDE));
    if dev.is_null() || off_dev == UNRESOLVED || off_override == UNRESOLVED {
        return false;
    }
    // SAFETY: `pdev` is only an address handed to bpf_probe_read_kernel, never dereferenced.
    let pdev = unsafe { dev.sub(off_dev as usize) };
    // SAFETY: a pointer is valid for any bytes; the helper read cannot fault.
    match unsafe { read_at::<*const u8>(pdev, off_override) } {
        Some(p) => read_str(p, out),
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
pub fn in_own_write(file: *const u8, task: *const u8) -> bool {
    let Some(count) = field_i64(file, &OFF_FILE_COUNT) else {
        return false;
    };
    if count == global(&FILE_COUNT_ONE) as i64 {
        return true;
    }
    match field_u64(file, &OFF_FILE_POS_OWNER) {
        // The low three bits are mutex flags.
        Some(owner) => owner & !7 == task as u64,
        None => false,
    }
}

/// `file->f_mode` by a direct load from an LSM hook's `file` argument, which the kernel never
/// passes null (the load is fault-safe all the same): no test before it.
///
/// # Safety
/// `file` is an LSM hook's `struct file *` argument (see [`load_direct`]).
#[inline(always)]
pub unsafe fn file_mode_unchecked(file: *const u8) -> u32 {
    // SAFETY: `file` is the hook's BTF-typed argument (this function's contract): the verifier
    // checks the load against `struct file` and makes it fault-safe.
    unsafe { core::ptr::read_volatile(file.add(global(&OFF_FILE_MODE) as usize) as *const u32) }
}

/// `file->f_mode` by a direct load from the hook's `file`.
///
/// # Safety
/// `file` is an LSM hook's `struct file *` argument (see [`load_direct`]).
#[inline(always)]
pub unsafe fn file_mode_direct(file: *const u8) -> u32 {
    // SAFETY: `file` is the hook's BTF-typed argument (this function's contract).
    unsafe { load_direct::<u32>(file, global(&OFF_FILE_MODE)) }.unwrap_or(0)
}
