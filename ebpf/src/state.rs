//! The protection state, kept in the kernel: pinned maps that the programs change at the
//! instant the kernel's state changes (a member bound to a user driver, a DMA-ownership claim,
//! a VFIO node opened) and that outlive the agent. The agent loads the topology and the policy
//! (which driver is which, what is reserved, what lies below each bridge); it never decides
//! whether a group is held.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use iommu_enforcer_common::{
    config, driver_class, DeviceInfo, GroupState, ADDR_LEN, DRIVER_KEY_LEN, MAX_BELOW, MAX_GROUPS,
};

use crate::kernel;

/// Per group id: members on user drivers, claims.
#[map(name = "GROUPS")]
static GROUPS: Array<GroupState> = Array::with_max_entries(MAX_GROUPS, 0);

/// Kernel dev_t of a VFIO group node -> open files of it, counted by the LSM file hooks from
/// `file_open` to the file's last reference (`file_free_security`): a descriptor inherited,
/// duplicated or parked in an SCM_RIGHTS message keeps its file, and so its count.
#[map(name = "RDEV_OPENS")]
static RDEV_OPENS: HashMap<u32, i32> = HashMap::with_max_entries(4096, 0);

/// `struct file *` -> dev_t, for every file `RDEV_OPENS` counts: its free uncounts it.
#[map(name = "COUNTED_FILES")]
static COUNTED_FILES: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// Kernel dev_t -> opens that existed before the hooks counted (seeded by the agent from
/// /proc at a first start), uncounted by the release kprobe of a file the hooks never saw.
#[map(name = "SEEDED_OPENS")]
static SEEDED_OPENS: HashMap<u32, i32> = HashMap::with_max_entries(4096, 0);

/// Group id -> dev_t of its `/dev/vfio/N` (agent: it appears when vfio-pci binds a member).
#[map(name = "GROUP_RDEV")]
static GROUP_RDEV: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// dev_t of `/dev/vfio/N` -> N (agent): which group a node's open puts in use.
#[map(name = "NODE_GROUP")]
static NODE_GROUP: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Per group id (slot 0 of `MAX_GROUPS` more: all groups): binds of a host driver in progress,
/// from `really_probe` entry to its return. A VFIO open waits for none: on 5.10 a VM that
/// sets its container while one runs makes the bind's notifier BUG() the node.
#[map(name = "HOST_PROBES")]
static HOST_PROBES: Array<i32> = Array::with_max_entries(MAX_GROUPS + 1, 0);

/// `struct file *` of a writable descriptor of a sysfs control file that `file_open` let
/// through but could not judge (a bus-wide file, a target not protected yet, a trusted
/// writer) -> its `watched` kind. While any exists the write-time program must be armed.
#[map(name = "WRITE_FILES")]
static WRITE_FILES: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// The number of `WRITE_FILES` entries (slot 0).
#[map(name = "WRITERS")]
static WRITERS: Array<i32> = Array::with_max_entries(1, 0);

/// Groups the policy reserves (agent).
#[map(name = "RESERVED")]
static RESERVED: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Sum of every count above: nonzero while anything at all is protected.
#[map(name = "PROTECTED_REFS")]
static PROTECTED_REFS: Array<i32> = Array::with_max_entries(1, 0);

/// Settings the agent writes (see `common::config`).
#[map(name = "CONFIG")]
static CONFIG: Array<u32> = Array::with_max_entries(config::LEN, 0);

/// PCI address -> group and the groups below it (agent, from sysfs).
#[map(name = "TOPOLOGY")]
static TOPOLOGY: HashMap<[u8; ADDR_LEN], DeviceInfo> = HashMap::with_max_entries(16384, 0);

/// Hotplug slot name -> the groups below it (agent).
#[map(name = "SLOTS")]
static SLOTS: HashMap<[u8; ADDR_LEN], DeviceInfo> = HashMap::with_max_entries(1024, 0);

/// Driver name -> `driver_class` flags (agent, from the policy).
#[map(name = "USER_DRIVERS")]
static USER_DRIVERS: HashMap<[u8; DRIVER_KEY_LEN], u32> = HashMap::with_max_entries(256, 0);

