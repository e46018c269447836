//! The test node's PCI topology (docs/design.md section 5): one place for QEMU's device arguments and the
//! guest addresses scripts see as environment variables. tests/vm/README.md documents the same.
//! Bus numbers follow from the firmware's depth-first numbering of the root ports in slot order.

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
