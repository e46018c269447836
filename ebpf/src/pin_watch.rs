//! Every store of a device's `driver_override`, by any task but the agent: the record the
//! agent re-checks its pins on, instead of polling them. Hooked at `dev_attr_store`, the one
//! function every write of a device attribute passes on each of these kernels (5.10 to 7.3),
//! whatever the writer: write(2), `__kernel_write` (acct), io_uring and its workers. The
//! store functions themselves are no single target: `driver_override_store` is a static copy
//! per bus under one name (two in 6.1's BTF), and the setter behind it is
//! `driver_set_override` up to 6.12 but `__device_set_driver_override` for PCI since the
//! override moved into `struct device` (6.19, Debian's 6.12.118).
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::fexit, programs::FExitContext};
use iommu_enforcer_common::{config, override_written, EventKind};

use crate::{kernel, record::emit, state};

/// The attribute's name, `driver_override` and its NUL, as two little-endian words.
const NAME_WORDS: [u64; 2] = [
    u64::from_le_bytes(*b"driver_o"),
    u64::from_le_bytes(*b"verride\0"),
];

/// `ssize_t dev_attr_store(struct kobject *kobj, struct attribute *attr, const char *buf,
/// size_t count)`: `kobj` is the device's own (`struct device` begins with it), `attr->name`
/// its first field, `buf` the written bytes, NUL-terminated by kernfs.
#[fexit(function = "dev_attr_store")]
pub fn dev_attr_store_exit(ctx: FExitContext) -> i32 {
    let attr: *const u8 = ctx.arg(1);
    // A third word: a longer name's 16th byte is not the NUL.
    let mut name = [0u64; 3];
    // SAFETY: a zeroed local of 24 bytes viewed as bytes; the helper writes within it.
    let bytes = unsafe { core::slice::from_raw_parts_mut(name.as_mut_ptr().cast::<u8>(), 24) };
    kernel::read_first_field_name(attr, bytes);
    if name[0] != NAME_WORDS[0] || name[1] != NAME_WORDS[1] {
        return 0;
    }
    // The agent's own pins need no second look.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != 0 && tgid == state::config(config::AGENT_TGID) {
        return 0;
    }
    let dev: *const u8 = ctx.arg(0);
    let buf: *const u8 = ctx.arg(2);
    // The return value sits after the last argument (5.10 has no bpf_get_func_ret).
    let ret: i64 = ctx.arg(4);
    let group = kernel::device_group_id(dev);
    // A trusted container's change of a reserved group's pin stands (the agent gives way).
    let detail = if crate::lsm_hooks::trusted_container() {
        override_written::TRUSTED_CONTAINER
    } else {
        0
    };
    emit(&ctx, EventKind::OverrideWritten, ret as i32, group, |ev| {
        ev.detail = detail;
        kernel::read_first_field_name(dev, &mut ev.device);
        let _ = kernel::read_str(buf, &mut ev.driver);
    });
    0
}
