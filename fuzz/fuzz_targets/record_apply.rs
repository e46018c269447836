//! Ring-buffer records, decoded and applied one after another to the node state of a small
//! map (the two-function device of the test node, a root port and a NIC): never panics (any
//! `ret`, kind, group, name), and the map keeps every device in the group it was scanned in.
#![no_main]
use iommu_enforcer::bpf::record::decode;
use iommu_enforcer::node::{NodeState, ProbeConvention, VfioNode};
use iommu_enforcer::render;
use iommu_enforcer::model::{Device, GroupMap};
use iommu_enforcer::policy::Policy;
use iommu_enforcer_common::Event;
use libfuzzer_sys::fuzz_target;

const DEVICES: [(&str, u32, Option<&str>); 4] = [
    ("0000:00:01.0", 1, Some("pcieport")),
    ("0000:00:05.0", 9, Some("vfio-pci")),
    ("0000:00:05.1", 9, None),
    ("0000:00:06.0", 10, Some("e1000")),
];

fn node(convention: ProbeConvention) -> NodeState {
    let mut map = GroupMap::new();
    for (address, group, driver) in DEVICES {
        let mut d = Device::new(address, group);
        d.driver = driver.map(str::to_string);
        map.add_device(d);
    }
    NodeState::new(map, Policy::default(), convention)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, records)) = data.split_first() else {
        return;
    };
    let convention = if first & 1 == 0 {
        ProbeConvention::ZeroIsBound
    } else {
        ProbeConvention::OneIsBound
    };
    let mut state = node(convention);
    state.changed_verdicts();
    let size = std::mem::size_of::<Event>();
    for chunk in records.chunks(size) {
        // Short records are refused; pad the tail so that it is decoded too.
        let mut record = chunk.to_vec();
        if record.len() < size {
            assert!(decode(&record).is_err());
            record.resize(size, 0);
        }
        let Ok(ev) = decode(&record) else {
            continue;
        };
        let node = (first & 2 != 0).then(|| VfioNode {
            path: "/dev/vfio/9".to_string(),
            device: None,
        });
        let applied = state.apply(&ev, node);
        let _ = render::event_lines(&ev, &applied, state.convention(), &Default::default());
    }
    for (address, group, _) in DEVICES {
        assert_eq!(state.map().group_of(address), Some(group), "{address}");
    }
    let _ = state.changed_verdicts();
});
