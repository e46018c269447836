//! The syscall a task is in and its first arguments, read from its user registers (`struct
//! pt_regs` at the top of its kernel stack on both architectures): the one arch-specific part
//! of the programs, chosen at build time by `--cfg bpf_target_arch` (`cargo xtask build-ebpf`
//! builds one object per architecture; the agent embeds the one of its own target).
//!
//! The four offsets the agent resolves from the kernel's BTF keep their x86-64 names (they are
//! part of the object's interface), and hold on each architecture:
//!
//! | global | x86_64 | aarch64 |
//! |---|---|---|
//! | `OFF_REGS_ORIG_AX` (number) | `orig_ax` (u64) | `syscallno` (s32) |
//! | `OFF_REGS_DI` (argument 0) | `di` | `orig_x0` (`regs[0]` is the return value after the call) |
//! | `OFF_REGS_SI` (argument 1) | `si` | `regs[1]` |
//! | `OFF_REGS_DX` (argument 2) | `dx` | `regs[2]` |
use aya_ebpf::helpers::{bpf_get_current_task_btf, generated as gen};
use iommu_enforcer_common::{offsets::UNRESOLVED, pt_regs_mode};

use crate::kernel::{
    self, global, OFF_REGS_DI, OFF_REGS_DX, OFF_REGS_ORIG_AX, OFF_REGS_SI, PT_REGS_SIZE,
};

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!(
    "build with --cfg bpf_target_arch=\"x86_64\" or \"aarch64\" (cargo xtask build-ebpf)"
);

// Syscall numbers whose (buffer, count) or (iovec, count) the hook trusts. Only those that take
// f_pos_lock (write, writev): see `kernel::in_own_write`.
#[cfg(bpf_target_arch = "x86_64")]
pub const NR_WRITE: u64 = 1;
#[cfg(bpf_target_arch = "x86_64")]
pub const NR_WRITEV: u64 = 20;
// The generic table (include/uapi/asm-generic/unistd.h) arm64 uses.
#[cfg(bpf_target_arch = "aarch64")]
pub const NR_WRITE: u64 = 64;
#[cfg(bpf_target_arch = "aarch64")]
pub const NR_WRITEV: u64 = 66;

#[unsafe(no_mangle)]
static PT_REGS_MODE: u32 = pt_regs_mode::STACK;
/// 16 KiB on x86_64 and on arm64 with 4 KiB pages (Debian's kernels; no KASAN).
#[unsafe(no_mangle)]
static THREAD_SIZE: u32 = 16384;

/// The user registers the current syscall entered with.
#[inline(always)]
fn syscall_regs() -> *const u8 {
    if global(&PT_REGS_MODE) == pt_regs_mode::HELPER {
        // 5.15+. The verifier never sees this branch on older kernels: PT_REGS_MODE is a frozen
        // constant there, and the helper would not exist.
        // SAFETY: both helpers take and return kernel addresses the verifier checks; the
        // result is only handed to bpf_probe_read_kernel, never dereferenced by Rust.
        unsafe { gen::bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8 }
    } else {
        let size = global(&PT_REGS_SIZE);
        let stack = kernel::task_stack(kernel::current_task());
        if stack.is_null() || size == UNRESOLVED {
            return core::ptr::null();
        }
        // task_pt_regs(): the top of the thread's stack, on x86_64 without FRED and on arm64.
        // SAFETY: the result is only an address handed to bpf_probe_read_kernel (`current`),
        // never dereferenced by Rust.
        unsafe { stack.add((global(&THREAD_SIZE) - size) as usize) }
    }
}

/// The syscall number as its register holds it: a u64 on x86_64, an s32 on arm64 (the
/// 32 bits after it are padding, never written).
#[inline(always)]
fn read_nr(regs: *const u8) -> Option<u64> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        kernel::field_u64(regs, &OFF_REGS_ORIG_AX)
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        kernel::field_i32(regs, &OFF_REGS_ORIG_AX).map(|nr| nr as i64 as u64)
    }
}

/// `(number, arg0, arg1, arg2)` of the syscall the current task is in, or `None` when its
/// registers cannot be read.
#[inline(always)]
pub fn current() -> Option<(u64, u64, u64, u64)> {
    let regs = syscall_regs();
    Some((
        read_nr(regs)?,
        kernel::field_u64(regs, &OFF_REGS_DI)?,
        kernel::field_u64(regs, &OFF_REGS_SI)?,
        kernel::field_u64(regs, &OFF_REGS_DX)?,
    ))
}
