//! BPF LSM hooks on files: veto the sysfs writes and VFIO opens that would break group
//! ownership. What a sysfs file is comes from the kernel itself (its kernfs node's name and
//! parents), whether its target is protected from the in-kernel state (`state`): nothing here
//! waits for the agent. Both hooks run on paths every process uses, so each starts with the
//! cheapest test that lets unrelated operations go.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_probe_read_user, generated as gen,
    },
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use iommu_enforcer_common::{
    config, dev_major, veto, watched, ExeKey, WatchedFile,
    ADDR_LEN, DRIVER_KEY_LEN,
};

use crate::{
    kernel,
    record::{veto as veto_record, NO_GROUP},
    state,
    syscall_abi::{self, NR_WRITE, NR_WRITEV},
};

const SYSFS_MAGIC: u64 = 0x6265_6572;
const MAY_WRITE: i32 = 0x2;
const FMODE_WRITE: u32 = 0x2;
const PF_IO_WORKER: u32 = 0x0000_0010;
const PF_KTHREAD: u32 = 0x0020_0000;
/// kernfs attributes are at most a page; a longer write is not one the hook can judge.
const MAX_WRITE: u64 = 4096;

/// Kernel dev_t of VFIO nodes whose group is not viable under the policy -> what they are.
#[map(name = "VFIO_DENY")]
static VFIO_DENY: HashMap<u32, WatchedFile> = HashMap::with_max_entries(4096, 0);

/// Executables the policy trusts to write protected files.
#[map(name = "TRUSTED_EXE")]
static TRUSTED_EXE: HashMap<ExeKey, u8> = HashMap::with_max_entries(256, 0);

/// cgroup v2 ids of the containers the policy trusts (the agent finds them by their pod
/// namespace and container name in the runtime's state).
#[map(name = "TRUSTED_CGROUP")]
static TRUSTED_CGROUP: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// Whether the current task runs in a container the policy trusts, untraced: it owns the binding
/// of reserved groups while they are idle (vfio-manager's `bind --all` / `unbind --all`), so its
/// host-driver binds there pass the bind veto and its pin changes stand.
#[inline(always)]
pub fn trusted_container() -> bool {
    // SAFETY: a helper with no arguments, allowed in tracing and LSM programs (5.10+).
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if unsafe { TRUSTED_CGROUP.get(&cgroup) }.is_none() {
        return false;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    !unsafe { kernel::task_traced(task) }
}

/// `int security_file_open(struct file *file)`: VFIO group and cdev opens, and sysfs files of
/// protected devices opened for writing (acct(2) and `__kernel_write` bypass file_permission).
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    crate::record::lsm_verdict(file_open_decide(&ctx))
}

#[inline(always)]
fn file_open_decide(ctx: &LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return crate::record::lsm_ret(prev);
    }
    let file: *const u8 = ctx.arg(0);
    let rdev = unsafe { kernel::file_rdev_direct(file) };
    if rdev != 0 {
        let vfio_major = state::config(config::VFIO_MAJOR);
        // Counted first, then a racing host bind checked (a bind counts itself, then checks
        // use): one of the two sees the other. Uncounted use would look idle, and a VM that
        // sets its container while a host driver binds BUG()s 5.10: refuse both.
        if vfio_major != 0
            && dev_major(rdev) == vfio_major
            && (!state::count_open(file as u64, rdev) || state::host_probing_for_node(rdev))
        {
            return decide(
                ctx,
                watched::VFIO_GROUP,
                NO_GROUP as u32,
                &[0; ADDR_LEN],
                rdev,
                veto::TARGET_UNKNOWN,
            );
        }
        // SAFETY: the value is copied before anything else touches the map.
        let Some(w) = (unsafe { VFIO_DENY.get(&rdev) }).copied() else {
            return 0;
        };
        return decide(ctx, w.kind, w.group, &w.device, rdev, 0);
    }
    if unsafe { kernel::file_mode_direct(file) } & FMODE_WRITE == 0 {
        return 0;
    }
    if unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }.is_none() {
        return 0;
    }
    let Some((kind, kn)) = (unsafe { classify(file) }) else {
        return 0;
    };
    match kind {
        watched::BIND | watched::UNBIND | watched::NEW_ID | watched::DRIVERS_PROBE => 0,
        // Judged at the write, by what it names, unless the writer bypasses file_permission:
        // kernel-internal writers (acct(2)) are kernel threads or write from no syscall.
        watched::DRIVER_OVERRIDE => 0,
        _ => per_device(ctx, kind, kn, veto::AT_OPEN),
    }
}