#[inline(always)]
pub fn config(index: u32) -> u32 {
    CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
fn slot(group: u32) -> u32 {
    if group >= MAX_GROUPS {
        MAX_GROUPS - 1
    } else {
        group
    }
}

/// Whether the group must stay viable: reserved by the policy, or (with protect_user_groups)
/// in use: claimed, or its VFIO node open. A group merely bound to a user driver is idle and
/// may be handed back, except where nothing that outlives the agent counts opens
/// (`USE_COUNTED` unset: no BPF LSM) or its node's dev_t is not known (a node made before the
/// programs ran, until the agent names it): then a member on a user driver is taken as use
/// (fail closed).
#[inline(always)]
pub fn group_protected(group: u32) -> bool {
    // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
    // unsafe for (a value another CPU may update or delete).
    if unsafe { RESERVED.get(&group) }.is_some() {
        return true;
    }
    if config(config::PROTECT_USER) == 0 {
        return false;
    }
    group_in_use(group)
}

/// Whether user space uses `group` (see [`group_protected`]), whatever the policy.
#[inline(always)]
pub fn group_in_use(group: u32) -> bool {
    let bound = match GROUPS.get(slot(group)) {
        Some(st) => {
            if st.claims != 0 {
                return true;
            }
            st.user_bound != 0
        }
        None => false,
    };
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    let Some(rdev) = (unsafe { GROUP_RDEV.get(&group) }).copied() else {
        return bound;
    };
    if bound && config(config::USE_COUNTED) == 0 {
        return true;
    }
    opens_of(rdev) != 0
}

#[inline(always)]
fn opens_of(rdev: u32) -> i32 {
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    let counted = unsafe { RDEV_OPENS.get(&rdev) }.copied().unwrap_or(0);
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    let seeded = unsafe { SEEDED_OPENS.get(&rdev) }.copied().unwrap_or(0);
    counted | seeded
}

/// Whether some group may be in use (a claim, an open, or a member on a user driver): what
/// a write whose target is unknown must assume.
#[inline(always)]
pub fn anything_in_use() -> bool {
    PROTECTED_REFS.get(0).is_some_and(|n| *n != 0)
}

/// Whether anything on the node is protected (fail-closed decisions need it).
#[inline(always)]
pub fn any_protected() -> bool {
    config(config::RESERVED) != 0
        || (config(config::PROTECT_USER) != 0 && PROTECTED_REFS.get(0).is_some_and(|n| *n != 0))
}

/// Atomically adds `delta` (no fetch: 5.10 lacks BPF_FETCH) to a counter.
#[inline(always)]
fn add(counter: *mut i32, delta: i32) {
    // SAFETY: counter points into a map value, which lives as long as the map. The result is
    // unused, so LLVM emits BPF_ADD without BPF_FETCH (5.10 has no BPF_FETCH).
    unsafe {
        core::intrinsics::atomic_xadd::<i32, i32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, delta,
        )
    };
}

fn refs(delta: i32) {
    if let Some(p) = PROTECTED_REFS.get_ptr_mut(0) {
        add(p, delta);
    }
}

/// A member of `group` bound (+1) to or left (-1) a user driver.
#[inline(always)]
pub fn user_bound(group: u32, delta: i32) {
    if let Some(st) = GROUPS.get_ptr_mut(slot(group)) {
        // A decrement below what was seen stays protecting (fail closed) rather than wrapping
        // a count the agent seeded low; the check-then-add race only errs towards protection.
        // SAFETY: the pointer comes from get_ptr_mut: an aligned map value, alive while the program
        // runs (RCU); a racing atomic add on another CPU only changes the value read.
        if delta < 0 && unsafe { (*st).user_bound } == 0 {
            return;
        }
        // SAFETY: the address of a field of that same live map value; no reference is formed, the
        // add is atomic.
        add(unsafe { &raw mut (*st).user_bound }, delta);
        refs(delta);
    }
}

/// A DMA-ownership claim (+1) or release (-1) in `group`.
#[inline(always)]
pub fn claim(group: u32, delta: i32) {
    if let Some(st) = GROUPS.get_ptr_mut(slot(group)) {
        // SAFETY: the pointer comes from get_ptr_mut: an aligned map value, alive while the program
        // runs (RCU); a racing atomic add on another CPU only changes the value read.
        if delta < 0 && unsafe { (*st).claims } == 0 {
            return;
        }
        // SAFETY: the address of a field of that same live map value; no reference is formed, the
        // add is atomic.
        add(unsafe { &raw mut (*st).claims }, delta);
        refs(delta);
    }
}

