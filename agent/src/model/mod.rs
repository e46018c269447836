//! The group map: IOMMU groups, their member devices, the drivers bound to them, who owns each
//! group and whether it is viable for user ownership. Pure: it is filled from a [`crate::sysfs`]
//! scan and then mutated by the daemon as eBPF events arrive; nothing here touches the kernel.
//!
//! Data flows `group -> devices -> driver -> owner -> viability`:
//! - [`GroupMap`] holds groups by number; each [`Group`] holds its PCI members ([`Device`], keyed by
//!   address as the kernel spells it, `0000:01:00.1`) and any non-PCI members ([`OtherMember`]).
//! - The owner of a group ([`Owner`]) follows from the bound drivers (kernel DMA API users), the
//!   processes holding the group's VFIO files ([`Holder`]) and the claims recorded from events.
//! - The verdict of a group ([`crate::policy::Policy::verdict`]) adds viability under a policy
//!   and one reason per offending member; [`GroupMap::why_shared`] explains from sysfs why the group has
//!   more than one member.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

pub mod driver;
mod owner;
mod why_shared;

pub use owner::{bound_drivers, Owner};

/// ACS (Access Control Services) state of a device, from its extended capability 0x000D.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Acs {
    /// The control register has the kernel's REQ_ACS_FLAGS (SV, RR, CR, UF) set.
    Enabled,
    /// The capability exists but REQ_ACS_FLAGS are not all set.
    Disabled,
    /// The extended configuration space was readable and holds no ACS capability.
    None,
    /// `config` was unreadable or truncated (64/256 bytes: read without root).
    Unknown,
}

impl Acs {
    /// Whether ACS is known to be enabled.
    pub fn isolates(self) -> bool {
        self == Acs::Enabled
    }

    /// As in JSON: `enabled`, `disabled`, `none`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Acs::Enabled => "enabled",
            Acs::Disabled => "disabled",
            Acs::None => "none",
            Acs::Unknown => "unknown",
        }
    }
}

/// Device/port type from the PCI Express capability (PCI_EXP_FLAGS_TYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortType {
    Endpoint,
    LegacyEndpoint,
    RootPort,
    UpstreamPort,
    DownstreamPort,
    PcieToPciBridge,
    PciToPcieBridge,
    RcEndpoint,
    RcEventCollector,
    /// A type value the PCIe specification reserves.
    Reserved,
}

impl PortType {
    /// Decodes PCI_EXP_FLAGS_TYPE (bits 7:4 of the PCIe capabilities register).
    pub fn from_type(t: u8) -> PortType {
        match t {
            0x0 => PortType::Endpoint,
            0x1 => PortType::LegacyEndpoint,
            0x4 => PortType::RootPort,
            0x5 => PortType::UpstreamPort,
            0x6 => PortType::DownstreamPort,
            0x7 => PortType::PcieToPciBridge,
            0x8 => PortType::PciToPcieBridge,
            0x9 => PortType::RcEndpoint,
            0xa => PortType::RcEventCollector,
            _ => PortType::Reserved,
        }
    }

    /// Words an operator reads: "root port", "downstream port".
    pub fn describe(self) -> &'static str {
        match self {
            PortType::Endpoint => "endpoint",
            PortType::LegacyEndpoint => "legacy endpoint",
            PortType::RootPort => "root port",
            PortType::UpstreamPort => "upstream port",
            PortType::DownstreamPort => "downstream port",
            PortType::PcieToPciBridge => "PCIe-to-PCI bridge",
            PortType::PciToPcieBridge => "PCI-to-PCIe bridge",
            PortType::RcEndpoint => "root complex integrated endpoint",
            PortType::RcEventCollector => "root complex event collector",
            PortType::Reserved => "PCIe device of reserved type",
        }
    }
}

/// One PCI device, a member of an IOMMU group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Address as the kernel spells it: `0000:01:00.1` (DDDD:BB:DD.F).
    pub address: String,
    /// IOMMU group number.
    pub group: u32,
    /// Vendor ID (`vendor` file); `None` when unreadable.
    pub vendor: Option<u16>,
    /// Device ID (`device` file).
    pub device: Option<u16>,
    /// 24-bit class code (`class` file), e.g. 0x040300.
    pub class: Option<u32>,
    /// A PCI-to-PCI bridge (class 0x0604 or header type 1): root/downstream/upstream ports too.
    pub bridge: bool,
    /// From the PCI Express capability in `config`, when readable and present.
    pub port_type: Option<PortType>,
    /// Name of the bound driver (`driver` link), `None` when unbound.
    pub driver: Option<String>,
    /// `driver_override`; `None` when unset (`(null)`) or absent.
    pub driver_override: Option<String>,
    /// PCI devices above this one on its canonical sysfs path, root-most first (the nearest
    /// upstream bridge is last); empty for devices on a root bus.
    pub parents: Vec<String>,
    /// Multifunction bit of the header type register (or siblings seen in sysfs).
    pub multifunction: bool,
    /// ACS state from the extended capability.
    pub acs: Acs,
    /// The name of the physical slot it sits in (`bus/pci/slots/<name>/address` is its
    /// `DDDD:BB:DD`), when the platform describes one: a name that stays when bus numbers move.
    pub physical_slot: Option<String>,
}