const PROT_WRITE: u64 = 0x2;

/// `int security_mmap_file(struct file *file, unsigned long reqprot, unsigned long prot,
/// unsigned long flags)`: a writable mapping of a device's BAR, ROM or config space is a write
/// to it, for as long as the mapping lives.
#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    crate::record::lsm_verdict(mmap_file_decide(&ctx))
}

#[inline(always)]
fn mmap_file_decide(ctx: &LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return crate::record::lsm_ret(prev);
    }
    let prot: u64 = ctx.arg(2);
    let file: *const u8 = ctx.arg(0);
    if prot & PROT_WRITE == 0 || file.is_null() {
        return 0;
    }
    if unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }.is_none() {
        return 0;
    }
    match unsafe { classify(file) } {
        Some((kind, kn)) if kind == watched::RESOURCE || kind == watched::CONFIG => {
            per_device(ctx, kind, kn, 0)
        }
        _ => 0,
    }
}

/// `void security_file_free(struct file *file)`: the file's last reference is gone (every
/// file whose open `file_open` saw passes here once): a counted VFIO open ends.
#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let rdev = unsafe { kernel::file_rdev_direct(file) };
    let vfio_major = state::config(config::VFIO_MAJOR);
    if rdev != 0 && vfio_major != 0 && dev_major(rdev) == vfio_major {
        state::count_free(file as u64);
    }
    0
}

/// `int security_file_permission(struct file *file, int mask)`: every read and write,
/// including write(2), pwrite(2), writev(2) and io_uring (all pass rw_verify_area).
#[lsm(hook = "file_permission")]
pub fn file_permission(ctx: LsmContext) -> i32 {
    crate::record::lsm_verdict(file_permission_decide(&ctx))
}

#[inline(always)]
fn file_permission_decide(ctx: &LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return crate::record::lsm_ret(prev);
    }
    let mask: i32 = ctx.arg(1);
    if mask & MAY_WRITE == 0 {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    if unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }.is_none() {
        return 0;
    }
    let Some((kind, kn)) = (unsafe { classify(file) }) else {
        return 0;
    };
    match kind {
        watched::BIND | watched::UNBIND => bus_address(ctx, kind, kn, file),
        watched::NEW_ID => bus_new_id(ctx, kn),
        // Probing can bind only what the override and the in-kernel bind veto let through.
        watched::DRIVERS_PROBE => 0,
        // Whatever it names: the buffer is the writer's until the kernel copies it, after
        // this hook, so a value read here could be another by then (a racing thread turned
        // `vfio-pci` into `e1000`). The agent pins protected members itself.
        watched::DRIVER_OVERRIDE => per_device(ctx, kind, kn, 0),
        _ => per_device(ctx, kind, kn, 0),
    }
}

/// Names compared as zero-padded byte strings.
type Name = [u8; 24];

const fn name(s: &[u8]) -> Name {
    let mut n = [0u8; 24];
    let mut i = 0;
    while i < s.len() {
        n[i] = s[i];
        i += 1;
    }
    n
}

const DRIVER_OVERRIDE: Name = name(b"driver_override");
const REMOVE: Name = name(b"remove");
const RESET: Name = name(b"reset");
const RESET_SUBORDINATE: Name = name(b"reset_subordinate");
const POWER: Name = name(b"power");
const BIND: Name = name(b"bind");
const UNBIND: Name = name(b"unbind");
const NEW_ID: Name = name(b"new_id");
const DRIVERS_PROBE: Name = name(b"drivers_probe");
const CONFIG: Name = name(b"config");
const ROM: Name = name(b"rom");
const SLOTS: Name = name(b"slots");
const DRIVERS: Name = name(b"drivers");
const PCI: Name = name(b"pci");

#[inline(always)]
unsafe fn node_name(kn: *const u8) -> Name {
    let mut n = [0u8; 24];
    unsafe { kernel::kn_name(kn, &mut n) };
    n
}

/// `resource0` ... `resource5`, `resource0_wc` ...: a BAR of the device (not `resource`, the
/// read-only table).
#[inline(always)]
fn is_resource(leaf: &Name) -> bool {
    leaf[..8] == *b"resource" && leaf[8].is_ascii_digit()
}

