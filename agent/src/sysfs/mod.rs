//! Reading a sysfs tree into the model. Pure reads under a root path it is given (`/sys`, or a
//! fixture): `readdir`, `readlink`, `read`, nothing else.
//!
//! Layout read, as the kernel lays it out:
//! - `<root>/kernel/iommu_groups/<N>/devices/<member>`: links into `<root>/devices/...`; the
//!   canonical path `devices/pci0000:00/0000:00:01.0/0000:01:00.0` gives the parent chain.
//! - in each PCI device directory: `vendor`, `device`, `class`, `config`, `driver_override`,
//!   the `driver` link (into `bus/pci/drivers/<name>`) and `vfio-dev/vfioX` (iommufd cdev).
//!
//! A member that vanishes mid-scan, an unreadable file and a non-PCI member are
//! [`ScanProblem`]s kept in the result; only an unreadable `kernel/iommu_groups` is an error.
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::model::{Acs, Device, GroupMap, OtherMember};

pub mod config;
mod holders;

pub use holders::{scan_holders, HolderScan};

/// Something that could not be read. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("{}: vanished during the scan", path.display())]
    Vanished { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: malformed {what} {text:?}", path.display())]
    Malformed {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
    #[error("{}: not a PCI device", path.display())]
    NotPci { path: PathBuf },
}

impl SysfsError {
    /// `Vanished` for ENOENT, `Read` otherwise.
    fn io(path: &Path, source: io::Error) -> SysfsError {
        if source.kind() == io::ErrorKind::NotFound {
            SysfsError::Vanished {
                path: path.to_path_buf(),
            }
        } else {
            SysfsError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    fn kind(&self) -> ProblemKind {
        match self {
            SysfsError::Vanished { .. } => ProblemKind::Vanished,
            SysfsError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                ProblemKind::PermissionDenied
            }
            SysfsError::Read { .. } => ProblemKind::Unreadable,
            SysfsError::Malformed { .. } => ProblemKind::Malformed,
            SysfsError::NotPci { .. } => ProblemKind::NotPci,
        }
    }

    fn path(&self) -> &Path {
        match self {
            SysfsError::Vanished { path }
            | SysfsError::Read { path, .. }
            | SysfsError::Malformed { path, .. }
            | SysfsError::NotPci { path } => path,
        }
    }
}

/// What kind of scan problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The member (or process) disappeared between listing and reading.
    Vanished,
    /// A file could not be read.
    Unreadable,
    /// Reading needs more privileges.
    PermissionDenied,
    /// A file held something unexpected.
    Malformed,
    /// A group member that is not a PCI device.
    NotPci,
    /// A VFIO cdev held open whose device is not in sysfs.
    Unresolved,
}

/// Something the scan could not read or did not expect, kept in the result and shown by
/// `enforcer audit`. Serializes as `{group: "7"|null, device, kind, path, message}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScanProblem {
    #[serde(serialize_with = "opt_group_string")]
    pub group: Option<u32>,
    /// Device address or member name, when the problem concerns one.
    pub device: Option<String>,
    pub kind: ProblemKind,
    pub path: PathBuf,
    pub message: String,
}

impl ScanProblem {
    fn from_error(group: Option<u32>, device: Option<&str>, e: &SysfsError) -> ScanProblem {
        ScanProblem {
            group,
            device: device.map(str::to_string),
            kind: e.kind(),
            path: e.path().to_path_buf(),
            message: e.to_string(),
        }
    }
}

fn opt_group_string<S: Serializer>(group: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match group {
        Some(g) => s.collect_str(g),
        None => s.serialize_none(),
    }
}

/// Result of [`scan`].
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every group directory, members or not.
    pub groups: BTreeSet<u32>,
    pub devices: Vec<Device>,
    pub others: Vec<OtherMember>,
    pub problems: Vec<ScanProblem>,
}

impl Scan {
    /// The group map of this scan (no holders or claims yet).
    pub fn to_map(&self) -> GroupMap {
        let mut map = GroupMap::new();
        for g in &self.groups {
            map.add_group(*g);
        }
        for d in &self.devices {
            map.add_device(d.clone());
        }
        for m in &self.others {
            map.add_other(m.clone());
        }
        map
    }
}

/// Reads every IOMMU group under `<root>/kernel/iommu_groups` and its members.
pub fn scan(root: &Path) -> Result<Scan, SysfsError> {
    let groups_dir = root.join("kernel/iommu_groups");
    let entries = std::fs::read_dir(&groups_dir).map_err(|source| SysfsError::Read {
        path: groups_dir.clone(),
        source,
    })?;
    let root_canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut out = Scan::default();
    let mut names: Vec<(u32, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.problems.push(ScanProblem::from_error(
                    None,
                    None,
                    &SysfsError::io(&groups_dir, e),
                ));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        match name.parse::<u32>() {
            Ok(g) => names.push((g, entry.path())),
            Err(_) => out.problems.push(ScanProblem::from_error(
                None,
                None,
                &SysfsError::Malformed {
                    path: entry.path(),
                    what: "group number",
                    text: name,
                },
            )),
        }
    }
    names.sort();
    for (group, dir) in names {
        out.groups.insert(group);
        let devices_dir = dir.join("devices");
        let members = match sorted_names(&devices_dir) {
            Ok(m) => m,
            Err(e) => {
                out.problems
                    .push(ScanProblem::from_error(Some(group), None, &e));
                continue;
            }
        };
        for member in members {
            let link = devices_dir.join(&member);
            match read_member(&root_canon, &link, &member, group, &mut out.problems) {
                Ok(Member::Pci(d)) => out.devices.push(d),
                Ok(Member::Other(m)) => {
                    out.problems.push(ScanProblem::from_error(
                        Some(group),
                        Some(&member),
                        &SysfsError::NotPci { path: link },
                    ));
                    out.others.push(m);
                }
                Err(e) => {
                    out.problems
                        .push(ScanProblem::from_error(Some(group), Some(&member), &e))
                }
            }
        }
    }
    Ok(out)
}

