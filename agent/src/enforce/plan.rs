//! What enforcement should look like for a group map under a policy. Pure: the daemon turns
//! a [`Plan`] into BPF map entries and sysfs writes.
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    model::{driver::is_user_driver, GroupMap, Owner},
    policy::{intended_driver, reserved_groups, Intended, Policy},
};

/// A member of a protected group: its writes are watched and its group kept viable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    pub group: u32,
    pub vendor: Option<u16>,
    pub device: Option<u16>,
}

/// What to do about one member's `driver_override` and driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Write the intended value to `driver_override`; `probe` when a reserved member is unbound
    /// and meant for a driver, so it binds to it now rather than at the next rescan.
    Pin {
        group: u32,
        device: String,
        value: String,
        probe: bool,
    },
    /// The member sits on another driver: pin, unbind it, and probe it again.
    Rebind {
        group: u32,
        device: String,
        value: String,
        from: String,
    },
    /// The member sits on another driver and the policy does not allow moving it.
    Blocked {
        group: u32,
        device: String,
        value: String,
        from: String,
    },
}

impl Reservation {
    pub fn device(&self) -> &str {
        match self {
            Self::Pin { device, .. }
            | Self::Rebind { device, .. }
            | Self::Blocked { device, .. } => device,
        }
    }

    pub fn group(&self) -> u32 {
        match self {
            Self::Pin { group, .. } | Self::Rebind { group, .. } | Self::Blocked { group, .. } => {
                *group
            }
        }
    }

