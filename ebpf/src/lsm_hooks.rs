//! BPF LSM hooks on files: veto the sysfs writes and VFIO opens that would break group
//! ownership. What a sysfs file is comes from the kernel itself (its kernfs node's name and
//! parents), whether its target is protected from the in-kernel state (`state`): nothing here
//! waits for the agent. Both hooks run on paths every process uses, so each starts with the
//! cheapest test that lets unrelated operations go.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_user, generated as gen,
    },
    macros::{fentry, lsm, map},
    maps::HashMap,
    programs::{FEntryContext, LsmContext},
};
use iommu_enforcer_common::{
    config, dev_major, veto, watched, EventKind, ExeKey, WatchedFile, ADDR_LEN, DRIVER_KEY_LEN,
};

use crate::{
    kernel::{self, global},
    record::{veto as veto_record, veto_until_armed, NO_GROUP},
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

/// `FMODE_ATOMIC_POS`, which `do_dentry_open` sets on regular files and directories before
/// the open hook runs: such a file, opened read-only, is neither a device node nor a control
/// file, and leaves the hook at once. The agent sets it on the kernels it knows keep it there
/// (5.10 to 7.x: 0x8000); 0 sends every open through the full decision.
#[unsafe(no_mangle)]
static FMODE_REGULAR: u32 = 0;

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
    // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
    // unsafe for (a value another CPU may update or delete).
    if unsafe { TRUSTED_CGROUP.get(&cgroup) }.is_none() {
        return false;
    }
    let task = kernel::current_task();
    !kernel::task_traced(task)
}

/// `int security_file_open(struct file *file)`: VFIO group and cdev opens, and sysfs control
/// files opened for writing. Every writable descriptor passes here (inherited, passed in
/// SCM_RIGHTS, io_uring's fixed files alike), so what can be decided at open is decided here
/// and read(2)/write(2) run no program: a per-device file of a protected target is refused; a
/// descriptor whose writes only the write-time program can judge (a bus-wide `bind`/`unbind`/
/// `new_id`, a target not protected yet, a trusted writer) is counted in `WRITERS`, and the
/// agent keeps `file_permission` attached while any exists (`WriteCheck`).
#[lsm(hook = "file_open")]
#[inline(always)]
pub fn file_open(ctx: LsmContext) -> i32 {
    // The fast path, inline (no subprogram frame, no stack): every open(2) of the node runs
    // it. A regular file or directory opened read-only: nothing to decide (one load). `prev`
    // is read whole: an int result of 0 is a zero register, anything else takes the slow path,
    // which reads it as an int.
    let prev: u64 = ctx.arg(1);
    let regular = global(&FMODE_REGULAR);
    if prev == 0 && regular != 0 {
        let file: *const u8 = ctx.arg(0);
        // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the
        // verifier, as kernel::load_direct requires.
        if unsafe { kernel::file_mode_unchecked(file) } & (regular | FMODE_WRITE) == regular {
            return 0;
        }
    }
    file_open_slow(&ctx)
}

#[inline(never)]
fn file_open_slow(ctx: &LsmContext) -> i32 {
    crate::record::lsm_verdict(file_open_decide(ctx))
}

#[inline(always)]
fn file_open_decide(ctx: &LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return crate::record::lsm_ret(prev);
    }
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the verifier,
    // as kernel::load_direct requires.
    let rdev = unsafe { kernel::file_rdev_direct(file) };
    if rdev != 0 {
        return device_node_open(ctx, file, rdev);
    }
    // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the verifier,
    // as kernel::load_direct requires.
    if unsafe { kernel::file_mode_direct(file) } & FMODE_WRITE == 0 {
        return 0;
    }
    // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the verifier,
    // as kernel::load_direct requires.
    if unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }.is_none() {
        return 0;
    }
    let Some((kind, kn)) = classify(file) else {
        return 0;
    };
    control_file_open(ctx, file, kind, kn)
}

