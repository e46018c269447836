use std::path::Path;

use super::*;
use crate::model::{Acs, Device, GroupMap, Holder, PortType};
use crate::pci::driver;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("node.toml"))
}

/// `file:line:column: message` of a policy that must not parse.
fn error(text: &str) -> String {
    parse(text).expect_err("must be rejected").to_string()
}

fn dev(address: &str, group: u32, driver: Option<&str>) -> Device {
    Device {
        vendor: Some(0x10de),
        device: Some(0x2204),
        class: Some(0x030000),
        driver: driver.map(str::to_string),
        acs: Acs::None,
        ..Device::new(address, group)
    }
}

fn gpu_audio_split() -> GroupMap {
    let mut map = GroupMap::new();
    map.add_device(dev("0000:01:00.0", 12, Some("vfio-pci")));
    map.add_device(Device {
        device: Some(0x1aef),
        class: Some(0x040300),
        ..dev("0000:01:00.1", 12, Some("snd_hda_intel"))
    });
    map
}

fn held(group: u32) -> Holder {
    Holder {
        pid: 4242,
        comm: "qemu".to_string(),
        fd: Some(17),
        path: format!("/dev/vfio/{group}"),
        group: Some(group),
        device: None,
        pod: None,
    }
}

fn rules(v: &[Violation]) -> Vec<(u32, Option<&str>, &str, &str)> {
    v.iter()
        .map(|v| {
            (
                v.group,
                v.device.as_deref(),
                v.rule.as_str(),
                v.action.as_str(),
            )
        })
        .collect()
}

#[test]
fn reference_policy_parses() {
    let p = parse(
        r#"
protect_user_groups = false
allowed_drivers = ["nvidia_vfio_pci"]
denied_drivers = ["shpchp", "pcieport"]
trusted_writers = ["/usr/local/bin/gpu-operator-validator"]

[[reserve]]
group = "14"
driver = "vfio-pci"

[[reserve]]
group = 15

[[reserve]]
device = "0000:01:00.0"
driver = "none"

[[reserve]]
id = "10de:2204"

[[reserve]]
class = "0x0300"
driver = "nvidia_vfio_pci"
"#,
    )
    .expect("valid");
    assert!(!p.protect_user_groups);
    assert_eq!(p.allowed_drivers, vec![driver("nvidia_vfio_pci")]);
    assert_eq!(p.denied_drivers, vec![driver("shpchp"), driver("pcieport")]);
    assert_eq!(
        p.trusted_writers,
        vec![std::path::PathBuf::from(
            "/usr/local/bin/gpu-operator-validator"
        )]
    );
    let r: Vec<(String, String, usize)> = p
        .reserve
        .iter()
        .map(|r| (r.selector.to_string(), r.driver.to_string(), r.line))
        .collect();
    assert_eq!(
        r,
        vec![
            ("group 14".to_string(), "vfio-pci".to_string(), 7),
            ("group 15".to_string(), "vfio-pci".to_string(), 11),
            ("device 0000:01:00.0".to_string(), "none".to_string(), 14),
            ("id 10de:2204".to_string(), "vfio-pci".to_string(), 18),
            (
                "class 0x0300".to_string(),
                "nvidia_vfio_pci".to_string(),
                21
            ),
        ]
    );
    assert_eq!(p.reserve[2].driver, Intended::Unbound);
}

#[test]
fn empty_file_is_the_default_policy() {
    let p = parse("").expect("valid");
    assert_eq!(Policy { source: None, ..p }, Policy::default());
    assert!(Policy::default().denies("shpchp"));
    assert!(Policy::default().allows("vfio-pci"));
    assert!(Policy::default().allows("pcieport"));
    assert!(!Policy::default().allows("snd_hda_intel"));
}

