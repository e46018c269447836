//! Records shared by the eBPF programs (`ebpf/`) and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the eBPF side writes these bytes into the ring
//! buffer and the agent reads them back, so both sides must agree on layout bit for bit.
#![no_std]
// Every unsafe block or impl says why it is sound (`// SAFETY:`).
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

/// Bytes kept of a kernel device name (`dev->kobj.name`, e.g. `0000:01:00.1`) or driver name.
pub const NAME_LEN: usize = 48;
/// Bytes of a task's `comm`, as the kernel stores it (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// `group` value when the program could not tell which IOMMU group the record concerns.
pub const GROUP_UNKNOWN: i32 = -1;

/// What a record reports. The numbers are part of the ring-buffer ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// fexit `really_probe`: a driver tried to bind a device; `ret` is the probe result.
    Probe = 1,
    /// fexit `iommu_device_use_default_domain` (5.19+): the kernel's DMA-ownership check for a
    /// binding driver; `ret` -16 (EBUSY) is the silent refusal inside a user-owned group.
    UseDefaultDomain = 2,
    /// fexit `iommu_group_claim_dma_owner`: user space (VFIO) claims a whole group.
    GroupClaim = 3,
    /// fentry `iommu_group_release_dma_owner`.
    GroupRelease = 4,
    /// fexit `iommu_device_claim_dma_owner` (6.2+, iommufd cdev path).
    DeviceClaim = 5,
    /// fentry `iommu_device_release_dma_owner`.
    DeviceRelease = 6,
    /// fentry `pci_device_remove`: a bound driver is being unbound from a PCI device.
    Unbind = 7,
    /// tp_btf `add_device_to_group`.
    DeviceAdded = 8,
    /// tp_btf `remove_device_from_group`.
    DeviceRemoved = 9,
    /// kretprobe `vfio_group_fops_open`: `/dev/vfio/N` opened; `rdev` is the char device.
    VfioGroupOpen = 10,
    /// kretprobe `vfio_device_fops_cdev_open`: `/dev/vfio/devices/vfioX` opened.
    VfioCdevOpen = 11,
    /// An LSM hook decided to veto (or, in dry-run, would have vetoed) an operation; `detail`
    /// says which file and how (see [`veto`]).
    Veto = 12,
    /// kprobe `vfio_group_fops_release`: the last reference to a `/dev/vfio/N` file went away.
    VfioGroupRelease = 13,
    /// fexit `pci_bus_match` in a protected group: a driver was refused because the device's
    /// `driver_override` names another one (the pin held); `driver` is the refused driver.
    PinRefused = 14,
    /// tp_btf `module_load`: a module was loaded; the agent looks again for kprobe targets that
    /// were absent (not printed as an event).
    ModuleLoad = 15,
    /// kprobe `vfio_device_fops_release` on an inode with a device number: the last reference
    /// to a `/dev/vfio/devices/vfioX` file went away (device fds from a group have none).
    VfioCdevRelease = 16,
    /// fexit `dev_attr_store` of a device's `driver_override` attribute, by any task but the
    /// agent (write(2), `__kernel_write`, io_uring alike): `device` is the device, `driver` the
    /// bytes written (up to [`NAME_LEN`] - 1, newline included), `ret` the store's result. The
    /// agent re-checks its pins on it instead of polling them.
    OverrideWritten = 17,
    /// `file_open` counted a writable descriptor of a sysfs control file whose writes only the
    /// write-time program (`file_permission`, attached on demand) can judge, while it was not
    /// armed (`detail` 1). The agent arms it (not printed as an event).
    WriteCheck = 18,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Probe,
            2 => Self::UseDefaultDomain,
            3 => Self::GroupClaim,
            4 => Self::GroupRelease,
            5 => Self::DeviceClaim,
            6 => Self::DeviceRelease,
            7 => Self::Unbind,
            8 => Self::DeviceAdded,
            9 => Self::DeviceRemoved,
            10 => Self::VfioGroupOpen,
            11 => Self::VfioCdevOpen,
            12 => Self::Veto,
            13 => Self::VfioGroupRelease,
            14 => Self::PinRefused,
            15 => Self::ModuleLoad,
            16 => Self::VfioCdevRelease,
            17 => Self::OverrideWritten,
            18 => Self::WriteCheck,
            _ => return None,
        })
    }
}

