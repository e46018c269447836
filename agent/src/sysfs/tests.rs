//! Reading small sysfs trees laid out as the kernel does, made by hand in a tempdir (for the
//! odd cases) and by the `iommu-fixtures` crate (for the field situations).
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::config::tests::config;
use super::*;
use crate::model::PortType;

/// A hand-made sysfs tree under `<tempdir>/sys`.
struct Tree {
    _dir: tempfile::TempDir,
    sys: PathBuf,
}

/// `../` as many times as `rel` (a directory relative to the root) has components.
fn up(rel: &str) -> String {
    "../".repeat(rel.split('/').count())
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("kernel/iommu_groups")).expect("mkdir");
        std::fs::create_dir_all(sys.join("bus/pci/devices")).expect("mkdir");
        Tree { _dir: dir, sys }
    }

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.sys.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// A symlink at `rel` to `target` (relative to the root), written as a relative link.
    fn link(&self, rel: &str, target: &str) {
        let path = self.sys.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        symlink(format!("{}{target}", up(dir)), path).expect("symlink");
    }

    /// A PCI device at `devices/<path>` (the last component is its address) in `group`.
    fn device(&self, path: &str, group: u32, class: u32, driver: Option<&str>, cfg: Option<&[u8]>) {
        let addr = path.rsplit('/').next().expect("address");
        let dir = format!("devices/{path}");
        self.write(&format!("{dir}/vendor"), "0x10de\n");
        self.write(&format!("{dir}/device"), "0x2204\n");
        self.write(&format!("{dir}/class"), format!("0x{class:06x}\n"));
        self.write(&format!("{dir}/driver_override"), "(null)\n");
        if let Some(c) = cfg {
            self.write(&format!("{dir}/config"), c);
        }
        if let Some(d) = driver {
            std::fs::create_dir_all(self.sys.join("bus/pci/drivers").join(d)).expect("mkdir");
            self.link(&format!("{dir}/driver"), &format!("bus/pci/drivers/{d}"));
        }
        self.link(&format!("bus/pci/devices/{addr}"), &dir);
        self.link(
            &format!("{dir}/iommu_group"),
            &format!("kernel/iommu_groups/{group}"),
        );
        self.link(&format!("kernel/iommu_groups/{group}/devices/{addr}"), &dir);
    }
}

fn device<'a>(scan: &'a Scan, addr: &str) -> &'a Device {
    scan.devices
        .iter()
        .find(|d| d.address == addr)
        .unwrap_or_else(|| panic!("{addr} not scanned"))
}