#[test]
fn errors_name_file_line_and_column() {
    assert_eq!(
        error("protect_user_groups = true\nalowed_drivers = []\n"),
        "node.toml:2:1: unknown field `alowed_drivers`, expected one of `protect_user_groups`, \
         `allowed_drivers`, `denied_drivers`, `trusted_writers`, `trusted_containers`, `reserve`"
    );
    assert!(error("[[reserve]]\ngroup = \"1\"\ncolour = \"red\"\n")
        .starts_with("node.toml:3:1: unknown field `colour`"));
    assert_eq!(
        error("[[reserve]]\ndevice = \"01:00.0\"\n"),
        "node.toml:2:10: device \"01:00.0\" is not a PCI address (DDDD:BB:DD.F, e.g. 0000:01:00.0)"
    );
    assert!(
        error("[[reserve]]\nid = \"10de:22O4\"\n").starts_with("node.toml:2:6: id \"10de:22O4\"")
    );
    assert!(error("[[reserve]]\nid = \"10de\"\n").starts_with("node.toml:2:6: "));
    assert!(error("[[reserve]]\nclass = \"vga\"\n").starts_with("node.toml:2:9: class \"vga\""));
    assert!(error("x = 1\n\n[[reserve]]\ndriver = \"vfio-pci\"\n")
        .starts_with("node.toml:1:1: unknown field `x`"));
    assert_eq!(
        error("allowed_drivers = []\n\n[[reserve]]\ndriver = \"vfio-pci\"\n"),
        "node.toml:3:1: empty reserve selector: set one of group, device, id, class, slot"
    );
    assert!(error("[[reserve]]\ngroup = \"1\"\nid = \"10de:2204\"\n")
        .starts_with("node.toml:3:6: more than one reserve selector"));
    assert!(error("[[reserve]]\ngroup = \"1x\"\n").starts_with("node.toml:2:9: group \"1x\""));
    assert!(error("[[reserve]]\ngroup = -1\n").starts_with("node.toml:2:9: "));
    assert!(error("protect_user_groups = \"yes\"\n").starts_with("node.toml:1:23: "));
    // toml 1.x points after the header, where the second `]` is missing.
    assert!(error("[[reserve]\n").starts_with("node.toml:1:11: unclosed array table"));
    assert!(error("trusted_writers = [\"validator\"]\n")
        .starts_with("node.toml:1:20: trusted_writers: \"validator\" is not an absolute path"));
    assert!(
        error("allowed_drivers = [\"x\"]\ndenied_drivers = [\"y\", \"x\"]\n")
            .starts_with("node.toml:2:24: driver \"x\" is both")
    );
    assert!(error("[[reserve]]\ngroup = 1\ndriver = \"\"\n").starts_with("node.toml:3:10: "));
}

#[test]
fn any_toml_spelling_of_the_schema_reads_the_same() {
    let p = parse(
        "reserve = [{ group = 3 }, { \"device\" = '0000:01:00.0', rebind = true }]\n\
         # a comment\n\
         'protect_user_groups' = false\n",
    )
    .expect("valid");
    assert!(!p.protect_user_groups);
    let r: Vec<String> = p.reserve.iter().map(|r| r.selector.to_string()).collect();
    assert_eq!(r, ["group 3", "device 0000:01:00.0"]);
    assert!(p.reserve[1].rebind);
    assert_eq!(p.reserve[1].line, 1);
}

#[test]
fn toml_structure_errors_name_their_place() {
    assert_eq!(
        error("[[reserve]]\ngroup = 1\ngroup = 2\n"),
        "node.toml:3:1: duplicate key `group`"
    );
    assert_eq!(
        error("protect_user_groups = true\nprotect_user_groups = false\n"),
        "node.toml:2:1: duplicate key `protect_user_groups`"
    );
    assert!(error("[reserve]\ngroup = 1\n")
        .starts_with("node.toml:1:1: invalid type: map, expected a sequence"));
    assert!(error("reserve = []\n[[reserve]]\ngroup = 1\n")
        .starts_with("node.toml:2:3: duplicate key `reserve`"));
    assert!(error("a.b = 1\n").starts_with("node.toml:1:1: unknown field `a`"));
    assert!(error("[[reserve]]\ngroup.x = 1\n")
        .starts_with("node.toml:2:1: invalid type: map, expected an IOMMU group number"));
    // A table where the entries are: at the key that makes it one.
    assert!(error("[[reserve.x]]\n")
        .starts_with("node.toml:1:3: invalid type: map, expected a sequence"));
    assert!(error("reserve = [1]\n").starts_with("node.toml:1:12: invalid type: integer `1`"));
    assert!(error("allowed_drivers = [\"a\", 1.5]\n")
        .starts_with("node.toml:1:25: invalid type: floating point `1.5`, expected a string"));
    assert!(error("allowed_drivers = \"a\\q\"\n").starts_with("node.toml:1:"));
    let deep = format!("x = {}{}\n", "[".repeat(200), "]".repeat(200));
    assert!(error(&deep).starts_with("node.toml:1:"));
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let err = Policy::load(Path::new("/nonexistent/policy.toml")).expect_err("missing");
    assert!(err
        .to_string()
        .starts_with("/nonexistent/policy.toml: cannot read policy"));
}