/// One ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// Return value of the traced function (0 or a negative errno; 1 for a 5.10 probe success).
    pub ret: i32,
    /// Thread id and thread-group id (the user-visible pid) of the task that caused it.
    pub pid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns` at the event.
    pub ktime_ns: u64,
    /// IOMMU group id, or [`GROUP_UNKNOWN`].
    pub group: i32,
    /// `inode->i_rdev` for VFIO opens, else 0.
    pub rdev: u32,
    /// Kind-specific: for [`EventKind::Veto`] a [`watched`] kind and [`veto`] flags.
    pub detail: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    /// Kernel device name, NUL-terminated.
    pub device: [u8; NAME_LEN],
    /// Driver name, NUL-terminated (empty when not known).
    pub driver: [u8; NAME_LEN],
}

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            ret: 0,
            pid: 0,
            tgid: 0,
            cgroup_id: 0,
            ktime_ns: 0,
            group: GROUP_UNKNOWN,
            rdev: 0,
            detail: 0,
            _pad: 0,
            comm: [0; COMM_LEN],
            device: [0; NAME_LEN],
            driver: [0; NAME_LEN],
        }
    }
}

/// Bytes of a PCI address key (`0000:01:00.1` is 12), NUL padded.
pub const ADDR_LEN: usize = 16;

/// What a watched file is. The agent fills `WATCHED` (sysfs files, keyed by inode number) and
/// `VFIO_DENY` (VFIO nodes, keyed by device number); the LSM hooks look them up.
pub mod watched {
    /// `<device>/driver_override`: the target is the device itself.
    pub const DRIVER_OVERRIDE: u32 = 1;
    /// `<device>/remove`: the target is the device itself.
    pub const REMOVE: u32 = 2;
    /// `drivers/<name>/bind`: the target is the address written.
    pub const BIND: u32 = 3;
    /// `drivers/<name>/unbind`: the target is the address written.
    pub const UNBIND: u32 = 4;
    /// `drivers/<name>/new_id`: the targets are devices with the IDs written.
    pub const NEW_ID: u32 = 5;
    /// `bus/pci/drivers_probe`: the target is the address written.
    pub const DRIVERS_PROBE: u32 = 6;
    /// `/dev/vfio/N` of a group that is not viable.
    pub const VFIO_GROUP: u32 = 7;
    /// `/dev/vfio/devices/vfioX` of a device whose group is not viable.
    pub const VFIO_CDEV: u32 = 8;
    /// `<device>/reset`: a function reset of the device (a bridge's resets what is below it).
    pub const RESET: u32 = 9;
    /// `<bridge>/reset_subordinate`: a reset of the bus below a bridge.
    pub const RESET_SUBORDINATE: u32 = 10;
    /// `slots/<slot>/power`: powering off a hotplug slot removes every device below it.
    pub const SLOT_POWER: u32 = 11;
    /// A driver binding a member of a protected group (any path into `really_probe`: sysfs
    /// bind, drivers_probe, new_id, autoprobe after a rescan or a module load).
    pub const PROBE: u32 = 12;
    /// `drivers/<name>/remove_id`.
    pub const REMOVE_ID: u32 = 13;
    /// `<device>/config` written (or opened for writing): a bridge's config space moves bus
    /// numbers and resets what is below it (Secondary Bus Reset).
    pub const CONFIG: u32 = 14;
    /// `<device>/resource<N>[_wc]` or `rom` written or mapped writable: the device's registers.
    pub const RESOURCE: u32 = 15;
    /// bpffs: the pins that hold the protection state removed, renamed or unmounted.
    pub const PINS: u32 = 16;
}

/// Flags in `Event::detail` of an [`EventKind::OverrideWritten`] record.
pub mod override_written {
    /// The writer runs in a container the policy trusts, untraced.
    pub const TRUSTED_CONTAINER: u32 = 1;
}

/// Flags in `Event::detail` of a veto, above the watched kind (low 8 bits).
pub mod veto {
    pub const KIND_MASK: u32 = 0xff;
    /// The operation was denied (else: dry-run, it would have been).
    pub const DENIED: u32 = 1 << 8;
    /// The written data could not be read (io_uring, vectored writes of several segments,
    /// compat syscalls): the hook failed closed.
    pub const TARGET_UNKNOWN: u32 = 1 << 9;
    /// The target is a bridge, port or slot above a protected group, not a member.
    pub const ABOVE: u32 = 1 << 10;
    /// Refused when the file was opened for writing (acct(2) and other writers that bypass
    /// `file_permission` open the file first).
    pub const AT_OPEN: u32 = 1 << 11;
    /// The syscall's registers do not describe this write (io_uring task work or workers, a
    /// write through another fd, the same registers seen twice): the data was not trusted.
    pub const NOT_THIS_WRITE: u32 = 1 << 12;
    /// A trusted writer was not trusted because it is being traced (ptrace).
    pub const TRACED: u32 = 1 << 13;
    /// Refused because the write-time check was not armed: a descriptor that only it could
    /// judge (a bus-wide `bind`/`unbind` while something is protected, a trusted writer's), or
    /// a VFIO open while such descriptors exist. Transient (-EAGAIN): the agent arms it.
    pub const NOT_ARMED: u32 = 1 << 14;
}

/// IOMMU groups the protection state tracks by id; larger ids share the last slot, which then
/// protects all of them (conservative).
pub const MAX_GROUPS: u32 = 16384;
/// Groups below one bridge, port or slot that `TOPOLOGY`/`SLOTS` list; one with more is
/// treated as above a protected group whenever anything is protected.
pub const MAX_BELOW: usize = 16;
/// Bytes of a driver name key in `USER_DRIVERS`.
pub const DRIVER_KEY_LEN: usize = 32;

/// Value of the pinned `GROUPS` array (index: group id), changed by the eBPF programs at the
/// instant the kernel's state changes: a member bound to a user driver, a DMA-ownership claim.
/// A count below zero (a release the agent never saw the claim of) still protects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Members bound to a user driver (vfio-pci and its variants).
    pub user_bound: i32,
    /// Successful `iommu_{group,device}_claim_dma_owner` not yet released (5.19+).
    pub claims: i32,
}

/// The major of a kernel `dev_t` (`MAJOR()`: 12 bits above a 20-bit minor).
#[inline(always)]
pub const fn dev_major(dev: u32) -> u32 {
    dev >> 20
}

/// Value of `TOPOLOGY` (key: PCI address) and `SLOTS` (key: slot name), loaded by the agent
/// from sysfs: the device's group and the groups below it (for bridges, ports and slots).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device's own group, or `u32::MAX` (slots, devices without a group).
    pub group: u32,
    /// How many groups are below; more than [`MAX_BELOW`] means "too many to list".
    pub nbelow: u32,
    pub below: [u32; MAX_BELOW],
}

/// Flags of `USER_DRIVERS` values.
pub mod driver_class {
    /// Hands devices to user space (vfio-pci and variants): binding it protects the group.
    pub const USER: u32 = 1;
    /// May bind next to user-owned devices (user drivers, pci-stub, pcieport, the policy's).
    pub const ALLOWED: u32 = 2;
}

/// Whether a NUL-padded driver name key names a user driver: `vfio-pci`, `vfio_pci`, or a
/// variant `*_vfio_pci` / `*-vfio-pci` (`nvgrace_gpu_vfio_pci`, `mlx5_vfio_pci`, ...). The
/// eBPF programs fall back to it for a driver the agent has not classed in `USER_DRIVERS` (a
/// variant module loaded after the agent last read `bus/pci/drivers`); the agent's
/// `is_user_driver` agrees with it (its unit tests check). A name that fills the key (cut) is
/// not trusted. Fixed-size reads only, so the verifier sees every index bounded.
#[inline(always)]
pub fn is_user_driver_key(key: &[u8; DRIVER_KEY_LEN]) -> bool {
    const EXACT: [&[u8; 8]; 2] = [b"vfio-pci", b"vfio_pci"];
    const SUFFIX: [&[u8; 9]; 2] = [b"_vfio_pci", b"-vfio-pci"];
    let mut len = 0;
    while len < DRIVER_KEY_LEN && key[len] != 0 {
        len += 1;
    }
    if len == 8 {
        let mut k = 0;
        let (mut a, mut b) = (true, true);
        while k < 8 {
            a &= key[k] == EXACT[0][k];
            b &= key[k] == EXACT[1][k];
            k += 1;
        }
        return a || b;
    }
    if len <= 9 || len >= DRIVER_KEY_LEN {
        return false;
    }
    let start = len - 9;
    let mut k = 0;
    let (mut a, mut b) = (true, true);
    while k < 9 {
        let c = key.get(start + k).copied().unwrap_or(0);
        a &= c == SUFFIX[0][k];
        b &= c == SUFFIX[1][k];
        k += 1;
    }
    a || b
}

/// Indexes of the pinned `CONFIG` array, written by the agent (programs outlive it).
pub mod config {
    /// The running agent's tgid (its own writes pass); cleared when that process exits.
    pub const AGENT_TGID: u32 = 0;
    /// Nonzero: decide and report, deny nothing.
    pub const DRY_RUN: u32 = 1;
    /// Nonzero: groups in use (a claim or an open VFIO node) are protected.
    pub const PROTECT_USER: u32 = 2;
    /// The major number of VFIO group nodes (`vfio` in /proc/devices; dynamic), 0 when not
    /// known: the file hooks count opens of these nodes.
    pub const VFIO_MAJOR: u32 = 3;
    /// Groups the policy reserves (anything protected even before a bind).
    pub const RESERVED: u32 = 4;
    /// Set once the agent has loaded the topology: before that nothing is known.
    pub const LOADED: u32 = 5;
    /// Nonzero: the LSM file hooks count VFIO opens (`COUNTED_FILES`), so a group bound to a
    /// user driver but not open is idle. Zero (no BPF LSM): every group with a member on a
    /// user driver counts as in use, since nothing that outlives the agent counts opens.
    pub const USE_COUNTED: u32 = 6;
    /// The kernel dev_t of the bpffs instance that holds the pins (0: not pinned): its pins
    /// may not be removed, nor it unmounted, while anything is protected.
    pub const PIN_DEV: u32 = 7;
    /// The tgid of a running `enforcer detach`, which may remove the pins; cleared when that
    /// process exits. The agent never writes this slot.
    pub const DETACH_TGID: u32 = 8;
    /// Inode numbers (on that bpffs) of the pin root and its maps and links directories: the
    /// directories whose entries are guarded (other tools' pins on the same bpffs are not).
    pub const PIN_DIRS: [u32; 3] = [9, 10, 11];
    /// Nonzero while the write-time program (`file_permission`) is attached: the agent sets
    /// it after attaching it and clears it before detaching it.
    pub const WRITE_ARMED: u32 = 12;
    /// The major of VFIO cdevs (`vfio-dev` in /proc/devices), `u32::MAX` when the kernel has
    /// none: `file_open` tests majors before any map lookup.
    pub const VFIO_DEV_MAJOR: u32 = 13;
    pub const LEN: u32 = 16;
}

/// Value of `WATCHED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedFile {
    /// A [`watched`] kind.
    pub kind: u32,
    /// The group of the device for per-device files.
    pub group: u32,
    /// The device for per-device files, NUL padded; zero for bus-wide files.
    pub device: [u8; ADDR_LEN],
}

