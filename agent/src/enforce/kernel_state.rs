//! What the agent loads into the kernel's protection maps: the topology (every device's group,
//! the groups below each bridge and slot) and the policy (which drivers
//! are user drivers or allowed, what is reserved, which VFIO nodes may not be opened). Pure:
//! computed from the group map, the policy and a few sysfs facts read by the caller. Whether a
//! group is held is never decided here: the eBPF programs keep that themselves.
use std::collections::{BTreeMap, BTreeSet};

use iommu_enforcer_common::{
    config, driver_class, DeviceInfo, GroupState, WatchedFile, ADDR_LEN, DRIVER_KEY_LEN, MAX_BELOW,
};

use crate::{
    model::{driver::is_user_driver, GroupMap},
    pci::DriverName,
    policy::Policy,
};

/// The desired content of the agent-written maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub topology: BTreeMap<[u8; ADDR_LEN], DeviceInfo>,
    pub slots: BTreeMap<[u8; ADDR_LEN], DeviceInfo>,
    pub user_drivers: BTreeMap<[u8; DRIVER_KEY_LEN], u32>,
    pub group_rdev: BTreeMap<u32, u32>,
    /// The inverse: a VFIO node's dev_t -> its group.
    pub node_group: BTreeMap<u32, u32>,
    pub reserved: BTreeMap<u32, u32>,
    pub vfio_deny: BTreeMap<u32, WatchedFile>,
    pub trusted_exe: BTreeMap<(u64, u64), u8>,
    /// cgroup ids of the containers the policy trusts.
    pub trusted_cgroups: BTreeMap<u64, u8>,
    pub config: [u32; config::LEN as usize],
}

/// What the caller read from sysfs and /dev besides the group map.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    /// Hotplug slot name -> its address (`DDDD:BB:DD`).
    pub slots: BTreeMap<String, String>,
    /// PCI drivers registered now (`/sys/bus/pci/drivers`).
    pub drivers: BTreeSet<DriverName>,
    /// Group -> kernel dev_t of `/dev/vfio/<group>`.
    pub group_nodes: BTreeMap<u32, u32>,
}

/// How VFIO opens are counted in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenCount {
    /// The major of VFIO group nodes (/proc/devices), 0 when vfio is not loaded.
    pub vfio_major: u32,
    /// The LSM file hooks run and count them: a group bound to a user driver but not open
    /// is idle.
    pub counted: bool,
    /// The kernel dev_t of the bpffs holding the pins (0: nothing pinned), which the hooks
    /// guard. Carried here with the other switches of `CONFIG`.
    pub pin_dev: u32,
    /// Inode numbers of the pin root, its maps and its links directories.
    pub pin_dirs: [u32; 3],
    /// The major of VFIO cdevs (`vfio-dev`), `u32::MAX` where vfio is loaded without them, 0
    /// while vfio is not loaded (the hooks then look every device node up).
    pub vfio_dev_major: u32,
    /// The write-time program is attached (`enforce::write_check`).
    pub write_armed: bool,
}

/// Whether user space uses a group, by the rule the eBPF programs veto by
/// (`ebpf/src/state.rs`, `group_in_use`): a claim, an open of its node (`opens`, when the
/// node's dev_t is named), or a member on a user driver where opens are not counted or the
/// node is not named yet (fail closed).
pub fn in_use(state: GroupState, node_named: bool, opens: i32, counted: bool) -> bool {
    if state.claims != 0 {
        return true;
    }
    let bound = state.user_bound != 0;
    if !node_named {
        return bound;
    }
    (bound && !counted) || opens != 0
}

/// The major of VFIO group nodes, from /proc/devices' `vfio` line (vfio's cdevs are
/// `vfio-dev`).
pub fn vfio_major(proc_devices: &str) -> Option<u32> {
    let chars = proc_devices.split("Block devices:").next()?;
    chars.lines().find_map(|l| {
        let (major, name) = l.trim().split_once(' ')?;
        (name.trim() == "vfio")
            .then(|| major.parse().ok())
            .flatten()
    })
}

