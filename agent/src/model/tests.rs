use super::*;
use crate::policy::Policy;

fn dev(address: &str, group: u32, driver: Option<&str>) -> Device {
    Device {
        driver: driver.map(str::to_string),
        acs: Acs::None,
        ..Device::new(address, group)
    }
}

fn port(address: &str, group: u32, kind: PortType, acs: Acs, parents: &[&str]) -> Device {
    Device {
        bridge: true,
        port_type: Some(kind),
        acs,
        parents: parents.iter().map(|p| p.to_string()).collect(),
        ..dev(address, group, Some("pcieport"))
    }
}

fn holder(pid: u32, group: Option<u32>, device: Option<&str>) -> Holder {
    Holder {
        pid,
        comm: "qemu".to_string(),
        fd: Some(17),
        path: format!("/dev/vfio/{}", group.unwrap_or(0)),
        group,
        device: device.map(str::to_string),
        pod: None,
    }
}

/// The consumer GPU case: .0 on vfio-pci, .1 on snd_hda_intel, one group.
fn gpu_audio_split() -> GroupMap {
    let mut map = GroupMap::new();
    map.add_device(dev("0000:01:00.0", 12, Some("vfio-pci")));
    map.add_device(dev("0000:01:00.1", 12, Some("snd_hda_intel")));
    map
}

#[test]
fn owner_follows_drivers_holders_and_claims() {
    let policy = Policy::default();
    let mut map = gpu_audio_split();
    assert_eq!(map.owner(12), Some(Owner::Kernel));
    assert_eq!(map.owner(99), None);

    map.set_holders(vec![holder(4242, Some(12), None)]);
    assert_eq!(map.owner(12), Some(Owner::Conflict));

    assert_eq!(map.set_driver("0000:01:00.1", None), Some(12));
    assert_eq!(map.owner(12), Some(Owner::User));
    let v = policy.verdict(&map, 12).expect("group 12");
    assert!(v.viable && v.reasons.is_empty());

    map.set_holders(Vec::new());
    assert_eq!(
        map.owner(12),
        Some(Owner::None),
        "vfio-pci alone is not ownership"
    );
    map.record_claim(12, true);
    assert_eq!(map.owner(12), Some(Owner::User));
    map.record_claim(12, false);
    assert_eq!(map.owner(12), Some(Owner::None));
}

#[test]
fn driver_managed_dma_drivers_do_not_make_the_kernel_owner() {
    let mut map = GroupMap::new();
    map.add_device(port("0000:00:01.0", 1, PortType::RootPort, Acs::None, &[]));
    map.add_device(dev("0000:01:00.0", 1, Some("pci-stub")));
    map.add_device(dev("0000:01:00.1", 1, Some("mlx5_vfio_pci")));
    assert_eq!(map.owner(1), Some(Owner::None));
    assert!(Policy::default().verdict(&map, 1).expect("group").viable);
}

#[test]
fn reasons_name_device_driver_and_why() {
    let map = gpu_audio_split();
    let v = Policy::default().verdict(&map, 12).expect("group 12");
    assert_eq!(v.owner, Owner::Kernel);
    assert!(!v.viable);
    assert_eq!(
        v.reasons,
        vec![
            "0000:01:00.1 is bound to snd_hda_intel (kernel DMA) while 0000:01:00.0 is on vfio-pci"
        ]
    );

    // without a vfio-pci member, the holder is the context
    let mut map = GroupMap::new();
    map.add_device(dev("0000:01:00.0", 12, None));
    map.add_device(dev("0000:01:00.1", 12, Some("snd_hda_intel")));
    map.set_holders(vec![holder(4242, Some(12), None)]);
    let v = Policy::default().verdict(&map, 12).expect("group 12");
    assert_eq!(
        v.reasons,
        vec!["0000:01:00.1 is bound to snd_hda_intel (kernel DMA) while the group is held by qemu (pid 4242)"]
    );
}

#[test]
fn policy_allows_and_denies_drivers() {
    let mut map = GroupMap::new();
    map.add_device(port(
        "0000:00:1c.0",
        5,
        PortType::PcieToPciBridge,
        Acs::None,
        &[],
    ));
    map.set_driver("0000:00:1c.0", Some("shpchp"));
    map.add_device(dev("0000:01:00.0", 5, Some("vfio-pci")));
    let v = Policy::default().verdict(&map, 5).expect("group 5");
    assert_eq!(
        v.reasons,
        vec![
            "0000:00:1c.0 is bound to shpchp (denied by policy) while 0000:01:00.0 is on vfio-pci"
        ]
    );

    let mut policy = Policy {
        denied_drivers: Vec::new(),
        allowed_drivers: vec![crate::pci::driver("shpchp")],
        ..Policy::default()
    };
    assert!(policy.verdict(&map, 5).expect("group 5").viable);
    policy.allowed_drivers.clear();
    policy.denied_drivers = vec![crate::pci::driver("pcieport")];
    map.set_driver("0000:00:1c.0", Some("pcieport"));
    let v = policy.verdict(&map, 5).expect("group 5");
    assert!(!v.viable);
    assert!(v.reasons[0].contains("pcieport (denied by policy)"));
}