    /// The `driver_override` the reservation wants.
    pub fn value(&self) -> &str {
        match self {
            Self::Pin { value, .. } | Self::Rebind { value, .. } | Self::Blocked { value, .. } => {
                value
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Members of reserved groups and (with `protect_user_groups`) of user-owned groups.
    pub protected: BTreeMap<String, Protected>,
    /// Groups whose VFIO nodes must not be opened: not viable under the policy.
    pub not_viable: BTreeSet<u32>,
    pub reservations: Vec<Reservation>,
    /// Groups the policy reserves.
    pub reserved: BTreeSet<u32>,
}

/// Groups user space uses as the group map shows them: a VFIO holder or a claim. (The daemon
/// passes the kernel's own count instead, which also sees descriptors no /proc scan shows.)
pub fn in_use_by_model(map: &GroupMap) -> BTreeSet<u32> {
    map.groups()
        .filter(|g| map.holders(g.id).next().is_some() || map.is_claimed(g.id))
        .map(|g| g.id)
        .collect()
}

impl Plan {
    /// The plan with use as the group map shows it ([`in_use_by_model`]).
    pub fn compute(map: &GroupMap, policy: &Policy) -> Self {
        Self::compute_with(map, policy, &in_use_by_model(map))
    }

    /// Reserved groups are protected always; user-owned ones (with `protect_user_groups`)
    /// while they are `in_use`: an idle group may be handed back to the host.
    pub fn compute_with(map: &GroupMap, policy: &Policy, in_use: &BTreeSet<u32>) -> Self {
        let reserved = reserved_groups(map, policy);
        let mut plan = Plan {
            reserved: reserved.clone(),
            ..Plan::default()
        };
        for group in map.groups() {
            let verdict = policy.verdict(map, group.id);
            if verdict.as_ref().is_some_and(|v| !v.viable) {
                plan.not_viable.insert(group.id);
            }
            // A member on vfio-pci makes the group user space's before any VM claims it: the
            // eBPF programs protect it from that bind on, and the pins follow at once.
            let user_owned = matches!(
                verdict.map(|v| v.owner),
                Some(Owner::User | Owner::Conflict)
            ) || group
                .devices
                .values()
                .any(|d| d.driver.as_deref().is_some_and(is_user_driver));
            let used = user_owned && in_use.contains(&group.id);
            if !(reserved.contains(&group.id) || (policy.protect_user_groups && used)) {
                continue;
            }
            for dev in group.devices.values() {
                plan.protected.insert(
                    dev.address.clone(),
                    Protected {
                        group: group.id,
                        vendor: dev.vendor,
                        device: dev.device,
                    },
                );
                let Some(intended) = intended_driver(map, policy, &dev.address) else {
                    continue;
                };
                let value = intended.driver_override().to_string();
                let on_other = match (&intended, dev.driver.as_deref()) {
                    (_, None) => None,
                    (Intended::Driver(want), Some(have)) if want.as_str() == have => None,
                    (_, Some(have)) => Some(have.to_string()),
                };
                let (group, device) = (group.id, dev.address.clone());
                match on_other {
                    Some(from) => {
                        let rebind = policy.reservation_of(dev).is_some_and(|r| r.rebind)
                            || group_rebinds(map, policy, group);
                        plan.reservations.push(if rebind {
                            Reservation::Rebind {
                                group,
                                device,
                                value,
                                from,
                            }
                        } else {
                            Reservation::Blocked {
                                group,
                                device,
                                value,
                                from,
                            }
                        });
                    }
                    None if dev.driver_override.as_deref() != Some(value.as_str()) => {
                        // Reserved members are readied for passthrough; members of a group that
                        // is merely user-owned are pinned and otherwise left as they are.
                        let probe = dev.driver.is_none()
                            && matches!(intended, Intended::Driver(_))
                            && reserved.contains(&group);
                        plan.reservations.push(Reservation::Pin {
                            group,
                            device,
                            value,
                            probe,
                        });
                    }
                    None => {}
                }
            }
        }
        plan
    }
}

/// Whether a reservation selecting some member of the group asks for rebinding (companions
/// follow the reservation of their group).
fn group_rebinds(map: &GroupMap, policy: &Policy, group: u32) -> bool {
    map.group(group).is_some_and(|g| {
        g.devices
            .values()
            .any(|d| policy.reservation_of(d).is_some_and(|r| r.rebind))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Holder};

    /// GPU on vfio-pci and its audio function on snd_hda_intel, group 12.
    fn split_gpu() -> GroupMap {
        let mut map = GroupMap::new();
        let mut gpu = Device::new("0000:01:00.0", 12);
        gpu.driver = Some("vfio-pci".into());
        gpu.vendor = Some(0x10de);
        gpu.device = Some(0x2204);
        let mut audio = Device::new("0000:01:00.1", 12);
        audio.driver = Some("snd_hda_intel".into());
        audio.vendor = Some(0x10de);
        audio.device = Some(0x1aef);
        map.add_device(gpu);
        map.add_device(audio);
        map.add_device(Device::new("0000:02:00.0", 13));
        map
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, std::path::Path::new("test.toml")).expect("valid policy")
    }

    #[test]
    fn nothing_protected_without_reservations_or_user_groups() {
        let mut map = split_gpu();
        map.set_driver("0000:01:00.0", None);
        let plan = Plan::compute(&map, &Policy::default());
        assert!(plan.protected.is_empty());
        assert!(plan.reservations.is_empty());
    }

    #[test]
    fn a_group_on_vfio_pci_is_protected_only_while_in_use() {
        let idle = Plan::compute_with(&split_gpu(), &Policy::default(), &BTreeSet::new());
        assert!(idle.protected.is_empty(), "idle: may be handed back");
        assert!(idle.reservations.is_empty(), "idle: nothing pinned");
        assert_eq!(idle.not_viable, BTreeSet::from([12]), "still not viable");
        let plan = Plan::compute_with(&split_gpu(), &Policy::default(), &BTreeSet::from([12]));
        assert_eq!(
            plan.protected.keys().collect::<Vec<_>>(),
            ["0000:01:00.0", "0000:01:00.1"]
        );
        assert_eq!(plan.not_viable, BTreeSet::from([12]));
        assert!(matches!(
            &plan.reservations[0],
            Reservation::Pin { device, value, .. } if device == "0000:01:00.0" && value == "vfio-pci"
        ));
    }

    #[test]
    fn reserved_group_pins_and_reports_the_companion_on_a_kernel_driver() {
        let plan = Plan::compute(&split_gpu(), &policy("[[reserve]]\ngroup = 12\n"));
        assert_eq!(plan.protected.len(), 2);
        assert_eq!(plan.protected["0000:01:00.1"].device, Some(0x1aef));
        assert_eq!(
            plan.reservations,
            [
                Reservation::Pin {
                    group: 12,
                    device: "0000:01:00.0".into(),
                    value: "vfio-pci".into(),
                    probe: false
                },
                Reservation::Blocked {
                    group: 12,
                    device: "0000:01:00.1".into(),
                    value: "vfio-pci".into(),
                    from: "snd_hda_intel".into()
                },
            ]
        );
    }

    #[test]
    fn unbound_reserved_members_are_probed_onto_their_driver() {
        let mut map = split_gpu();
        map.set_driver("0000:01:00.0", None);
        let plan = Plan::compute(&map, &policy("[[reserve]]\ngroup = 12\n"));
        assert!(matches!(
            &plan.reservations[0],
            Reservation::Pin { probe: true, .. }
        ));
        let none = policy("[[reserve]]\ndevice = \"0000:01:00.0\"\ndriver = \"none\"\n");
        let plan = Plan::compute(&map, &none);
        assert!(
            matches!(&plan.reservations[0], Reservation::Pin { probe: false, value, .. } if value == "none")
        );
    }

    #[test]
    fn rebind_when_the_policy_says_so() {
        let plan = Plan::compute(
            &split_gpu(),
            &policy("[[reserve]]\ngroup = 12\nrebind = true\n"),
        );
        assert!(
            matches!(&plan.reservations[1], Reservation::Rebind { from, .. } if from == "snd_hda_intel")
        );
    }

    #[test]
    fn user_owned_group_is_protected_and_pinned_once() {
        let mut map = GroupMap::new();
        let mut gpu = Device::new("0000:01:00.0", 12);
        gpu.driver = Some("vfio-pci".into());
        map.add_device(gpu);
        map.add_device(Device::new("0000:01:00.1", 12));
        map.set_holders(vec![Holder {
            pid: 7,
            comm: "qemu".into(),
            fd: Some(3),
            path: "/dev/vfio/12".into(),
            group: Some(12),
            device: None,
            pod: None,
        }]);
        let plan = Plan::compute(&map, &Policy::default());
        assert_eq!(
            plan.protected.keys().collect::<Vec<_>>(),
            ["0000:01:00.0", "0000:01:00.1"]
        );
        assert_eq!(plan.reservations.len(), 2, "{:?}", plan.reservations);
        assert!(
            matches!(&plan.reservations[1], Reservation::Pin { value, probe: false, .. } if value == "vfio-pci"),
            "the unbound companion is pinned to the group's user driver, not bound: {:?}",
            plan.reservations[1]
        );
        map.set_driver_override("0000:01:00.0", Some("vfio-pci"));
        map.set_driver_override("0000:01:00.1", Some("vfio-pci"));
        assert!(Plan::compute(&map, &Policy::default())
            .reservations
            .is_empty());
        let off = policy("protect_user_groups = false\n");
        assert!(Plan::compute(&map, &off).protected.is_empty());
    }
}
