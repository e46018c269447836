//! What the kernel knows about a driver by its name: whether it sets `driver_managed_dma` (so it
//! does not take kernel DMA ownership of its device) and whether it hands the device to user space.

/// Drivers hand a device to user space: vfio-pci and its variant drivers (`mlx5_vfio_pci`,
/// `nvgrace_gpu_vfio_pci`, `virtio-vfio-pci`, ...).
pub fn is_user_driver(driver: &str) -> bool {
    driver == "vfio-pci"
        || driver == "vfio_pci"
        || driver.ends_with("_vfio_pci")
        || driver.ends_with("-vfio-pci")
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

    #[test]
    fn vfio_variants_are_user_drivers() {
        for d in [
            "vfio-pci",
            "mlx5_vfio_pci",
            "nvgrace_gpu_vfio_pci",
            "virtio-vfio-pci",
        ] {
            assert!(is_user_driver(d), "{d}");
            assert!(is_driver_managed_dma(d), "{d}");
        }
        assert!(!is_user_driver("vfio"));
        assert!(!is_user_driver("pci-stub"));
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
