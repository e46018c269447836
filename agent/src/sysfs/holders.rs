//! Which processes hold VFIO files open, from procfs: `<proc>/<pid>/fd/*` pointing at
//! `/dev/vfio/<N>` (the legacy group file: group N held) or `/dev/vfio/devices/vfioX` (an iommufd
//! device cdev, mapped to its device through `<sysfs>/bus/pci/devices/<addr>/vfio-dev/vfioX`).
//! Processes that vanish mid-scan are skipped.
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{ProblemKind, ScanProblem, SysfsError};
use crate::bounded::BoundedError;
use crate::model::Holder;

/// Result of [`scan_holders`].
#[derive(Clone, Debug, Default)]
pub struct HolderScan {
    pub holders: Vec<Holder>,
    pub problems: Vec<ScanProblem>,
}

/// What a descriptor points at.
#[derive(Debug, PartialEq, Eq)]
enum VfioFile<'a> {
    Group(u32),
    Cdev(&'a str),
}

fn vfio_file(target: &str) -> Option<VfioFile<'_>> {
    let target = target.strip_suffix(" (deleted)").unwrap_or(target);
    let rest = target.strip_prefix("/dev/vfio/")?;
    if let Some(cdev) = rest.strip_prefix("devices/") {
        return (cdev.starts_with("vfio") && !cdev.contains('/')).then_some(VfioFile::Cdev(cdev));
    }
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        return rest.parse().ok().map(VfioFile::Group);
    }
    None
}

/// Reads the cdev name -> (device, group) table from `<sysfs>/bus/pci/devices/*/vfio-dev/`.
fn cdev_table(sysfs_root: &Path) -> BTreeMap<String, (String, Option<u32>)> {
    let mut table = BTreeMap::new();
    let Ok(devices) = std::fs::read_dir(sysfs_root.join("bus/pci/devices")) else {
        return table;
    };
    for dev in devices.filter_map(Result::ok) {
        let address = dev.file_name().to_string_lossy().into_owned();
        let Ok(cdevs) = std::fs::read_dir(dev.path().join("vfio-dev")) else {
            continue;
        };
        let group = std::fs::read_link(dev.path().join("iommu_group"))
            .ok()
            .and_then(|t| t.file_name()?.to_str()?.parse::<u32>().ok());
        for c in cdevs.filter_map(Result::ok) {
            table.insert(
                c.file_name().to_string_lossy().into_owned(),
                (address.clone(), group),
            );
        }
    }
    table
}

/// Scans every process under `proc_root` for VFIO group files and cdevs held open.
pub fn scan_holders(proc_root: &Path, sysfs_root: &Path) -> HolderScan {
    let mut out = HolderScan::default();
    let entries = match std::fs::read_dir(proc_root) {
        Ok(e) => e,
        Err(e) => {
            let err = if e.kind() == io::ErrorKind::NotFound {
                SysfsError::Missing {
                    path: proc_root.to_path_buf(),
                }
            } else {
                SysfsError::io(proc_root, e)
            };
            out.problems.push(ScanProblem {
                group: None,
                device: None,
                kind: err.kind(),
                path: proc_root.to_path_buf(),
                message: format!("{err}; VFIO holders unknown"),
            });
            return out;
        }
    };
    let cdevs = cdev_table(sysfs_root);
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    pids.sort_unstable();
    let mut denied = 0usize;
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        match process_holders(&dir, pid, &cdevs) {
            Ok(found) => {
                for h in found {
                    if h.group.is_none() && h.device.is_none() {
                        out.problems.push(ScanProblem {
                            group: None,
                            device: None,
                            kind: ProblemKind::Unresolved,
                            path: dir
                                .join("fd")
                                .join(h.fd.map_or_else(String::new, |fd| fd.to_string())),
                            message: format!(
                                "{} (pid {}) holds {}, which no device in sysfs provides",
                                h.comm, h.pid, h.path
                            ),
                        });
                    }
                    out.holders.push(h);
                }
            }
            Err(ProcessError::Gone) => {}
            Err(ProcessError::Denied) => denied += 1,
            Err(ProcessError::Other(path, e)) => {
                out.problems.push(ScanProblem::from_error(
                    None,
                    None,
                    &SysfsError::io(&path, e),
                ));
            }
            Err(ProcessError::Bounded(path, e)) => {
                out.problems.push(ScanProblem::from_error(
                    None,
                    None,
                    &SysfsError::bounded(&path, e),
                ));
            }
        }
    }
    if denied > 0 {
        out.problems.push(ScanProblem {
            group: None,
            device: None,
            kind: ProblemKind::PermissionDenied,
            path: proc_root.to_path_buf(),
            message: format!(
                "cannot read the descriptors of {denied} processes (permission denied); VFIO holders may be missing"
            ),
        });
    }
    out
}