#[test]
fn split_group_without_policy() {
    let map = gpu_audio_split();
    let v = violations(&map, &Policy::default());
    assert_eq!(
        rules(&v),
        vec![(12, Some("0000:01:00.1"), "split_group", "would_veto")]
    );
    assert_eq!(v[0].driver.as_deref(), Some("snd_hda_intel"));
    // the same driver allowed by the policy is no split
    let p = Policy {
        allowed_drivers: vec![driver("snd_hda_intel")],
        ..Policy::default()
    };
    assert!(violations(&map, &p).is_empty());
    // kernel-owned groups without a user driver are none of the policy's business
    let mut map = GroupMap::new();
    map.add_device(dev("0000:02:00.0", 2, Some("nvme")));
    assert!(violations(&map, &Policy::default()).is_empty());
}

#[test]
fn conflict_and_denied_driver() {
    let mut map = GroupMap::new();
    map.add_device(Device {
        bridge: true,
        port_type: Some(PortType::PcieToPciBridge),
        ..dev("0000:01:00.0", 5, Some("shpchp"))
    });
    map.add_device(dev("0000:02:01.0", 5, Some("vfio-pci")));
    map.set_holders(vec![held(5)]);
    let v = violations(&map, &Policy::default());
    assert_eq!(
        rules(&v),
        vec![
            (5, Some("0000:01:00.0"), "denied_driver", "would_veto"),
            (5, Some("0000:01:00.0"), "conflict", "report"),
        ]
    );
    assert!(v[1].message.contains("held by qemu (pid 4242)"));
}

#[test]
fn reservations_check_every_member_and_plan_pins() {
    let map = gpu_audio_split();
    let p = parse("[[reserve]]\nid = \"10de:2204\"\ndriver = \"vfio-pci\"\n").expect("valid");
    assert_eq!(
        intended_driver(&map, &p, "0000:01:00.1"),
        Some(Intended::Driver(driver("vfio-pci"))),
        "the companion follows the reserved device"
    );
    let v = violations(&map, &p);
    assert_eq!(
        rules(&v),
        vec![
            (12, Some("0000:01:00.1"), "split_group", "would_veto"),
            (
                12,
                Some("0000:01:00.1"),
                "reserved_wrong_driver",
                "would_rebind"
            ),
            (12, None, "reserved_not_viable", "would_veto"),
        ]
    );
    assert_eq!(
        v[1].message,
        "0000:01:00.1 is reserved for vfio-pci but bound to snd_hda_intel"
    );
    let pins: Vec<(String, String)> = pins(&map, &p)
        .into_iter()
        .map(|p| (p.device, p.driver_override))
        .collect();
    assert_eq!(
        pins,
        vec![("0000:01:00.0".to_string(), "vfio-pci".to_string())]
    );
}