/// Key of `TRUSTED_EXE`: an executable by the kernel's dev_t (major << 20 | minor) of its
/// filesystem and its inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeKey {
    pub dev: u64,
    pub ino: u64,
}

/// How the LSM hooks find the syscall's registers to read what is being written.
pub mod pt_regs_mode {
    /// `bpf_task_pt_regs` (5.15+).
    pub const HELPER: u32 = 0;
    /// `task->stack + THREAD_SIZE - sizeof(struct pt_regs)` (older kernels; no FRED padding).
    pub const STACK: u32 = 1;
}

pub mod kernel_fields;

/// Field offsets the agent resolves from the running kernel's BTF and hands to the programs as
/// globals (Rust eBPF cannot emit CO-RE relocations yet; see docs/design.md section 3 and
/// [`kernel_fields`]). `u32::MAX` means "not resolved": the agent refuses to load the object
/// with one.
pub mod offsets {
    pub const UNRESOLVED: u32 = u32::MAX;
}

/// Names of the ring buffer, the loss counter and the offset globals, shared so a rename on one
/// side cannot silently break the other.
pub mod names {
    /// The kernel field offsets (`OFF_*`, `PT_REGS_SIZE`): one per row of the table.
    pub use crate::kernel_fields::globals::*;
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const AGENT_LOG: &str = "AGENT_LOG";
    pub const PT_REGS_MODE: &str = "PT_REGS_MODE";
    pub const THREAD_SIZE: &str = "THREAD_SIZE";
    pub const AGENT_TGID: &str = "AGENT_TGID";
    pub const DRY_RUN: &str = "DRY_RUN";
    pub const VFIO_MAJOR: &str = "VFIO_MAJOR";
    pub const VFIO_CDEV_MAJOR: &str = "VFIO_CDEV_MAJOR";
    pub const WATCHED: &str = "WATCHED";
    pub const PROTECTED: &str = "PROTECTED";
    pub const PROTECTED_IDS: &str = "PROTECTED_IDS";
    pub const VFIO_DENY: &str = "VFIO_DENY";
    pub const TRUSTED_EXE: &str = "TRUSTED_EXE";
    pub const TRUSTED_CGROUP: &str = "TRUSTED_CGROUP";
    pub const GROUPS: &str = "GROUPS";
    pub const RDEV_OPENS: &str = "RDEV_OPENS";
    pub const GROUP_RDEV: &str = "GROUP_RDEV";
    pub const RESERVED: &str = "RESERVED";
    pub const PROTECTED_REFS: &str = "PROTECTED_REFS";
    pub const COUNTED_FILES: &str = "COUNTED_FILES";
    pub const NODE_GROUP: &str = "NODE_GROUP";
    pub const HOST_PROBES: &str = "HOST_PROBES";
    pub const SEEDED_OPENS: &str = "SEEDED_OPENS";
    pub const WRITE_FILES: &str = "WRITE_FILES";
    pub const WRITERS: &str = "WRITERS";
    pub const CONFIG: &str = "CONFIG";
    pub const TOPOLOGY: &str = "TOPOLOGY";
    pub const SLOTS: &str = "SLOTS";
    pub const USER_DRIVERS: &str = "USER_DRIVERS";
    pub const PROBE_OK: &str = "PROBE_OK";
    pub const FILE_COUNT_ONE: &str = "FILE_COUNT_ONE";
    pub const FMODE_REGULAR: &str = "FMODE_REGULAR";
}

