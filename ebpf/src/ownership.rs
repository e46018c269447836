//! DMA-ownership claims and releases (5.19+): how VFIO (user space) takes a group or, through
//! iommufd, a device away from the kernel, and gives it back.
use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use iommu_enforcer_common::EventKind;

use crate::{kernel, record::emit, state};

/// `int iommu_group_claim_dma_owner(struct iommu_group *group, void *owner)`: -EPERM when a
/// kernel driver already uses the group's DMA API.
#[fexit(function = "iommu_group_claim_dma_owner")]
pub fn group_claim_exit(ctx: FExitContext) -> i32 {
    let group: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(2);
    let id = kernel::group_id(group);
    if ret == 0 && id >= 0 {
        state::claim(id as u32, 1);
    }
    emit(&ctx, EventKind::GroupClaim, ret as i32, id, |_| {});
    0
}

/// `void iommu_group_release_dma_owner(struct iommu_group *group)`.
#[fentry(function = "iommu_group_release_dma_owner")]
pub fn group_release_entry(ctx: FEntryContext) -> i32 {
    let group: *const u8 = ctx.arg(0);
    let id = kernel::group_id(group);
    if id >= 0 {
        state::claim(id as u32, -1);
    }
    emit(&ctx, EventKind::GroupRelease, 0, id, |_| {});
    0
}

/// `int iommu_device_claim_dma_owner(struct device *dev, void *owner)` (6.2+, iommufd cdev).
#[fexit(function = "iommu_device_claim_dma_owner")]
pub fn device_claim_exit(ctx: FExitContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(2);
    let id = kernel::device_group_id(dev);
    if ret == 0 && id >= 0 {
        state::claim(id as u32, 1);
    }
    emit(&ctx, EventKind::DeviceClaim, ret as i32, id, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
    });
    0
}

/// `void iommu_device_release_dma_owner(struct device *dev)`.
#[fentry(function = "iommu_device_release_dma_owner")]
pub fn device_release_entry(ctx: FEntryContext) -> i32 {
    let dev: *const u8 = ctx.arg(0);
    let id = kernel::device_group_id(dev);
    if id >= 0 {
        state::claim(id as u32, -1);
    }
    emit(&ctx, EventKind::DeviceRelease, 0, id, |ev| {
        kernel::read_first_field_name(dev, &mut ev.device);
    });
    0
}