/// Adds `delta` to the count of `rdev` in `map`, creating it on a first open.
#[inline(always)]
fn count(map: &HashMap<u32, i32>, rdev: u32, delta: i32) {
    match map.get_ptr_mut(&rdev) {
        Some(n) => {
            // Never below zero: a release without its open stays protecting (fail closed).
            // SAFETY: the pointer comes from get_ptr_mut: an aligned map value, alive while the
            // program runs (RCU); a racing atomic add on another CPU only changes the value read.
            if delta < 0 && unsafe { *n } <= 0 {
                return;
            }
            add(n, delta);
        }
        None => {
            if delta < 0 {
                return;
            }
            // BPF_NOEXIST: a racing first open on another CPU wins, then this one adds.
            if map.insert(&rdev, &delta, 1).is_err() {
                if let Some(n) = map.get_ptr_mut(&rdev) {
                    add(n, delta);
                }
            }
        }
    }
    refs(delta);
}

/// A VFIO group node's file is being opened: counted until its last reference goes. False
/// when it cannot be counted (the file table is full): the caller refuses the open.
#[inline(always)]
pub fn count_open(file: u64, rdev: u32) -> bool {
    // An entry for this very `struct file` is a file freed without its release (an open that
    // failed between this hook and VFIO's): the allocator reused it, so it is uncounted first.
    count_free(file);
    if COUNTED_FILES.insert(&file, &rdev, 1).is_err() {
        return false;
    }
    count(&RDEV_OPENS, rdev, 1);
    true
}

/// A file's last reference is gone: uncounts it if [`count_open`] counted it.
#[inline(always)]
pub fn count_free(file: u64) {
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    let Some(rdev) = (unsafe { COUNTED_FILES.get(&file) }).copied() else {
        return;
    };
    let _ = COUNTED_FILES.remove(&file);
    count(&RDEV_OPENS, rdev, -1);
}

/// VFIO released a group file: uncounts a seeded open, unless the hooks counted this file
/// (they uncount it when it is freed).
#[inline(always)]
pub fn seeded_release(file: u64, rdev: u32) {
    // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
    // unsafe for (a value another CPU may update or delete).
    if rdev == 0 || unsafe { COUNTED_FILES.get(&file) }.is_some() {
        return;
    }
    // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
    // unsafe for (a value another CPU may update or delete).
    if unsafe { SEEDED_OPENS.get(&rdev) }.is_some() {
        count(&SEEDED_OPENS, rdev, -1);
    }
}

/// Whether the write-time program is attached (the agent says so once it is).
#[inline(always)]
pub fn write_armed() -> bool {
    config(config::WRITE_ARMED) != 0
}

/// Writable control-file descriptors only the write-time program can judge.
#[inline(always)]
pub fn writers() -> i32 {
    WRITERS.get(0).copied().unwrap_or(0)
}

/// Counts `file` (of `kind`) until its last reference goes. False when the table is full.
#[inline(always)]
pub fn count_writer(file: u64, kind: u32) -> bool {
    if WRITE_FILES.insert(&file, &kind, 1).is_err() {
        // Already counted (a reused `struct file` whose free was not seen) or full: full
        // refuses, a stale entry stands for this file.
        // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
        // unsafe for (a value another CPU may update or delete).
        return unsafe { WRITE_FILES.get(&file) }.is_some();
    }
    if let Some(p) = WRITERS.get_ptr_mut(0) {
        add(p, 1);
    }
    true
}

/// `file`'s last reference went: uncounts it if [`count_writer`] counted it. True when it was
/// the last one.
#[inline(always)]
pub fn uncount_writer(file: u64) -> bool {
    // SAFETY: only the entry's presence is used, never the reference that aya-ebpf's `get` is
    // unsafe for (a value another CPU may update or delete).
    if unsafe { WRITE_FILES.get(&file) }.is_none() || WRITE_FILES.remove(&file).is_err() {
        return false;
    }
    match WRITERS.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: the pointer comes from get_ptr_mut: an aligned map value, alive while the
            // program runs (RCU); a racing atomic add on another CPU only changes the value read.
            if unsafe { *p } <= 0 {
                return true;
            }
            add(p, -1);
            // SAFETY: the pointer comes from get_ptr_mut: an aligned map value, alive while the
            // program runs (RCU); a racing atomic add on another CPU only changes the value read.
            unsafe { *p <= 0 }
        }
        None => false,
    }
}

