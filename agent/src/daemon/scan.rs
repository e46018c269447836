//! The daemon's reads of sysfs and procfs: the whole map (at start and on resync) and the
//! processes holding VFIO files. Problems are logged; a partial map beats no map.
use std::path::Path;

use log::warn;

use crate::{
    model::{GroupMap, Holder},
    sysfs,
};

pub fn group_map(sysfs_root: &Path) -> Result<GroupMap, sysfs::SysfsError> {
    let scan = sysfs::scan(sysfs_root)?;
    for p in &scan.problems {
        warn!("sysfs: {}", p.message);
    }
    Ok(scan.to_map())
}

/// The map of a re-scan, only when every read in it succeeded or found its file gone: a read
/// that failed otherwise (EMFILE, EIO) leaves devices out that are still there, and a map
/// missing them would lift their protection. The error names the first such read.
pub fn group_map_known(sysfs_root: &Path) -> Result<GroupMap, String> {
    let scan = sysfs::scan(sysfs_root).map_err(|e| e.to_string())?;
    if let Some(p) = scan
        .problems
        .iter()
        .find(|p| matches!(p.kind, sysfs::ProblemKind::Unreadable))
    {
        return Err(p.message.clone());
    }
    for p in &scan.problems {
        warn!("sysfs: {}", p.message);
    }
    Ok(scan.to_map())
}

pub fn holders(proc_root: &Path, sysfs_root: &Path) -> Vec<Holder> {
    sysfs::scan_holders(proc_root, sysfs_root).holders
}
