//! The test node's PCI topology (docs/design.md section 5): one place for QEMU's device arguments and the
//! guest addresses scripts see as environment variables. tests/vm/README.md documents the same.
//! Bus numbers follow from the firmware's depth-first numbering of the root ports in slot order.

use crate::arch::Arch;

/// Guest addresses, exported to scripts under these names.
pub const ADDRESSES: &[(&str, &str, &str)] = &[
    (
        "VM_DEV_ALONE",
        "0000:01:00.0",
        "virtio-net on its own root port 00:02.0",
    ),
    (
        "VM_PORT_SWITCH_UP",
        "0000:02:00.0",
        "x3130 upstream port below root port 00:03.0",
    ),
    (
        "VM_PORT_SWITCH_DOWN",
        "0000:03:00.0",
        "xio3130 downstream port (no ACS)",
    ),
    (
        "VM_DEV_SWITCH",
        "0000:04:00.0",
        "e1000 below the switch: shares a group with the downstream port",
    ),
    (
        "VM_DEV_FN0",
        "0000:05:00.0",
        "e1000, function 0 of the two-function device on root port 00:04.0",
    ),
    (
        "VM_DEV_FN1",
        "0000:05:00.1",
        "e1000, function 1 (the GPU's audio function in the field)",
    ),
    (
        "VM_GPU_VGA",
        "0000:81:00.0",
        "VGA (class 0x0300, host driver bochs; bochs-drm on 5.10), function 0 of the GPU-like card on root port 80:00.0",
    ),
    (
        "VM_GPU_AUDIO",
        "0000:81:00.1",
        "ich9-intel-hda (class 0x0403, host driver snd_hda_intel), function 1 of the GPU-like card",
    ),
];

pub fn address(var: &str) -> &'static str {
    ADDRESSES
        .iter()
        .find(|(v, _, _)| *v == var)
        .map(|(_, a, _)| *a)
        .unwrap_or("")
}

/// QEMU user networking's address for the guest (its default DHCP lease, set statically by scripts
/// that need the network).
pub const GUEST_IP: &str = "10.0.2.15";

/// [`qemu_args`] for `arch`. The arm64 node has the same devices at the same addresses (QEMU's
/// virt machine booted through UEFI with ACPI enumerates the PCIe expander bus as q35's
/// firmware does); its SMMUv3 is a machine property (`virt,iommu=smmuv3`), so intel-iommu is
/// left out.
pub fn qemu_args_for(arch: Arch, hostfwd: &[(u16, u16)]) -> Vec<String> {
    let mut args = qemu_args(hostfwd);
    if arch == Arch::Arm64 {
        if let Some(at) = args.iter().position(|a| a.starts_with("intel-iommu")) {
            args.drain(at - 1..=at);
        }
        // The expander's root bus gets an 18 MiB window from the firmware; the kernel wants a
        // prefetchable bridge window for VGA's 16 MiB BAR plus the root port's hotplug reserve,
        // which does not fit, and the card's BARs go unassigned (bochs and snd_hda_intel fail
        // to bind). 4 MiB of video memory fits and bochs still binds.
        for a in args.iter_mut().filter(|a| a.starts_with("VGA,")) {
            a.push_str(",vgamem_mb=4");
        }
    }
    args
}

