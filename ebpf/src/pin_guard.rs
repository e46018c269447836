//! The pins guard themselves: the pinned links and maps under bpffs are the only references
//! that keep the programs attached and the state alive while no agent runs. While anything is
//! protected, nobody but the agent and `enforcer detach` may unlink them, rename them away or
//! over them, or unmount the bpffs instance that holds them (a node clean-up's
//! `umount /sys/fs/bpf` would otherwise drop every veto, and on 5.10 the next bind BUG()s).
//! Their directories need no hook of their own: rmdir needs them empty. Other tools' pins on
//! the same bpffs are not this agent's business.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use iommu_enforcer_common::{config, watched};

use crate::{
    kernel,
    record::{veto, NO_GROUP},
    state,
};

/// `int security_sb_umount(struct vfsmount *mnt, int flags)`.
#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return crate::record::lsm_verdict(crate::record::lsm_ret(prev));
    }
    let mnt: *const u8 = ctx.arg(0);
    crate::record::lsm_verdict(guard(&ctx, kernel::mnt_sb(mnt)))
}

/// `int security_inode_unlink(struct inode *dir, struct dentry *dentry)`.
#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return crate::record::lsm_verdict(crate::record::lsm_ret(prev));
    }
    let dir: *const u8 = ctx.arg(0);
    if !is_pin_dir(dir) {
        return 0;
    }
    crate::record::lsm_verdict(guard(&ctx, kernel::inode_sb(dir)))
}

/// `int security_inode_rename(struct inode *old_dir, struct dentry *old_dentry,
/// struct inode *new_dir, struct dentry *new_dentry)`: a pin renamed away, or another file
/// renamed over it, is a pin removed.
#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return crate::record::lsm_verdict(crate::record::lsm_ret(prev));
    }
    let old_dir: *const u8 = ctx.arg(0);
    let new_dir: *const u8 = ctx.arg(2);
    let dir = if is_pin_dir(old_dir) {
        old_dir
    } else if is_pin_dir(new_dir) {
        new_dir
    } else {
        return 0;
    };
    crate::record::lsm_verdict(guard(&ctx, kernel::inode_sb(dir)))
}

/// Whether `dir` is one of the agent's pin directories (by inode number; the device is checked
/// by [`guard`]).
#[inline(always)]
fn is_pin_dir(dir: *const u8) -> bool {
    if state::config(config::PIN_DEV) == 0 || dir.is_null() {
        return false;
    }
    let Some(ino) = kernel::inode_ino(dir) else {
        return false;
    };
    config::PIN_DIRS
        .iter()
        .any(|slot| ino != 0 && ino == u64::from(state::config(*slot)))
}

#[inline(always)]
fn guard(ctx: &LsmContext, sb: *const u8) -> i32 {
    let pins = state::config(config::PIN_DEV);
    // Cheapest first: most unlinks are on other filesystems.
    if pins == 0 || sb.is_null() {
        return 0;
    }
    if kernel::sb_dev(sb) != Some(pins) {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != 0
        && (tgid == state::config(config::AGENT_TGID) || tgid == state::config(config::DETACH_TGID))
    {
        return 0;
    }
    if !state::any_protected() {
        return 0;
    }
    veto(ctx, watched::PINS, NO_GROUP, |_| {})
}
