//! The bind veto, in the kernel: no LSM hook sits in `really_probe`, but the driver core's first
//! step of a bind that will succeed, `driver_sysfs_add`, creates the driver's sysfs link to the
//! device, and every kernfs node passes `security_kernfs_init_security`. Refusing that link
//! makes `really_probe` fail before the driver's probe runs and before the bus notifier that
//! BUG()s 5.10 (BUS_NOTIFY_BOUND_DRIVER): every path into a bind is covered (sysfs bind,
//! drivers_probe, new_id, autoprobe after a rescan, a hotplug or a module load), whatever the
//! agent is doing.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use iommu_enforcer_common::{watched, ADDR_LEN};

use crate::{kernel, probe_path::PROBING, record::veto};

/// `int security_kernfs_init_security(struct kernfs_node *kn_dir, struct kernfs_node *kn)`.
#[lsm(hook = "kernfs_init_security")]
pub fn kernfs_init_security(ctx: LsmContext) -> i32 {
    crate::record::lsm_verdict(kernfs_init_security_decide(&ctx))
}

#[inline(always)]
fn kernfs_init_security_decide(ctx: &LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return crate::record::lsm_ret(prev);
    }
    let key = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(p) = (unsafe { PROBING.get(&key) }).copied() else {
        return 0;
    };
    if p.deny == 0 {
        return 0;
    }
    // Only the link named after the device, in the driver's directory.
    let kn: *const u8 = ctx.arg(1);
    let mut name = [0u8; ADDR_LEN];
    if !kernel::kn_name(kn, &mut name) || name != p.device {
        return 0;
    }
    veto(ctx, watched::PROBE, p.group as i32, |ev| {
        ev.device[..ADDR_LEN].copy_from_slice(&p.device);
        ev.driver[..p.driver.len()].copy_from_slice(&p.driver);
    })
}