/// Slots of the pinned `AGENT_LOG` array (u64 each), written by the agents only: how a new
/// agent learns what happened while none ran.
pub mod agent_log {
    /// The `LOST` total (summed over CPUs) the last agent had reported in `lost` lines.
    pub const LOST_REPORTED: u32 = 0;
    /// How many agents have started on these pins (the start marker).
    pub const STARTS: u32 = 1;
    pub const LEN: u32 = 4;
}

/// Where the agent pins what must outlive it (bpffs). Maps live in a directory named after
/// their layout, so an agent with other map definitions never adopts incompatible ones.
pub mod pins {
    pub const ROOT: &str = "/sys/fs/bpf/iommu-enforcer";
    /// Bump when any pinned map's key, value, size or meaning changes. 2: opens are counted
    /// per file by the LSM file hooks (`COUNTED_FILES`), a bound user driver alone no longer
    /// protects, and `CONFIG` slots 3 and 6 mean the VFIO major and `USE_COUNTED`.
    pub const MAP_LAYOUT: u32 = 2;
    /// The maps that hold protection state and are pinned (and adopted by the next agent).
    pub const MAPS: &[&str] = &[
        super::names::GROUPS,
        super::names::RDEV_OPENS,
        super::names::GROUP_RDEV,
        super::names::RESERVED,
        super::names::PROTECTED_REFS,
        super::names::COUNTED_FILES,
        super::names::SEEDED_OPENS,
        super::names::NODE_GROUP,
        super::names::HOST_PROBES,
        super::names::WRITE_FILES,
        super::names::WRITERS,
        super::names::CONFIG,
        super::names::TOPOLOGY,
        super::names::SLOTS,
        super::names::USER_DRIVERS,
        super::names::VFIO_DENY,
        super::names::TRUSTED_EXE,
        super::names::TRUSTED_CGROUP,
        // The ring and the loss counter too: records made while no agent runs wait in the
        // ring for the next one, and what overflowed is counted for it.
        super::names::EVENTS,
        super::names::LOST,
        super::names::AGENT_LOG,
    ];
}

