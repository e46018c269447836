//! What the kernel knows about a driver by its name: whether it sets `driver_managed_dma` (so it
//! does not take kernel DMA ownership of its device) and whether it hands the device to user space.

/// Drivers hand a device to user space: vfio-pci and its variant drivers (`mlx5_vfio_pci`,
/// `nvgrace_gpu_vfio_pci`, `virtio-vfio-pci`, ...): a non-empty prefix before the suffix.
/// The eBPF programs class a driver the agent has not put in their map by the same rule
/// (`iommu_enforcer_common::is_user_driver_key`).
pub fn is_user_driver(driver: &str) -> bool {
    const SUFFIXES: [&str; 2] = ["_vfio_pci", "-vfio-pci"];
    driver == "vfio-pci"
        || driver == "vfio_pci"
        || SUFFIXES
            .iter()
            .any(|s| driver.len() > s.len() && driver.ends_with(s))
}

/// Drivers that set `driver_managed_dma` and so never claim kernel DMA ownership of a group:
/// the VFIO PCI drivers, `pci-stub` and `pcieport`.
pub fn is_driver_managed_dma(driver: &str) -> bool {
    is_user_driver(driver) || driver == "pci-stub" || driver == "pcieport"
}

/// Drivers allowed next to user-owned devices when the policy says nothing else: exactly the
/// `driver_managed_dma` ones.
pub fn is_allowed_by_default(driver: &str) -> bool {
    is_driver_managed_dma(driver)
}

/// Drivers never allowed next to user-owned devices when the policy does not set
/// `denied_drivers`: bridge hotplug drivers that map the bridge's MMIO (the LKML seed thread).
pub const DEFAULT_DENIED: &[&str] = &["shpchp"];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the kernel's user drivers use, one test per pattern; each also agrees with
    /// the eBPF programs' fallback on the NUL-padded key.
    fn user(d: &str) -> bool {
        let by_key = iommu_enforcer_common::is_user_driver_key(&crate::pci::padded(d));
        assert_eq!(is_user_driver(d), by_key, "agent and eBPF disagree on {d}");
        if is_user_driver(d) {
            assert!(is_driver_managed_dma(d), "{d}");
            assert!(is_allowed_by_default(d), "{d}");
        }
        is_user_driver(d)
    }

    #[test]
    fn vfio_pci_as_the_driver_core_and_the_module_name_it() {
        assert!(user("vfio-pci"));
        assert!(user("vfio_pci"));
    }

    #[test]
    fn underscore_variants_are_user_drivers() {
        for d in [
            "nvgrace_gpu_vfio_pci",
            "mlx5_vfio_pci",
            "hisi_acc_vfio_pci",
            "pds_vfio_pci",
            "virtio_vfio_pci",
            "qat_vfio_pci",
            "nvidia_vfio_pci",
        ] {
            assert!(user(d), "{d}");
        }
    }

    #[test]
    fn dash_variants_are_user_drivers() {
        for d in ["virtio-vfio-pci", "xe-vfio-pci"] {
            assert!(user(d), "{d}");
        }
    }

    #[test]
    fn near_misses_are_not_user_drivers() {
        for d in [
            "vfio",
            "pci-stub",
            "vfio_pci_core",
            "vfio-pci-core",
            "nvgrace_gpu",
            "_vfio_pci",
            "-vfio-pci",
            "vfio-pcie",
            "xvfio-pci",
            "nvgrace_gpu_vfio_pci_",
            "",
        ] {
            assert!(!user(d), "{d}");
        }
    }
    #[test]
    fn stub_and_portdrv_manage_dma_but_are_not_user() {
        assert!(is_driver_managed_dma("pci-stub"));
        assert!(is_driver_managed_dma("pcieport"));
        assert!(!is_driver_managed_dma("snd_hda_intel"));
        assert!(!is_driver_managed_dma("shpchp"));
        assert!(!is_driver_managed_dma("nvidia"));
    }
}