/// The `CONFIG[VFIO_DEV_MAJOR]` value: `vfio-dev`'s major, `u32::MAX` when vfio is loaded
/// (`group_major` known) without cdevs, 0 while nothing is known.
pub fn vfio_dev_major(proc_devices: &str, group_major: u32) -> u32 {
    let chars = proc_devices.split("Block devices:").next().unwrap_or("");
    let found = chars.lines().find_map(|l| {
        let (major, name) = l.trim().split_once(' ')?;
        (name.trim() == "vfio-dev")
            .then(|| major.parse().ok())
            .flatten()
    });
    match found {
        Some(m) => m,
        None if group_major != 0 => u32::MAX,
        None => 0,
    }
}

/// A name as the hooks compare it: its bytes, NUL padded (and cut to fit).
pub fn key<const N: usize>(name: &str) -> [u8; N] {
    crate::pci::padded(name)
}

/// Drivers that are always in the driver map: the user driver and the two that manage DMA.
const ALWAYS: [&str; 3] = ["vfio-pci", "pci-stub", "pcieport"];

fn info(group: u32, below: &BTreeSet<u32>) -> DeviceInfo {
    let mut d = DeviceInfo {
        group,
        nbelow: below.len() as u32,
        below: [0; MAX_BELOW],
    };
    for (slot, g) in d.below.iter_mut().zip(below) {
        *slot = *g;
    }
    d
}

impl Content {
    pub fn compute(map: &GroupMap, policy: &Policy, facts: &NodeFacts) -> Content {
        let mut c = Content::default();
        // Groups below each device: every device lists its upstream bridges in `parents`.
        let mut below: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for dev in map.devices() {
            for parent in &dev.parents {
                below.entry(parent.as_str()).or_default().insert(dev.group);
            }
        }
        let empty = BTreeSet::new();
        for dev in map.devices() {
            let mut groups = below.get(dev.address.as_str()).unwrap_or(&empty).clone();
            groups.remove(&dev.group);
            c.topology
                .insert(key(&dev.address), info(dev.group, &groups));
        }
        for (slot, address) in &facts.slots {
            // The slot's functions and everything below them.
            let prefix = format!("{address}.");
            let mut groups = BTreeSet::new();
            for dev in map.devices() {
                let in_slot = dev.address.starts_with(&prefix);
                let under = dev.parents.iter().any(|p| p.starts_with(&prefix));
                if in_slot || under {
                    groups.insert(dev.group);
                }
            }
            c.slots.insert(key(slot), info(u32::MAX, &groups));
        }
        let always: Vec<DriverName> = ALWAYS
            .into_iter()
            .filter_map(|d| DriverName::parse(d).ok())
            .collect();
        let mut drivers: BTreeSet<&DriverName> = facts.drivers.iter().collect();
        drivers.extend(&always);
        drivers.extend(&policy.allowed_drivers);
        // A denied variant (`*_vfio_pci`) gets its entry (USER, not ALLOWED): without one the
        // hooks would class it by name as an allowed user driver.
        drivers.extend(&policy.denied_drivers);
        for d in drivers {
            let mut flags = 0;
            if is_user_driver(d.as_str()) {
                flags |= driver_class::USER;
            }
            if policy.allows(d.as_str()) {
                flags |= driver_class::ALLOWED;
            }
            if flags != 0 {
                c.user_drivers.insert(d.key(), flags);
            }
        }
        c.group_rdev = facts.group_nodes.clone();
        c.node_group = facts.group_nodes.iter().map(|(g, r)| (*r, *g)).collect();
        c
    }

    /// Finishes the content with what the enforcer decided and knows about itself.
    pub fn set_config(
        &mut self,
        agent_tgid: u32,
        dry_run: bool,
        protect_user: bool,
        opens: OpenCount,
    ) {
        let mut cfg = [0u32; config::LEN as usize];
        cfg[config::AGENT_TGID as usize] = agent_tgid;
        cfg[config::DRY_RUN as usize] = u32::from(dry_run);
        cfg[config::PROTECT_USER as usize] = u32::from(protect_user);
        cfg[config::VFIO_MAJOR as usize] = opens.vfio_major;
        cfg[config::USE_COUNTED as usize] = u32::from(opens.counted);
        cfg[config::VFIO_DEV_MAJOR as usize] = opens.vfio_dev_major;
        cfg[config::WRITE_ARMED as usize] = u32::from(opens.write_armed);
        cfg[config::PIN_DEV as usize] = opens.pin_dev;
        for (slot, ino) in config::PIN_DIRS.iter().zip(opens.pin_dirs) {
            cfg[*slot as usize] = ino;
        }
        cfg[config::RESERVED as usize] = self.reserved.len() as u32;
        cfg[config::LOADED as usize] = 1;
        self.config = cfg;
    }
}