#[test]
fn reserved_overrides_and_unbound_members() {
    let mut map = GroupMap::new();
    map.add_device(Device {
        driver_override: Some("nvme".to_string()),
        ..dev("0000:41:00.0", 41, None)
    });
    map.add_device(Device {
        bridge: true,
        ..dev("0000:40:00.0", 40, Some("pcieport"))
    });
    map.add_device(dev("0000:42:00.0", 42, Some("nvme")));
    let p = parse(
        "[[reserve]]\ndevice = \"0000:41:00.0\"\n\n[[reserve]]\ngroup = \"40\"\n\n\
         [[reserve]]\ngroup = 42\ndriver = \"none\"\n\n[[reserve]]\ngroup = 99\n",
    )
    .expect("valid");
    assert_eq!(
        intended_driver(&map, &p, "0000:40:00.0"),
        None,
        "bridges stay"
    );
    let v = violations(&map, &p);
    assert_eq!(
        rules(&v),
        vec![
            (
                41,
                Some("0000:41:00.0"),
                "reserved_wrong_override",
                "would_pin"
            ),
            (
                42,
                Some("0000:42:00.0"),
                "reserved_wrong_driver",
                "would_rebind"
            ),
            (42, None, "reserved_not_viable", "would_veto"),
        ]
    );
    assert_eq!(
        v[1].message,
        "0000:42:00.0 is reserved to stay unbound but bound to nvme"
    );
    let unmatched: Vec<String> = unmatched(&map, &p)
        .iter()
        .map(|r| r.selector.to_string())
        .collect();
    assert_eq!(unmatched, vec!["group 99"]);
}

#[test]
fn user_groups_are_protected() {
    let mut map = GroupMap::new();
    map.add_device(dev("0000:01:00.0", 15, Some("vfio-pci")));
    map.add_device(dev("0000:01:00.1", 15, None));
    map.set_holders(vec![held(15)]);
    let planned: Vec<(String, String)> = pins(&map, &Policy::default())
        .into_iter()
        .map(|p| (p.device, p.driver_override))
        .collect();
    assert_eq!(
        planned,
        vec![
            ("0000:01:00.0".to_string(), "vfio-pci".to_string()),
            ("0000:01:00.1".to_string(), "vfio-pci".to_string()),
        ]
    );
    let off = Policy {
        protect_user_groups: false,
        ..Policy::default()
    };
    assert!(pins(&map, &off).is_empty());
    assert!(violations(&map, &Policy::default()).is_empty());
}

#[test]
fn violations_serialize_with_kernel_spelling() {
    let v = violations(&gpu_audio_split(), &Policy::default());
    let json = serde_json::to_value(&v).expect("json");
    assert_eq!(json[0]["group"], "12");
    assert_eq!(json[0]["device"], "0000:01:00.1");
    assert_eq!(json[0]["driver"], "snd_hda_intel");
    assert_eq!(json[0]["rule"], "split_group");
    assert_eq!(json[0]["action"], "would_veto");
}

#[test]
fn duplicate_and_contradictory_reservations_are_errors() {
    assert_eq!(
        error("[[reserve]]\ngroup = \"12\"\n[[reserve]]\ngroup = 12\n"),
        "node.toml:4:9: group 12 is already reserved at line 1: duplicate reservation"
    );
    assert_eq!(
        error(
            "[[reserve]]\ndevice = \"0000:01:00.1\"\n\n[[reserve]]\ndevice = \"0000:01:00.1\"\ndriver = \"none\"\n"
        ),
        "node.toml:5:10: device 0000:01:00.1 is reserved for none here and for vfio-pci at line 1: contradictory reservations"
    );
    assert!(error("[[reserve]]\nid = \"10de:2204\"\n[[reserve]]\nid = \"10de:2204\"\ndriver = \"nvidia_vfio_pci\"\n")
        .contains("contradictory"));
    assert!(
        error("[[reserve]]\nclass = \"0x0300\"\n[[reserve]]\nclass = \"0300\"\n")
            .contains("class 0x0300 is already reserved at line 1")
    );
    // different selectors, even overlapping ones, are separate entries
    let p =
        parse("[[reserve]]\nclass = \"0x03\"\n[[reserve]]\nclass = \"0x0300\"\n").expect("parses");
    assert_eq!(p.reserve.len(), 2);
    // The first entry in error names the error, whichever check finds it; a bad value anywhere
    // (checked while read) comes before both.
    let group = |g: u32| format!("[[reserve]]\ngroup = {g}\n");
    let empty = "[[reserve]]\nrebind = true\n";
    assert!(error(&format!("{}{}{empty}", group(1), group(1)))
        .starts_with("node.toml:4:9: group 1 is already reserved at line 1"));
    assert!(error(&format!("{}{empty}{}", group(1), group(1)))
        .starts_with("node.toml:3:1: empty reserve selector"));
    assert!(error(&format!(
        "{empty}{}{}[[reserve]]\ngroup = \"x\"\n",
        group(1),
        group(1)
    ))
    .starts_with("node.toml:8:9: group \"x\" is not an IOMMU group number"));
    assert!(error(&format!(
        "trusted_writers = [\"x\"]\n{}{}",
        group(1),
        group(1)
    ))
    .starts_with("node.toml:1:20: trusted_writers: \"x\" is not an absolute path"));
}

