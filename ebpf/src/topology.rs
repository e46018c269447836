//! Devices joining and leaving IOMMU groups (hotplug, `remove`, rescans), from the iommu
//! tracepoints `add_device_to_group` / `remove_device_from_group (int group_id, struct device *)`.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use iommu_enforcer_common::EventKind;

use crate::{kernel, record::emit};

#[btf_tracepoint(function = "add_device_to_group")]
pub fn device_added(ctx: BtfTracePointContext) -> i32 {
    report(&ctx, EventKind::DeviceAdded)
}

#[btf_tracepoint(function = "remove_device_from_group")]
pub fn device_removed(ctx: BtfTracePointContext) -> i32 {
    report(&ctx, EventKind::DeviceRemoved)
}

#[inline(always)]
fn report(ctx: &BtfTracePointContext, kind: EventKind) -> i32 {
    let group: i32 = ctx.arg(0);
    let dev: *const u8 = ctx.arg(1);
    emit(ctx, kind, 0, group, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
    });
    0
}