/// VFIO created the node of `group` (`/dev/vfio/<group>`) under `devt`: named here, at its
/// creation, before anyone can open it (a minor freed by another group may be reused).
#[inline(always)]
pub fn name_node(group: u32, devt: u32) {
    let _ = GROUP_RDEV.insert(&group, &devt, 0);
    let _ = NODE_GROUP.insert(&devt, &group, 0);
}

/// A host driver's bind in `group` starts (+1) or ends (-1).
#[inline(always)]
pub fn host_probe(group: u32, delta: i32) {
    for index in [slot(group) + 1, 0] {
        if let Some(p) = HOST_PROBES.get_ptr_mut(index) {
            // SAFETY: the pointer comes from get_ptr_mut: an aligned map value, alive while the
            // program runs (RCU); a racing atomic add on another CPU only changes the value read.
            if delta < 0 && unsafe { *p } <= 0 {
                continue;
            }
            add(p, delta);
        }
    }
}

/// Whether a host driver is binding a member of the group whose VFIO node is `rdev` (any
/// group, when the node is not named yet).
#[inline(always)]
pub fn host_probing_for_node(rdev: u32) -> bool {
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    let index = match unsafe { NODE_GROUP.get(&rdev) } {
        Some(group) => slot(*group) + 1,
        None => 0,
    };
    HOST_PROBES.get(index).is_some_and(|n| *n > 0)
}

/// `driver_class` flags of a driver name (0: a kernel driver). A VFIO variant driver the
/// agent has not classed yet (its module loaded since) is a user driver, allowed: the agent
/// puts every driver the policy denies in the map, so an entry there always wins.
#[inline(always)]
pub fn driver_flags(name: &[u8; DRIVER_KEY_LEN]) -> u32 {
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    match unsafe { USER_DRIVERS.get(name) } {
        Some(flags) => *flags,
        None if iommu_enforcer_common::is_user_driver_key(name) => {
            driver_class::USER | driver_class::ALLOWED
        }
        None => 0,
    }
}

#[inline(always)]
pub fn driver_allowed(name: &[u8; DRIVER_KEY_LEN]) -> bool {
    driver_flags(name) & driver_class::ALLOWED != 0
}

/// The driver's name (`drv->name`, its first field) as a map key.
#[inline(always)]
pub fn driver_key(drv: *const u8) -> [u8; DRIVER_KEY_LEN] {
    let mut key = [0u8; DRIVER_KEY_LEN];
    kernel::read_first_field_name(drv, &mut key);
    key
}

pub fn device_info(address: &[u8; ADDR_LEN]) -> Option<DeviceInfo> {
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    unsafe { TOPOLOGY.get(address) }.copied()
}

pub fn slot_info(name: &[u8; ADDR_LEN]) -> Option<DeviceInfo> {
    // SAFETY: the value is copied out at once, while the program holds the RCU read lock that keeps
    // a map value alive; another CPU's update only changes which value is read.
    unsafe { SLOTS.get(name) }.copied()
}

/// The first protected group among `info`'s own and those below it (`ABOVE` when below).
/// A bridge with more groups below than listed is above something whenever anything is
/// protected.
#[inline(always)]
pub fn protected_at_or_below(info: &DeviceInfo) -> Option<(u32, bool)> {
    if info.group != u32::MAX && group_protected(info.group) {
        return Some((info.group, false));
    }
    if info.nbelow as usize > MAX_BELOW {
        return any_protected().then_some((u32::MAX, true));
    }
    let mut i = 0usize;
    while i < MAX_BELOW {
        if i >= info.nbelow as usize {
            break;
        }
        let g = info.below[i];
        if group_protected(g) {
            return Some((g, true));
        }
        i += 1;
    }
    None
}

/// `enforcer detach` exited: nobody else may remove the pins in its name.
#[inline(always)]
pub fn clear_detacher() {
    if let Some(p) = CONFIG.get_ptr_mut(config::DETACH_TGID) {
        // SAFETY: `p` comes from get_ptr_mut: an aligned u32 slot of an array map, alive while the
        // program runs; the store is a single aligned write.
        unsafe { *p = 0 };
    }
}

/// The agent exited: nobody's writes pass as the agent's until a new agent says who it is.
#[inline(always)]
pub fn clear_agent() {
    if let Some(p) = CONFIG.get_ptr_mut(config::AGENT_TGID) {
        // SAFETY: `p` comes from get_ptr_mut: an aligned u32 slot of an array map, alive while the
        // program runs; the store is a single aligned write.
        unsafe { *p = 0 };
    }
}
