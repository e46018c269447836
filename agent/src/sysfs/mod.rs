//! Reading a sysfs tree into the model. Pure reads under a root path it is given (`/sys`, or a
//! fixture): `readdir`, `readlink`, `read`, nothing else.
//!
//! Layout read, as the kernel lays it out:
//! - `<root>/kernel/iommu_groups/<N>/devices/<member>`: links into `<root>/devices/...`; the
//!   canonical path `devices/pci0000:00/0000:00:01.0/0000:01:00.0` gives the parent chain.
//! - in each PCI device directory: `vendor`, `device`, `class`, `config`, `driver_override`,
//!   the `driver` link (into `bus/pci/drivers/<name>`) and `vfio-dev/vfioX` (iommufd cdev).
//!
//! Every attribute is read with a bound (a page; 4 KiB for `config`), with `O_NONBLOCK`, and
//! only if it is a regular file ([`crate::bounded`]). A member that vanishes mid-scan, a missing,
//! unreadable, non-regular, too long, malformed or out-of-range attribute, a group directory
//! whose name is not the kernel's spelling (`012`, not UTF-8), a device listed in two groups and
//! a non-PCI member are [`ScanProblem`]s kept in the result, each with its path; only an
//! unreadable `kernel/iommu_groups` is an error.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::bounded::{self, BoundedError, ATTRIBUTE_LIMIT, CONFIG_LIMIT};
use crate::model::{Acs, Device, GroupMap, OtherMember};
use crate::pci::PciAddress;

pub mod config;
mod dir;
mod holders;

use dir::DeviceDir;
use std::ffi::CStr;

pub use holders::{scan_holders, HolderScan};

/// Something that could not be read. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The device (or process) directory disappeared between listing and reading.
    #[error("{}: vanished during the scan", path.display())]
    Vanished { path: PathBuf },
    /// A file the device directory should hold is not there (ENOENT), the directory is.
    #[error("{}: does not exist (ENOENT)", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {}: {source}", path.display(), crate::bounded::errno_name(source))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A FIFO, device node, socket or directory where an attribute should be.
    #[error("{}: is a {kind}, not a regular file: not read", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// Longer than any attribute the kernel writes.
    #[error("{}: longer than {limit} bytes: not read", path.display())]
    TooLong { path: PathBuf, limit: usize },
    /// `text` is an excerpt of what the file held.
    #[error("{}: malformed {what} {text:?}", path.display())]
    Malformed {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
    #[error("{}: {what} 0x{value:x} is out of range (at most 0x{max:x})", path.display())]
    OutOfRange {
        path: PathBuf,
        what: &'static str,
        value: u32,
        max: u32,
    },
    /// A name that is not UTF-8, shown lossily.
    #[error("{}: name is not UTF-8 (shown as {lossy:?}): not read", path.display())]
    NotUtf8 { path: PathBuf, lossy: String },
    /// The same device listed in two groups.
    #[error("{}: {device} is also a member of group {first}: kept there, not merged", path.display())]
    Duplicate {
        path: PathBuf,
        device: String,
        first: u32,
    },
    #[error("{}: not a PCI device", path.display())]
    NotPci { path: PathBuf },
}

/// How much of a malformed value a message quotes.
const EXCERPT: usize = 64;

impl SysfsError {
    /// `Vanished` for ENOENT (the directory or link read is gone), `Read` otherwise.
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

    /// From a bounded read of the file at `path`: ENOENT is `Missing`.
    fn bounded(path: &Path, e: BoundedError) -> SysfsError {
        let path = path.to_path_buf();
        match e {
            BoundedError::NotFound => SysfsError::Missing { path },
            BoundedError::NotRegular(kind) => SysfsError::NotRegular { path, kind },
            BoundedError::TooLong { limit } => SysfsError::TooLong { path, limit },
            BoundedError::Io { source } => SysfsError::Read { path, source },
        }
    }

    fn malformed(path: PathBuf, what: &'static str, text: &str) -> SysfsError {
        SysfsError::Malformed {
            path,
            what,
            text: crate::bounded::excerpt(text.trim(), EXCERPT),
        }
    }

