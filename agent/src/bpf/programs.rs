//! Which eBPF program attaches where, and what that needs from the kernel. The one table both
//! the loader and the capability report read.
use super::features::Features;

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    FEntry,
    FExit,
    /// BTF-typed tracepoint (`tp_btf`).
    TracePoint,
    /// kprobe/kretprobe: for module functions, which aya 0.14's fentry cannot resolve.
    KProbe,
    KRetProbe,
    /// BPF LSM hook: runs only where `bpf` is among the active LSMs.
    Lsm,
}

/// One program in the object.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    /// Function name in ebpf/ (the program's name in the object).
    pub program: &'static str,
    /// Kernel function or tracepoint it attaches to; also its name in the capability report.
    pub target: &'static str,
    pub attach: Attach,
}

const fn spec(program: &'static str, target: &'static str, attach: Attach) -> ProgramSpec {
    ProgramSpec {
        program,
        target,
        attach,
    }
}

/// Where the pin watch's program attaches (`ebpf/src/pin_watch.rs`); where it cannot, the
/// agent polls its pins instead.
pub const PIN_WATCH_TARGET: &str = "dev_attr_store";

/// The write-time program: loaded at start, attached only while `enforce::write_check` wants
/// it, so that read(2) and write(2) run no program in the steady state.
pub const WRITE_CHECK: &str = "file_permission";

/// The LSM program that uncounts VFIO opens at a file's free: needed only where VFIO's release
/// kprobe is not a pinned link (before 5.15) and so would not outlive the agent; elsewhere
/// that kprobe uncounts and no program runs on every close.
pub const FREE_HOOK: &str = "file_free_security";

pub const PROGRAMS: &[ProgramSpec] = &[
    // The state maps first, the vetoes that read them after.
    spec("really_probe_entry", "really_probe", Attach::FEntry),
    spec("really_probe_exit", "really_probe", Attach::FExit),
    spec(
        "use_default_domain_exit",
        "iommu_device_use_default_domain",
        Attach::FExit,
    ),
    spec("pci_remove_entry", "pci_device_remove", Attach::FEntry),
    spec("pci_remove_exit", "pci_device_remove", Attach::FExit),
    spec("pci_bus_match_exit", "pci_bus_match", Attach::FExit),
    // VFIO's group nodes named in the kernel as they are made.
    spec("vfio_node_added", "device_add", Attach::FExit),
    spec("process_exit", "sched_process_exit", Attach::TracePoint),
    spec("module_loaded", "module_load", Attach::TracePoint),
    // The pin watch: a record per `driver_override` store, so kept pins need no timer.
    spec("dev_attr_store_exit", PIN_WATCH_TARGET, Attach::FExit),
    spec(
        "group_claim_exit",
        "iommu_group_claim_dma_owner",
        Attach::FExit,
    ),
    spec(
        "group_release_entry",
        "iommu_group_release_dma_owner",
        Attach::FEntry,
    ),
    spec(
        "device_claim_exit",
        "iommu_device_claim_dma_owner",
        Attach::FExit,
    ),
    spec(
        "device_release_entry",
        "iommu_device_release_dma_owner",
        Attach::FEntry,
    ),
    spec("device_added", "add_device_to_group", Attach::TracePoint),
    spec(
        "device_removed",
        "remove_device_from_group",
        Attach::TracePoint,
    ),
    spec(
        "vfio_group_open_entry",
        "vfio_group_fops_open",
        Attach::KProbe,
    ),
    spec(
        "vfio_group_open_exit",
        "vfio_group_fops_open",
        Attach::KRetProbe,
    ),
    spec(
        "vfio_group_release",
        "vfio_group_fops_release",
        Attach::KProbe,
    ),
    spec(
        "vfio_cdev_release",
        "vfio_device_fops_release",
        Attach::KProbe,
    ),
    spec(
        "vfio_cdev_open_entry",
        "vfio_device_fops_cdev_open",
        Attach::KProbe,
    ),
    spec(
        "vfio_cdev_open_exit",
        "vfio_device_fops_cdev_open",
        Attach::KRetProbe,
    ),
    spec("kernfs_init_security", "kernfs_init_security", Attach::Lsm),
    // The frees before the open: every file the open counts is uncounted when it goes.
    spec("file_free_security", "file_free_security", Attach::Lsm),
    spec("kernfs_release", "kernfs_fop_release", Attach::FEntry),
    spec("file_open", "file_open", Attach::Lsm),
    spec("file_permission", "file_permission", Attach::Lsm),
    spec("mmap_file", "mmap_file", Attach::Lsm),
    // The pins guard themselves (removal, rename, unmount) while anything is protected.
    spec("sb_umount", "sb_umount", Attach::Lsm),
    spec("inode_unlink", "inode_unlink", Attach::Lsm),
    spec("inode_rename", "inode_rename", Attach::Lsm),
];

impl ProgramSpec {
    /// Whether the running kernel has this program's target.
    pub fn target_present(&self, features: &Features) -> bool {
        match self.attach {
            Attach::FEntry | Attach::FExit => features.has_function(self.target),
            Attach::TracePoint => features.has_tracepoint(self.target),
            Attach::KProbe | Attach::KRetProbe => features.probeable(self.target).is_present(),
            Attach::Lsm => features.has_lsm_hook(self.target),
        }
    }

    /// kprobe targets live in modules (vfio) that may load after the agent starts.
    pub fn may_appear_later(&self) -> bool {
        matches!(self.attach, Attach::KProbe | Attach::KRetProbe)
    }
}

/// The kprobe targets: the functions whose presence [`Features`] looks up in kallsyms and
/// ftrace's table, at start and after a module loads.
pub fn kprobe_targets() -> impl Iterator<Item = &'static str> {
    PROGRAMS
        .iter()
        .filter(|p| p.may_appear_later())
        .map(|p| p.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_are_unique_and_targets_paired() {
        for (i, a) in PROGRAMS.iter().enumerate() {
            for b in &PROGRAMS[i + 1..] {
                assert_ne!(a.program, b.program);
            }
        }
        // Every open kprobe has its kretprobe: the entry stashes what the return reports.
        for p in PROGRAMS
            .iter()
            .filter(|p| p.attach == Attach::KProbe && p.target.contains("open"))
        {
            assert!(PROGRAMS
                .iter()
                .any(|r| r.attach == Attach::KRetProbe && r.target == p.target));
        }
    }
}
