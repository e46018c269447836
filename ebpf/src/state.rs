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

/// Kernel dev_t of a VFIO group node -> open files of it (each open until its release).
#[map(name = "RDEV_OPENS")]
static RDEV_OPENS: HashMap<u32, i32> = HashMap::with_max_entries(4096, 0);

/// Group id -> dev_t of its `/dev/vfio/N` (agent: it appears when vfio-pci binds a member).
#[map(name = "GROUP_RDEV")]
static GROUP_RDEV: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

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

/// Whether the group must stay viable: reserved, or (with protect_user_groups) held by user
/// space in any way the kernel shows.
#[inline(always)]
pub fn group_protected(group: u32) -> bool {
    if unsafe { RESERVED.get(&group) }.is_some() {
        return true;
    }
    if config(config::PROTECT_USER) == 0 {
        return false;
    }
    if let Some(st) = GROUPS.get(slot(group)) {
        if st.user_bound != 0 || st.claims != 0 {
            return true;
        }
    }
    if let Some(rdev) = unsafe { GROUP_RDEV.get(&group) } {
        if let Some(opens) = unsafe { RDEV_OPENS.get(rdev) } {
            return *opens != 0;
        }
    }
    false
}

/// Whether anything on the node is protected (fail-closed decisions need it).
#[inline(always)]
pub fn any_protected() -> bool {
    config(config::RESERVED) != 0
        || (config(config::PROTECT_USER) != 0
            && PROTECTED_REFS.get(0).is_some_and(|n| *n != 0))
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
        if delta < 0 && unsafe { (*st).user_bound } == 0 {
            return;
        }
        add(unsafe { &raw mut (*st).user_bound }, delta);
        refs(delta);
    }
}

/// A DMA-ownership claim (+1) or release (-1) in `group`.
#[inline(always)]
pub fn claim(group: u32, delta: i32) {
    if let Some(st) = GROUPS.get_ptr_mut(slot(group)) {
        if delta < 0 && unsafe { (*st).claims } == 0 {
            return;
        }
        add(unsafe { &raw mut (*st).claims }, delta);
        refs(delta);
    }
}

/// A VFIO group node opened (+1) or released (-1).
#[inline(always)]
pub fn vfio_open(rdev: u32, delta: i32) {
    if rdev == 0 {
        return;
    }
    match RDEV_OPENS.get_ptr_mut(&rdev) {
        Some(n) => {
            if delta < 0 && unsafe { *n } == 0 {
                return;
            }
            add(n, delta);
        }
        None => {
            if delta < 0 {
                return;
            }
            // BPF_NOEXIST: a racing first open on another CPU wins, then this one adds.
            if RDEV_OPENS.insert(&rdev, &delta, 1).is_err() {
                if let Some(n) = RDEV_OPENS.get_ptr_mut(&rdev) {
                    add(n, delta);
                }
            }
        }
    }
    refs(delta);
}

/// `driver_class` flags of a driver name (0: a kernel driver).
#[inline(always)]
pub fn driver_flags(name: &[u8; DRIVER_KEY_LEN]) -> u32 {
    unsafe { USER_DRIVERS.get(name) }.copied().unwrap_or(0)
}

#[inline(always)]
pub fn driver_allowed(name: &[u8; DRIVER_KEY_LEN]) -> bool {
    driver_flags(name) & driver_class::ALLOWED != 0
}

/// The driver's name (`drv->name`, its first field) as a map key.
#[inline(always)]
pub fn driver_key(drv: *const u8) -> [u8; DRIVER_KEY_LEN] {
    let mut key = [0u8; DRIVER_KEY_LEN];
    unsafe { kernel::read_first_field_name(drv, &mut key) };
    key
}

pub fn device_info(address: &[u8; ADDR_LEN]) -> Option<DeviceInfo> {
    unsafe { TOPOLOGY.get(address) }.copied()
}

pub fn slot_info(name: &[u8; ADDR_LEN]) -> Option<DeviceInfo> {
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

/// The agent exited: nobody's writes pass as the agent's until a new agent says who it is.
#[inline(always)]
pub fn clear_agent() {
    if let Some(p) = CONFIG.get_ptr_mut(config::AGENT_TGID) {
        unsafe { *p = 0 };
    }
}