    fn kind(&self) -> ProblemKind {
        match self {
            SysfsError::Vanished { .. } => ProblemKind::Vanished,
            SysfsError::Missing { .. } => ProblemKind::Missing,
            SysfsError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                ProblemKind::PermissionDenied
            }
            SysfsError::Read { .. } => ProblemKind::Unreadable,
            SysfsError::NotRegular { .. } => ProblemKind::NotRegular,
            SysfsError::TooLong { .. } => ProblemKind::TooLong,
            SysfsError::Malformed { .. }
            | SysfsError::OutOfRange { .. }
            | SysfsError::NotUtf8 { .. } => ProblemKind::Malformed,
            SysfsError::Duplicate { .. } => ProblemKind::Duplicate,
            SysfsError::NotPci { .. } => ProblemKind::NotPci,
        }
    }

    fn path(&self) -> &Path {
        match self {
            SysfsError::Vanished { path }
            | SysfsError::Missing { path }
            | SysfsError::Read { path, .. }
            | SysfsError::NotRegular { path, .. }
            | SysfsError::TooLong { path, .. }
            | SysfsError::Malformed { path, .. }
            | SysfsError::OutOfRange { path, .. }
            | SysfsError::NotUtf8 { path, .. }
            | SysfsError::Duplicate { path, .. }
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
    /// An attribute (or the procfs root) does not exist although its directory does.
    Missing,
    /// A file could not be read (the message says the errno).
    Unreadable,
    /// Reading needs more privileges.
    PermissionDenied,
    /// A FIFO, device node, socket or directory where a file should be: not read.
    NotRegular,
    /// A file longer than the bound (a page; 4 KiB for `config`): not read.
    TooLong,
    /// A file or name held something unexpected (or out of range, or not UTF-8).
    Malformed,
    /// A device listed in two groups.
    Duplicate,
    /// A group member that is not a PCI device.
    NotPci,
    /// A VFIO cdev held open whose device is not in sysfs.
    Unresolved,
}

impl ProblemKind {
    /// Whether a problem of this kind leaves some group's verdict unknown (`enforcer audit`
    /// exits 1): everything but a member that vanished (the verdict is the remaining
    /// members') and a non-PCI member (kept in `others`, judged with the group).
    pub fn hides_verdict(self) -> bool {
        !matches!(self, ProblemKind::Vanished | ProblemKind::NotPci)
    }
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
    /// Serialized lossily: a path that is not UTF-8 must not stop the report.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub message: String,
}

fn lossy_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

impl ScanProblem {
    /// Whether this problem leaves some group's verdict unknown (see
    /// [`ProblemKind::hides_verdict`]).
    pub fn hides_verdict(&self) -> bool {
        self.kind.hides_verdict()
    }

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

    /// [`Scan::to_map`] without copying the devices: the audit of a large node held both.
    pub fn into_map(self) -> GroupMap {
        let mut map = GroupMap::new();
        for g in self.groups {
            map.add_group(g);
        }
        for d in self.devices {
            map.add_device(d);
        }
        for m in self.others {
            map.add_other(m);
        }
        map
    }
}

/// The group number of a directory under `kernel/iommu_groups`, spelled as the kernel spells
/// it: decimal digits, no sign, no leading zero (`012` is not group 12).
pub fn parse_group_number(name: &str) -> Option<u32> {
    let canonical = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    canonical.then(|| name.parse().ok())?
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
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            out.problems.push(ScanProblem::from_error(
                None,
                None,
                &SysfsError::NotUtf8 {
                    path: entry.path(),
                    lossy: file_name.to_string_lossy().into_owned(),
                },
            ));
            continue;
        };
        match parse_group_number(name) {
            Some(g) => names.push((g, entry.path())),
            None => out.problems.push(ScanProblem::from_error(
                None,
                None,
                &SysfsError::malformed(entry.path(), "group number", name),
            )),
        }
    }
    names.sort();
    // Member name -> the group it was first found in.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
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
            let member = match member {
                Ok(m) => m,
                Err(e) => {
                    out.problems
                        .push(ScanProblem::from_error(Some(group), None, &e));
                    continue;
                }
            };
            let link = devices_dir.join(&member);
            if let Some(&first) = seen.get(&member) {
                out.problems.push(ScanProblem::from_error(
                    Some(group),
                    Some(&member),
                    &SysfsError::Duplicate {
                        path: link,
                        device: member.clone(),
                        first,
                    },
                ));
                continue;
            }
            seen.insert(member.clone(), group);
            match read_member(root, &root_canon, &link, &member, group, &mut out.problems) {
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
    let slots = physical_slots(root);
    if !slots.is_empty() {
        for d in &mut out.devices {
            d.physical_slot = slots.get(d.slot()).cloned();
        }
    }
    Ok(out)
}

