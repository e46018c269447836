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

    /// One `CONFIG` slot as the kernel holds it.
    pub fn config_slot(&self, slot: u32) -> Option<u32> {
        self.config.get(&slot, 0).ok()
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
            // The programs name VFIO nodes themselves: read back what they wrote.
            self.applied.group_rdev = read_all(&self.group_rdev);
            self.applied.node_group = read_all(&self.node_group);
        }
        // Every map's inserts, then the switches, then every map's removals ([`steps`]).
        let mut failed_inserts = 0;
        for step in steps(&self.applied, want) {
            match step {
                Step::Insert(entry) => {
                    if !self.insert(entry, want) {
                        failed_inserts += 1;
                    }
                }
                Step::Remove(entry) => self.remove(entry),
                Step::Config(cfg) => self.set_config(&cfg),
            }
        }
        if failed_inserts > 0 {
            warn!("kernel maps: {failed_inserts} entries not written; retried at the next pass");
        }
    }

    /// Writes `want`'s value of `entry`; whether it went in.
    fn insert(&mut self, entry: Entry, want: &Content) -> bool {
        let a = &mut self.applied;
        match entry {
            Entry::Topology(k) => put(&mut self.topology, &mut a.topology, &want.topology, k, k),
            Entry::Slots(k) => put(&mut self.slots, &mut a.slots, &want.slots, k, k),
            Entry::UserDrivers(k) => put(
                &mut self.user_drivers,
                &mut a.user_drivers,
                &want.user_drivers,
                k,
                k,
            ),
            Entry::NodeGroup(k) => put(
                &mut self.node_group,
                &mut a.node_group,
                &want.node_group,
                k,
                k,
            ),
            Entry::TrustedCgroup(k) => put(
                &mut self.trusted_cgroup,
                &mut a.trusted_cgroups,
                &want.trusted_cgroups,
                k,
                k,
            ),
            Entry::GroupRdev(k) => put(
                &mut self.group_rdev,
                &mut a.group_rdev,
                &want.group_rdev,
                k,
                k,
            ),
            Entry::VfioDeny(k) => put(&mut self.vfio_deny, &mut a.vfio_deny, &want.vfio_deny, k, k),
            Entry::TrustedExe(k) => put(
                &mut self.trusted_exe,
                &mut a.trusted_exe,
                &want.trusted_exe,
                k,
                ExeKey { dev: k.0, ino: k.1 },
            ),
            Entry::Reserved(k) => put(&mut self.reserved, &mut a.reserved, &want.reserved, k, k),
        }
    }

    fn remove(&mut self, entry: Entry) {
        let a = &mut self.applied;
        match entry {
            Entry::Topology(k) => take(&mut self.topology, &mut a.topology, k, k),
            Entry::Slots(k) => take(&mut self.slots, &mut a.slots, k, k),
            Entry::UserDrivers(k) => take(&mut self.user_drivers, &mut a.user_drivers, k, k),
            Entry::NodeGroup(k) => take(&mut self.node_group, &mut a.node_group, k, k),
            Entry::TrustedCgroup(k) => take(&mut self.trusted_cgroup, &mut a.trusted_cgroups, k, k),
            Entry::GroupRdev(k) => take(&mut self.group_rdev, &mut a.group_rdev, k, k),
            Entry::VfioDeny(k) => take(&mut self.vfio_deny, &mut a.vfio_deny, k, k),
            Entry::TrustedExe(k) => take(
                &mut self.trusted_exe,
                &mut a.trusted_exe,
                k,
                ExeKey { dev: k.0, ino: k.1 },
            ),
            Entry::Reserved(k) => take(&mut self.reserved, &mut a.reserved, k, k),
        }
    }

    fn set_config(&mut self, cfg: &[u32; config::LEN as usize]) {
        let mut ok = true;
        for (i, v) in cfg.iter().enumerate() {
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
            self.applied.config = *cfg;
        }
    }
}

/// One key of one agent-written map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Topology([u8; ADDR_LEN]),
    Slots([u8; ADDR_LEN]),
    UserDrivers([u8; DRIVER_KEY_LEN]),
    NodeGroup(u32),
    GroupRdev(u32),
    VfioDeny(u32),
    TrustedExe((u64, u64)),
    TrustedCgroup(u64),
    Reserved(u32),
}

/// One write of a [`KernelMaps::sync`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Insert or update the entry with the wanted value.
    Insert(Entry),
    /// Write the whole CONFIG array.
    Config([u32; config::LEN as usize]),
    Remove(Entry),
}