impl Device {
    /// A device with only its address and group known; everything else unset.
    pub fn new(address: &str, group: u32) -> Device {
        Device {
            address: address.to_string(),
            group,
            vendor: None,
            device: None,
            class: None,
            bridge: false,
            port_type: None,
            driver: None,
            driver_override: None,
            parents: Vec::new(),
            multifunction: false,
            acs: Acs::Unknown,
            physical_slot: None,
        }
    }

    /// `0000:01:00` of `0000:01:00.1`: the slot all functions of one device share.
    pub fn slot(&self) -> &str {
        self.address
            .rsplit_once('.')
            .map_or(self.address.as_str(), |(slot, _)| slot)
    }

    /// The nearest upstream bridge, if any.
    pub fn parent(&self) -> Option<&str> {
        self.parents.last().map(String::as_str)
    }
}

/// A member of an IOMMU group that is not a PCI device (a platform or ACPI device).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtherMember {
    /// Its name in `devices/` of the group, e.g. `AMDI0010:00`.
    pub name: String,
    pub group: u32,
    /// Bound driver, when its `driver` link could be read.
    pub driver: Option<String>,
}

/// A process holding a VFIO file open: the legacy group file `/dev/vfio/N` or an iommufd
/// device cdev `/dev/vfio/devices/vfioX`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// `comm` of the process (`/proc/PID/comm`).
    pub comm: String,
    /// File descriptor number; `None` for a holder known from a `vfio_open` record, which
    /// names the process but not the descriptor (the agent does not scan /proc for it).
    pub fd: Option<u32>,
    /// The path the descriptor points at, as the kernel shows it.
    pub path: String,
    /// Group held, when known (always for `/dev/vfio/N`; for a cdev once resolved).
    pub group: Option<u32>,
    /// Device behind a cdev (`None` for group files).
    pub device: Option<String>,
    /// The pod and container of the process, from `/proc/PID/cgroup` (`None` outside a pod).
    pub pod: Option<crate::pods::PodIdentity>,
}

/// One IOMMU group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub id: u32,
    /// PCI members by address.
    pub devices: BTreeMap<String, Device>,
    /// Non-PCI members.
    pub others: Vec<OtherMember>,
}

impl Group {
    pub fn new(id: u32) -> Group {
        Group {
            id,
            ..Group::default()
        }
    }