/// Physical slots: `DDDD:BB:DD` -> slot name, from `bus/pci/slots/*/address`. Best effort: a
/// slot whose address cannot be read names no device (a reservation by its name is then
/// reported as matching nothing).
fn physical_slots(root: &Path) -> HashMap<String, String> {
    let Ok(dir) = std::fs::read_dir(root.join("bus/pci/slots")) else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let address = bounded::read_text(&e.path().join("address"), ATTRIBUTE_LIMIT).ok()?;
            Some((address.trim().to_string(), name))
        })
        .collect()
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
        .and_then(parse_group_number)
        .ok_or_else(|| {
            SysfsError::malformed(
                group_link.clone(),
                "iommu_group link",
                &target.to_string_lossy(),
            )
        })?;
    let mut problems = Vec::new();
    match read_member(root, &root_canon, &link, address, group, &mut problems)? {
        Member::Pci(mut d) => {
            d.physical_slot = physical_slots(root).remove(d.slot());
            Ok((d, problems))
        }
        Member::Other(_) => Err(SysfsError::NotPci { path: link }),
    }
}

enum Member {
    Pci(Device),
    Other(OtherMember),
}

/// The entries of `dir`, sorted; a name that is not UTF-8 is an `Err` in its place.
fn sorted_names(dir: &Path) -> Result<Vec<Result<String, SysfsError>>, SysfsError> {
    let mut names = Vec::new();
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| SysfsError::io(dir, e))? {
        let entry = entry.map_err(|e| SysfsError::io(dir, e))?;
        match entry.file_name().into_string() {
            Ok(n) => names.push(n),
            Err(raw) => bad.push(SysfsError::NotUtf8 {
                path: entry.path(),
                lossy: raw.to_string_lossy().into_owned(),
            }),
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(Ok)
        .chain(bad.into_iter().map(Err))
        .collect())
}

/// Reads the attribute `file` of device directory `dir`, at most `limit` bytes: `Ok(None)` when
/// the file does not exist, `Err(Vanished)` when the directory itself is gone.
fn read_attribute(
    dir: &DeviceDir,
    file: &CStr,
    limit: usize,
) -> Result<Option<Vec<u8>>, SysfsError> {
    match dir.read(file, limit) {
        Ok(b) => Ok(Some(b)),
        // By its path: the open descriptor outlives a removed directory.
        Err(BoundedError::NotFound) if !dir.path.exists() => Err(SysfsError::Vanished {
            path: dir.path.clone(),
        }),
        Err(BoundedError::NotFound) => Ok(None),
        Err(e) => Err(SysfsError::bounded(&dir.join(file), e)),
    }
}

/// The device directory behind a member link under `root`, in `root_canon`'s spelling. sysfs
/// links are relative and the directories that hold them (`kernel/iommu_groups/N/devices`,
/// `bus/pci/devices`) are real, so one `readlink` resolved against the link's directory is the
/// answer; `canonicalize` reads every component of the path again (13 readlinks per device of a
/// 10,000-device tree, the audit's largest syscall count). Anything else (an absolute or odd
/// target, a link outside `root`) is canonicalized.
fn member_dir(root: &Path, root_canon: &Path, link: &Path) -> io::Result<PathBuf> {
    let target = match std::fs::read_link(link) {
        Ok(t) if t.is_relative() => t,
        Ok(_) => return std::fs::canonicalize(link),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return std::fs::canonicalize(link),
        Err(e) => return Err(e),
    };
    let Some(within) = link.parent().and_then(|p| p.strip_prefix(root).ok()) else {
        return std::fs::canonicalize(link);
    };
    let mut dir = root_canon.join(within);
    for c in target.components() {
        match c {
            std::path::Component::ParentDir => {
                dir.pop();
            }
            std::path::Component::Normal(n) => dir.push(n),
            std::path::Component::CurDir => {}
            _ => return std::fs::canonicalize(link),
        }
    }
    if !dir.starts_with(root_canon) {
        return std::fs::canonicalize(link);
    }
    Ok(dir)
}