/// The CPU time this thread has used: a scaling check on wall time failed when the test was
/// preempted on a loaded 2-core machine (x105.9 for ten times the input); preemption, other tests
/// and CI's neighbours do not count here. The best of three runs also drops cache and page-fault
/// noise.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Parsing is linear in the size of the policy (lines counted on from the entry before,
/// duplicates found in a hash map, drivers checked against a set): ten times the reservations,
/// keys, headers or drivers take about ten times as long, not a hundred. The ConfigMap-sized
/// figure (16,000 entries) is `cargo bench -p iommu-enforcer --bench policy_load`.
#[test]
fn policy_parsing_is_linear_in_its_size() {
    let time = |n: usize| {
        let text = many_reservations(n);
        let start = thread_cpu_time();
        let p = parse(&text).expect("parses");
        let took = thread_cpu_time() - start;
        assert_eq!(p.reserve.len(), n);
        assert_eq!(p.reserve[n - 1].line, 4 * (n - 1) + 1);
        took
    };
    let small = (0..3).map(|_| time(3_000)).min().expect("timed");
    let large = (0..3).map(|_| time(30_000)).min().expect("timed");
    let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
    assert!(
        ratio < 40.0,
        "3,000: {small:?}, 30,000: {large:?} (x{ratio:.1})"
    );
    // an error after 50,000 entries names its line exactly
    let bad = format!(
        "{}[[reserve]]\ndevice = \"0000:zz:00.0\"\n",
        many_reservations(50_000)
    );
    assert!(error(&bad).starts_with("node.toml:200002:10: device \"0000:zz:00.0\""));

    // Documents that are all keys of one table, all headers, or two long driver lists: each
    // read in full before its error.
    let text = |shape: &str, n: usize| -> String {
        match shape {
            "keys" => (0..n).map(|i| format!("k{i} = 1\n")).collect(),
            "headers" => (0..n).map(|i| format!("[[t{i}]]\n")).collect(),
            _ => {
                let list = |p: &str| (0..n).map(|i| format!("\"{p}{i}\"")).collect::<Vec<_>>();
                format!(
                    "allowed_drivers = [{}]\ndenied_drivers = [{}, \"a0\"]\n",
                    list("a").join(", "),
                    list("d").join(", ")
                )
            }
        }
    };
    let shapes = [
        ("keys", "node.toml:1:1: ", "unknown field `k0`"),
        ("headers", "node.toml:1:3: ", "unknown field `t0`"),
        ("drivers", "node.toml:2:", "driver \"a0\" is both"),
    ];
    for (shape, place, message) in shapes {
        let time = |n: usize| {
            let text = text(shape, n);
            let start = thread_cpu_time();
            let e = error(&text);
            let took = thread_cpu_time() - start;
            assert!(e.starts_with(place) && e.contains(message), "{e}");
            took
        };
        let small = (0..3).map(|_| time(3_000)).min().expect("timed");
        let large = (0..3).map(|_| time(30_000)).min().expect("timed");
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
        assert!(
            ratio < 40.0,
            "{shape}: 3,000: {small:?}, 30,000: {large:?} (x{ratio:.1})"
        );
    }
}

/// `n` `[[reserve]]` entries of four lines each, every one a different device.
pub(crate) fn many_reservations(n: usize) -> String {
    let mut text = String::with_capacity(n * 64);
    for i in 0..n {
        let (bus, dev, func) = (i / 256 % 256, i / 8 % 32, i % 8);
        let domain = i / 65536;
        text.push_str(&format!(
            "[[reserve]]\ndevice = \"{domain:04x}:{bus:02x}:{dev:02x}.{func}\"\ndriver = \"vfio-pci\"\n\n"
        ));
    }
    text
}

