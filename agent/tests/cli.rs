//! `enforcer audit` and `enforcer groups` run as a user would, on every named fixture.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ENFORCER: &str = env!("CARGO_BIN_EXE_enforcer");

/// A named fixture built into its own tempdir.
struct Node {
    _dir: tempfile::TempDir,
    node: iommu_fixtures::Node,
}

fn fixture(name: &str) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = iommu_fixtures::fixture(name).unwrap_or_else(|| panic!("no fixture {name}"));
    let node = iommu_fixtures::build(spec, dir.path()).expect("fixture builds");
    Node { _dir: dir, node }
}

fn policy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/policies")
        .join(name)
}

impl Node {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(ENFORCER)
            .args(args)
            .arg("--sysfs-root")
            .arg(&self.node.sysfs)
            .arg("--proc-root")
            .arg(&self.node.proc)
            .output()
            .expect("enforcer runs")
    }

    /// `enforcer <args> --json`: exit code and the parsed object.
    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code(&out), json)
    }

    fn audit(&self) -> (i32, Value) {
        self.json(&["audit"])
    }

    fn audit_with(&self, policy_file: &str) -> (i32, Value) {
        let p = policy(policy_file);
        self.json(&["audit", "--policy", p.to_str().expect("utf-8 path")])
    }

    fn text(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        (
            code(&out),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn group<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["id"] == id))
        .unwrap_or_else(|| panic!("no group {id} in {json:#}"))
}

fn device<'a>(group: &'a Value, address: &str) -> &'a Value {
    group["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["address"] == address))
        .unwrap_or_else(|| panic!("no device {address} in {group:#}"))
}

/// `(group, device, driver, rule, action)` of every violation.
fn violations(json: &Value) -> Vec<(String, String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    json["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            (
                s(&v["group"]),
                s(&v["device"]),
                s(&v["driver"]),
                s(&v["rule"]),
                s(&v["action"]),
            )
        })
        .collect()
}

fn v(
    group: &str,
    device: &str,
    driver: &str,
    rule: &str,
    action: &str,
) -> (String, String, String, String, String) {
    (
        group.into(),
        device.into(),
        driver.into(),
        rule.into(),
        action.into(),
    )
}