/// A device node: the majors are tested first, so only VFIO's nodes reach a map.
#[inline(always)]
fn device_node_open(ctx: &LsmContext, file: *const u8, rdev: u32) -> i32 {
    let major = dev_major(rdev);
    let group_major = state::config(config::VFIO_MAJOR);
    let cdev_major = state::config(config::VFIO_DEV_MAJOR);
    let group_node = group_major != 0 && major == group_major;
    // Both majors known (the cdev's may be "none": u32::MAX) and neither: not VFIO's. Unknown
    // majors fall through to the deny map.
    if !group_node && group_major != 0 && cdev_major != 0 && major != cdev_major {
        return 0;
    }
    if group_node {
        // Counted first, then a racing host bind checked (a bind counts itself, then checks
        // use): one of the two sees the other. Uncounted use would look idle, and a VM that
        // sets its container while a host driver binds BUG()s 5.10: refuse both.
        if !state::count_open(file as u64, rdev) || state::host_probing_for_node(rdev) {
            return refused_node(
                ctx,
                file,
                decide(
                    ctx,
                    watched::VFIO_GROUP,
                    NO_GROUP as u32,
                    &[0; ADDR_LEN],
                    rdev,
                    veto::TARGET_UNKNOWN,
                    true,
                ),
            );
        }
    }
    // A VFIO open puts a group in use: not while a descriptor that only the write-time check
    // can judge is open and the check is not armed (it could then write into the group unseen).
    if state::writers() > 0 && !state::write_armed() {
        let kind = if group_node {
            watched::VFIO_GROUP
        } else {
            watched::VFIO_CDEV
        };
        let r = veto_until_armed(ctx, kind | veto::TARGET_UNKNOWN, NO_GROUP, |ev| {
            ev.rdev = rdev
        });
        return refused_node(ctx, file, r);
    }
    // SAFETY: the value is copied before anything else touches the map.
    let Some(w) = (unsafe { VFIO_DENY.get(&rdev) }).copied() else {
        return 0;
    };
    let r = decide(ctx, w.kind, w.group, &w.device, rdev, 0, true);
    refused_node(ctx, file, r)
}

/// A refused open is freed without VFIO's release: its count goes now.
#[inline(always)]
fn refused_node(_ctx: &LsmContext, file: *const u8, r: i32) -> i32 {
    if r != 0 {
        state::count_free(file as u64);
    }
    r
}

/// A sysfs control file opened for writing by anyone but the agent.
#[inline(always)]
fn control_file_open(ctx: &LsmContext, file: *const u8, kind: u32, kn: *const u8) -> i32 {
    let agent = state::config(config::AGENT_TGID);
    if agent != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == agent {
        return 0;
    }
    match kind {
        // Probing binds only what the pins and the in-kernel bind veto let through.
        watched::DRIVERS_PROBE => 0,
        watched::BIND | watched::UNBIND | watched::NEW_ID => {
            // A user driver (vfio-pci) binding a member keeps it user-owned; its new IDs only
            // widen what it may bind.
            if kind != watched::UNBIND {
                let mut driver = [0u8; DRIVER_KEY_LEN];
                kernel::kn_name(kn, &mut driver);
                if state::driver_allowed(&driver) {
                    return 0;
                }
            }
            if state::write_armed() || !state::any_protected() {
                return count_writer(ctx, file, kind);
            }
            // Something is protected and nothing would judge the address written: refused
            // until the agent arms the write-time check. A kernel driver's new_id is refused
            // anyway while anything is protected (whatever IDs it would be given).
            let r = if kind == watched::NEW_ID {
                decide(
                    ctx,
                    kind,
                    NO_GROUP as u32,
                    &[0; ADDR_LEN],
                    0,
                    veto::TARGET_UNKNOWN | veto::AT_OPEN,
                    true,
                )
            } else {
                veto_until_armed(
                    ctx,
                    kind | veto::TARGET_UNKNOWN | veto::AT_OPEN,
                    NO_GROUP,
                    |_| {},
                )
            };
            if r == 0 {
                // Dry-run: reported, let through, and judged at the write once armed.
                return count_writer(ctx, file, kind);
            }
            r
        }
        _ => match per_device(ctx, kind, kn, veto::AT_OPEN, state::write_armed()) {
            // Not a PCI device the agent loaded: nothing to protect there.
            None => 0,
            Some(0) => count_writer(ctx, file, kind),
            Some(r) => r,
        },
    }
}