/// The writes that take the maps from `applied` to `want`, in the order that keeps one of the
/// two protecting at every moment (a policy change is never a window without either): every
/// map's inserts and updates first (entries before the switches that make the hooks read them),
/// then CONFIG as the union of both (the larger reserved count, protect_user_groups if either
/// has it), then every map's removals, then CONFIG as wanted.
pub fn steps(applied: &Content, want: &Content) -> Vec<Step> {
    let mut out = Vec::new();
    macro_rules! each_map {
        ($f:ident) => {
            $f(&mut out, &applied.topology, &want.topology, Entry::Topology);
            $f(&mut out, &applied.slots, &want.slots, Entry::Slots);
            $f(
                &mut out,
                &applied.user_drivers,
                &want.user_drivers,
                Entry::UserDrivers,
            );
            $f(
                &mut out,
                &applied.vfio_deny,
                &want.vfio_deny,
                Entry::VfioDeny,
            );
            $f(
                &mut out,
                &applied.trusted_exe,
                &want.trusted_exe,
                Entry::TrustedExe,
            );
            $f(
                &mut out,
                &applied.trusted_cgroups,
                &want.trusted_cgroups,
                Entry::TrustedCgroup,
            );
            $f(&mut out, &applied.reserved, &want.reserved, Entry::Reserved);
        };
    }
    seeds(
        &mut out,
        &applied.node_group,
        &want.node_group,
        Entry::NodeGroup,
    );
    seeds(
        &mut out,
        &applied.group_rdev,
        &want.group_rdev,
        Entry::GroupRdev,
    );
    each_map!(inserts);
    let mut union = want.config;
    for i in [config::RESERVED, config::PROTECT_USER] {
        let i = i as usize;
        union[i] = union[i].max(applied.config[i]);
    }
    if union != applied.config {
        out.push(Step::Config(union));
    }
    each_map!(removals);
    if want.config != union {
        out.push(Step::Config(want.config));
    }
    out
}

fn inserts<K: Ord + Copy, V: PartialEq>(
    out: &mut Vec<Step>,
    applied: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    entry: fn(K) -> Entry,
) {
    for (k, v) in want {
        if applied.get(k) != Some(v) {
            out.push(Step::Insert(entry(*k)));
        }
    }
}

fn removals<K: Ord + Copy, V>(
    out: &mut Vec<Step>,
    applied: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    entry: fn(K) -> Entry,
) {
    for k in applied.keys() {
        if !want.contains_key(k) {
            out.push(Step::Remove(entry(*k)));
        }
    }
}

/// VFIO nodes are named by the programs as VFIO makes them (`vfio_node_added`); the agent only
/// names those made before the programs ran, and never replaces or removes a name.
fn seeds<V>(
    out: &mut Vec<Step>,
    applied: &BTreeMap<u32, V>,
    want: &BTreeMap<u32, V>,
    entry: fn(u32) -> Entry,
) {
    for k in want.keys() {
        if !applied.contains_key(k) {
            out.push(Step::Insert(entry(*k)));
        }
    }
}

fn read_all<K: aya::Pod + Ord, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> BTreeMap<K, V> {
    map.iter().filter_map(Result::ok).collect()
}

/// Inserts `want[k]` under the kernel key `bk`; records it in `applied` once it went in.
fn put<K: Ord + Copy + std::fmt::Debug, BK: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, BK, V>,
    applied: &mut BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    k: K,
    bk: BK,
) -> bool {
    let Some(v) = want.get(&k) else {
        return true;
    };
    match map.insert(bk, *v, 0) {
        Ok(()) => {
            applied.insert(k, *v);
            true
        }
        Err(e) => {
            warn!("kernel map: inserting {k:?}: {e}");
            false
        }
    }
}