/// Reads one PCI device by address through `<root>/bus/pci/devices/<address>` (for a
/// `device_added` event). Problems that do not prevent reading it are returned beside it.
pub fn read_device(root: &Path, address: &str) -> Result<(Device, Vec<ScanProblem>), SysfsError> {
    let root_canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let link = root.join("bus/pci/devices").join(address);
    let group_link = link.join("iommu_group");
    let target = std::fs::read_link(&group_link).map_err(|e| SysfsError::io(&group_link, e))?;
    let group = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| SysfsError::Malformed {
            path: group_link.clone(),
            what: "iommu_group link",
            text: target.display().to_string(),
        })?;
    let mut problems = Vec::new();
    match read_member(&root_canon, &link, address, group, &mut problems)? {
        Member::Pci(d) => Ok((d, problems)),
        Member::Other(_) => Err(SysfsError::NotPci { path: link }),
    }
}

enum Member {
    Pci(Device),
    Other(OtherMember),
}

fn sorted_names(dir: &Path) -> Result<Vec<String>, SysfsError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| SysfsError::io(dir, e))? {
        let entry = entry.map_err(|e| SysfsError::io(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Reads the member behind `link` (a group's `devices/<name>` or `bus/pci/devices/<name>`).
fn read_member(
    root_canon: &Path,
    link: &Path,
    name: &str,
    group: u32,
    problems: &mut Vec<ScanProblem>,
) -> Result<Member, SysfsError> {
    let dir = std::fs::canonicalize(link).map_err(|e| SysfsError::io(link, e))?;
    let driver = read_driver(&dir)?;
    if crate::model::parse_address(name).is_none() {
        return Ok(Member::Other(OtherMember {
            name: name.to_string(),
            group,
            driver,
        }));
    }
    let mut problem =
        |e: SysfsError| problems.push(ScanProblem::from_error(Some(group), Some(name), &e));

    let vendor = required_hex(&dir, "vendor", &mut problem)?.and_then(|v| u16::try_from(v).ok());
    let device = required_hex(&dir, "device", &mut problem)?.and_then(|v| u16::try_from(v).ok());
    let class = required_hex(&dir, "class", &mut problem)?;

    let config_path = dir.join("config");
    let config = match std::fs::read(&config_path) {
        Ok(c) => Some(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            problem(SysfsError::io(&config_path, e));
            None
        }
    };
    let config = config.as_deref();

    let override_path = dir.join("driver_override");
    let driver_override = match std::fs::read_to_string(&override_path) {
        Ok(s) => parse_driver_override(&s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            problem(SysfsError::io(&override_path, e));
            None
        }
    };

    let relative = dir.strip_prefix(root_canon).unwrap_or(&dir);
    let mut parents: Vec<String> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|c| crate::model::parse_address(c).is_some())
        .map(str::to_string)
        .collect();
    if parents.last().map(String::as_str) == Some(name) {
        parents.pop();
    }

    let bridge = class.is_some_and(|c| c >> 8 == 0x0604)
        || config.and_then(config::bridge_header) == Some(true);
    let multifunction = match config.and_then(config::multifunction) {
        Some(m) => m,
        None => has_sibling_functions(&dir, name),
    };

    Ok(Member::Pci(Device {
        address: name.to_string(),
        group,
        vendor,
        device,
        class,
        bridge,
        port_type: config.and_then(config::port_type),
        driver,
        driver_override,
        parents,
        multifunction,
        acs: config.map_or(Acs::Unknown, config::acs),
    }))
}

/// A hex attribute (`vendor`, `device`, `class`): `Err(Vanished)` when the device directory is
/// gone, a problem and `None` when only the file is missing or unreadable.
fn required_hex(
    dir: &Path,
    file: &'static str,
    problem: &mut impl FnMut(SysfsError),
) -> Result<Option<u32>, SysfsError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => match parse_hex(&s) {
            Some(v) => Ok(Some(v)),
            None => {
                problem(SysfsError::Malformed {
                    path,
                    what: file,
                    text: s.trim().to_string(),
                });
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
            Err(SysfsError::Vanished {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => {
            problem(SysfsError::io(&path, e));
            Ok(None)
        }
    }
}

/// `0x10de\n` -> 0x10de.
fn parse_hex(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(digits, 16).ok()
}

/// `driver_override` as the kernel shows it: `(null)\n` (or empty) when unset.
pub fn parse_driver_override(text: &str) -> Option<String> {
    let s = text.trim();
    (!s.is_empty() && s != "(null)").then(|| s.to_string())
}

/// The bound driver's name from the `driver` link of device directory `dir`; `None` when unbound.
pub fn read_driver(dir: &Path) -> Result<Option<String>, SysfsError> {
    let link = dir.join("driver");
    match std::fs::read_link(&link) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.exists() {
                Ok(None)
            } else {
                Err(SysfsError::Vanished {
                    path: dir.to_path_buf(),
                })
            }
        }
        Err(e) => Err(SysfsError::io(&link, e)),
    }
}

/// Whether other functions of the same slot sit beside `dir` (when `config` is unreadable).
fn has_sibling_functions(dir: &Path, address: &str) -> bool {
    let Some((slot, _)) = address.rsplit_once('.') else {
        return false;
    };
    let Some(parent) = dir.parent() else {
        return false;
    };
    std::fs::read_dir(parent).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n != address && n.rsplit_once('.').is_some_and(|(s, _)| s == slot)
        })
    })
}

#[cfg(test)]
pub(crate) mod tests;
