//! The driver-core probe path: every bind attempt and its result, the kernel's DMA-ownership
//! check for binding drivers, every unbind, and binds a pin refused. A bind of a user driver
//! (vfio-pci) protects its group here, in the kernel, before any VM can claim it; the bind
//! veto itself is in `lsm_probe`.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, map},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext},
};
use iommu_enforcer_common::{driver_class, EventKind, ADDR_LEN, DRIVER_KEY_LEN};

use crate::{
    kernel::{self, global},
    record::{emit, NO_GROUP},
    state,
};

/// What `really_probe` returns for a bound device: 1 before 5.13, 0 since (ef6dcbdd8eb2).
#[unsafe(no_mangle)]
static PROBE_OK: u32 = 0;

/// A bind in progress on this thread, decided at `really_probe` entry and applied by the
/// `kernfs_init_security` hook when the driver core creates the driver's link to the device.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Probing {
    pub group: u32,
    /// Nonzero: the driver may not bind this device (its group is protected).
    pub deny: u32,
    /// Nonzero: counted in `HOST_PROBES` until the return.
    pub counted: u32,
    pub _pad: u32,
    pub device: [u8; ADDR_LEN],
    pub driver: [u8; DRIVER_KEY_LEN],
}

/// pid_tgid -> the bind in progress. LRU: an entry whose fexit never ran cannot fill it.
#[map(name = "PROBING")]
pub static PROBING: LruHashMap<u64, Probing> = LruHashMap::with_max_entries(1024, 0);

/// `int really_probe(struct device *dev, const struct device_driver *drv)`: decides whether
/// this bind may happen.
#[fentry(function = "really_probe")]
pub fn really_probe_entry(ctx: FEntryContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let drv: *const u8 = ctx.arg(1);
    let group = kernel::device_group_id(dev);
    let mut p = Probing {
        group: group as u32,
        deny: 0,
        counted: 0,
        _pad: 0,
        device: [0; ADDR_LEN],
        driver: state::driver_key(drv),
    };
    if group != NO_GROUP && !state::driver_allowed(&p.driver) {
        // Counted before the use check: a VFIO open racing this bind sees one or the other.
        state::host_probe(p.group, 1);
        p.counted = 1;
        // A trusted container hands a reserved group back while nothing uses it.
        if state::group_protected(p.group)
            && (state::group_in_use(p.group) || !crate::lsm_hooks::trusted_container())
        {
            p.deny = 1;
        }
    }
    kernel::read_first_field_name(dev, &mut p.device);
    let _ = PROBING.insert(&bpf_get_current_pid_tgid(), &p, 0);
    0
}

/// The same function's return: the bind's outcome. The return value is read from the slot
/// after the last argument: `FExitContext::ret()` uses `bpf_get_func_ret`, which 5.10 lacks.
#[fexit(function = "really_probe")]
pub fn really_probe_exit(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let drv: *const u8 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copied out before the entry is removed.
    if let Some(p) = unsafe { PROBING.get(&key) }.copied() {
        if p.counted != 0 {
            state::host_probe(p.group, -1);
        }
    }
    let _ = PROBING.remove(&key);
    let group = kernel::device_group_id(dev);
    let bound = ret == global(&PROBE_OK) as i64;
    if bound
        && group != NO_GROUP
        && state::driver_flags(&state::driver_key(drv)) & driver_class::USER != 0
    {
        state::user_bound(group as u32, 1);
    }
    emit(&ctx, EventKind::Probe, ret as i32, group, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
        kernel::read_first_field_name(drv, &mut ev.driver);
    });
    0
}

/// `int iommu_device_use_default_domain(struct device *dev)` (5.19+): called from
/// `pci_dma_configure` while a driver binds. A failure here is the kernel's silent refusal
/// (-EBUSY when the group is user-owned); successes are not reported, the bind event covers them.
#[fexit(function = "iommu_device_use_default_domain")]
pub fn use_default_domain_exit(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if ret == 0 {
        return 0;
    }
    let group = kernel::device_group_id(dev);
    emit(&ctx, EventKind::UseDefaultDomain, ret as i32, group, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
        // really_probe sets dev->driver before dma_configure runs: the driver being refused.
        kernel::read_first_field_name(kernel::device_driver(dev), &mut ev.driver);
    });
    0
}

/// `pci_device_remove(struct device *dev)`: the PCI bus's remove callback, run for every unbind
/// of a bound PCI device (sysfs unbind, driver removal, device removal) while `dev->driver` is
/// still set. (`device_release_driver_internal` is inlined on Debian 5.10, so it cannot be the
/// hook on every kernel.)
#[fentry(function = "pci_device_remove")]
pub fn pci_remove_entry(ctx: FEntryContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let bound = kernel::device_driver(dev);
    if bound.is_null() {
        return 0;
    }
    let group = kernel::device_group_id(dev);
    emit(&ctx, EventKind::Unbind, 0, group, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
        kernel::read_first_field_name(bound, &mut ev.driver);
    });
    0
}

/// The same function's return: the user driver has let go of the device (vfio-pci's remove
/// waits until the device is closed), so only now does the member stop protecting its group.
#[fexit(function = "pci_device_remove")]
pub fn pci_remove_exit(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let bound = kernel::device_driver(dev);
    if bound.is_null() {
        return 0;
    }
    let group = kernel::device_group_id(dev);
    if group != NO_GROUP && state::driver_flags(&state::driver_key(bound)) & driver_class::USER != 0
    {
        state::user_bound(group as u32, -1);
    }
    0
}

/// `int pci_bus_match(struct device *dev, struct device_driver *drv)`: 0 for a driver the
/// device's `driver_override` excludes. Reported only in protected groups, where the agent's
/// pins are: every bind or autoprobe a pin stopped, with the driver it stopped.
#[fexit(function = "pci_bus_match")]
pub fn pci_bus_match_exit(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let drv: *const u8 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    if ret as i32 != 0 {
        return 0;
    }
    let mut over = [0u8; DRIVER_KEY_LEN];
    if !kernel::pci_driver_override(dev, &mut over) || over[0] == 0 {
        return 0;
    }
    let driver = state::driver_key(drv);
    if over == driver {
        return 0;
    }
    let group = kernel::device_group_id(dev);
    if group == NO_GROUP || !state::group_protected(group as u32) {
        return 0;
    }
    emit(&ctx, EventKind::PinRefused, -19, group, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
        ev.driver[..DRIVER_KEY_LEN].copy_from_slice(&driver);
    });
    0
}
