//! Properties of the live model: the group map the agent keeps from bind and unbind records,
//! applied in any order, equals a fresh scan of the tree those records leave behind.
use iommu_enforcer::bpf::record::{KernelEvent, Record, Target, Task};
use iommu_enforcer::model::GroupMap;
use iommu_enforcer::node::{NodeState, ProbeConvention};
use iommu_enforcer::policy::Policy;
use iommu_enforcer_common::EventKind;
use proptest::prelude::*;

/// consumer-gpu-audio-split's GPU (four functions, group 12), its NVMe drive (group 11) and a
/// root port (group 4), each with the drivers a node would bind to it.
const DEVICES: [(&str, &str, u32); 6] = [
    (
        "0000:00:03.1",
        "parent=- vendor=0x1022 device=0x1483 class=0x060400 port=root acs=on",
        4,
    ),
    (
        "0000:01:00.0",
        "vendor=0x144d device=0xa80a class=0x010802",
        11,
    ),
    (
        "0000:0a:00.0",
        "parent=0000:00:03.1 vendor=0x10de device=0x2204 class=0x030000 multifunction",
        12,
    ),
    (
        "0000:0a:00.1",
        "parent=0000:00:03.1 vendor=0x10de device=0x1aef class=0x040300 multifunction",
        12,
    ),
    (
        "0000:0a:00.2",
        "parent=0000:00:03.1 vendor=0x10de device=0x1ad6 class=0x0c0330 multifunction",
        12,
    ),
    (
        "0000:0a:00.3",
        "parent=0000:00:03.1 vendor=0x10de device=0x1ad7 class=0x0c8000 multifunction",
        12,
    ),
];

const DRIVERS: [&str; 6] = [
    "vfio-pci",
    "snd_hda_intel",
    "xhci_hcd",
    "nvme",
    "pcieport",
    "pci-stub",
];

/// The tree with each device bound to `drivers[i]` (or unbound).
fn spec(drivers: &[Option<&str>]) -> String {
    DEVICES
        .iter()
        .zip(drivers)
        .map(|((address, rest, group), driver)| {
            let rest = rest.replace("parent=- ", "");
            let driver = driver.map(|d| format!(" driver={d}")).unwrap_or_default();
            format!("device {address} {rest} group={group}{driver}\n")
        })
        .collect()
}

fn scan(drivers: &[Option<&str>]) -> GroupMap {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = iommu_fixtures::build(&spec(drivers), dir.path()).expect("fixture builds");
    let scan = iommu_enforcer::sysfs::scan(&node.sysfs).expect("scan");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    scan.to_map()
}

fn record(kind: EventKind, ret: i32, device: &str, driver: Option<&str>) -> KernelEvent {
    let target = Target {
        device: Some(device.to_string()),
        group: None,
    };
    let driver = driver.map(str::to_string);
    let record = match kind {
        EventKind::Probe => Record::Probe {
            target,
            driver,
            ret,
        },
        _ => Record::Unbind { target, driver },
    };
    KernelEvent {
        task: Task {
            pid: 1,
            tgid: 1,
            comm: "sh".into(),
            cgroup_id: 1,
        },
        ktime_ns: 0,
        record,
    }
}

/// One step: bind device `.0` to driver `.1` (an index into DRIVERS), or unbind it (`None`);
/// `.2` makes the bind fail (the kernel refused it: nothing changes).
fn steps() -> impl Strategy<Value = Vec<(usize, Option<usize>, bool)>> {
    prop::collection::vec(
        (
            0..DEVICES.len(),
            prop::option::of(0..DRIVERS.len()),
            any::<bool>(),
        ),
        0..40,
    )
}

fn assert_same(live: &GroupMap, rescan: &GroupMap) {
    let policy = Policy::default();
    for (address, _, group) in DEVICES {
        let driver = |m: &GroupMap| m.device(address).and_then(|d| d.driver.clone());
        assert_eq!(driver(live), driver(rescan), "{address}");
        assert_eq!(live.group_of(address), Some(group));
        assert_eq!(
            policy.verdict(live, group),
            policy.verdict(rescan, group),
            "group {group}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn bind_and_unbind_records_in_any_order_match_a_rescan(
        start in prop::collection::vec(prop::option::of(0..DRIVERS.len()), DEVICES.len()),
        steps in steps(),
        five_ten in any::<bool>(),
    ) {
        let mut drivers: Vec<Option<&str>> = start.iter().map(|d| d.map(|i| DRIVERS[i])).collect();
        let (convention, bound) = if five_ten {
            (ProbeConvention::OneIsBound, 1)
        } else {
            (ProbeConvention::ZeroIsBound, 0)
        };
        let mut state = NodeState::new(scan(&drivers), Policy::default(), convention);
        state.changed_verdicts();
        for (device, driver, refused) in steps {
            let address = DEVICES[device].0;
            let ev = match driver {
                Some(i) if refused => record(EventKind::Probe, -16, address, Some(DRIVERS[i])),
                Some(i) => {
                    drivers[device] = Some(DRIVERS[i]);
                    record(EventKind::Probe, bound, address, Some(DRIVERS[i]))
                }
                None => {
                    drivers[device] = None;
                    record(EventKind::Unbind, 0, address, None)
                }
            };
            state.apply(&ev, None);
        }
        assert_same(state.map(), &scan(&drivers));
    }
}
