//! The test node's PCI topology (DESIGN.md section 5): one place for QEMU's device arguments and the
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
    ]
    .iter()
    .flat_map(|a| a.splitn(2, ' ').map(str::to_string).collect::<Vec<_>>())
    .collect();
    args.extend(["-netdev".to_string(), netdev]);
    args
}