#[test]
fn reads_members_parents_drivers_and_config() {
    let t = Tree::new();
    let root_port = config(0x01, Some(4), Some(0x001d));
    let gpu = config(0x80, Some(0), None);
    t.device(
        "pci0000:00/0000:00:01.0",
        1,
        0x060400,
        Some("pcieport"),
        Some(&root_port),
    );
    t.device(
        "pci0000:00/0000:00:01.0/0000:01:00.0",
        12,
        0x030000,
        Some("vfio-pci"),
        Some(&gpu),
    );
    t.device(
        "pci0000:00/0000:00:01.0/0000:01:00.1",
        12,
        0x040300,
        None,
        Some(&gpu[..64]),
    );
    t.write(
        "devices/pci0000:00/0000:00:01.0/0000:01:00.1/driver_override",
        "vfio-pci\n",
    );

    let scan = scan(&t.sys).expect("scan");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert_eq!(scan.groups.iter().copied().collect::<Vec<_>>(), vec![1, 12]);

    let port = device(&scan, "0000:00:01.0");
    assert!(port.bridge);
    assert_eq!(port.port_type, Some(PortType::RootPort));
    assert_eq!(port.acs, Acs::Enabled);
    assert!(port.parents.is_empty());
    assert_eq!(port.driver.as_deref(), Some("pcieport"));

    let gpu = device(&scan, "0000:01:00.0");
    assert_eq!(
        (gpu.vendor, gpu.device, gpu.class),
        (Some(0x10de), Some(0x2204), Some(0x030000))
    );
    assert_eq!(gpu.group, 12);
    assert!(!gpu.bridge && gpu.multifunction);
    assert_eq!(gpu.port_type, Some(PortType::Endpoint));
    assert_eq!(gpu.acs, Acs::None);
    assert_eq!(gpu.parents, vec!["0000:00:01.0"]);
    assert_eq!(gpu.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(gpu.driver_override, None, "(null) means unset");

    let audio = device(&scan, "0000:01:00.1");
    assert_eq!(audio.driver, None);
    assert_eq!(audio.driver_override.as_deref(), Some("vfio-pci"));
    assert_eq!(audio.acs, Acs::Unknown, "64-byte config: non-root read");
    assert_eq!(audio.port_type, None);
    assert!(audio.multifunction, "header type is in the first 64 bytes");
}

#[test]
fn without_config_multifunction_comes_from_sibling_functions() {
    let t = Tree::new();
    t.device("pci0000:00/0000:00:02.0", 2, 0x030000, None, None);
    t.device("pci0000:00/0000:00:02.1", 2, 0x040300, None, None);
    t.device("pci0000:00/0000:00:03.0", 3, 0x020000, None, None);
    let scan = scan(&t.sys).expect("scan");
    assert!(device(&scan, "0000:00:02.0").multifunction);
    assert!(!device(&scan, "0000:00:03.0").multifunction);
    assert_eq!(device(&scan, "0000:00:03.0").acs, Acs::Unknown);
}

#[test]
fn vanished_unreadable_and_non_pci_members_are_problems() {
    let t = Tree::new();
    t.device("pci0000:00/0000:00:02.0", 2, 0x020000, Some("e1000e"), None);
    // removed between readdir and readlink: the group still links to it
    t.link(
        "kernel/iommu_groups/7/devices/0000:05:00.0",
        "devices/pci0000:00/0000:05:00.0",
    );
    // a vendor file that is a directory: refused unread
    t.device("pci0000:00/0000:00:03.0", 3, 0x020000, None, None);
    let vendor = t.sys.join("devices/pci0000:00/0000:00:03.0/vendor");
    std::fs::remove_file(&vendor).expect("rm");
    std::fs::create_dir(&vendor).expect("mkdir");
    // a platform device in a group
    t.write("devices/platform/AMDI0010:00/uevent", "");
    std::fs::create_dir_all(t.sys.join("bus/platform/drivers/i2c_designware")).expect("mkdir");
    t.link(
        "devices/platform/AMDI0010:00/driver",
        "bus/platform/drivers/i2c_designware",
    );
    t.link(
        "kernel/iommu_groups/4/devices/AMDI0010:00",
        "devices/platform/AMDI0010:00",
    );

    let scan = scan(&t.sys).expect("scan");
    assert_eq!(
        scan.groups.iter().copied().collect::<Vec<_>>(),
        vec![2, 3, 4, 7]
    );
    let kinds: Vec<(Option<u32>, Option<&str>, ProblemKind)> = scan
        .problems
        .iter()
        .map(|p| (p.group, p.device.as_deref(), p.kind))
        .collect();
    assert!(kinds.contains(&(Some(7), Some("0000:05:00.0"), ProblemKind::Vanished)));
    assert!(kinds.contains(&(Some(3), Some("0000:00:03.0"), ProblemKind::NotRegular)));
    assert!(kinds.contains(&(Some(4), Some("AMDI0010:00"), ProblemKind::NotPci)));
    assert!(scan
        .problems
        .iter()
        .all(|p| p.message.contains(&*p.path.to_string_lossy())));

    // the unreadable device is kept with what could be read
    let nic = device(&scan, "0000:00:03.0");
    assert_eq!((nic.vendor, nic.device), (None, Some(0x2204)));
    assert_eq!(scan.others.len(), 1);
    assert_eq!(scan.others[0].driver.as_deref(), Some("i2c_designware"));

    let map = scan.to_map();
    assert_eq!(map.group(7).map(|g| g.len()), Some(0));
    assert_eq!(map.group(4).map(|g| g.len()), Some(1));
}

#[test]
fn missing_groups_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = scan(dir.path()).expect_err("no kernel/iommu_groups");
    assert!(err.to_string().contains("kernel/iommu_groups"), "{err}");
}

#[test]
fn read_device_follows_bus_links() {
    let t = Tree::new();
    t.device(
        "pci0000:00/0000:00:01.0",
        1,
        0x060400,
        Some("pcieport"),
        None,
    );
    t.device(
        "pci0000:00/0000:00:01.0/0000:01:00.0",
        12,
        0x030000,
        None,
        None,
    );
    let (dev, problems) = read_device(&t.sys, "0000:01:00.0").expect("read");
    assert!(problems.is_empty());
    assert_eq!(dev.group, 12);
    assert_eq!(dev.parents, vec!["0000:00:01.0"]);
    assert!(matches!(
        read_device(&t.sys, "0000:09:00.0"),
        Err(SysfsError::Vanished { .. })
    ));
}