/// What a sysfs file is, from its kernfs node and its parents, and the node of its directory
/// (the device, slot or driver it belongs to).
#[inline(always)]
unsafe fn classify(file: *const u8) -> Option<(u32, *const u8)> {
    let kn = unsafe { kernel::file_kn(file) };
    if kn.is_null() {
        return None;
    }
    let leaf = unsafe { node_name(kn) };
    let dir = unsafe { kernel::kn_parent(kn) };
    let kind = if leaf == DRIVER_OVERRIDE {
        watched::DRIVER_OVERRIDE
    } else if leaf == REMOVE {
        watched::REMOVE
    } else if leaf == RESET {
        watched::RESET
    } else if leaf == RESET_SUBORDINATE {
        watched::RESET_SUBORDINATE
    } else if leaf == CONFIG {
        watched::CONFIG
    } else if leaf == ROM || is_resource(&leaf) {
        watched::RESOURCE
    } else if leaf == POWER {
        if unsafe { node_name(kernel::kn_parent(dir)) } != SLOTS {
            return None;
        }
        watched::SLOT_POWER
    } else if leaf == DRIVERS_PROBE {
        if unsafe { node_name(dir) } != PCI {
            return None;
        }
        watched::DRIVERS_PROBE
    } else if leaf == BIND || leaf == UNBIND || leaf == NEW_ID {
        let drivers = unsafe { kernel::kn_parent(dir) };
        if unsafe { node_name(drivers) } != DRIVERS
            || unsafe { node_name(kernel::kn_parent(drivers)) } != PCI
        {
            return None;
        }
        if leaf == BIND {
            watched::BIND
        } else if leaf == UNBIND {
            watched::UNBIND
        } else {
            watched::NEW_ID
        }
    } else {
        return None;
    };
    Some((kind, dir))
}

/// A file of one device (or slot): vetoed when the device's group is protected, or, for
/// removal, resets and slot power, any group below it.
#[inline(always)]
fn per_device(ctx: &LsmContext, kind: u32, dir: *const u8, flags: u32) -> i32 {
    let mut target = [0u8; ADDR_LEN];
    unsafe { kernel::kn_name(dir, &mut target) };
    let info = if kind == watched::SLOT_POWER {
        state::slot_info(&target)
    } else {
        state::device_info(&target)
    };
    // Not a PCI device the agent loaded (another bus's `remove`, or a device added since).
    let Some(info) = info else {
        return 0;
    };
    let hit = if kind == watched::DRIVER_OVERRIDE {
        (info.group != u32::MAX && state::group_protected(info.group))
            .then_some((info.group, false))
    } else {
        state::protected_at_or_below(&info)
    };
    match hit {
        Some((group, above)) => decide(
            ctx,
            kind,
            group,
            &target,
            0,
            flags | if above { veto::ABOVE } else { 0 },
        ),
        None => 0,
    }
}

/// bind, unbind, drivers_probe: the address written, when this write's own data can be read;
/// otherwise fail closed while anything is protected.
#[inline(always)]
fn bus_address(ctx: &LsmContext, kind: u32, dir: *const u8, file: *const u8) -> i32 {
    if kind == watched::BIND {
        // A user driver (vfio-pci) binding a protected member keeps it user-owned.
        let mut driver = [0u8; DRIVER_KEY_LEN];
        unsafe { kernel::kn_name(dir, &mut driver) };
        if state::driver_allowed(&driver) {
            return 0;
        }
    }
    let mut data = [0u8; ADDR_LEN];
    let read = read_written(file, &mut data);
    if read != 0 {
        if !state::any_protected() {
            return 0;
        }
        return decide(ctx, kind, NO_GROUP as u32, &[0; ADDR_LEN], 0, read);
    }
    let Some(info) = state::device_info(&data) else {
        return 0;
    };
    if info.group != u32::MAX && state::group_protected(info.group) {
        return decide(ctx, kind, info.group, &data, 0, 0);
    }
    0
}

/// new_id of a kernel driver while anything is protected: the driver then probes every unbound
/// device the IDs match (PCI_ANY_ID included). Refused whatever the IDs: what the buffer holds
/// when the kernel copies it is not what this hook could read. The binds it would cause are
/// vetoed in-kernel anyway.
#[inline(always)]
fn bus_new_id(ctx: &LsmContext, dir: *const u8) -> i32 {
    let mut driver = [0u8; DRIVER_KEY_LEN];
    unsafe { kernel::kn_name(dir, &mut driver) };
    if state::driver_allowed(&driver) || !state::any_protected() {
        return 0;
    }
    decide(
        ctx,
        watched::NEW_ID,
        NO_GROUP as u32,
        &[0; ADDR_LEN],
        0,
        veto::TARGET_UNKNOWN,
    )
}

