//! BPF LSM hooks: veto what would break group ownership. The agent decides what is protected
//! and fills the maps; the hooks only look up and apply. Both hooks run on paths every process
//! uses, so each starts with the cheapest test that lets unrelated operations go:
//! `file_open` a device-number check (regular files have none), `file_permission` a mask test
//! and the sysfs magic before any map lookup.
use aya_ebpf::{
    bindings::task_struct,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf,
        bpf_probe_read_user, generated as gen,
    },
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use iommu_enforcer_common::{
    offsets::UNRESOLVED, pt_regs_mode, veto, watched, EventKind, ExeKey, WatchedFile, ADDR_LEN,
};

use crate::{
    kernel::{self, global, read_at},
    record::{emit, NO_GROUP},
};

const SYSFS_MAGIC: u64 = 0x6265_6572;
const MAY_WRITE: i32 = 0x2;
const EPERM: i32 = 1;

// x86_64 syscall numbers whose (buffer, count) or (iovec, count) the hook can read.
const NR_WRITE: u64 = 1;
const NR_PWRITE64: u64 = 18;
const NR_WRITEV: u64 = 20;
const NR_PWRITEV: u64 = 296;
const NR_PWRITEV2: u64 = 328;

/// The agent's own tgid: its writes (pinning driver_override) always pass.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;
/// Nonzero: decide and report, deny nothing. Defaults to the harmless setting.
#[unsafe(no_mangle)]
static DRY_RUN: u32 = 1;
#[unsafe(no_mangle)]
static PT_REGS_MODE: u32 = pt_regs_mode::STACK;
#[unsafe(no_mangle)]
static PT_REGS_SIZE: u32 = UNRESOLVED;
#[unsafe(no_mangle)]
static THREAD_SIZE: u32 = 16384;
#[unsafe(no_mangle)]
static OFF_REGS_ORIG_AX: u32 = UNRESOLVED;
#[unsafe(no_mangle)]
static OFF_REGS_SI: u32 = UNRESOLVED;
#[unsafe(no_mangle)]
static OFF_REGS_DX: u32 = UNRESOLVED;

/// sysfs inode number -> what the file is (driver_override/remove of protected members; bind,
/// unbind, new_id of every PCI driver and drivers_probe while anything is protected).
#[map(name = "WATCHED")]
static WATCHED: HashMap<u64, WatchedFile> = HashMap::with_max_entries(8192, 0);

/// Addresses of protected members -> their group.
#[map(name = "PROTECTED")]
static PROTECTED: HashMap<[u8; ADDR_LEN], u32> = HashMap::with_max_entries(4096, 0);

/// `vendor << 16 | device` of protected members -> a group, for `new_id`.
#[map(name = "PROTECTED_IDS")]
static PROTECTED_IDS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Kernel dev_t of VFIO nodes whose group is not viable -> what they are.
#[map(name = "VFIO_DENY")]
static VFIO_DENY: HashMap<u32, WatchedFile> = HashMap::with_max_entries(4096, 0);

/// Executables the policy trusts to write protected files.
#[map(name = "TRUSTED_EXE")]
static TRUSTED_EXE: HashMap<ExeKey, u8> = HashMap::with_max_entries(256, 0);

/// `int security_file_open(struct file *file)`: VFIO group and cdev opens.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: *const u8 = ctx.arg(0);
    let rdev = unsafe { kernel::file_rdev_direct(file) };
    if rdev == 0 {
        return 0;
    }
    // SAFETY: the value is copied before anything else touches the map.
    let Some(w) = (unsafe { VFIO_DENY.get(&rdev) }).copied() else {
        return 0;
    };
    decide(&ctx, &w, rdev, 0)
}

/// `int security_file_permission(struct file *file, int mask)`: every read and write,
/// including write(2), pwrite(2), writev(2) and io_uring (all pass rw_verify_area).
#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let mask: i32 = ctx.arg(1);
    if mask & MAY_WRITE == 0 {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    let Some(ino) = (unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }) else {
        return 0;
    };
    let Some(w) = (unsafe { WATCHED.get(&ino) }).copied() else {
        return 0;
    };
    match w.kind {
        watched::DRIVER_OVERRIDE | watched::REMOVE => decide(&ctx, &w, 0, 0),
        watched::BIND | watched::UNBIND | watched::DRIVERS_PROBE | watched::NEW_ID => {
            let mut data = [0u8; ADDR_LEN];
            if !read_written(&mut data) {
                // The data is out of reach (io_uring, several iovecs, compat syscalls): fail
                // closed while anything is protected.
                let unknown = WatchedFile {
                    kind: w.kind,
                    group: NO_GROUP as u32,
                    device: [0; ADDR_LEN],
                };
                return decide(&ctx, &unknown, 0, veto::TARGET_UNKNOWN);
            }
            let group = if w.kind == watched::NEW_ID {
                parse_ids(&data).and_then(|id| unsafe { PROTECTED_IDS.get(&id) }.copied())
            } else {
                unsafe { PROTECTED.get(&data) }.copied()
            };
            match group {
                Some(group) => {
                    // new_id names IDs, not a device: the group says which one is protected.
                    let device = if w.kind == watched::NEW_ID {
                        [0; ADDR_LEN]
                    } else {
                        data
                    };
                    let target = WatchedFile {
                        kind: w.kind,
                        group,
                        device,
                    };
                    decide(&ctx, &target, 0, 0)
                }
                None => 0,
            }
        }
        _ => 0,
    }
}