/// Builds a named fixture into a tempdir.
pub(crate) fn fixture(name: &str) -> (tempfile::TempDir, iommu_fixtures::Node) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = iommu_fixtures::fixture(name).unwrap_or_else(|| panic!("no fixture {name}"));
    let node = iommu_fixtures::build(spec, dir.path()).expect("fixture builds");
    (dir, node)
}

#[test]
fn fixture_switch_without_acs() {
    let (_d, node) = fixture("switch-without-acs");
    let scan = scan(&node.sysfs).expect("scan");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    let down = device(&scan, "0000:02:08.0");
    assert_eq!(down.port_type, Some(PortType::DownstreamPort));
    assert_eq!(down.acs, Acs::None);
    assert!(down.bridge);
    assert_eq!(device(&scan, "0000:02:10.0").acs, Acs::Enabled);
    assert_eq!(
        device(&scan, "0000:03:00.0").parents,
        vec!["0000:00:01.0", "0000:01:00.0", "0000:02:08.0"]
    );
    assert_eq!(
        device(&scan, "0000:01:00.0").port_type,
        Some(PortType::UpstreamPort)
    );
}

#[test]
fn fixture_acs_unknown_reads_as_unprivileged() {
    let (_d, node) = fixture("acs-unknown");
    let scan = scan(&node.sysfs).expect("scan");
    let down = device(&scan, "0000:02:08.0");
    assert_eq!(down.acs, Acs::Unknown);
    assert_eq!(down.port_type, None, "the PCIe capability is past 64 bytes");
    assert!(down.bridge, "class 0x0604 still says bridge");
}

#[test]
fn fixture_conventional_devices_have_no_acs() {
    let (_d, node) = fixture("user-group-hotplug-bridge");
    let scan = scan(&node.sysfs).expect("scan");
    let nic = device(&scan, "0000:02:01.0");
    assert_eq!(nic.port_type, None);
    assert_eq!(nic.acs, Acs::None);
    assert_eq!(
        device(&scan, "0000:01:00.0").port_type,
        Some(PortType::PcieToPciBridge)
    );
}

#[test]
fn fixture_holders_of_group_files_and_cdevs() {
    let (_d, node) = fixture("held-vfio-group");
    let found = scan_holders(&node.proc, &node.sysfs);
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    type Seen<'a> = (u32, &'a str, Option<u32>, Option<u32>, Option<&'a str>);
    let mut holders: Vec<Seen> = found
        .holders
        .iter()
        .map(|h| (h.pid, h.comm.as_str(), h.fd, h.group, h.device.as_deref()))
        .collect();
    holders.sort();
    assert_eq!(
        holders,
        vec![
            (5150, "qemu-system-x86", Some(4), Some(30), None),
            (
                6001,
                "cloud-hyperviso",
                Some(10),
                Some(41),
                Some("0000:41:00.0")
            ),
        ]
    );
}

#[test]
fn holders_carry_the_pod_of_their_cgroup() {
    let (_d, node) = fixture("viable-passthrough");
    let uid = "8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f";
    let id = "4f3e2d1c0b0a99887766554433221100ffeeddccbbaa99887766554433221100";
    let fd = node.proc.join("901/fd");
    std::fs::create_dir_all(&fd).expect("mkdir");
    symlink("/dev/vfio/15", fd.join("3")).expect("symlink");
    std::fs::write(node.proc.join("901/comm"), "virt-launcher\n").expect("write");
    let cgroup = format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope\n",
        uid.replace('-', "_")
    );
    std::fs::write(node.proc.join("901/cgroup"), cgroup).expect("write");
    let found = scan_holders(&node.proc, &node.sysfs);
    let pods: Vec<(u32, Option<&str>, Option<&str>)> = found
        .holders
        .iter()
        .map(|h| {
            let pod = h.pod.as_ref();
            (
                h.pid,
                pod.map(|p| p.pod_uid.as_str()),
                pod.and_then(|p| p.container_id.as_deref()),
            )
        })
        .collect();
    // The fixture's own holder has no cgroup file: outside a pod as far as anyone can tell.
    assert_eq!(pods, vec![(901, Some(uid), Some(id)), (4242, None, None)]);
}