/// The protection state a first agent seeds when no earlier one left it pinned: members on
/// user drivers (sysfs), and on 5.19+ one claim per group that a VFIO holder keeps open.
/// Later changes come from the eBPF programs alone.
pub fn seed(map: &GroupMap, claims_exist: bool) -> BTreeMap<u32, GroupState> {
    let mut out: BTreeMap<u32, GroupState> = BTreeMap::new();
    for dev in map.devices() {
        if dev.driver.as_deref().is_some_and(is_user_driver) {
            out.entry(dev.group).or_default().user_bound += 1;
        }
    }
    if claims_exist {
        for group in map.groups() {
            if map.holders(group.id).next().is_some() {
                out.entry(group.id).or_default().claims = 1;
            }
        }
    }
    out
}

/// Open VFIO group files per node (dev_t) at first start, from the holders /proc showed.
pub fn seed_opens(map: &GroupMap, group_nodes: &BTreeMap<u32, u32>) -> BTreeMap<u32, i32> {
    let mut out = BTreeMap::new();
    for group in map.groups() {
        let Some(rdev) = group_nodes.get(&group.id) else {
            continue;
        };
        let n = map.holders(group.id).filter(|h| h.device.is_none()).count() as i32;
        if n > 0 {
            out.insert(*rdev, n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Device;

    #[test]
    fn use_is_a_claim_or_an_open_and_fails_closed_where_opens_are_not_known() {
        let bound = GroupState {
            user_bound: 1,
            claims: 0,
        };
        let claimed = GroupState {
            user_bound: 0,
            claims: 1,
        };
        assert!(in_use(claimed, true, 0, true), "a claim is use");
        assert!(
            !in_use(bound, true, 0, true),
            "bound, node named, not open: idle"
        );
        assert!(in_use(bound, true, 1, true), "open: in use");
        assert!(
            in_use(bound, false, 0, true),
            "node not named yet: fail closed"
        );
        assert!(
            in_use(bound, true, 0, false),
            "opens not counted (no BPF LSM): bound is use"
        );
        assert!(
            in_use(GroupState::default(), true, 1, true),
            "an open file outlives its members"
        );
        assert!(!in_use(GroupState::default(), false, 0, false));
    }

    #[test]
    fn the_vfio_major_is_the_character_device_named_vfio() {
        let devices = "Character devices:\n  1 mem\n 10 misc\n241 vfio-dev\n242 vfio\n\nBlock devices:\n242 vfio\n";
        assert_eq!(vfio_major(devices), Some(242));
        assert_eq!(vfio_major("Character devices:\n  1 mem\n"), None);
        assert_eq!(vfio_dev_major(devices, 242), 241);
        let without_cdevs = "Character devices:\n 1 mem\n242 vfio\n";
        assert_eq!(vfio_dev_major(without_cdevs, 242), u32::MAX);
        assert_eq!(vfio_dev_major("Character devices:\n  1 mem\n", 0), 0);
    }

    /// A root port 00:1c.0 with a switch below it whose downstream port 02:00.0 shares group 5
    /// with its device 03:00.0; a two-function device 05:00.0/.1 in group 7 on slot "3".
    fn node() -> GroupMap {
        let mut map = GroupMap::new();
        let mut rp = Device::new("0000:00:1c.0", 2);
        rp.bridge = true;
        map.add_device(rp);
        let mut up = Device::new("0000:01:00.0", 4);
        up.parents = vec!["0000:00:1c.0".into()];
        map.add_device(up);
        let mut down = Device::new("0000:02:00.0", 5);
        down.parents = vec!["0000:00:1c.0".into(), "0000:01:00.0".into()];
        map.add_device(down);
        let mut dev = Device::new("0000:03:00.0", 5);
        dev.parents = vec![
            "0000:00:1c.0".into(),
            "0000:01:00.0".into(),
            "0000:02:00.0".into(),
        ];
        dev.vendor = Some(0x8086);
        dev.device = Some(0x100e);
        dev.driver = Some("vfio-pci".into());
        map.add_device(dev);
        for f in ["0000:05:00.0", "0000:05:00.1"] {
            let mut d = Device::new(f, 7);
            d.parents = vec!["0000:00:1d.0".into()];
            map.add_device(d);
        }
        map
    }

    #[test]
    fn bridges_and_slots_list_the_groups_below_them() {
        let facts = NodeFacts {
            slots: BTreeMap::from([("3".to_string(), "0000:05:00".to_string())]),
            ..NodeFacts::default()
        };
        let c = Content::compute(&node(), &Policy::default(), &facts);
        let rp = c.topology[&key("0000:00:1c.0")];
        assert_eq!((rp.group, rp.nbelow), (2, 2));
        assert_eq!(&rp.below[..2], &[4, 5]);
        // The downstream port's own group is not "below" it.
        assert_eq!(c.topology[&key("0000:02:00.0")].nbelow, 0);
        let slot = c.slots[&key("3")];
        assert_eq!((slot.group, slot.nbelow, slot.below[0]), (u32::MAX, 1, 7));
    }

    #[test]
    fn drivers_are_classed_from_the_policy() {
        let policy = Policy::parse(
            "allowed_drivers = [\"nvidia\"]\ndenied_drivers = [\"pcieport\"]\n",
            std::path::Path::new("p.toml"),
        )
        .expect("policy");
        let facts = NodeFacts {
            drivers: BTreeSet::from([
                crate::pci::driver("e1000"),
                crate::pci::driver("mlx5_vfio_pci"),
            ]),
            ..NodeFacts::default()
        };
        let c = Content::compute(&node(), &policy, &facts);
        let both = driver_class::USER | driver_class::ALLOWED;
        assert_eq!(c.user_drivers.get(&key("vfio-pci")), Some(&both));
        assert_eq!(c.user_drivers.get(&key("mlx5_vfio_pci")), Some(&both));
        assert_eq!(
            c.user_drivers.get(&key("nvidia")),
            Some(&driver_class::ALLOWED)
        );
        assert_eq!(
            c.user_drivers.get(&key("pci-stub")),
            Some(&driver_class::ALLOWED)
        );
        assert!(!c.user_drivers.contains_key(&key::<DRIVER_KEY_LEN>("e1000")));
        assert!(!c
            .user_drivers
            .contains_key(&key::<DRIVER_KEY_LEN>("pcieport")));
    }

    /// A variant not loaded yet is classed by the hooks by its name (user, allowed); one the
    /// policy denies must then be in the map, user but not allowed, so the entry wins.
    #[test]
    fn a_denied_variant_is_in_the_map_unloaded_or_not() {
        let policy = Policy::parse(
            "denied_drivers = [\"shpchp\", \"nvgrace_gpu_vfio_pci\"]\n",
            std::path::Path::new("p.toml"),
        )
        .expect("policy");
        let c = Content::compute(&node(), &policy, &NodeFacts::default());
        assert_eq!(
            c.user_drivers.get(&key("nvgrace_gpu_vfio_pci")),
            Some(&driver_class::USER)
        );
        assert!(!c
            .user_drivers
            .contains_key(&key::<DRIVER_KEY_LEN>("shpchp")));
        assert!(!c
            .user_drivers
            .contains_key(&key::<DRIVER_KEY_LEN>("mlx5_vfio_pci")));
        assert!(iommu_enforcer_common::is_user_driver_key(&key(
            "mlx5_vfio_pci"
        )));
    }

    #[test]
    fn first_start_seeds_user_bound_members() {
        let seeded = seed(&node(), true);
        assert_eq!(seeded.get(&5).map(|s| s.user_bound), Some(1));
        assert!(!seeded.contains_key(&7));
    }
}
