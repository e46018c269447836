//! The eBPF side, from user space: what the running kernel offers ([`features`]), which program
//! goes where ([`programs`]), loading and attaching ([`loader`]), and decoding ring-buffer records
//! ([`record`]). Only [`loader`] makes BPF syscalls.
pub mod btf;
#[cfg(test)]
mod contract;
pub mod features;
pub mod loader;
pub mod programs;
pub mod record;

/// The object `cargo xtask build-ebpf` built, embedded at compile time (empty when it was not
/// built; see build.rs).
pub static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iommu-enforcer.bpf.o"));
