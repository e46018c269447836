use super::*;
use crate::model::{Device, Holder};

fn split_map() -> GroupMap {
    let mut map = GroupMap::new();
    map.add_device(Device {
        vendor: Some(0x10de),
        device: Some(0x2204),
        class: Some(0x030000),
        driver: Some("vfio-pci".to_string()),
        multifunction: true,
        ..Device::new("0000:01:00.0", 12)
    });
    map.add_device(Device {
        vendor: Some(0x10de),
        device: Some(0x1aef),
        class: Some(0x040300),
        driver: Some("snd_hda_intel".to_string()),
        multifunction: true,
        ..Device::new("0000:01:00.1", 12)
    });
    map.add_device(Device::new("0000:02:00.0", 13));
    map.set_holders(vec![Holder {
        pid: 4242,
        comm: "qemu".to_string(),
        fd: Some(17),
        path: "/dev/vfio/13".to_string(),
        group: Some(13),
        device: None,
        pod: None,
    }]);
    map
}

#[test]
fn holders_name_their_pod_or_null() {
    let mut map = split_map();
    let mut holders = map.all_holders().to_vec();
    let mut in_pod = holders[0].clone();
    in_pod.pid = 4343;
    in_pod.pod = Some(crate::pods::PodIdentity {
        pod_uid: "8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f".into(),
        container_id: Some("4f3e2d1c".into()),
    });
    holders.push(in_pod);
    map.set_holders(holders);
    let audit = Audit::new(&map, Vec::new(), &Policy::default());
    let json = serde_json::to_value(&audit).expect("json");
    let held = &json["groups"][1]["holders"];
    assert_eq!(held[0]["pid"], 4242);
    assert!(held[0]["pod_uid"].is_null());
    assert!(held[0]["container_id"].is_null());
    assert_eq!(held[1]["pid"], 4343);
    assert_eq!(held[1]["pod_uid"], "8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f");
    assert_eq!(held[1]["container_id"], "4f3e2d1c");
}

#[test]
fn audit_json_shape() {
    let audit = Audit::new(&split_map(), Vec::new(), &Policy::default());
    let json = serde_json::to_value(&audit).expect("json");
    let g = &json["groups"][0];
    assert_eq!(g["id"], "12");
    assert_eq!(g["owner"], "kernel");
    assert_eq!(g["viable"], false);
    assert_eq!(
        g["reasons"][0],
        "0000:01:00.1 is bound to snd_hda_intel (kernel DMA) while 0000:01:00.0 is on vfio-pci"
    );
    assert_eq!(
        g["why_shared"],
        "functions of one multifunction device (0000:01:00), ACS unknown (config not readable)"
    );
    let d = &g["devices"][1];
    assert_eq!(d["address"], "0000:01:00.1");
    assert_eq!(d["vendor"], "0x10de");
    assert_eq!(d["device"], "0x1aef");
    assert_eq!(d["class"], "0x040300");
    assert_eq!(d["driver"], "snd_hda_intel");
    assert!(d["driver_override"].is_null());
    assert!(json["groups"][1]["devices"][0]["driver"].is_null());
    assert_eq!(json["groups"][1]["owner"], "user");
    assert_eq!(json["groups"][1]["holders"][0]["comm"], "qemu");

    let v = &json["violations"][0];
    assert_eq!(v["group"], "12");
    assert_eq!(v["device"], "0000:01:00.1");
    assert_eq!(v["driver"], "snd_hda_intel");
    assert_eq!(v["rule"], "split_group");
    assert_eq!(v["action"], "would_veto");
    assert_eq!(json["scan_problems"], serde_json::json!([]));
    assert_eq!(
        json["enforcement"],
        serde_json::json!({"bpf_lsm": null, "vetoes": null})
    );
    // group 12 has a member on vfio-pci: it is protected from that bind on and pinned
    assert_eq!(json["pins"][0]["device"], "0000:01:00.0");
    assert_eq!(json["pins"][0]["driver_override"], "vfio-pci");
    // protected user group 13: its unbound member would be pinned to none
    assert_eq!(json["pins"][1]["device"], "0000:02:00.0");
    assert_eq!(json["pins"][1]["driver_override"], "none");
}

#[test]
fn audit_text_is_a_table_per_group() {
    let text = Audit::new(&split_map(), Vec::new(), &Policy::default()).text();
    assert!(
        text.contains("IOMMU group 12  owner kernel  not viable\n"),
        "{text}"
    );
    assert!(
        text.contains("  DEVICE        ID         CLASS     TYPE    ACS      DRIVER"),
        "{text}"
    );
    assert!(text.contains("  0000:01:00.1  10de:1aef  0x040300  device  unknown  snd_hda_intel"));
    assert!(text.contains("  not viable: 0000:01:00.1 is bound to snd_hda_intel (kernel DMA)"));
    assert!(text.contains("held by qemu (pid 4242, /dev/vfio/13)"));
    assert!(text.contains("split_group  would_veto"));
    assert!(text.ends_with("2 groups, 1 not viable, 1 violations, 0 scan problems\n"));
}

#[test]
fn groups_json_is_the_map_alone() {
    let groups = Groups::new(&split_map(), Vec::new(), &Policy::default());
    let json = serde_json::to_value(&groups).expect("json");
    assert_eq!(json["groups"].as_array().map(Vec::len), Some(2));
    assert!(json.get("violations").is_none());
    assert!(!groups.text().contains("not viable:"));
}

#[test]
fn the_streamed_json_is_the_audit_json_byte_for_byte() {
    let map = split_map();
    let policy = Policy::default();
    let mut table = crate::pods::resources::Table::default();
    table.devices.insert(
        "0000:01:00.0".to_string(),
        iommu_enforcer_schema::Allocation {
            namespace: "vms".into(),
            pod: "vm-0".into(),
            container: "compute".into(),
            resource: "nvidia.com/GA102".into(),
        },
    );
    for allocations in [None, Some(&table)] {
        let mut whole = Audit::new(&map, Vec::new(), &policy);
        if let Some(t) = allocations {
            set_allocations(&mut whole.groups, t);
        }
        let rest = Audit::without_groups(&map, Vec::new(), &policy);
        let streamed = StreamedAudit {
            map: &map,
            policy: &policy,
            allocations,
            rest: &rest,
        };
        assert_eq!(
            serde_json::to_string_pretty(&streamed).expect("json"),
            serde_json::to_string_pretty(&whole).expect("json")
        );
    }
}