#[test]
fn policy_files_that_are_not_regular_or_too_long_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("policy.toml");
    crate::sysfs::tests::mkfifo(&fifo);
    let e = Policy::load(&fifo)
        .expect_err("a FIFO is refused")
        .to_string();
    assert!(
        e.ends_with("policy.toml: cannot read policy: is a FIFO, not a regular file: not read"),
        "{e}"
    );
    let e = Policy::load(Path::new("/dev/zero"))
        .expect_err("refused")
        .to_string();
    assert_eq!(
        e,
        "/dev/zero: cannot read policy: is a character device, not a regular file: not read"
    );
    let long = dir.path().join("long.toml");
    std::fs::write(&long, vec![b'#'; POLICY_LIMIT + 1]).expect("write");
    let e = Policy::load(&long).expect_err("too long").to_string();
    assert!(
        e.ends_with("is longer than 16777216 bytes: not read"),
        "{e}"
    );
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"# ok\n# caf\xe9\n").expect("write");
    let e = Policy::load(&latin1).expect_err("not UTF-8").to_string();
    assert!(
        e.ends_with("latin1.toml:2:6: the policy is not UTF-8"),
        "{e}"
    );
}

#[test]
fn trusted_containers_parse_with_an_optional_pod_prefix() {
    let p = parse(
        r#"trusted_containers = [
  { namespace = "gpu-operator", container = "nvidia-vfio-manager" },
  { namespace = "kube-system", container = "vfio", pod = "gpu-setup-" },
]
"#,
    )
    .expect("valid");
    assert_eq!(
        p.trusted_containers,
        vec![
            TrustedContainer {
                namespace: "gpu-operator".into(),
                container: "nvidia-vfio-manager".into(),
                pod: None,
            },
            TrustedContainer {
                namespace: "kube-system".into(),
                container: "vfio".into(),
                pod: Some("gpu-setup-".into()),
            },
        ]
    );
    let [any, prefixed] = [&p.trusted_containers[0], &p.trusted_containers[1]];
    assert!(any.matches(
        "gpu-operator",
        "nvidia-vfio-manager-x7k2p",
        "nvidia-vfio-manager"
    ));
    assert!(!any.matches("gpu-operator", "p", "nvidia-vfio-manager-2"));
    assert!(!any.matches("gpu-operator-2", "p", "nvidia-vfio-manager"));
    assert!(prefixed.matches("kube-system", "gpu-setup-abc", "vfio"));
    assert!(!prefixed.matches("kube-system", "other-abc", "vfio"));
    assert_eq!(prefixed.to_string(), "kube-system/gpu-setup-*/vfio");
    assert_eq!(any.to_string(), "gpu-operator/*/nvidia-vfio-manager");
    // The table-array form is the same thing.
    let t = parse("[[trusted_containers]]\nnamespace = \"a\"\ncontainer = \"b\"\n").expect("valid");
    assert_eq!(t.trusted_containers.len(), 1);
}

#[test]
fn trusted_containers_errors_name_file_line_and_column() {
    assert_eq!(
        error("trusted_containers = [{ namespace = \"gpu-operator\" }]\n"),
        "node.toml:1:23: trusted_containers: missing field `container`"
    );
    assert_eq!(
        error("trusted_containers = [\n  { container = \"c\" }]\n"),
        "node.toml:2:3: trusted_containers: missing field `namespace`"
    );
    assert_eq!(
        error("trusted_containers = [{ namespace = \"n\", container = \"c\", image = \"x\" }]\n"),
        "node.toml:1:59: unknown field `image`, expected one of `namespace`, `container`, `pod`"
    );
    assert!(
        error("trusted_containers = [{ namespace = \"GPU\", container = \"c\" }]\n").starts_with(
            "node.toml:1:37: trusted_containers: namespace \"GPU\" is not a Kubernetes name"
        )
    );
    assert!(
        error("trusted_containers = [{ namespace = \"n\", container = \"\" }]\n").starts_with(
            "node.toml:1:54: trusted_containers: container \"\" is not a Kubernetes name"
        )
    );
    assert!(
        error("trusted_containers = [{ namespace = \"n\", container = 1 }]\n")
            .starts_with("node.toml:1:54: invalid type: integer `1`, expected a string")
    );
    assert!(error("trusted_containers = [\"gpu-operator\"]\n").starts_with(
        "node.toml:1:23: invalid type: string \"gpu-operator\", expected struct TrustedContainer"
    ));
    assert!(
        error("trusted_containers = { namespace = \"n\", container = \"c\" }\n")
            .starts_with("node.toml:1:22: invalid type: map, expected a sequence")
    );
}