#[test]
fn processes_that_vanish_are_skipped() {
    let (_d, node) = fixture("viable-passthrough");
    // a process whose comm is gone (exited after readdir), one without fd/, a non-pid entry
    let ghost = node.proc.join("777/fd");
    std::fs::create_dir_all(&ghost).expect("mkdir");
    symlink("/dev/vfio/15", ghost.join("3")).expect("symlink");
    std::fs::create_dir_all(node.proc.join("778")).expect("mkdir");
    std::fs::create_dir_all(node.proc.join("self")).expect("mkdir");
    let found = scan_holders(&node.proc, &node.sysfs);
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let pids: Vec<u32> = found.holders.iter().map(|h| h.pid).collect();
    assert_eq!(pids, vec![4242]);
}

#[test]
fn unknown_cdev_and_missing_proc_are_problems() {
    let (_d, node) = fixture("viable-passthrough");
    let fd = node.proc.join("900/fd");
    std::fs::create_dir_all(&fd).expect("mkdir");
    symlink("/dev/vfio/devices/vfio7", fd.join("5")).expect("symlink");
    std::fs::write(node.proc.join("900/comm"), "qemu\n").expect("write");
    let found = scan_holders(&node.proc, &node.sysfs);
    assert!(found
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Unresolved && p.message.contains("vfio7")));

    let missing = scan_holders(Path::new("/nonexistent/proc"), &node.sysfs);
    assert!(missing.holders.is_empty());
    assert_eq!(missing.problems.len(), 1);
    assert_eq!(missing.problems[0].kind, ProblemKind::Missing);
    assert!(missing.problems[0].message.contains("ENOENT"));
}

/// A FIFO at `path` (a `vendor` that would hang a blocking read forever).
pub(crate) fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

fn problems_of<'a>(scan: &'a Scan, device: &str) -> Vec<&'a ScanProblem> {
    scan.problems
        .iter()
        .filter(|p| p.device.as_deref() == Some(device))
        .collect()
}

#[test]
fn fifos_device_nodes_and_long_attributes_are_refused_unread() {
    let t = Tree::new();
    let dir = "devices/pci0000:00/0000:00:02.0";
    t.device("pci0000:00/0000:00:02.0", 2, 0x030000, None, None);
    let vendor = t.sys.join(dir).join("vendor");
    std::fs::remove_file(&vendor).expect("rm");
    mkfifo(&vendor);
    symlink("/dev/zero", t.sys.join(dir).join("config")).expect("symlink");
    let secret = "x".repeat(1 << 20);
    t.write(&format!("{dir}/driver_override"), &secret);
    t.device("pci0000:00/0000:00:03.0", 3, 0x020000, None, None);
    t.write(
        "devices/pci0000:00/0000:00:03.0/config",
        vec![0u8; CONFIG_LIMIT + 1],
    );

    let scan = scan(&t.sys).expect("scan ends");
    let found: Vec<(ProblemKind, String)> = problems_of(&scan, "0000:00:02.0")
        .iter()
        .map(|p| {
            let file = p.path.file_name().map(|n| n.to_string_lossy().into_owned());
            (p.kind, file.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (ProblemKind::NotRegular, "vendor".to_string()),
            (ProblemKind::NotRegular, "config".to_string()),
            (ProblemKind::TooLong, "driver_override".to_string()),
        ]
    );
    let gpu = device(&scan, "0000:00:02.0");
    assert_eq!((gpu.vendor, gpu.device), (None, Some(0x2204)));
    assert_eq!(
        (gpu.driver_override.as_deref(), gpu.acs),
        (None, Acs::Unknown)
    );
    let messages: Vec<&str> = scan.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("is a FIFO")),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m.contains("is a character device")));
    assert!(messages.iter().all(|m| m.len() < 300), "never echoed whole");

    let nic = problems_of(&scan, "0000:00:03.0");
    assert_eq!(nic.len(), 1);
    assert_eq!(nic[0].kind, ProblemKind::TooLong);
    assert!(nic[0].message.ends_with("longer than 4096 bytes: not read"));
    assert!(scan.problems.iter().all(ScanProblem::hides_verdict));
}

