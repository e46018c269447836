//! eBPF side of iommu-enforcer. One file per program family. The programs keep the protection
//! state (`state`) and veto from it; the agent loads the topology and the policy into their maps.
//! Records are `iommu_enforcer_common::Event`, sent through one ring buffer.
#![no_std]
#![no_main]
// atomic_xadd: the bpf target has no core::sync::atomic integer types.
#![feature(core_intrinsics, adt_const_params)]
#![allow(internal_features)]
// Every unsafe block says why it is sound (`// SAFETY:`); `cargo xtask lint` runs clippy here.
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]
// Map keys are passed by reference as aya-ebpf's API takes them; the object is kept as verified.
#![allow(clippy::needless_borrows_for_generic_args)]

mod kernel;
mod lifecycle;
mod lsm_hooks;
mod lsm_probe;
mod ownership;
mod pin_guard;
mod pin_watch;
mod probe_path;
mod record;
mod state;
mod syscall_abi;
mod topology;
mod vfio_open;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
