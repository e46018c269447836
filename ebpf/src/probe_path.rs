//! The driver-core probe path: every bind attempt and its result, the kernel's DMA-ownership
//! check for binding drivers, and every unbind.
use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use iommu_enforcer_common::EventKind;

use crate::{kernel, record::emit};

/// `int really_probe(struct device *dev, const struct device_driver *drv)`.
///
/// The return value is read from the slot after the last argument: `FExitContext::ret()` uses
/// `bpf_get_func_ret`, which 5.10 lacks (DESIGN.md section 5). 5.10 returns 1 on success, 6.x 0.
#[fexit(function = "really_probe")]
pub fn really_probe_exit(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let drv: *const u8 = ctx.arg(1);
    let ret: i64 = ctx.arg(2);
    // SAFETY: dev and drv are the traced function's arguments, read through probe_read.
    let group = unsafe { kernel::device_group_id(dev) };
    emit(&ctx, EventKind::Probe, ret as i32, group, |ev| unsafe {
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
    let group = unsafe { kernel::device_group_id(dev) };
    emit(
        &ctx,
        EventKind::UseDefaultDomain,
        ret as i32,
        group,
        |ev| unsafe {
            kernel::read_first_field_name(dev, &mut ev.device);
            // really_probe sets dev->driver before dma_configure runs: the driver being refused.
            kernel::read_first_field_name(kernel::device_driver(dev), &mut ev.driver);
        },
    );
    0
}

/// `pci_device_remove(struct device *dev)`: the PCI bus's remove callback, run for every unbind
/// of a bound PCI device (sysfs unbind, driver removal, device removal) while `dev->driver` is
/// still set. (`device_release_driver_internal` is inlined on Debian 5.10, so it cannot be the
/// hook on every kernel.)
#[fentry(function = "pci_device_remove")]
pub fn pci_remove_entry(ctx: FEntryContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let bound = unsafe { kernel::device_driver(dev) };
    if bound.is_null() {
        return 0;
    }
    let group = unsafe { kernel::device_group_id(dev) };
    emit(&ctx, EventKind::Unbind, 0, group, |ev| unsafe {
        kernel::read_first_field_name(dev, &mut ev.device);
        kernel::read_first_field_name(bound, &mut ev.driver);
    });
    0
}