/// Reports the veto (or, dry-run, the would-be veto) unless the writer is the agent or trusted.
#[inline(always)]
fn decide(
    ctx: &LsmContext,
    kind: u32,
    group: u32,
    device: &[u8; ADDR_LEN],
    rdev: u32,
    flags: u32,
) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let agent = state::config(config::AGENT_TGID);
    if agent != 0 && tgid == agent {
        return 0;
    }
    let mut flags = flags;
    // Trust opens what is reserved or idle, never a group in use: nobody may break that.
    let in_use = if group == NO_GROUP as u32 || group == u32::MAX {
        state::anything_in_use()
    } else {
        state::group_in_use(group)
    };
    if !in_use {
        match trusted_writer() {
            Trust::Trusted => return 0,
            Trust::Traced => flags |= veto::TRACED,
            Trust::No => {}
        }
    }
    veto_record(ctx, (kind & veto::KIND_MASK) | flags, group as i32, |ev| {
        ev.rdev = rdev;
        ev.device[..ADDR_LEN].copy_from_slice(device);
    })
}

enum Trust {
    Trusted,
    Traced,
    No,
}

#[inline(always)]
fn trusted_writer() -> Trust {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let inode = unsafe { kernel::task_exe_inode(task) };
    let (Some(ino), Some(dev)) = (unsafe { kernel::inode_ino(inode) }, unsafe {
        kernel::sb_dev(kernel::inode_sb(inode))
    }) else {
        return Trust::No;
    };
    let key = ExeKey {
        dev: dev as u64,
        ino,
    };
    // SAFETY: a helper with no arguments; LSM programs may call it (5.10+).
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if unsafe { TRUSTED_EXE.get(&key) }.is_none()
        && unsafe { TRUSTED_CGROUP.get(&cgroup) }.is_none()
    {
        return Trust::No;
    }
    // A tracer decides what a traced process writes.
    if unsafe { kernel::task_traced(task) } {
        Trust::Traced
    } else {
        Trust::Trusted
    }
}

/// Copies the first bytes being written into `out`, cut at the first newline. Returns 0, or
/// the veto flags saying why the data cannot be trusted to be this write's: the syscall is not
/// write(2)/writev(2) on this very file by this task (io_uring, its workers and task work,
/// AIO, splice, another fd), or the buffer is unreadable.
#[inline(always)]
fn read_written<const N: usize>(file: *const u8, out: &mut [u8; N]) -> u32 {
    const UNTRUSTED: u32 = veto::TARGET_UNKNOWN | veto::NOT_THIS_WRITE;
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if unsafe { kernel::task_flags(task) } & (PF_KTHREAD | PF_IO_WORKER) != 0 {
        return UNTRUSTED;
    }
    // (number, fd, buffer or iovec, count): the architecture's registers (syscall_abi).
    let Some((nr, fd, si, dx)) = syscall_abi::current() else {
        return UNTRUSTED;
    };
    if !(nr == NR_WRITE || nr == NR_WRITEV)
        || !unsafe { kernel::fd_is(task, fd, file) }
        || !unsafe { kernel::in_own_write(file, task) }
    {
        return UNTRUSTED;
    }
    let (buf, len) = if nr == NR_WRITE {
        (si, dx)
    } else {
        // kernfs joins all segments; only a single one can be judged here.
        if dx != 1 {
            return veto::TARGET_UNKNOWN;
        }
        match unsafe { bpf_probe_read_user(si as *const [u64; 2]) } {
            Ok(iov) => (iov[0], iov[1]),
            Err(_) => return veto::TARGET_UNKNOWN,
        }
    };
    if len > MAX_WRITE {
        return veto::TARGET_UNKNOWN;
    }
    // Unsigned 64-bit clamp: the verifier needs a size bounded in [0, N].
    let n: u64 = if len > N as u64 { N as u64 } else { len };
    if n == 0 {
        return 0;
    }
    let rc =
        unsafe { gen::bpf_probe_read_user(out.as_mut_ptr() as *mut _, n as u32, buf as *const _) };
    if rc != 0 {
        return veto::TARGET_UNKNOWN;
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
    0
}
