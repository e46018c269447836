//! The kernel's protection maps, kept equal to a desired [`Content`] with as few syscalls as
//! possible: the agent mirrors what it wrote and applies only the difference. The state maps
//! the eBPF programs change (GROUPS, RDEV_OPENS) are written only to seed a first start.
use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData};
use iommu_enforcer_common::{
    config, names, DeviceInfo, ExeKey, GroupState, WatchedFile, ADDR_LEN, DRIVER_KEY_LEN,
    MAX_GROUPS,
};
use log::warn;

use super::kernel_state::Content;
use crate::bpf::loader::{LoadError, Loaded};

pub struct KernelMaps {
    topology: HashMap<MapData, [u8; ADDR_LEN], DeviceInfo>,
    slots: HashMap<MapData, [u8; ADDR_LEN], DeviceInfo>,
    user_drivers: HashMap<MapData, [u8; DRIVER_KEY_LEN], u32>,
    group_rdev: HashMap<MapData, u32, u32>,
    node_group: HashMap<MapData, u32, u32>,
    reserved: HashMap<MapData, u32, u32>,
    vfio_deny: HashMap<MapData, u32, WatchedFile>,
    trusted_exe: HashMap<MapData, ExeKey, u8>,
    trusted_cgroup: HashMap<MapData, u64, u8>,
    config: Array<MapData, u32>,
    groups: Array<MapData, GroupState>,
    rdev_opens: HashMap<MapData, u32, i32>,
    seeded_opens: HashMap<MapData, u32, i32>,
    applied: Content,
    /// Whether the topology maps were ever written by this agent (an adopted map holds the
    /// previous agent's entries, which the first sync replaces whole).
    synced: bool,
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    loaded: &mut Loaded,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, LoadError> {
    let map = loaded.take_map(name).ok_or(LoadError::MissingMap(name))?;
    HashMap::try_from(map).map_err(|e| LoadError::Map(name, e))
}

fn take_array<V: aya::Pod>(
    loaded: &mut Loaded,
    name: &'static str,
) -> Result<Array<MapData, V>, LoadError> {
    let map = loaded.take_map(name).ok_or(LoadError::MissingMap(name))?;
    Array::try_from(map).map_err(|e| LoadError::Map(name, e))
}

impl KernelMaps {
    pub fn take(loaded: &mut Loaded) -> Result<Self, LoadError> {
        Ok(Self {
            topology: take_hash(loaded, names::TOPOLOGY)?,
            slots: take_hash(loaded, names::SLOTS)?,
            user_drivers: take_hash(loaded, names::USER_DRIVERS)?,
            group_rdev: take_hash(loaded, names::GROUP_RDEV)?,
            node_group: take_hash(loaded, names::NODE_GROUP)?,
            reserved: take_hash(loaded, names::RESERVED)?,
            vfio_deny: take_hash(loaded, names::VFIO_DENY)?,
            trusted_exe: take_hash(loaded, names::TRUSTED_EXE)?,
            trusted_cgroup: take_hash(loaded, names::TRUSTED_CGROUP)?,
            config: take_array(loaded, names::CONFIG)?,
            groups: take_array(loaded, names::GROUPS)?,
            rdev_opens: take_hash(loaded, names::RDEV_OPENS)?,
            seeded_opens: take_hash(loaded, names::SEEDED_OPENS)?,
            applied: Content::default(),
            synced: false,
        })
    }

    /// A first start: the state the programs will keep from now on.
    pub fn seed(&mut self, groups: &BTreeMap<u32, GroupState>, opens: &BTreeMap<u32, i32>) {
        for (g, st) in groups {
            if let Err(e) = self.groups.set((*g).min(MAX_GROUPS - 1), *st, 0) {
                warn!("seeding group {g}: {e}");
            }
        }
        // Opens that predate the hooks: the release kprobe uncounts them (the file hooks
        // never saw these files).
        for (rdev, n) in opens {
            if let Err(e) = self.seeded_opens.insert(*rdev, *n, 0) {
                warn!("seeding VFIO opens of {rdev:#x}: {e}");
            }
        }
    }

    /// The protection state the programs keep, for the agent's own view and reports.
    pub fn group_state(&self, group: u32) -> GroupState {
        self.groups
            .get(&group.min(MAX_GROUPS - 1), 0)
            .unwrap_or_default()
    }

    pub fn opens(&self, rdev: u32) -> i32 {
        let counted = self.rdev_opens.get(&rdev, 0).unwrap_or(0);
        let seeded = self.seeded_opens.get(&rdev, 0).unwrap_or(0);
        counted.max(0) + seeded.max(0)
    }

