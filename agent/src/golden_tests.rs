//! Golden outputs: one ring record of every kind (and every veto rule and flag), decoded,
//! applied to the two-function test node and printed as the agent prints it, compared byte for
//! byte with `golden_events.txt` (captured before the typed-record refactor). The printed form
//! is a contract (docs/events.md; scripts and the test node parse it): a change here is a
//! change of the wire format.
use iommu_enforcer_common::{override_written, veto, watched, Event as Record, EventKind};
use iommu_enforcer_schema::Allocation;

use crate::{
    bpf::record::decode,
    node::{tests::node, NodeState, VfioNode},
    render::{self, Attributed},
};

const GOLDEN: &str = include_str!("golden_events.txt");
const POD_CGROUP: u64 = 4242;

struct Rec {
    kind: EventKind,
    ret: i32,
    device: &'static str,
    driver: &'static str,
    group: i32,
    detail: u32,
    rdev: u32,
    cgroup_id: u64,
}

fn rec(kind: EventKind) -> Rec {
    Rec {
        kind,
        ret: 0,
        device: "",
        driver: "",
        group: -1,
        detail: 0,
        rdev: 0,
        cgroup_id: 7,
    }
}

fn bytes(r: &Rec) -> Vec<u8> {
    let mut ev = Record::zeroed();
    ev.kind = r.kind as u32;
    ev.ret = r.ret;
    (ev.pid, ev.tgid, ev.cgroup_id, ev.ktime_ns) = (101, 100, r.cgroup_id, 5);
    (ev.group, ev.detail, ev.rdev) = (r.group, r.detail, r.rdev);
    ev.comm[..2].copy_from_slice(b"sh");
    ev.device[..r.device.len()].copy_from_slice(r.device.as_bytes());
    ev.driver[..r.driver.len()].copy_from_slice(r.driver.as_bytes());
    // SAFETY: Record is repr(C) plain data.
    unsafe {
        std::slice::from_raw_parts(
            (&ev as *const Record).cast::<u8>(),
            std::mem::size_of::<Record>(),
        )
    }
    .to_vec()
}

fn allocation() -> Allocation {
    Allocation {
        namespace: "vms".into(),
        pod: "virt-launcher-a".into(),
        container: "compute".into(),
        resource: "nvidia.com/GH100_H100".into(),
    }
}

/// Decodes, applies and renders one record as the daemon does; the pod and allocation are
/// those the daemon would resolve (cgroup [`POD_CGROUP`] is in a pod; .0 of group 9 is
/// allocated).
fn render(n: &mut NodeState, r: &Rec, vfio: Option<VfioNode>) -> Vec<String> {
    let ev = decode(&bytes(r)).expect("decodes");
    let applied = n.apply(&ev, vfio);
    let mut who = Attributed::default();
    if ev.task.cgroup_id == POD_CGROUP {
        who.pod_uid = Some("8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f".into());
        who.container_id = Some("4f3e2d1c".into());
    }
    // As the pod-resources table answers: the device's allocation, else a member's.
    if applied.device.as_deref() == Some("0000:00:05.0") || applied.group == Some(9) {
        who.allocated_to = Some(allocation());
    }
    let mut lines = render::event_lines(&ev, &applied, n.convention(), &who);
    lines.extend(applied.verdict);
    lines
        .iter()
        .map(|l| serde_json::to_string(l).expect("serializes"))
        .collect()
}

fn node_at(path: &str, device: Option<&str>) -> Option<VfioNode> {
    Some(VfioNode {
        path: path.into(),
        device: device.map(Into::into),
    })
}