/// Reads the member behind `link` (a group's `devices/<name>` or `bus/pci/devices/<name>`).
fn read_member(
    root: &Path,
    root_canon: &Path,
    link: &Path,
    name: &str,
    group: u32,
    problems: &mut Vec<ScanProblem>,
) -> Result<Member, SysfsError> {
    crate::io_deadline::SCAN_PROGRESS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = member_dir(root, root_canon, link).map_err(|e| SysfsError::io(link, e))?;
    let dir = match DeviceDir::open(dir.clone()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SysfsError::Vanished { path: dir })
        }
        Err(e) => return Err(SysfsError::io(&dir, e)),
    };
    let driver = driver_at(&dir)?;
    if PciAddress::parse(name).is_none() {
        return Ok(Member::Other(OtherMember {
            name: name.to_string(),
            group,
            driver,
        }));
    }
    let mut problem =
        |e: SysfsError| problems.push(ScanProblem::from_error(Some(group), Some(name), &e));

    let vendor =
        required_hex(&dir, c"vendor", 0xffff, &mut problem)?.and_then(|v| u16::try_from(v).ok());
    let device =
        required_hex(&dir, c"device", 0xffff, &mut problem)?.and_then(|v| u16::try_from(v).ok());
    let class = required_hex(&dir, c"class", 0x00ff_ffff, &mut problem)?;

    let config = match read_attribute(&dir, c"config", CONFIG_LIMIT) {
        Ok(c) => c,
        Err(e @ SysfsError::Vanished { .. }) => return Err(e),
        Err(e) => {
            problem(e);
            None
        }
    };
    let config = config.as_deref();

    let driver_override = match read_attribute(&dir, c"driver_override", ATTRIBUTE_LIMIT) {
        Ok(s) => s.and_then(|s| parse_driver_override(&String::from_utf8_lossy(&s))),
        Err(e @ SysfsError::Vanished { .. }) => return Err(e),
        Err(e) => {
            problem(e);
            None
        }
    };

    let dir = &dir.path;
    let relative = dir.strip_prefix(root_canon).unwrap_or(dir);
    let mut parents: Vec<String> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|c| PciAddress::parse(c).is_some())
        .map(str::to_string)
        .collect();
    if parents.last().map(String::as_str) == Some(name) {
        parents.pop();
    }

    let bridge = class.is_some_and(|c| c >> 8 == 0x0604)
        || config.and_then(config::bridge_header) == Some(true);
    let multifunction = match config.and_then(config::multifunction) {
        Some(m) => m,
        None => has_sibling_functions(dir, name),
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
        // Filled by the caller from the slots table, read once per scan.
        physical_slot: None,
    }))
}

/// A hex attribute (`vendor`, `device`, `class`) of at most `max`: `Err(Vanished)` when the
/// device directory is gone, a problem and `None` when the file is missing, unreadable,
/// malformed or out of range.
fn required_hex(
    dir: &DeviceDir,
    file: &'static CStr,
    max: u32,
    problem: &mut impl FnMut(SysfsError),
) -> Result<Option<u32>, SysfsError> {
    let path = || dir.join(file);
    let what = file.to_str().unwrap_or("attribute");
    let bytes = match read_attribute(dir, file, ATTRIBUTE_LIMIT) {
        Ok(Some(b)) => b,
        Ok(None) => {
            problem(SysfsError::Missing { path: path() });
            return Ok(None);
        }
        Err(e @ SysfsError::Vanished { .. }) => return Err(e),
        Err(e) => {
            problem(e);
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    match parse_hex(&text) {
        Some(value) if value <= max => Ok(Some(value)),
        Some(value) => {
            problem(SysfsError::OutOfRange {
                path: path(),
                what,
                value,
                max,
            });
            Ok(None)
        }
        None => {
            problem(SysfsError::malformed(path(), what, &text));
            Ok(None)
        }
    }
}

/// `0x10de\n` -> 0x10de: hex digits only (no sign), `0x` optional, at most 32 bits.
pub fn parse_hex(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
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

/// [`read_driver`] of a directory held open.
fn driver_at(dir: &DeviceDir) -> Result<Option<String>, SysfsError> {
    match dir.read_link(c"driver") {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.path.exists() {
                Ok(None)
            } else {
                Err(SysfsError::Vanished {
                    path: dir.path.clone(),
                })
            }
        }
        Err(e) => Err(SysfsError::io(&dir.join(c"driver"), e)),
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