    /// Whether user space uses `group`, by the rule the eBPF programs veto by
    /// (`ebpf/src/state.rs`, `group_in_use`): a claim, an open node, or, where opens are not
    /// counted or the node is not named yet, a member on a user driver.
    pub fn in_use(&self, group: u32) -> bool {
        let rdev = self.group_rdev.get(&group, 0).ok();
        let counted = self.config.get(&config::USE_COUNTED, 0).unwrap_or(0) != 0;
        let opens = rdev.map_or(0, |r| self.opens(r));
        super::kernel_state::in_use(self.group_state(group), rdev.is_some(), opens, counted)
    }

    /// Makes the maps hold `want`. A failed update is logged and retried on the next call.
    pub fn sync(&mut self, want: &Content) {
        if !self.synced {
            // Adopted maps: forget what the previous agent wrote by reading it back as ours.
            self.applied.topology = read_all(&self.topology);
            self.applied.slots = read_all(&self.slots);
            self.applied.user_drivers = read_all(&self.user_drivers);
            self.applied.group_rdev = read_all(&self.group_rdev);
            self.applied.node_group = read_all(&self.node_group);
            self.applied.reserved = read_all(&self.reserved);
            self.applied.vfio_deny = read_all(&self.vfio_deny);
            self.applied.trusted_exe = read_all(&self.trusted_exe)
                .into_iter()
                .map(|(k, v): (ExeKey, u8)| ((k.dev, k.ino), v))
                .collect();
            self.applied.trusted_cgroups = read_all(&self.trusted_cgroup);
            self.synced = true;
        } else {
            // The programs forget a group's node when VFIO creates it anew: read back what
            // they left, so a forgotten entry is written again.
            self.applied.group_rdev = read_all(&self.group_rdev);
        }
        // Entries first, the counts and switches that make the hooks read them last.
        sync_one(
            &mut self.topology,
            &mut self.applied.topology,
            &want.topology,
            |k| *k,
        );
        sync_one(&mut self.slots, &mut self.applied.slots, &want.slots, |k| {
            *k
        });
        sync_one(
            &mut self.user_drivers,
            &mut self.applied.user_drivers,
            &want.user_drivers,
            |k| *k,
        );
        sync_one(
            &mut self.node_group,
            &mut self.applied.node_group,
            &want.node_group,
            |k| *k,
        );
        sync_one(
            &mut self.group_rdev,
            &mut self.applied.group_rdev,
            &want.group_rdev,
            |k| *k,
        );
        sync_one(
            &mut self.vfio_deny,
            &mut self.applied.vfio_deny,
            &want.vfio_deny,
            |k| *k,
        );
        sync_one(
            &mut self.trusted_exe,
            &mut self.applied.trusted_exe,
            &want.trusted_exe,
            |&(dev, ino)| ExeKey { dev, ino },
        );
        sync_one(
            &mut self.trusted_cgroup,
            &mut self.applied.trusted_cgroups,
            &want.trusted_cgroups,
            |k| *k,
        );
        sync_one(
            &mut self.reserved,
            &mut self.applied.reserved,
            &want.reserved,
            |k| *k,
        );
        if self.applied.config != want.config {
            let mut ok = true;
            for (i, v) in want.config.iter().enumerate() {
                // `enforcer detach` names itself there while it removes the pins.
                if i as u32 == config::DETACH_TGID {
                    continue;
                }
                if let Err(e) = self.config.set(i as u32, *v, 0) {
                    warn!("CONFIG[{i}]: {e}");
                    ok = false;
                }
            }
            if ok {
                self.applied.config = want.config;
            }
        }
    }
}

fn read_all<K: aya::Pod + Ord, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> BTreeMap<K, V> {
    map.iter().filter_map(Result::ok).collect()
}

fn sync_one<K: Ord + Clone + std::fmt::Debug, BK: aya::Pod, V: aya::Pod + PartialEq>(
    map: &mut HashMap<MapData, BK, V>,
    applied: &mut BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    key: impl Fn(&K) -> BK,
) {
    // Inserts before removals: an entry that moves is never missing in between.
    for (k, v) in want {
        if applied.get(k) == Some(v) {
            continue;
        }
        match map.insert(key(k), *v, 0) {
            Ok(()) => {
                applied.insert(k.clone(), *v);
            }
            Err(e) => warn!("kernel map: inserting {k:?}: {e}"),
        }
    }
    let stale: Vec<K> = applied
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        match map.remove(&key(&k)) {
            Ok(()) => {
                applied.remove(&k);
            }
            Err(e) => warn!("kernel map: removing {k:?}: {e}"),
        }
    }
}
