//! eBPF side of iommu-enforcer. One file per program family; every program only reports, and
//! the agent decides. Records are `iommu_enforcer_common::Event`, sent through one ring buffer.
#![no_std]
#![no_main]

mod kernel;
mod lsm_hooks;
mod ownership;
mod probe_path;
mod record;
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
