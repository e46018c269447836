//! The LSM hooks' maps, kept equal to a desired content with as few syscalls as possible: the
//! agent mirrors what it wrote and applies only the difference.
use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData};
use iommu_enforcer_common::{names, ExeKey, WatchedFile, ADDR_LEN};
use log::warn;

use crate::bpf::loader::{LoadError, Loaded};

/// The desired content of every map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub watched: BTreeMap<u64, WatchedFile>,
    pub protected: BTreeMap<[u8; ADDR_LEN], u32>,
    pub protected_ids: BTreeMap<u32, u32>,
    pub vfio_deny: BTreeMap<u32, WatchedFile>,
    pub trusted_exe: BTreeMap<(u64, u64), u8>,
}

/// A PCI address as the hooks compare it: its bytes, NUL padded.
pub fn address_key(address: &str) -> [u8; ADDR_LEN] {
    let mut key = [0u8; ADDR_LEN];
    let n = address.len().min(ADDR_LEN);
    key[..n].copy_from_slice(&address.as_bytes()[..n]);
    key
}

pub struct LsmMaps {
    watched: HashMap<MapData, u64, WatchedFile>,
    protected: HashMap<MapData, [u8; ADDR_LEN], u32>,
    protected_ids: HashMap<MapData, u32, u32>,
    vfio_deny: HashMap<MapData, u32, WatchedFile>,
    trusted_exe: HashMap<MapData, ExeKey, u8>,
    applied: Content,
}

fn take<K: aya::Pod, V: aya::Pod>(
    loaded: &mut Loaded,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, LoadError> {
    let map = loaded.take_map(name).ok_or(LoadError::MissingMap(name))?;
    HashMap::try_from(map).map_err(|e| LoadError::Map(name, e))
}

impl LsmMaps {
    pub fn take(loaded: &mut Loaded) -> Result<Self, LoadError> {
        Ok(Self {
            watched: take(loaded, names::WATCHED)?,
            protected: take(loaded, names::PROTECTED)?,
            protected_ids: take(loaded, names::PROTECTED_IDS)?,
            vfio_deny: take(loaded, names::VFIO_DENY)?,
            trusted_exe: take(loaded, names::TRUSTED_EXE)?,
            applied: Content::default(),
        })
    }

    /// Makes the maps hold `want`. A failed update is logged and retried on the next call.
    pub fn sync(&mut self, want: &Content) {
        sync_one(
            &mut self.watched,
            &mut self.applied.watched,
            &want.watched,
            |k| *k,
        );
        sync_one(
            &mut self.protected,
            &mut self.applied.protected,
            &want.protected,
            |k| *k,
        );
        sync_one(
            &mut self.protected_ids,
            &mut self.applied.protected_ids,
            &want.protected_ids,
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
    }
}

fn sync_one<K: Ord + Clone + std::fmt::Debug, BK: aya::Pod, V: aya::Pod + PartialEq>(
    map: &mut HashMap<MapData, BK, V>,
    applied: &mut BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    key: impl Fn(&K) -> BK,
) {
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
            Err(e) => warn!("LSM map: removing {k:?}: {e}"),
        }
    }
    for (k, v) in want {
        if applied.get(k) == Some(v) {
            continue;
        }
        match map.insert(key(k), *v, 0) {
            Ok(()) => {
                applied.insert(k.clone(), *v);
            }
            Err(e) => warn!("LSM map: inserting {k:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_are_nul_padded() {
        let k = address_key("0000:00:05.1");
        assert_eq!(&k[..12], b"0000:00:05.1");
        assert_eq!(&k[12..], &[0, 0, 0, 0]);
    }
}