#[test]
fn consumer_gpu_audio_split() {
    let n = fixture("consumer-gpu-audio-split");
    let (code, json) = n.audit();
    assert_eq!(code, 1, "a split group is a violation");
    let g = group(&json, "12");
    assert_eq!(g["owner"], "kernel");
    assert_eq!(g["viable"], false);
    assert_eq!(
        g["reasons"][0],
        "0000:0a:00.1 is bound to snd_hda_intel (kernel DMA) while 0000:0a:00.0 is on vfio-pci"
    );
    assert_eq!(g["reasons"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        g["why_shared"],
        "functions of one multifunction device without ACS (0000:0a:00)"
    );
    let gpu = device(g, "0000:0a:00.0");
    assert_eq!(gpu["vendor"], "0x10de");
    assert_eq!(gpu["device"], "0x2204");
    assert_eq!(gpu["class"], "0x030000");
    assert_eq!(gpu["driver"], "vfio-pci");
    assert!(gpu["driver_override"].is_null());
    assert_eq!(
        violations(&json),
        vec![
            v(
                "12",
                "0000:0a:00.1",
                "snd_hda_intel",
                "split_group",
                "would_veto"
            ),
            v(
                "12",
                "0000:0a:00.2",
                "xhci_hcd",
                "split_group",
                "would_veto"
            ),
            v(
                "12",
                "0000:0a:00.3",
                "nvidia-gpu",
                "split_group",
                "would_veto"
            ),
        ]
    );
    assert_eq!(json["enforcement"]["bpf_lsm"], Value::Null);
    assert_eq!(json["scan_problems"], serde_json::json!([]));

    let (code, text) = n.text(&["audit"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("IOMMU group 12  owner kernel  not viable\n"),
        "{text}"
    );
    assert!(text.contains("why shared: functions of one multifunction device without ACS"));
    assert!(text.contains("0000:0a:00.1  10de:1aef  0x040300  endpoint  none  snd_hda_intel"));
    assert!(text.contains("split_group"));
}

#[test]
fn consumer_gpu_reserved_for_vfio() {
    let n = fixture("consumer-gpu-audio-split");
    let (code, json) = n.audit_with("reserve-gpu.toml");
    assert_eq!(code, 1);
    let found = violations(&json);
    for companion in [
        ("0000:0a:00.1", "snd_hda_intel"),
        ("0000:0a:00.2", "xhci_hcd"),
    ] {
        assert!(found.contains(&v(
            "12",
            companion.0,
            companion.1,
            "reserved_wrong_driver",
            "would_rebind"
        )));
    }
    assert!(found.contains(&v("12", "-", "-", "reserved_not_viable", "would_veto")));
    assert_eq!(group(&json, "12")["reserved"], true);
    assert_eq!(
        device(group(&json, "12"), "0000:0a:00.1")["intended"],
        "vfio-pci"
    );
    assert_eq!(json["pins"][0]["device"], "0000:0a:00.0");
    assert_eq!(json["pins"][0]["driver_override"], "vfio-pci");
}

#[test]
fn eight_gpu_server() {
    let n = fixture("eight-gpu-server");
    let (code, json) = n.audit();
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["groups"].as_array().map(Vec::len), Some(42));
    for id in ["38", "39"] {
        let g = group(&json, id);
        assert_eq!(g["owner"], "user");
        assert_eq!(g["viable"], true);
        assert_eq!(g["holders"][0]["pid"], 31337);
        assert_eq!(g["holders"][0]["comm"], "qemu-system-x86");
    }
    let h100 = group(&json, "8");
    assert_eq!(h100["owner"], "kernel");
    assert_eq!(device(h100, "0000:12:00.0")["driver"], "nvidia");
    assert!(h100["why_shared"].is_null());
    assert_eq!(
        device(group(&json, "4"), "0000:11:00.0")["acs"],
        "enabled",
        "downstream ports have ACS"
    );
    assert!(violations(&json).is_empty());
}

#[test]
fn switch_without_acs() {
    let n = fixture("switch-without-acs");
    let (code, json) = n.audit();
    assert_eq!(
        code, 0,
        "pcieport is allowed next to user-owned devices by default"
    );
    let g = group(&json, "3");
    assert_eq!(g["owner"], "user");
    assert_eq!(g["viable"], true);
    assert_eq!(
        g["why_shared"],
        "behind 0000:02:08.0 (downstream port) without ACS"
    );
    assert_eq!(device(g, "0000:02:08.0")["acs"], "none");
    assert_eq!(device(group(&json, "4"), "0000:02:10.0")["acs"], "enabled");

    // the seed thread's stricter list vetoes the port driver
    let (code, json) = n.audit_with("strict-bridges.toml");
    assert_eq!(code, 1);
    assert_eq!(
        violations(&json),
        vec![v(
            "3",
            "0000:02:08.0",
            "pcieport",
            "denied_driver",
            "would_veto"
        )]
    );
    assert_eq!(group(&json, "3")["viable"], false);
}

#[test]
fn user_group_hotplug_bridge() {
    let n = fixture("user-group-hotplug-bridge");
    let (code, json) = n.audit();
    assert_eq!(code, 1);
    let g = group(&json, "5");
    assert_eq!(g["owner"], "conflict");
    assert_eq!(g["viable"], false);
    assert_eq!(
        violations(&json),
        vec![
            v("5", "0000:01:00.0", "shpchp", "denied_driver", "would_veto"),
            v("5", "0000:01:00.0", "shpchp", "conflict", "report"),
        ]
    );
    assert!(g["why_shared"]
        .as_str()
        .is_some_and(|w| w.contains("0000:01:00.0 (PCIe-to-PCI bridge)")));
}

#[test]
fn viable_passthrough() {
    let n = fixture("viable-passthrough");
    let (code, json) = n.audit();
    assert_eq!(code, 0, "{json:#}");
    let g = group(&json, "15");
    assert_eq!(g["owner"], "user");
    assert_eq!(g["viable"], true);
    assert_eq!(g["reasons"], serde_json::json!([]));
    assert_eq!(device(g, "0000:01:00.1")["driver_override"], "vfio-pci");
    assert!(device(g, "0000:01:00.0")["driver_override"].is_null());

    let (code, json) = n.audit_with("reserve-viable.toml");
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(group(&json, "15")["reserved"], true);
    assert_eq!(json["pins"].as_array().map(Vec::len), Some(1));

    // a reservation that matches nothing here is no violation, but a warning: exit 1
    let (code, json) = n.audit_with("reserve-gpu.toml");
    assert_eq!(code, 1);
    assert_eq!(json["violations"], serde_json::json!([]));
    assert_eq!(
        json["unmatched_reservations"][0],
        "id 10de:2204 (policy line 2)"
    );
    let gpu = policy("reserve-gpu.toml");
    let out = n.run(&["audit", "--policy", gpu.to_str().expect("utf-8")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "enforcer: warning: the reservation of id 10de:2204 (policy line 2) matches nothing on this node"
    ));

    // scoped to another pool of nodes: not in force here, so not unmatched either
    let dir = tempfile::tempdir().expect("tempdir");
    let pools = dir.path().join("pools.toml");
    std::fs::write(
        &pools,
        "[[reserve]]\nid = \"10de:2204\"\nnodes = { pool = \"gpu\" }\n\n[[reserve]]\ngroup = \"15\"\nnodes = { pool = \"vm\" }\n",
    )
    .expect("write");
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "# this node\npool=vm\n").expect("write");
    let (code, json) = n.json(&[
        "audit",
        "--policy",
        pools.to_str().expect("utf-8"),
        "--node-labels-file",
        labels.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["unmatched_reservations"], serde_json::json!([]));
    assert_eq!(group(&json, "15")["reserved"], true);

    // a driver name no driver or module offers: a warning with the name it registers as
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "[[reserve]]\ngroup = \"15\"\ndriver = \"vfio_pci\"\n",
    )
    .expect("write");
    let (code, json) = n.json(&[
        "audit",
        "--policy",
        typo.to_str().expect("utf-8"),
        "--modules-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 1);
    let unknown = &json["unknown_drivers"][0];
    assert_eq!(unknown["driver"], "vfio_pci");
    assert_eq!(unknown["did_you_mean"], "vfio-pci");
    assert_eq!(unknown["line"], 1);
}

#[test]
fn held_vfio_group() {
    let n = fixture("held-vfio-group");
    let (code, json) = n.audit();
    assert_eq!(code, 0, "{json:#}");
    let legacy = group(&json, "30");
    assert_eq!(legacy["owner"], "user");
    assert_eq!(legacy["holders"][0]["path"], "/dev/vfio/30");
    let cdev = group(&json, "41");
    assert_eq!(cdev["owner"], "user");
    assert_eq!(cdev["holders"][0]["pid"], 6001);
    assert_eq!(cdev["holders"][0]["comm"], "cloud-hyperviso");
    assert_eq!(cdev["holders"][0]["device"], "0000:41:00.0");
    assert_eq!(cdev["holders"][0]["path"], "/dev/vfio/devices/vfio0");
}

#[test]
fn vanished_device() {
    let n = fixture("vanished-device");
    let (code, json) = n.audit();
    assert_eq!(code, 0, "a scan problem is shown, not a violation");
    let problems = json["scan_problems"].as_array().expect("scan_problems");
    let vanished: Vec<(&str, &str)> = problems
        .iter()
        .filter(|p| p["kind"] == "vanished")
        .filter_map(|p| Some((p["group"].as_str()?, p["device"].as_str()?)))
        .collect();
    assert_eq!(vanished, vec![("7", "0000:05:00.1"), ("8", "0000:06:00.0")]);
    assert_eq!(group(&json, "8")["devices"], serde_json::json!([]));
    assert_eq!(
        group(&json, "7")["devices"].as_array().map(Vec::len),
        Some(1)
    );

    let (_, text) = n.text(&["audit"]);
    assert!(text.contains("Scan problems (2):"), "{text}");
    assert!(text.contains("0000:05:00.1: vanished during the scan"));
}

#[test]
fn nonpci_in_group() {
    let n = fixture("nonpci-in-group");
    let (code, json) = n.audit();
    assert_eq!(code, 0);
    let not_pci: Vec<&str> = json["scan_problems"]
        .as_array()
        .expect("scan_problems")
        .iter()
        .filter(|p| p["kind"] == "not_pci")
        .filter_map(|p| p["device"].as_str())
        .collect();
    assert_eq!(not_pci, vec!["AMDI0010:00", "AMDI0010:01", "AMDI0010:02"]);
    let g = group(&json, "3");
    assert_eq!(g["others"][0]["name"], "AMDI0010:00");
    assert_eq!(g["others"][0]["driver"], "i2c_designware");
    assert_eq!(g["owner"], "kernel");
    assert_eq!(group(&json, "14")["owner"], "kernel");
}

#[test]
fn acs_unknown() {
    let n = fixture("acs-unknown");
    let (code, json) = n.audit();
    assert_eq!(code, 0);
    let g = group(&json, "3");
    assert_eq!(device(g, "0000:02:08.0")["acs"], "unknown");
    assert_eq!(
        g["why_shared"],
        "behind 0000:02:08.0 (bridge), ACS unknown (config not readable)"
    );
}

#[test]
fn unbound_companion() {
    let n = fixture("unbound-companion");
    let (code, json) = n.audit();
    assert_eq!(code, 0);
    let g = group(&json, "12");
    assert_eq!(g["viable"], true);
    assert_eq!(g["owner"], "none");
    assert!(device(g, "0000:01:00.1")["driver"].is_null());
}

/// A GB200-like Grace node: variant user drivers (`nvgrace_gpu_vfio_pci`, `mlx5_vfio_pci`) own
/// their groups as vfio-pci would; a CX-7 function left on `mlx5_core` next to `mlx5_vfio_pci`
/// splits its group.
#[test]
fn gb200_grace_node_variant_drivers_are_user_drivers() {
    let n = fixture("gb200-grace-node");
    let (code, json) = n.audit();
    assert_eq!(code, 1, "socket 1's CX-7 is split: {json:#}");
    for (id, gpu) in [
        ("10", "0008:01:00.0"),
        ("11", "0009:01:00.0"),
        ("30", "0018:01:00.0"),
    ] {
        let g = group(&json, id);
        assert_eq!(g["owner"], "user", "group {id}");
        assert_eq!(g["viable"], true, "group {id}");
        assert_eq!(g["holders"][0]["comm"], "qemu-system-aar");
        assert_eq!(device(g, gpu)["driver"], "nvgrace_gpu_vfio_pci");
        assert_eq!(device(g, gpu)["device"], "0x2941");
    }
    let host_gpu = group(&json, "31");
    assert_eq!(host_gpu["owner"], "kernel");
    // The NIC behind a downstream port without ACS: port and both functions, all allowed.
    let nic = group(&json, "5");
    assert_eq!(nic["owner"], "user");
    assert_eq!(nic["viable"], true);
    assert_eq!(
        nic["why_shared"],
        "behind 0000:02:00.0 (downstream port) without ACS; \
         functions of one multifunction device without ACS (0000:03:00)"
    );
    assert_eq!(device(nic, "0000:02:00.0")["driver"], "pcieport");
    let split = group(&json, "24");
    assert_eq!(split["viable"], false);
    assert_eq!(
        violations(&json),
        vec![v(
            "24",
            "0010:03:00.1",
            "mlx5_core",
            "split_group",
            "would_veto"
        )]
    );
    assert!(split["reasons"][0]
        .as_str()
        .is_some_and(|r| r.contains("0010:03:00.0 is on mlx5_vfio_pci")));
}

#[test]
fn groups_on_every_fixture() {
    for (name, _) in iommu_fixtures::FIXTURES {
        let n = fixture(name);
        let (code, json) = n.json(&["groups"]);
        assert_eq!(code, 0, "{name}");
        assert!(
            json["groups"].as_array().is_some_and(|g| !g.is_empty()),
            "{name}"
        );
        assert!(json.get("violations").is_none(), "{name}");
        let (code, text) = n.text(&["groups"]);
        assert_eq!(code, 0, "{name}");
        assert!(text.starts_with("IOMMU group "), "{name}: {text}");
        // and audit never fails to run
        let (code, _) = n.audit();
        assert!(code == 0 || code == 1, "{name}");
    }
}

#[test]
fn bad_policies_exit_2_naming_file_line_and_column() {
    let n = fixture("viable-passthrough");
    for (file, at, what) in [
        (
            "bad-unknown-key.toml",
            "2:1",
            "unknown field `alowed_drivers`",
        ),
        ("bad-address.toml", "2:10", "is not a PCI address"),
        ("bad-id.toml", "2:6", "is not vendor:device"),
        ("bad-class.toml", "2:9", "is not a class code prefix"),
        ("bad-empty-selector.toml", "3:1", "empty reserve selector"),
        ("bad-syntax.toml", "1:11", "unclosed array table"),
    ] {
        let path = policy(file);
        for command in ["audit", "groups"] {
            let out = n.run(&[command, "--policy", path.to_str().expect("utf-8"), "--json"]);
            assert_eq!(code(&out), 2, "{file}");
            assert!(out.stdout.is_empty(), "{file}: nothing else is done");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let prefix = format!("{}:{at}: ", path.display());
            assert!(stderr.contains(&prefix), "{file}: {stderr}");
            assert!(stderr.contains(what), "{file}: {stderr}");
        }
    }
    let out = n.run(&["audit", "--policy", "/nonexistent/policy.toml"]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/policy.toml"));
}

/// The agent itself (no subcommand) reads the policy before it touches the kernel: a bad one
/// stops it with exit 2 and the location, and no JSON line is written.
#[test]
fn agent_refuses_a_bad_policy_before_anything_else() {
    let n = fixture("viable-passthrough");
    let path = policy("bad-address.toml");
    let out = Command::new(ENFORCER)
        .args([
            "--policy",
            path.to_str().expect("utf-8"),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--sysfs-root")
        .arg(&n.node.sysfs)
        .output()
        .expect("enforcer runs");
    assert_eq!(code(&out), 2);
    assert!(out.stdout.is_empty(), "no event line: nothing was attached");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:10: ", path.display())),
        "{stderr}"
    );
    let override_of = n
        .node
        .sysfs
        .join("bus/pci/devices/0000:01:00.0/driver_override");
    let value = std::fs::read_to_string(&override_of).expect("the GPU's override");
    assert_eq!(value, "(null)\n", "nothing was pinned");
}

#[test]
fn agent_refuses_a_bad_metrics_address_before_loading_anything() {
    let n = fixture("viable-passthrough");
    let out = Command::new(ENFORCER)
        .args(["--metrics-addr", "not-an-address"])
        .arg("--sysfs-root")
        .arg(&n.node.sysfs)
        .output()
        .expect("enforcer runs");
    assert_eq!(code(&out), 2);
    assert!(
        out.stdout.is_empty(),
        "no capabilities line: nothing was loaded"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
}

#[test]
fn reference_policy_is_valid() {
    let n = fixture("consumer-gpu-audio-split");
    let (code, json) = n.audit_with("reference.toml");
    assert_eq!(code, 1);
    assert_eq!(group(&json, "12")["reserved"], true);
}

#[test]
fn unreadable_sysfs_root_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for command in ["audit", "groups"] {
        let out = Command::new(ENFORCER)
            .args([command, "--sysfs-root"])
            .arg(dir.path())
            .output()
            .expect("runs");
        assert_eq!(code(&out), 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("kernel/iommu_groups"));
    }
}

/// A FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// The device directory of `address` in a built fixture.
fn device_dir(n: &Node, address: &str) -> PathBuf {
    std::fs::canonicalize(n.node.sysfs.join("bus/pci/devices").join(address)).expect("device")
}

/// A hostile tree: a FIFO `vendor`, `config` linked to /dev/zero, a 1 MiB `driver_override`,
/// a group directory whose name is not UTF-8 and a `012` beside `12`. The audit ends, prints
/// its whole report (JSON and text) with a scan problem for each, and exits 1.
#[test]
fn hostile_tree_is_reported_whole_with_scan_problems() {
    use std::os::unix::ffi::OsStrExt;
    let n = fixture("consumer-gpu-audio-split");
    let gpu = device_dir(&n, "0000:0a:00.0");
    std::fs::remove_file(gpu.join("vendor")).expect("rm");
    mkfifo(&gpu.join("vendor"));
    std::fs::remove_file(gpu.join("config")).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", gpu.join("config")).expect("symlink");
    let audio = device_dir(&n, "0000:0a:00.1");
    std::fs::write(audio.join("driver_override"), "A".repeat(1 << 20)).expect("write");
    let groups = n.node.sysfs.join("kernel/iommu_groups");
    std::fs::create_dir_all(groups.join(std::ffi::OsStr::from_bytes(b"9\xff/devices")))
        .expect("mkdir");
    std::fs::create_dir_all(groups.join("012/devices")).expect("mkdir");

    let (code, json) = n.audit();
    assert_eq!(code, 1, "scan problems hide group 12's verdict");
    let problems: Vec<(String, String)> = json["scan_problems"]
        .as_array()
        .expect("scan_problems")
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap_or_default().to_string(),
                p["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let has = |kind: &str, path_end: &str| {
        problems
            .iter()
            .any(|(k, p)| k == kind && p.ends_with(path_end))
    };
    assert!(has("not_regular", "0000:0a:00.0/vendor"), "{problems:?}");
    assert!(has("not_regular", "0000:0a:00.0/config"));
    assert!(has("too_long", "0000:0a:00.1/driver_override"));
    assert!(has("malformed", "iommu_groups/9\u{fffd}"));
    assert!(has("malformed", "iommu_groups/012"));
    let g = group(&json, "12");
    assert_eq!(device(g, "0000:0a:00.0")["vendor"], Value::Null);
    assert_eq!(device(g, "0000:0a:00.1")["driver_override"], Value::Null);
    assert!(!json.to_string().contains("AAAA"), "never echoed");

    let (code, groups_json) = n.json(&["groups"]);
    assert_eq!(code, 0);
    assert!(groups_json["groups"]
        .as_array()
        .is_some_and(|g| !g.is_empty()));
    let (code, text) = n.text(&["audit"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("is a FIFO, not a regular file: not read"),
        "{text}"
    );
    assert!(text.contains("longer than 4096 bytes: not read"));
    assert!(text.len() < 100_000);
}

#[test]
fn policy_that_is_a_fifo_or_a_device_exits_2_unread() {
    let n = fixture("viable-passthrough");
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("policy.toml");
    mkfifo(&fifo);
    for (path, what) in [
        (fifo.as_path(), "is a FIFO, not a regular file"),
        (
            Path::new("/dev/zero"),
            "is a character device, not a regular file",
        ),
    ] {
        let out = n.run(&["audit", "--policy", path.to_str().expect("utf-8")]);
        assert_eq!(code(&out), 2);
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}: cannot read policy: {what}", path.display())),
            "{stderr}"
        );
    }
    for (file, at, what) in [
        (
            "bad-duplicate-reservation.toml",
            "6:9",
            "duplicate reservation",
        ),
        (
            "bad-contradictory-reservation.toml",
            "7:10",
            "contradictory reservations",
        ),
    ] {
        let path = policy(file);
        let out = n.run(&["audit", "--policy", path.to_str().expect("utf-8")]);
        assert_eq!(code(&out), 2, "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:{at}: ", path.display())),
            "{stderr}"
        );
        assert!(stderr.contains(what), "{stderr}");
    }
}