fn take<K: Ord + Copy + std::fmt::Debug, BK: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, BK, V>,
    applied: &mut BTreeMap<K, V>,
    k: K,
    bk: BK,
) {
    match map.remove(&bk) {
        Ok(()) => {
            applied.remove(&k);
        }
        Err(e) => warn!("kernel map: removing {k:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use iommu_enforcer_common::driver_class;

    use super::*;
    use crate::enforce::kernel_state::{key, OpenCount};

    fn content(
        reserved: &[u32],
        drivers: &[&str],
        trusted: &[(u64, u64)],
        protect: u32,
    ) -> Content {
        let mut c = Content {
            reserved: reserved.iter().map(|g| (*g, 1)).collect(),
            user_drivers: drivers
                .iter()
                .map(|d| (key(d), driver_class::ALLOWED))
                .collect(),
            trusted_exe: trusted.iter().map(|k| (*k, 1)).collect(),
            ..Content::default()
        };
        c.set_config(42, false, protect != 0, OpenCount::default());
        c
    }

    #[test]
    fn the_agent_names_only_nodes_the_programs_have_not_named() {
        let mut kernel = content(&[], &[], &[], 1);
        kernel.group_rdev = BTreeMap::from([(8, 0x0f00_0001)]);
        kernel.node_group = BTreeMap::from([(0x0f00_0001, 8)]);
        let mut want = kernel.clone();
        // A stale scan: group 8's node under its old dev_t, group 9's not yet in the kernel;
        // group 7's (gone from /dev) is not in the scan at all.
        want.group_rdev = BTreeMap::from([(8, 0x0f00_0000), (9, 0x0f00_0002)]);
        want.node_group = BTreeMap::from([(0x0f00_0000, 8), (0x0f00_0002, 9)]);
        kernel.group_rdev.insert(7, 0x0f00_0003);
        let steps = super::steps(&kernel, &want);
        assert_eq!(
            steps,
            [
                Step::Insert(Entry::NodeGroup(0x0f00_0000)),
                Step::Insert(Entry::NodeGroup(0x0f00_0002)),
                Step::Insert(Entry::GroupRdev(9)),
            ],
            "only what the kernel has not named; nothing replaced, nothing removed"
        );
    }

    fn position(steps: &[Step], want: impl Fn(&Step) -> bool) -> Vec<usize> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, s)| want(s))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_policy_change_inserts_every_new_entry_before_it_removes_an_old_one() {
        // Old: group 7 reserved, nvidia allowed, one trusted writer, protect_user_groups.
        // New: group 9 reserved instead, vfio-pci, another writer, protect_user_groups off.
        let old = content(&[7], &["nvidia"], &[(1, 2)], 1);
        let new = content(&[9], &["vfio-pci"], &[(3, 4)], 0);
        let steps = steps(&old, &new);
        let inserts = position(&steps, |s| matches!(s, Step::Insert(_)));
        let removals = position(&steps, |s| matches!(s, Step::Remove(_)));
        assert_eq!((inserts.len(), removals.len()), (3, 3), "{steps:?}");
        assert!(
            inserts.iter().max() < removals.iter().min(),
            "an insert after a removal: {steps:?}"
        );
        assert!(steps.contains(&Step::Insert(Entry::Reserved(9))));
        assert!(steps.contains(&Step::Remove(Entry::Reserved(7))));
        // While both policies' entries are in, the switches are the union of both.
        let configs = position(&steps, |s| matches!(s, Step::Config(_)));
        assert_eq!(configs.len(), 1, "{steps:?}");
        let Step::Config(between) = steps[configs[0]] else {
            unreachable!()
        };
        assert!(configs[0] > *inserts.iter().max().unwrap());
        assert!(configs[0] > *removals.iter().max().unwrap());
        assert_eq!(between, new.config, "the last write is the new switches");
        // Nothing to do once applied.
        assert!(super::steps(&new, &new).is_empty());
    }

    #[test]
    fn switches_that_turn_protection_on_follow_their_entries_and_off_precede_none() {
        // First reservation: RESERVED goes in before the count that makes hooks read it.
        let none = content(&[], &[], &[], 1);
        let one = content(&[9], &[], &[], 1);
        let steps = steps(&none, &one);
        assert_eq!(
            steps,
            [Step::Insert(Entry::Reserved(9)), Step::Config(one.config)]
        );
        // Last reservation dropped: the count stays until the entry is gone.
        let steps = super::steps(&one, &none);
        assert_eq!(
            steps,
            [Step::Remove(Entry::Reserved(9)), Step::Config(none.config)]
        );
        // protect_user_groups turned off along with a new reservation: the switch stays on
        // (the union is the old CONFIG: nothing to write) until the removals are done.
        let old = content(&[7], &[], &[], 1);
        let new = content(&[9], &[], &[], 0);
        assert_eq!(
            super::steps(&old, &new),
            [
                Step::Insert(Entry::Reserved(9)),
                Step::Remove(Entry::Reserved(7)),
                Step::Config(new.config),
            ]
        );
        // Turned on while the last reservation goes: on before the entry is removed.
        let old = content(&[7], &[], &[], 0);
        let new = content(&[], &[], &[], 1);
        let mut union = new.config;
        union[config::RESERVED as usize] = 1;
        assert_eq!(
            super::steps(&old, &new),
            [
                Step::Config(union),
                Step::Remove(Entry::Reserved(7)),
                Step::Config(new.config),
            ]
        );
    }
}