#[test]
fn non_pci_members_count() {
    let mut map = GroupMap::new();
    map.add_other(OtherMember {
        name: "AMDI0010:00".to_string(),
        group: 3,
        driver: Some("i2c_designware".to_string()),
    });
    assert_eq!(map.owner(3), Some(Owner::Kernel));
    let v = Policy::default().verdict(&map, 3).expect("group 3");
    assert_eq!(
        v.reasons,
        vec!["AMDI0010:00 (not PCI) is bound to i2c_designware (kernel DMA)"]
    );
}

#[test]
fn devices_move_and_leave() {
    let mut map = gpu_audio_split();
    assert_eq!(map.group_of("0000:01:00.1"), Some(12));
    assert_eq!(map.remove_device("0000:01:00.1"), Some(12));
    assert_eq!(map.group_of("0000:01:00.1"), None);
    assert_eq!(map.remove_device("0000:01:00.1"), None);
    assert_eq!(map.set_driver("0000:01:00.1", Some("x")), None);
    assert_eq!(map.group(12).map(Group::len), Some(1));

    map.add_device(dev("0000:01:00.0", 13, Some("vfio-pci")));
    assert_eq!(map.group_of("0000:01:00.0"), Some(13));
    assert_eq!(map.group(12).map(Group::len), Some(0));
    assert_eq!(
        map.set_driver_override("0000:01:00.0", Some("vfio-pci")),
        Some(13)
    );
    assert_eq!(
        map.device("0000:01:00.0")
            .and_then(|d| d.driver_override.as_deref()),
        Some("vfio-pci")
    );
}

#[test]
fn cdev_holders_resolve_to_the_device_group() {
    let mut map = gpu_audio_split();
    map.set_holders(vec![holder(6001, None, Some("0000:01:00.0"))]);
    assert_eq!(map.holders(12).count(), 1);
    assert_eq!(map.owner(12), Some(Owner::Conflict));
}

#[test]
fn why_shared_names_the_port_without_acs() {
    let mut map = GroupMap::new();
    let root = ["0000:00:01.0"];
    let up = ["0000:00:01.0", "0000:01:00.0"];
    let down = ["0000:00:01.0", "0000:01:00.0", "0000:02:08.0"];
    map.add_device(port(
        "0000:00:01.0",
        1,
        PortType::RootPort,
        Acs::Enabled,
        &[],
    ));
    map.add_device(port(
        "0000:01:00.0",
        2,
        PortType::UpstreamPort,
        Acs::None,
        &root,
    ));
    map.add_device(port(
        "0000:02:08.0",
        3,
        PortType::DownstreamPort,
        Acs::None,
        &up,
    ));
    map.add_device(Device {
        parents: down.iter().map(|p| p.to_string()).collect(),
        ..dev("0000:03:00.0", 3, Some("vfio-pci"))
    });
    assert_eq!(
        map.why_shared(3).as_deref(),
        Some("behind 0000:02:08.0 (downstream port) without ACS")
    );
    assert_eq!(map.why_shared(1), None, "single member");

    // the same port read without root
    map.add_device(Device {
        port_type: None,
        acs: Acs::Unknown,
        ..port(
            "0000:02:08.0",
            3,
            PortType::DownstreamPort,
            Acs::Unknown,
            &up,
        )
    });
    assert_eq!(
        map.why_shared(3).as_deref(),
        Some("behind 0000:02:08.0 (bridge), ACS unknown (config not readable)")
    );
}

#[test]
fn why_shared_names_multifunction_devices() {
    let mut map = gpu_audio_split();
    assert_eq!(
        map.why_shared(12).as_deref(),
        Some("functions of one multifunction device without ACS (0000:01:00)")
    );
    map.add_device(Device {
        acs: Acs::Unknown,
        ..dev("0000:01:00.0", 12, None)
    });
    map.add_device(Device {
        acs: Acs::Unknown,
        ..dev("0000:01:00.1", 12, None)
    });
    assert_eq!(
        map.why_shared(12).as_deref(),
        Some(
            "functions of one multifunction device (0000:01:00), ACS unknown (config not readable)"
        )
    );
    // functions with ACS share for a reason sysfs does not show
    map.add_device(Device {
        acs: Acs::Enabled,
        ..dev("0000:01:00.0", 12, None)
    });
    map.add_device(Device {
        acs: Acs::Enabled,
        ..dev("0000:01:00.1", 12, None)
    });
    assert_eq!(map.why_shared(12), None);
}

#[test]
fn owner_and_verdict_serialize_lowercase() {
    let v = Policy::default()
        .verdict(&gpu_audio_split(), 12)
        .expect("group 12");
    let json = serde_json::to_value(&v).expect("json");
    assert_eq!(json["owner"], "kernel");
    assert_eq!(json["viable"], false);
    assert_eq!(
        serde_json::to_value(Owner::Conflict).expect("json"),
        "conflict"
    );
}