#[test]
fn slots_and_node_pools() {
    let p = parse(
        r#"
[[reserve]]
slot = "3"

[[reserve]]
id = "10de:2204"
nodes = { "node-pool" = "vm-hosts", "nvidia.com/gpu.product" = "NVIDIA-H100" }

[[reserve]]
id = "10de:2204"
driver = "nvidia_vfio_pci"
nodes = { "node-pool" = "kata" }
"#,
    )
    .expect("entries for different pools may select the same devices");
    assert_eq!(p.reserve[0].selector, Selector::Slot("3".to_string()));
    assert_eq!(p.reserve[0].selector.to_string(), "slot \"3\"");
    assert_eq!(
        p.reserve[1].nodes,
        vec![
            ("node-pool".to_string(), "vm-hosts".to_string()),
            (
                "nvidia.com/gpu.product".to_string(),
                "NVIDIA-H100".to_string()
            ),
        ]
    );

    let labels = |text: &str| NodeLabels::parse(text);
    let lines = |p: &Policy| p.reserve.iter().map(|r| r.line).collect::<Vec<_>>();
    let vm = p.clone().for_node(&labels(
        "node-pool=vm-hosts\nnvidia.com/gpu.product=NVIDIA-H100\n",
    ));
    assert_eq!(lines(&vm), vec![2, 5]);
    assert_eq!(
        lines(&p.clone().for_node(&labels("node-pool=kata\n"))),
        vec![2, 9]
    );
    assert_eq!(
        lines(&p.clone().for_node(&labels("node-pool=vm-hosts\n"))),
        vec![2]
    );
    assert_eq!(lines(&p.clone().for_node(&NodeLabels::default())), vec![2]);

    // The slot selects every function in it, through the index too.
    let mut map = gpu_audio_split();
    for a in ["0000:01:00.0", "0000:01:00.1"] {
        let mut d = map.device(a).expect("device").clone();
        d.physical_slot = Some("3".to_string());
        map.add_device(d);
    }
    let only_slot = parse("[[reserve]]\nslot = \"3\"\n").expect("valid");
    assert_eq!(
        reserved_groups(&map, &only_slot)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![12]
    );
    assert!(unmatched(&map, &only_slot).is_empty());
    let other_slot = parse("[[reserve]]\nslot = \"4\"\n").expect("valid");
    assert_eq!(unmatched(&map, &other_slot).len(), 1);
}

#[test]
fn slot_and_nodes_errors_name_their_place() {
    assert!(error("[[reserve]]\nslot = \"\"\n").starts_with("node.toml:2:8: slot \"\""));
    assert!(error("[[reserve]]\nslot = \"a/b\"\n").starts_with("node.toml:2:8: slot \"a/b\""));
    assert!(error("[[reserve]]\nslot = \"3\"\ngroup = 1\n")
        .starts_with("node.toml:2:8: more than one reserve selector"));
    assert!(
        error("[[reserve]]\nid = \"10de:2204\"\nnodes = { \"a b\" = \"x\" }\n")
            .starts_with("node.toml:3:11: nodes: \"a b\" is not a node label key")
    );
    assert!(
        error("[[reserve]]\nid = \"10de:2204\"\nnodes = { pool = \"x y\" }\n")
            .starts_with("node.toml:3:18: nodes: \"x y\" is not a node label value")
    );
    assert!(
        error("[[reserve]]\nid = \"10de:2204\"\nnodes = \"pool=a\"\n")
            .starts_with("node.toml:3:9: invalid type: string \"pool=a\", expected a map")
    );
    // the same selector for the same pool twice is still a duplicate
    assert!(error("[[reserve]]\nslot = \"3\"\nnodes = { pool = \"a\" }\n[[reserve]]\nslot = \"3\"\nnodes = { pool = \"a\" }\n")
        .starts_with("node.toml:5:8: slot \"3\" is already reserved at line 1"));
}