#[test]
fn out_of_range_and_malformed_ids_are_problems() {
    let t = Tree::new();
    let dir = "devices/pci0000:00/0000:00:02.0";
    t.device("pci0000:00/0000:00:02.0", 2, 0x030000, None, None);
    t.write(&format!("{dir}/vendor"), "0x12345\n");
    t.write(&format!("{dir}/device"), "+2204\n");
    t.write(&format!("{dir}/class"), "0x1030000\n");
    t.device("pci0000:00/0000:00:03.0", 3, 0x020000, None, None);
    std::fs::remove_file(t.sys.join("devices/pci0000:00/0000:00:03.0/class")).expect("rm");

    let scan = scan(&t.sys).expect("scan");
    let messages: Vec<(ProblemKind, &str)> = problems_of(&scan, "0000:00:02.0")
        .iter()
        .map(|p| (p.kind, p.message.as_str()))
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0]
        .1
        .ends_with("vendor 0x12345 is out of range (at most 0xffff)"));
    assert!(messages[1].1.ends_with("malformed device \"+2204\""));
    assert!(messages[2]
        .1
        .ends_with("class 0x1030000 is out of range (at most 0xffffff)"));
    assert!(messages.iter().all(|(k, _)| *k == ProblemKind::Malformed));
    let gpu = device(&scan, "0000:00:02.0");
    assert_eq!((gpu.vendor, gpu.device, gpu.class), (None, None, None));

    let missing = problems_of(&scan, "0000:00:03.0");
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].kind, ProblemKind::Missing);
    assert!(missing[0]
        .message
        .ends_with("class: does not exist (ENOENT)"));
}

#[test]
fn odd_group_names_and_a_device_in_two_groups_are_problems_not_merged() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    t.device("pci0000:00/0000:00:02.0", 12, 0x030000, None, None);
    t.device("pci0000:00/0000:00:03.0", 3, 0x020000, None, None);
    // group 012 lists 0000:00:03.0 too; group 5 lists 0000:00:02.0 again
    t.link(
        "kernel/iommu_groups/012/devices/0000:00:03.0",
        "devices/pci0000:00/0000:00:03.0",
    );
    t.link(
        "kernel/iommu_groups/5/devices/0000:00:02.0",
        "devices/pci0000:00/0000:00:02.0",
    );
    let groups = t.sys.join("kernel/iommu_groups");
    std::fs::create_dir(groups.join(std::ffi::OsStr::from_bytes(b"7\xff"))).expect("mkdir");
    std::fs::create_dir(groups.join("+4")).expect("mkdir");
    let member = groups
        .join("3/devices")
        .join(std::ffi::OsStr::from_bytes(b"0000:00:09.\xfe"));
    symlink("../../../../devices/pci0000:00/0000:00:03.0", member).expect("symlink");

    let scan = scan(&t.sys).expect("scan");
    assert_eq!(
        scan.groups.iter().copied().collect::<Vec<_>>(),
        vec![3, 5, 12]
    );
    let problems: Vec<(Option<u32>, ProblemKind, String)> = scan
        .problems
        .iter()
        .map(|p| (p.group, p.kind, p.message.clone()))
        .collect();
    let has = |group: Option<u32>, kind: ProblemKind, text: &str| {
        problems
            .iter()
            .any(|(g, k, m)| *g == group && *k == kind && m.contains(text))
    };
    assert!(
        has(
            None,
            ProblemKind::Malformed,
            "malformed group number \"012\""
        ),
        "{problems:?}"
    );
    assert!(has(
        None,
        ProblemKind::Malformed,
        "malformed group number \"+4\""
    ));
    assert!(has(
        None,
        ProblemKind::Malformed,
        "name is not UTF-8 (shown as \"7\u{fffd}\")"
    ));
    assert!(has(Some(3), ProblemKind::Malformed, "name is not UTF-8"));
    assert!(has(
        Some(12),
        ProblemKind::Duplicate,
        "0000:00:02.0 is also a member of group 5: kept there, not merged"
    ));
    assert_eq!(device(&scan, "0000:00:02.0").group, 5);
    assert_eq!(scan.devices.len(), 2);
    let json = serde_json::to_string(&scan.problems).expect("lossy paths serialize");
    assert!(json.contains("7\u{fffd}"));
}

#[test]
fn attribute_parsers() {
    assert_eq!(parse_hex("0x10de\n"), Some(0x10de));
    assert_eq!(parse_hex("10de"), Some(0x10de));
    assert_eq!(parse_hex("+10de"), None);
    assert_eq!(parse_hex("0x"), None);
    assert_eq!(parse_hex("0x1ffffffff"), None);
    assert_eq!(parse_group_number("0"), Some(0));
    assert_eq!(parse_group_number("12"), Some(12));
    assert_eq!(parse_group_number("012"), None);
    assert_eq!(parse_group_number("+12"), None);
    assert_eq!(parse_group_number("4294967296"), None);
    assert_eq!(parse_driver_override("(null)\n"), None);
    assert_eq!(
        parse_driver_override("vfio-pci\n").as_deref(),
        Some("vfio-pci")
    );
}