/// QEMU arguments for the IOMMU and the devices; `hostfwd` maps host loopback ports to guest ports.
pub fn qemu_args(hostfwd: &[(u16, u16)]) -> Vec<String> {
    let mut netdev = String::from("user,id=net0");
    for (host, guest) in hostfwd {
        // Loopback only: nothing outside this machine reaches the guest.
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-{GUEST_IP}:{guest}"));
    }
    let mut args: Vec<String> = [
        // The IOMMU comes before the devices it translates for.
        "-device intel-iommu,intremap=on,caching-mode=on",
        // A device alone on a root port; user networking so a guest port can be forwarded if needed.
        "-device pcie-root-port,id=rp_alone,bus=pcie.0,addr=0x2,chassis=1",
        "-device virtio-net-pci,netdev=net0,bus=rp_alone,addr=0x0,romfile=",
        // A switch without ACS: downstream port and device share a group (the seed thread's case).
        "-device pcie-root-port,id=rp_switch,bus=pcie.0,addr=0x3,chassis=2",
        "-device x3130-upstream,id=sw_up,bus=rp_switch,addr=0x0",
        "-device xio3130-downstream,id=sw_down,bus=sw_up,addr=0x0,chassis=3,slot=0",
        "-device e1000,bus=sw_down,addr=0x0,romfile=",
        // Two functions of one device in one group (GPU + audio). e1000 on both because it is a
        // module on every kernel, so "load the driver, autoprobe claims .1" works everywhere.
        "-device pcie-root-port,id=rp_multi,bus=pcie.0,addr=0x4,chassis=4",
        "-device e1000,bus=rp_multi,addr=0x0.0,multifunction=on,romfile=",
        "-device e1000,bus=rp_multi,addr=0x0.1,romfile=",
        // A card that looks like a GPU: display function 0 and HD-audio function 1 in one group,
        // both bound to their host drivers at boot. Its root port hangs off a PCIe expander
        // bus (its own root bus 0x80), not pcie.0: the kernel numbers IOMMU groups in the order
        // it adds devices, every device of bus 0 before the buses below, so one more root port
        // on bus 0 would renumber the ICH9 group and every group after it. The expander's own
        // host-bridge function at 00:1f.4 (multifunction, no ACS, no driver) joins the ICH9
        // group 4; the buses below it are added after all of pcie.0's.
        "-device pxb-pcie,id=pxb_gpu,bus_nr=0x80,bus=pcie.0,addr=0x1f.4,multifunction=on",
        "-device pcie-root-port,id=rp_gpu,bus=pxb_gpu,addr=0x0,chassis=5",
        "-device VGA,bus=rp_gpu,addr=0x0.0,multifunction=on,romfile=",
        "-device ich9-intel-hda,bus=rp_gpu,addr=0x0.1",
    ]
    .iter()
    .flat_map(|a| a.splitn(2, ' ').map(str::to_string).collect::<Vec<_>>())
    .collect();
    args.extend(["-netdev".to_string(), netdev]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gpu_card_is_looked_up_like_every_device() {
        assert_eq!(address("VM_GPU_VGA"), "0000:81:00.0");
        assert_eq!(address("VM_GPU_AUDIO"), "0000:81:00.1");
        assert_eq!(address("VM_DEV_FN1"), "0000:05:00.1");
        assert_eq!(address("VM_NO_SUCH"), "");
    }

    #[test]
    fn the_arm64_node_has_every_device_but_intel_iommu() {
        let x86 = qemu_args_for(Arch::X86_64, &[]);
        let arm = qemu_args_for(Arch::Arm64, &[]);
        assert_eq!(arm.len() + 2, x86.len());
        assert!(!arm.iter().any(|a| a.contains("intel-iommu")));
        assert!(arm
            .iter()
            .all(|a| x86.contains(a) || a.ends_with(",vgamem_mb=4")));
        assert!(arm.iter().any(|a| a.contains("xio3130-downstream")));
        assert!(arm.iter().any(|a| a.starts_with("pxb-pcie")));
    }

    #[test]
    fn the_card_comes_after_every_earlier_device() {
        // Devices of pcie.0 keep their order, so their bus numbers and groups stay as they were.
        let args = qemu_args(&[]);
        let pos = |needle: &str| {
            args.iter()
                .position(|a| a.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {args:?}"))
        };
        assert!(pos("rp_multi,addr=0x0.1") < pos("pxb-pcie"));
        assert!(pos("pxb-pcie") < pos("id=rp_gpu"));
        assert!(pos("id=rp_gpu") < pos("VGA,bus=rp_gpu,addr=0x0.0,multifunction=on"));
        assert!(pos("VGA,bus=rp_gpu") < pos("ich9-intel-hda,bus=rp_gpu,addr=0x0.1"));
    }
}