// SAFETY: `#[repr(C)]` of integers and integer arrays only: every bit pattern is a valid
// `Event`, which is what aya reads out of a map or the ring buffer.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}
// SAFETY: `#[repr(C)]` of integers and integer arrays only: every bit pattern is a valid
// `WatchedFile`, which is what aya reads out of a map or the ring buffer.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WatchedFile {}
// SAFETY: `#[repr(C)]` of integers and integer arrays only: every bit pattern is a valid
// `ExeKey`, which is what aya reads out of a map or the ring buffer.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExeKey {}
// SAFETY: `#[repr(C)]` of integers and integer arrays only: every bit pattern is a valid
// `GroupState`, which is what aya reads out of a map or the ring buffer.
#[cfg(feature = "user")]
unsafe impl aya::Pod for GroupState {}
// SAFETY: `#[repr(C)]` of integers and integer arrays only: every bit pattern is a valid
// `DeviceInfo`, which is what aya reads out of a map or the ring buffer.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DeviceInfo {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_records_keep_their_size() {
        // The eBPF object and the agent must agree byte for byte.
        assert_eq!(core::mem::size_of::<Event>(), 160);
        assert_eq!(core::mem::size_of::<GroupState>(), 8);
        assert_eq!(core::mem::size_of::<DeviceInfo>(), 8 + 4 * MAX_BELOW);
        assert_eq!(core::mem::size_of::<WatchedFile>(), 24);
    }
}