/// Reports the veto (or, dry-run, the would-be veto) unless the writer is the agent or trusted.
#[inline(always)]
fn decide(ctx: &LsmContext, w: &WatchedFile, rdev: u32, flags: u32) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == global(&AGENT_TGID) || trusted_writer() {
        return 0;
    }
    let deny = global(&DRY_RUN) == 0;
    let ret = if deny { -EPERM } else { 0 };
    let detail = (w.kind & veto::KIND_MASK) | flags | if deny { veto::DENIED } else { 0 };
    emit(ctx, EventKind::Veto, ret, w.group as i32, |ev| {
        ev.detail = detail;
        ev.rdev = rdev;
        ev.device[..ADDR_LEN].copy_from_slice(&w.device);
    });
    ret
}

#[inline(always)]
fn trusted_writer() -> bool {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let inode = unsafe { kernel::task_exe_inode(task) };
    let (Some(ino), Some(dev)) = (unsafe { kernel::inode_ino(inode) }, unsafe {
        kernel::sb_dev(kernel::inode_sb(inode))
    }) else {
        return false;
    };
    unsafe {
        TRUSTED_EXE.get(&ExeKey {
            dev: dev as u64,
            ino,
        })
    }
    .is_some()
}

/// The user registers the current syscall entered with.
#[inline(always)]
fn syscall_regs() -> *const u8 {
    if global(&PT_REGS_MODE) == pt_regs_mode::HELPER {
        // 5.15+. The verifier never sees this branch on older kernels: PT_REGS_MODE is a frozen
        // constant there, and the helper would not exist.
        unsafe {
            gen::bpf_task_pt_regs(bpf_get_current_task_btf() as *mut task_struct) as *const u8
        }
    } else {
        let size = global(&PT_REGS_SIZE);
        let stack = unsafe { kernel::task_stack(bpf_get_current_task() as *const u8) };
        if stack.is_null() || size == UNRESOLVED {
            return core::ptr::null();
        }
        // task_pt_regs() on x86_64 without FRED: the top of the thread's stack.
        unsafe { stack.add((global(&THREAD_SIZE) - size) as usize) }
    }
}

/// Copies the first ADDR_LEN bytes being written, cut at the first newline, into `out`.
/// False when the current syscall is not one whose buffer can be read.
#[inline(always)]
fn read_written(out: &mut [u8; ADDR_LEN]) -> bool {
    let regs = syscall_regs();
    let fields = unsafe {
        (
            read_at::<u64>(regs, global(&OFF_REGS_ORIG_AX)),
            read_at::<u64>(regs, global(&OFF_REGS_SI)),
            read_at::<u64>(regs, global(&OFF_REGS_DX)),
        )
    };
    let (Some(nr), Some(si), Some(dx)) = fields else {
        return false;
    };
    let (buf, len) = match nr {
        NR_WRITE | NR_PWRITE64 => (si, dx),
        NR_WRITEV | NR_PWRITEV | NR_PWRITEV2 => {
            // kernfs joins all segments; only a single one can be judged here.
            if dx != 1 {
                return false;
            }
            match unsafe { bpf_probe_read_user(si as *const [u64; 2]) } {
                Ok(iov) => (iov[0], iov[1]),
                Err(_) => return false,
            }
        }
        _ => return false,
    };
    // Unsigned 64-bit clamp: the verifier needs a size bounded in [0, ADDR_LEN].
    let n: u64 = if len > ADDR_LEN as u64 {
        ADDR_LEN as u64
    } else {
        len
    };
    if n == 0 {
        return true;
    }
    let rc =
        unsafe { gen::bpf_probe_read_user(out.as_mut_ptr() as *mut _, n as u32, buf as *const _) };
    if rc != 0 {
        return false;
    }
    // sysfs_streq: a trailing newline ends the name.
    let mut cut = false;
    for b in out.iter_mut() {
        if *b == b'\n' || *b == 0 {
            cut = true;
        }
        if cut {
            *b = 0;
        }
    }
    true
}

/// `vendor device` as new_id takes them (hex, optional 0x, whitespace between), packed as
/// `vendor << 16 | device`.
#[inline(always)]
fn parse_ids(data: &[u8; ADDR_LEN]) -> Option<u32> {
    let mut values = [0u32; 2];
    let mut field = 0usize;
    let mut digits = 0u32;
    let mut i = 0usize;
    while i < ADDR_LEN {
        let c = data[i];
        i += 1;
        if c == b'x' && digits == 1 && values[field & 1] == 0 {
            digits = 0; // the "0x" prefix
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => {
                if digits > 0 {
                    field += 1;
                    digits = 0;
                    if field == 2 {
                        break;
                    }
                }
                if c == 0 {
                    break;
                }
                continue;
            }
        };
        values[field & 1] = (values[field & 1] << 4) | d as u32;
        digits += 1;
    }
    if digits > 0 {
        field += 1;
    }
    (field >= 2).then(|| (values[0] << 16) | (values[1] & 0xffff))
}