/// Counts a descriptor for the write-time check; asks the agent to arm it when it is not.
/// Refused (fail closed) when it cannot be counted and something is protected.
#[inline(always)]
fn count_writer(ctx: &LsmContext, file: *const u8, kind: u32) -> i32 {
    if !state::count_writer(file as u64, kind) {
        if !state::any_protected() {
            return 0;
        }
        return veto_until_armed(
            ctx,
            kind | veto::TARGET_UNKNOWN | veto::AT_OPEN,
            NO_GROUP,
            |_| {},
        );
    }
    if !state::write_armed() {
        crate::record::emit(ctx, EventKind::WriteCheck, 0, NO_GROUP, |ev| {
            ev.detail = 1;
        });
    }
    0
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
    // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the verifier,
    // as kernel::load_direct requires.
    if unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }.is_none() {
        return 0;
    }
    match classify(file) {
        Some((kind, kn)) if kind == watched::RESOURCE || kind == watched::CONFIG => {
            per_device(ctx, kind, kn, 0, true).unwrap_or(0)
        }
        _ => 0,
    }
}

/// `void security_file_free(struct file *file)`: the file's last reference is gone (every
/// file whose open `file_open` saw passes here once): a counted VFIO open ends. Attached only
/// where VFIO's release kprobe cannot be pinned (before 5.15: it would end with the agent);
/// elsewhere that kprobe uncounts, and no program runs on every close.
#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the verifier,
    // as kernel::load_direct requires.
    let rdev = unsafe { kernel::file_rdev_direct(file) };
    let vfio_major = state::config(config::VFIO_MAJOR);
    if rdev != 0 && vfio_major != 0 && dev_major(rdev) == vfio_major {
        state::count_free(file as u64);
    } else if rdev == 0 && state::writers() > 0 {
        writer_gone(&ctx, file);
    }
    0
}

/// `kernfs_fop_release(struct inode *, struct file *)`: a sysfs file's last reference is gone.
/// Only kernfs files pass here, never a regular file's close.
#[fentry(function = "kernfs_fop_release")]
pub fn kernfs_release(ctx: FEntryContext) -> i32 {
    if state::writers() > 0 {
        let file: *const u8 = ctx.arg(1);
        writer_gone(&ctx, file);
    }
    0
}

