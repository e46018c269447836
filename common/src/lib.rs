//! Records shared by the eBPF programs (`ebpf/`) and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the eBPF side writes these bytes into the ring
//! buffer and the agent reads them back, so both sides must agree on layout bit for bit.
#![no_std]

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
}

/// Flags in `Event::detail` of a veto, above the watched kind (low 8 bits).
pub mod veto {
    pub const KIND_MASK: u32 = 0xff;
    /// The operation was denied (else: dry-run, it would have been).
    pub const DENIED: u32 = 1 << 8;
    /// The written data could not be read (io_uring, vectored writes of several segments,
    /// compat syscalls): the hook failed closed.
    pub const TARGET_UNKNOWN: u32 = 1 << 9;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// Field offsets the agent resolves from the running kernel's BTF and hands to the programs as
/// globals (Rust eBPF cannot emit CO-RE relocations yet; see DESIGN.md section 3).
/// `u32::MAX` means "not resolved": the program then leaves the field empty.
pub mod offsets {
    pub const UNRESOLVED: u32 = u32::MAX;
}

/// Names of the ring buffer, the loss counter and the offset globals, shared so a rename on one
/// side cannot silently break the other.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const OFF_DEVICE_DRIVER: &str = "OFF_DEVICE_DRIVER";
    pub const OFF_DEVICE_IOMMU_GROUP: &str = "OFF_DEVICE_IOMMU_GROUP";
    pub const OFF_GROUP_ID: &str = "OFF_GROUP_ID";
    pub const OFF_INODE_RDEV: &str = "OFF_INODE_RDEV";
    pub const OFF_FILE_INODE: &str = "OFF_FILE_INODE";
    pub const OFF_INODE_SB: &str = "OFF_INODE_SB";
    pub const OFF_INODE_INO: &str = "OFF_INODE_INO";
    pub const OFF_SB_MAGIC: &str = "OFF_SB_MAGIC";
    pub const OFF_SB_DEV: &str = "OFF_SB_DEV";
    pub const OFF_TASK_MM: &str = "OFF_TASK_MM";
    pub const OFF_TASK_STACK: &str = "OFF_TASK_STACK";
    pub const OFF_MM_EXE_FILE: &str = "OFF_MM_EXE_FILE";
    pub const OFF_REGS_ORIG_AX: &str = "OFF_REGS_ORIG_AX";
    pub const OFF_REGS_SI: &str = "OFF_REGS_SI";
    pub const OFF_REGS_DX: &str = "OFF_REGS_DX";
    pub const PT_REGS_MODE: &str = "PT_REGS_MODE";
    pub const PT_REGS_SIZE: &str = "PT_REGS_SIZE";
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
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for WatchedFile {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExeKey {}