    /// Number of members, PCI or not.
    pub fn len(&self) -> usize {
        self.devices.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Groups, devices, drivers, holders and claims of one node.
#[derive(Clone, Debug, Default)]
pub struct GroupMap {
    groups: BTreeMap<u32, Group>,
    /// Device address -> group, for the daemon's per-device events.
    index: BTreeMap<String, u32>,
    holders: Vec<Holder>,
    /// Where each holder counts, for [`GroupMap::holders`]: positions in `holders`, in order.
    /// Without it every group scanned every holder: 5.6 s of a 100,000-device audit (issue 20).
    holder_index: HolderIndex,
    claims: BTreeSet<u32>,
}

/// Holders by their group when known, else by their cdev's device (resolved to the device's
/// group when asked, so a device that moves takes its holders along).
#[derive(Clone, Debug, Default)]
struct HolderIndex {
    by_group: HashMap<u32, Vec<usize>>,
    by_device: HashMap<String, Vec<usize>>,
}

impl HolderIndex {
    fn add(&mut self, h: &Holder, at: usize) {
        match (h.group, &h.device) {
            (Some(g), _) => self.by_group.entry(g).or_default().push(at),
            (None, Some(d)) => self.by_device.entry(d.clone()).or_default().push(at),
            (None, None) => {}
        }
    }
}

impl GroupMap {
    /// An empty map.
    pub fn new() -> GroupMap {
        GroupMap::default()
    }

    /// Adds an (empty) group; groups that exist in sysfs without members are kept.
    pub fn add_group(&mut self, id: u32) {
        self.groups.entry(id).or_insert_with(|| Group::new(id));
    }

    /// Adds a device to its group (`device.group`), creating the group if needed. A device
    /// already known under the same address is replaced (and moved if its group changed).
    pub fn add_device(&mut self, device: Device) {
        self.remove_device(&device.address);
        let group = device.group;
        self.index.insert(device.address.clone(), group);
        self.groups
            .entry(group)
            .or_insert_with(|| Group::new(group))
            .devices
            .insert(device.address.clone(), device);
    }

    /// Adds a non-PCI member to its group.
    pub fn add_other(&mut self, member: OtherMember) {
        let group = member.group;
        let entry = self
            .groups
            .entry(group)
            .or_insert_with(|| Group::new(group));
        entry.others.retain(|m| m.name != member.name);
        entry.others.push(member);
    }

    /// Removes a device (a `device_removed` event); returns the group it was in. The group stays,
    /// possibly empty, as in sysfs until the kernel frees it.
    pub fn remove_device(&mut self, device: &str) -> Option<u32> {
        let group = self.index.remove(device)?;
        if let Some(g) = self.groups.get_mut(&group) {
            g.devices.remove(device);
        }
        Some(group)
    }

    /// Records that `device` is now bound to `driver` (`None`: unbound), from a bind or unbind
    /// event. Returns the device's group, or `None` when the device is not in the map.
    pub fn set_driver(&mut self, device: &str, driver: Option<&str>) -> Option<u32> {
        let dev = self.device_mut(device)?;
        dev.driver = driver.map(str::to_string);
        Some(dev.group)
    }

    /// Records a new `driver_override` of `device` (`None`: cleared). Returns its group.
    pub fn set_driver_override(&mut self, device: &str, driver: Option<&str>) -> Option<u32> {
        let dev = self.device_mut(device)?;
        dev.driver_override = driver.map(str::to_string);
        Some(dev.group)
    }

    /// Records a user-space DMA-ownership claim (`claimed`) or its release on `group`, from a
    /// `claim`/`release` event. A claimed group is user-owned even when no holder was seen.
    pub fn record_claim(&mut self, group: u32, claimed: bool) {
        if claimed {
            self.claims.insert(group);
        } else {
            self.claims.remove(&group);
        }
    }

    /// Whether a claim is recorded on `group`.
    pub fn is_claimed(&self, group: u32) -> bool {
        self.claims.contains(&group)
    }

    /// Replaces the processes holding VFIO files with a fresh procfs scan
    /// ([`crate::sysfs::scan_holders`]). A cdev holder whose group the scan could not tell counts
    /// for the group its device is in.
    pub fn set_holders(&mut self, holders: Vec<Holder>) {
        self.holders = holders;
        self.index_holders();
    }

    /// A process opened a VFIO file (a `vfio_open` record).
    pub fn add_holder(&mut self, holder: Holder) {
        self.holder_index.add(&holder, self.holders.len());
        self.holders.push(holder);
    }

    /// Rebuilds [`GroupMap::holder_index`] after `holders` changed other than at its end.
    fn index_holders(&mut self) {
        self.holder_index = HolderIndex::default();
        for (i, h) in self.holders.iter().enumerate() {
            self.holder_index.add(h, i);
        }
    }

    /// The last reference to the VFIO file at `path` went away (a `vfio_release` record).
    /// VFIO lets a group file be open once at a time, so with `whole` every holder of it goes
    /// (dup'd or passed fds included); a cdev can be open several times: one holder goes, the
    /// one `tgid` opened if there is one. Returns whether any went.
    pub fn release_holder(&mut self, path: &str, tgid: u32, whole: bool) -> bool {
        let before = self.holders.len();
        if whole {
            self.holders.retain(|h| h.path != path);
        } else if let Some(i) = self
            .holders
            .iter()
            .position(|h| h.path == path && h.pid == tgid)
            .or_else(|| self.holders.iter().position(|h| h.path == path))
        {
            self.holders.remove(i);
        }
        let changed = self.holders.len() != before;
        if changed {
            self.index_holders();
        }
        changed
    }

    /// All holders, as last set.
    pub fn all_holders(&self) -> &[Holder] {
        &self.holders
    }

    /// Processes holding `group`'s VFIO group file or a member's cdev, in the order they were
    /// set or added. Costs the group's members and holders, not every holder of the node.
    pub fn holders(&self, group: u32) -> impl Iterator<Item = &Holder> {
        let index = &self.holder_index;
        let mut at: Vec<usize> = index.by_group.get(&group).cloned().unwrap_or_default();
        if !index.by_device.is_empty() {
            if let Some(g) = self.groups.get(&group) {
                for address in g.devices.keys() {
                    at.extend(index.by_device.get(address).into_iter().flatten());
                }
            }
        }
        at.sort_unstable();
        at.into_iter().map(move |i| &self.holders[i])
    }

    /// The group `device` is in.
    pub fn group_of(&self, device: &str) -> Option<u32> {
        self.index.get(device).copied()
    }

    pub fn group(&self, id: u32) -> Option<&Group> {
        self.groups.get(&id)
    }

    /// All groups in numeric order.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn device(&self, device: &str) -> Option<&Device> {
        let group = self.group_of(device)?;
        self.groups.get(&group)?.devices.get(device)
    }

    fn device_mut(&mut self, device: &str) -> Option<&mut Device> {
        let group = self.group_of(device)?;
        self.groups.get_mut(&group)?.devices.get_mut(device)
    }

    /// All PCI devices in address order.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.index.keys().filter_map(|a| self.device(a))
    }
}

#[cfg(test)]
mod tests;
