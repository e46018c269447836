//! iommu-enforcer: keeps IOMMU groups owned by either the kernel or user space, never both.
//!
//! Pure parts (no syscalls beyond reading the root paths they are given): [`sysfs`], [`model`],
//! [`policy`], [`report`]. I/O parts: [`bpf`] (load, attach, ring buffer) and [`daemon`].
pub mod bounded;
pub mod bpf;
pub mod cli;
pub mod daemon;
pub mod enforce;
pub mod errno;
#[cfg(test)]
mod golden_tests;
pub mod io_deadline;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod nfd;
pub mod node;
pub mod pci;
pub mod pods;
pub mod policy;
pub mod render;
pub mod report;
pub mod sysfs;
pub mod timestamp;