/// The symbolic names of errnos, in one table for the agent and the test node's tools: Linux
/// numbering (the kernel's `include/uapi/asm-generic/errno*.h`, the same on x86-64 and arm64),
/// with the kernel-internal codes (512 and up) a hook or probe return value can carry. No libc
/// here (`no_std`, shared with the eBPF programs, which do not use it); the agent's tests check
/// every entry against libc's constants.
pub mod errno {
    /// (errno, name), by number.
    pub const NAMES: &[(i32, &str)] = &[
        (1, "EPERM"),
        (2, "ENOENT"),
        (3, "ESRCH"),
        (4, "EINTR"),
        (5, "EIO"),
        (6, "ENXIO"),
        (7, "E2BIG"),
        (8, "ENOEXEC"),
        (9, "EBADF"),
        (10, "ECHILD"),
        (11, "EAGAIN"),
        (12, "ENOMEM"),
        (13, "EACCES"),
        (14, "EFAULT"),
        (16, "EBUSY"),
        (17, "EEXIST"),
        (18, "EXDEV"),
        (19, "ENODEV"),
        (20, "ENOTDIR"),
        (21, "EISDIR"),
        (22, "EINVAL"),
        (23, "ENFILE"),
        (24, "EMFILE"),
        (25, "ENOTTY"),
        (26, "ETXTBSY"),
        (27, "EFBIG"),
        (28, "ENOSPC"),
        (29, "ESPIPE"),
        (30, "EROFS"),
        (32, "EPIPE"),
        (34, "ERANGE"),
        (35, "EDEADLK"),
        (36, "ENAMETOOLONG"),
        (38, "ENOSYS"),
        (39, "ENOTEMPTY"),
        (40, "ELOOP"),
        (61, "ENODATA"),
        (62, "ETIME"),
        (75, "EOVERFLOW"),
        (88, "ENOTSOCK"),
        (95, "EOPNOTSUPP"),
        (98, "EADDRINUSE"),
        (99, "EADDRNOTAVAIL"),
        (100, "ENETDOWN"),
        (103, "ECONNABORTED"),
        (104, "ECONNRESET"),
        (105, "ENOBUFS"),
        (107, "ENOTCONN"),
        (110, "ETIMEDOUT"),
        (111, "ECONNREFUSED"),
        (113, "EHOSTUNREACH"),
        (114, "EALREADY"),
        (115, "EINPROGRESS"),
        (116, "ESTALE"),
        (122, "EDQUOT"),
        (125, "ECANCELED"),
        (129, "EKEYREJECTED"),
        (130, "EOWNERDEAD"),
        (512, "ERESTARTSYS"),
        (513, "ERESTARTNOINTR"),
        (514, "ERESTARTNOHAND"),
        (515, "ENOIOCTLCMD"),
        (516, "ERESTART_RESTARTBLOCK"),
        (517, "EPROBE_DEFER"),
        (518, "EOPENSTALE"),
        (519, "ENOPARAM"),
        (524, "ENOTSUPP"),
    ];

    /// The symbolic name of a (positive) errno: `None` for one the table does not name.
    pub fn name(errno: i32) -> Option<&'static str> {
        NAMES.iter().find(|(n, _)| *n == errno).map(|(_, s)| *s)
    }
}
