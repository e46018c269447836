//! What the kernel protects, read from the pinned state maps alone: `enforcer status` and the
//! in-use check of `enforcer detach` work with no agent running. Reading is the only I/O here;
//! [`ProtectionState::groups`] is pure.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use iommu_enforcer_common::{config, names, GroupState, MAX_GROUPS};

use super::kernel_state::in_use;
use crate::bpf::loader::pin_dirs;

/// Why the pinned state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error("{0}: no pinned protection state (is an agent installed, and bpffs mounted at /sys/fs/bpf?)")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: MapError,
    },
}

/// The pinned protection state, copied out of the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectionState {
    /// Groups whose state is not all zero.
    pub groups: BTreeMap<u32, GroupState>,
    pub group_rdev: BTreeMap<u32, u32>,
    /// Open files per node dev_t: counted by the file hooks plus seeded at a first start.
    pub opens: BTreeMap<u32, i32>,
    pub reserved: BTreeSet<u32>,
    /// Whether the LSM file hooks count opens (`CONFIG[USE_COUNTED]`).
    pub counted: bool,
}

/// How a protected group stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Claimed or open: nothing may change it.
    InUse,
    /// Not in use, but the policy reserves it.
    Reserved,
    /// Bound to a user driver, not in use: it may be handed back.
    Idle,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InUse => "in_use",
            Self::Reserved => "reserved",
            Self::Idle => "idle",
        }
    }
}

/// One group the kernel protects or could hand back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStanding {
    pub group: u32,
    pub standing: Standing,
    pub reserved: bool,
    pub user_bound: i32,
    pub claims: i32,
    pub opens: i32,
}

fn open_map(dir: &Path, name: &str) -> Result<Map, PinnedError> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(PinnedError::Missing(path));
    }
    let data = MapData::from_pin(&path).map_err(|source| PinnedError::Map {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| PinnedError::Map { path, source })
}

fn hash<K: aya::Pod + Ord, V: aya::Pod>(
    dir: &Path,
    name: &str,
) -> Result<BTreeMap<K, V>, PinnedError> {
    let map: HashMap<MapData, K, V> =
        HashMap::try_from(open_map(dir, name)?).map_err(|source| PinnedError::Map {
            path: dir.join(name),
            source,
        })?;
    Ok(map.iter().filter_map(Result::ok).collect())
}

fn array<V: aya::Pod>(dir: &Path, name: &str) -> Result<Array<MapData, V>, PinnedError> {
    Array::try_from(open_map(dir, name)?).map_err(|source| PinnedError::Map {
        path: dir.join(name),
        source,
    })
}

impl ProtectionState {
    /// Reads the maps pinned under `pin_root` (this map layout's directory).
    pub fn read(pin_root: &Path) -> Result<Self, PinnedError> {
        let (dir, _) = pin_dirs(pin_root);
        let groups_map: Array<MapData, GroupState> = array(&dir, names::GROUPS)?;
        let groups = (0..MAX_GROUPS)
            .filter_map(|g| Some((g, groups_map.get(&g, 0).ok()?)))
            .filter(|(_, st)| *st != GroupState::default())
            .collect();
        let config: Array<MapData, u32> = array(&dir, names::CONFIG)?;
        let mut opens: BTreeMap<u32, i32> = hash(&dir, names::RDEV_OPENS)?;
        for (rdev, n) in hash::<u32, i32>(&dir, names::SEEDED_OPENS)? {
            *opens.entry(rdev).or_default() += n.max(0);
        }
        Ok(Self {
            groups,
            group_rdev: hash(&dir, names::GROUP_RDEV)?,
            opens,
            reserved: hash::<u32, u32>(&dir, names::RESERVED)?
                .into_keys()
                .collect(),
            counted: config.get(&config::USE_COUNTED, 0).unwrap_or(0) != 0,
        })
    }

    /// Every group that is reserved, in use, or bound to a user driver, with how it stands.
    pub fn groups(&self) -> Vec<GroupStanding> {
        let ids: BTreeSet<u32> = self
            .groups
            .keys()
            .chain(&self.reserved)
            .chain(self.group_rdev.keys().filter(|g| {
                self.group_rdev
                    .get(g)
                    .is_some_and(|r| self.opens.get(r).copied().unwrap_or(0) != 0)
            }))
            .copied()
            .collect();
        ids.into_iter()
            .map(|group| {
                let st = self.groups.get(&group).copied().unwrap_or_default();
                let rdev = self.group_rdev.get(&group);
                let opens = rdev.map_or(0, |r| self.opens.get(r).copied().unwrap_or(0));
                let reserved = self.reserved.contains(&group);
                let standing = if in_use(st, rdev.is_some(), opens, self.counted) {
                    Standing::InUse
                } else if reserved {
                    Standing::Reserved
                } else {
                    Standing::Idle
                };
                GroupStanding {
                    group,
                    standing,
                    reserved,
                    user_bound: st.user_bound,
                    claims: st.claims,
                    opens,
                }
            })
            .collect()
    }

    /// The groups in use.
    pub fn in_use(&self) -> Vec<u32> {
        self.groups()
            .into_iter()
            .filter(|g| g.standing == Standing::InUse)
            .map(|g| g.group)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ProtectionState {
        ProtectionState {
            groups: BTreeMap::from([
                (
                    8,
                    GroupState {
                        user_bound: 2,
                        claims: 0,
                    },
                ),
                (
                    9,
                    GroupState {
                        user_bound: 1,
                        claims: 0,
                    },
                ),
                (
                    10,
                    GroupState {
                        user_bound: 1,
                        claims: 1,
                    },
                ),
            ]),
            group_rdev: BTreeMap::from([(8, 0x0f00_0000), (9, 0x0f00_0001)]),
            opens: BTreeMap::from([(0x0f00_0000, 1)]),
            reserved: BTreeSet::from([9, 12]),
            counted: true,
        }
    }

    #[test]
    fn each_group_stands_in_use_reserved_or_idle() {
        let got: Vec<(u32, Standing)> = state()
            .groups()
            .iter()
            .map(|g| (g.group, g.standing))
            .collect();
        assert_eq!(
            got,
            [
                (8, Standing::InUse),
                (9, Standing::Reserved),
                (10, Standing::InUse),
                (12, Standing::Reserved),
            ]
        );
        assert_eq!(state().in_use(), [8, 10]);
    }

    #[test]
    fn without_counted_opens_a_bound_group_is_in_use() {
        let mut s = state();
        s.counted = false;
        s.reserved.clear();
        assert_eq!(s.in_use(), [8, 9, 10]);
        s.counted = true;
        s.group_rdev.remove(&9);
        assert_eq!(s.in_use(), [8, 9, 10], "a node not named yet fails closed");
    }

    #[test]
    fn a_missing_pin_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ProtectionState::read(&dir.path().join("nope")).expect_err("nothing pinned");
        assert!(
            err.to_string().contains("no pinned protection state"),
            "{err}"
        );
    }
}