enum ProcessError {
    Gone,
    Denied,
    Other(PathBuf, io::Error),
    /// `comm` refused by the bounded read (not a regular file, too long).
    Bounded(PathBuf, BoundedError),
}

fn classify(path: PathBuf, e: io::Error) -> ProcessError {
    match e.kind() {
        io::ErrorKind::NotFound => ProcessError::Gone,
        io::ErrorKind::PermissionDenied => ProcessError::Denied,
        _ => ProcessError::Other(path, e),
    }
}

fn classify_bounded(path: PathBuf, e: BoundedError) -> ProcessError {
    match e {
        BoundedError::Io { source } => classify(path, source),
        BoundedError::NotFound => ProcessError::Gone,
        other => ProcessError::Bounded(path, other),
    }
}

fn process_holders(
    dir: &Path,
    pid: u32,
    cdevs: &BTreeMap<String, (String, Option<u32>)>,
) -> Result<Vec<Holder>, ProcessError> {
    let fd_dir = dir.join("fd");
    let entries = std::fs::read_dir(&fd_dir).map_err(|e| classify(fd_dir.clone(), e))?;
    let mut fds: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .collect();
    fds.sort_unstable();
    let mut found = Vec::new();
    for (fd, path) in fds {
        // A descriptor closed between readdir and readlink is skipped.
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let (group, device) = match vfio_file(&target) {
            Some(VfioFile::Group(g)) => (Some(g), None),
            Some(VfioFile::Cdev(c)) => match cdevs.get(c) {
                Some((addr, group)) => (*group, Some(addr.clone())),
                None => (None, None),
            },
            None => continue,
        };
        found.push(Holder {
            pid,
            comm: String::new(),
            fd: Some(fd),
            path: target,
            group,
            device,
            pod: None,
        });
    }
    if !found.is_empty() {
        let comm_path = dir.join("comm");
        let comm = crate::bounded::read_text(&comm_path, crate::bounded::ATTRIBUTE_LIMIT)
            .map_err(|e| classify_bounded(comm_path, e))?;
        let comm = comm.trim_end_matches('\n').to_string();
        let pod = pod_of(dir);
        for h in &mut found {
            h.comm.clone_from(&comm);
            h.pod.clone_from(&pod);
        }
    }
    Ok(found)
}

/// `/proc/PID/cgroup` is a line per hierarchy: a few hundred bytes, a v1 host's a few KiB.
const CGROUP_LIMIT: usize = 16 * 1024;

/// The pod of process `dir` (`<proc>/<pid>`), from its cgroup file. An unreadable file (the
/// process exited, a foreign procfs) leaves it unknown: the holder is still reported.
fn pod_of(dir: &Path) -> Option<crate::pods::PodIdentity> {
    let text = crate::bounded::read_text(&dir.join("cgroup"), CGROUP_LIMIT).ok()?;
    crate::pods::proc_cgroup_identity(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vfio_paths() {
        assert_eq!(vfio_file("/dev/vfio/12"), Some(VfioFile::Group(12)));
        assert_eq!(
            vfio_file("/dev/vfio/devices/vfio0"),
            Some(VfioFile::Cdev("vfio0"))
        );
        assert_eq!(
            vfio_file("/dev/vfio/12 (deleted)"),
            Some(VfioFile::Group(12))
        );
        assert_eq!(vfio_file("/dev/vfio/vfio"), None);
        assert_eq!(vfio_file("/dev/vfio/noiommu-0"), None);
        assert_eq!(vfio_file("/dev/iommu"), None);
        assert_eq!(vfio_file("socket:[1234]"), None);
    }
}