/// Every case, in order, on one node (the state carries over as in the daemon).
fn cases() -> Vec<(&'static str, Vec<String>)> {
    let mut n = node();
    let mut out = Vec::new();
    let f1 = "0000:00:05.1";
    let f0 = "0000:00:05.0";
    let mut case = |name: &'static str, r: Rec, vfio: Option<VfioNode>, n: &mut NodeState| {
        out.push((name, render(n, &r, vfio)));
    };
    let bind = |ret, device, driver| Rec {
        ret,
        device,
        driver,
        group: 9,
        ..rec(EventKind::Probe)
    };
    case("bind_ok", bind(0, f1, "e1000"), None, &mut n);
    case(
        "unbind",
        Rec {
            device: f1,
            driver: "e1000",
            group: 9,
            ..rec(EventKind::Unbind)
        },
        None,
        &mut n,
    );
    case("bind_error", bind(-16, f1, "e1000"), None, &mut n);
    case("bind_positive_error", bind(12, f1, "e1000"), None, &mut n);
    case(
        "refusal",
        Rec {
            ret: -16,
            device: f1,
            driver: "e1000",
            group: 9,
            ..rec(EventKind::UseDefaultDomain)
        },
        None,
        &mut n,
    );
    case(
        "claim_group",
        Rec {
            group: 9,
            ..rec(EventKind::GroupClaim)
        },
        None,
        &mut n,
    );
    case(
        "claim_device_failed",
        Rec {
            ret: -1,
            group: 9,
            ..rec(EventKind::DeviceClaim)
        },
        None,
        &mut n,
    );
    case(
        "release_group",
        Rec {
            group: 9,
            ..rec(EventKind::GroupRelease)
        },
        None,
        &mut n,
    );
    case(
        "release_device",
        Rec {
            group: 9,
            ..rec(EventKind::DeviceRelease)
        },
        None,
        &mut n,
    );
    case(
        "device_added",
        Rec {
            device: "0000:00:06.0",
            group: 10,
            ..rec(EventKind::DeviceAdded)
        },
        None,
        &mut n,
    );
    case(
        "device_removed",
        Rec {
            device: "0000:00:06.0",
            group: 10,
            ..rec(EventKind::DeviceRemoved)
        },
        None,
        &mut n,
    );
    case(
        "vfio_open_group_in_pod",
        Rec {
            rdev: (245 << 20) | 9,
            cgroup_id: POD_CGROUP,
            ..rec(EventKind::VfioGroupOpen)
        },
        node_at("/dev/vfio/9", None),
        &mut n,
    );
    case(
        "vfio_open_group_busy",
        Rec {
            ret: -16,
            rdev: (245 << 20) | 9,
            ..rec(EventKind::VfioGroupOpen)
        },
        node_at("/dev/vfio/9", None),
        &mut n,
    );
    case(
        "vfio_release_group",
        Rec {
            rdev: (245 << 20) | 9,
            ..rec(EventKind::VfioGroupRelease)
        },
        node_at("/dev/vfio/9", None),
        &mut n,
    );
    case(
        "vfio_open_cdev",
        Rec {
            rdev: (511 << 20),
            ..rec(EventKind::VfioCdevOpen)
        },
        node_at("/dev/vfio/devices/vfio0", Some(f0)),
        &mut n,
    );
    case(
        "vfio_release_cdev",
        Rec {
            rdev: (511 << 20),
            ..rec(EventKind::VfioCdevRelease)
        },
        node_at("/dev/vfio/devices/vfio0", Some(f0)),
        &mut n,
    );
    case(
        "vfio_open_unknown_node",
        Rec {
            rdev: (245 << 20) | 77,
            ..rec(EventKind::VfioGroupOpen)
        },
        node_at("char 245:77", None),
        &mut n,
    );
    case(
        "pin_refused",
        Rec {
            ret: 0,
            device: f1,
            driver: "e1000",
            group: 9,
            ..rec(EventKind::PinRefused)
        },
        None,
        &mut n,
    );
    case(
        "driver_override_write_trusted",
        Rec {
            ret: 5,
            device: f1,
            driver: "none\n",
            group: 9,
            detail: override_written::TRUSTED_CONTAINER,
            ..rec(EventKind::OverrideWritten)
        },
        None,
        &mut n,
    );
    case(
        "driver_override_write_failed",
        Rec {
            ret: -12,
            device: f1,
            driver: "vfio-pci\n",
            group: 9,
            ..rec(EventKind::OverrideWritten)
        },
        None,
        &mut n,
    );
    // An idle group handed back: unbind from vfio-pci, override cleared, a host driver binds.
    n.set_driver_override(f0, Some("vfio-pci"));
    case(
        "handback_unbind",
        Rec {
            device: f0,
            driver: "vfio-pci",
            group: 9,
            cgroup_id: POD_CGROUP,
            ..rec(EventKind::Unbind)
        },
        None,
        &mut n,
    );
    case(
        "handback_override_cleared",
        Rec {
            ret: 1,
            device: f0,
            driver: "\n",
            group: 9,
            ..rec(EventKind::OverrideWritten)
        },
        None,
        &mut n,
    );
    case("handback_bind", bind(0, f0, "e1000"), None, &mut n);
    case("module_load", rec(EventKind::ModuleLoad), None, &mut n);
    case(
        "write_check",
        Rec {
            detail: 1,
            ..rec(EventKind::WriteCheck)
        },
        None,
        &mut n,
    );
    let vetoes: [(&'static str, u32, i32, &str, Option<VfioNode>); 12] = [
        (
            "veto_override_denied",
            watched::DRIVER_OVERRIDE | veto::DENIED,
            -1,
            f1,
            None,
        ),
        ("veto_remove_dry_run", watched::REMOVE, 0, f1, None),
        (
            "veto_bind_fail_closed",
            watched::BIND | veto::DENIED | veto::TARGET_UNKNOWN | veto::NOT_THIS_WRITE,
            -1,
            "",
            None,
        ),
        (
            "veto_unbind_traced",
            watched::UNBIND | veto::DENIED | veto::TRACED,
            -1,
            f0,
            None,
        ),
        (
            "veto_new_id_at_open",
            watched::NEW_ID | veto::DENIED | veto::AT_OPEN,
            -1,
            "",
            None,
        ),
        (
            "veto_reset_above",
            watched::RESET | veto::DENIED | veto::ABOVE,
            -1,
            "0000:00:01.0",
            None,
        ),
        (
            "veto_vfio_group_not_viable",
            watched::VFIO_GROUP | veto::DENIED,
            -1,
            "",
            node_at("/dev/vfio/9", None),
        ),
        (
            "veto_vfio_cdev_unarmed",
            watched::VFIO_CDEV | veto::DENIED | veto::NOT_ARMED,
            -11,
            "",
            // The daemon looks up the device behind a cdev for opens and releases only.
            node_at("/dev/vfio/devices/vfio0", None),
        ),
        ("veto_probe", watched::PROBE | veto::DENIED, -1, f1, None),
        ("veto_config", watched::CONFIG | veto::DENIED, -1, f1, None),
        ("veto_pins", watched::PINS | veto::DENIED, -1, "", None),
        ("veto_unknown_rule", 99 | veto::DENIED, -1, f1, None),
    ];
    for (name, detail, ret, device, vfio) in vetoes {
        let r = Rec {
            ret,
            device,
            driver: if name == "veto_probe" { "e1000" } else { "" },
            group: if device.is_empty() { -1 } else { 9 },
            detail,
            cgroup_id: POD_CGROUP,
            ..rec(EventKind::Veto)
        };
        case(name, r, vfio, &mut n);
    }
    let other_rules = [
        ("veto_drivers_probe", watched::DRIVERS_PROBE),
        ("veto_reset_subordinate", watched::RESET_SUBORDINATE),
        ("veto_slot_power", watched::SLOT_POWER),
        ("veto_remove_id", watched::REMOVE_ID),
        ("veto_resource", watched::RESOURCE),
    ];
    for (name, kind) in other_rules {
        let r = Rec {
            ret: -1,
            detail: kind | veto::DENIED,
            ..rec(EventKind::Veto)
        };
        case(name, r, None, &mut n);
    }
    out
}

/// The cases as the golden file spells them: `# name`, then the printed lines.
fn printed() -> String {
    let mut s = String::new();
    for (name, lines) in cases() {
        s.push_str("# ");
        s.push_str(name);
        s.push('\n');
        for l in lines {
            s.push_str(&l);
            s.push('\n');
        }
    }
    s
}

#[test]
fn every_record_kind_prints_as_before() {
    let now = printed();
    if std::env::var_os("GOLDEN_PRINT").is_some() {
        print!("{now}");
    }
    for (want, got) in GOLDEN.lines().zip(now.lines()) {
        assert_eq!(got, want);
    }
    assert_eq!(now.lines().count(), GOLDEN.lines().count());
}