#[inline(always)]
fn writer_gone<C: aya_ebpf::EbpfContext>(_ctx: &C, file: *const u8) {
    // No record: a burst of writes would fill the ring with them. The agent looks at the count
    // again while the check is attached.
    let _ = state::uncount_writer(file as u64);
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
    // SAFETY: `file` is this LSM hook's own `struct file *` argument, BTF-typed for the verifier,
    // as kernel::load_direct requires.
    if unsafe { kernel::file_ino_on_direct(file, SYSFS_MAGIC) }.is_none() {
        return 0;
    }
    let Some((kind, kn)) = classify(file) else {
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
        _ => per_device(ctx, kind, kn, 0, true).unwrap_or(0),
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
fn node_name(kn: *const u8) -> Name {
    let mut n = [0u8; 24];
    kernel::kn_name(kn, &mut n);
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
fn classify(file: *const u8) -> Option<(u32, *const u8)> {
    let kn = kernel::file_kn(file);
    if kn.is_null() {
        return None;
    }
    let leaf = node_name(kn);
    let dir = kernel::kn_parent(kn);
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
        if node_name(kernel::kn_parent(dir)) != SLOTS {
            return None;
        }
        watched::SLOT_POWER
    } else if leaf == DRIVERS_PROBE {
        if node_name(dir) != PCI {
            return None;
        }
        watched::DRIVERS_PROBE
    } else if leaf == BIND || leaf == UNBIND || leaf == NEW_ID {
        let drivers = kernel::kn_parent(dir);
        if node_name(drivers) != DRIVERS || node_name(kernel::kn_parent(drivers)) != PCI {
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
/// removal, resets and slot power, any group below it. None: not a device the agent loaded.
/// `armed`: whether the write-time check will see this descriptor's writes (a trusted writer
/// is let through only then, since a tracer could take it over after this decision).
#[inline(always)]
fn per_device(ctx: &LsmContext, kind: u32, dir: *const u8, flags: u32, armed: bool) -> Option<i32> {
    let mut target = [0u8; ADDR_LEN];
    kernel::kn_name(dir, &mut target);
    let info = if kind == watched::SLOT_POWER {
        state::slot_info(&target)
    } else {
        state::device_info(&target)
    };
    // Not a PCI device the agent loaded (another bus's `remove`, or a device added since).
    let info = info?;
    let hit = if kind == watched::DRIVER_OVERRIDE {
        (info.group != u32::MAX && state::group_protected(info.group))
            .then_some((info.group, false))
    } else {
        state::protected_at_or_below(&info)
    };
    Some(match hit {
        Some((group, above)) => decide(
            ctx,
            kind,
            group,
            &target,
            0,
            flags | if above { veto::ABOVE } else { 0 },
            armed,
        ),
        None => 0,
    })
}

/// bind, unbind, drivers_probe: the address written, when this write's own data can be read;
/// otherwise fail closed while anything is protected.
#[inline(always)]
fn bus_address(ctx: &LsmContext, kind: u32, dir: *const u8, file: *const u8) -> i32 {
    if kind == watched::BIND {
        // A user driver (vfio-pci) binding a protected member keeps it user-owned.
        let mut driver = [0u8; DRIVER_KEY_LEN];
        kernel::kn_name(dir, &mut driver);
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
        return decide(ctx, kind, NO_GROUP as u32, &[0; ADDR_LEN], 0, read, true);
    }
    let Some(info) = state::device_info(&data) else {
        return 0;
    };
    if info.group != u32::MAX && state::group_protected(info.group) {
        return decide(ctx, kind, info.group, &data, 0, 0, true);
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
    kernel::kn_name(dir, &mut driver);
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
        true,
    )
}

/// Reports the veto (or, dry-run, the would-be veto) unless the writer is the agent or trusted.
/// A trusted writer that the write-time check would not see (`armed` false) is refused until
/// it is armed.
#[inline(always)]
fn decide(
    ctx: &LsmContext,
    kind: u32,
    group: u32,
    device: &[u8; ADDR_LEN],
    rdev: u32,
    flags: u32,
    armed: bool,
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
            Trust::Trusted if armed => return 0,
            Trust::Trusted => {
                return veto_until_armed(
                    ctx,
                    (kind & veto::KIND_MASK) | flags,
                    group as i32,
                    |ev| {
                        ev.rdev = rdev;
                        ev.device[..ADDR_LEN].copy_from_slice(device);
                    },
                )
            }
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
    let task = kernel::current_task();
    let inode = kernel::task_exe_inode(task);
    let (Some(ino), Some(dev)) = (
        kernel::inode_ino(inode),
        kernel::sb_dev(kernel::inode_sb(inode)),
    ) else {
        return Trust::No;
    };
    let key = ExeKey {
        dev: dev as u64,
        ino,
    };
    // SAFETY: a helper with no arguments; LSM programs may call it (5.10+).
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
    // unsafe for (a value another CPU may update or delete).
    if unsafe { TRUSTED_EXE.get(&key) }.is_none()
        // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
        // unsafe for (a value another CPU may update or delete).
        && unsafe { TRUSTED_CGROUP.get(&cgroup) }.is_none()
    {
        return Trust::No;
    }
    // A tracer decides what a traced process writes.
    if kernel::task_traced(task) {
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
    let task = kernel::current_task();
    if kernel::task_flags(task) & (PF_KTHREAD | PF_IO_WORKER) != 0 {
        return UNTRUSTED;
    }
    // (number, fd, buffer or iovec, count): the architecture's registers (syscall_abi).
    let Some((nr, fd, si, dx)) = syscall_abi::current() else {
        return UNTRUSTED;
    };
    if !(nr == NR_WRITE || nr == NR_WRITEV)
        || !kernel::fd_is(task, fd, file)
        || !kernel::in_own_write(file, task)
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
        // SAFETY: bpf_probe_read_user copies from a user address with fault handling (Err on a bad
        // one), and `[u64; 2]` is valid for any bytes.
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
    // SAFETY: the helper writes `n` bytes into `out`, and `n` is clamped to N, its length, above; a
    // bad user `buf` makes it fail (rc != 0), not fault.
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
