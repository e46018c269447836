//! The node policy and the decisions it implies. Pure: [`Policy::load`] reads one file, the
//! rest only looks at a [`GroupMap`](crate::model::GroupMap).
//!
//! # Policy reference
//!
//! The policy is a TOML file (`--policy FILE`, mountable from a ConfigMap). Every key is
//! optional; unknown keys are errors. An error names the file, line and column
//! (`policy.toml:7:9: ...`) and `enforcer audit` exits 2 without doing anything else. The
//! agent re-reads a changed file while it runs ([`watch`]): a valid one replaces the policy in
//! force, an invalid one is reported and changes nothing.
//!
//! ```toml
//! # Reserve every group the moment it becomes user-owned: its members get driver_override
//! # pinned to their user driver (unbound companions to the group's user driver, or "none").
//! # Default: true.
//! protect_user_groups = true
//!
//! # Extra drivers allowed next to user-owned devices, on top of the drivers that declare
//! # driver_managed_dma (vfio-pci and its variants *_vfio_pci / *-vfio-pci, pci-stub, pcieport).
//! # Default: [].
//! allowed_drivers = ["nvidia_vfio_pci"]
//!
//! # Drivers never allowed next to user-owned devices, even if allowed above or by default.
//! # Setting the key replaces the default list, which holds the bridge hotplug driver that maps
//! # the bridge's MMIO (a user-owned device could reprogram it by peer-to-peer DMA).
//! # A driver may not be both allowed and denied. Default: ["shpchp"].
//! denied_drivers = ["shpchp"]
//!
//! # Executables (absolute paths) allowed to write driver_override, bind, unbind, new_id,
//! # drivers_probe or remove of protected members (the agent's own writes always pass).
//! # Default: [].
//! trusted_writers = ["/usr/local/bin/gpu-operator-validator"]
//!
//! # Kubernetes containers allowed the same writes, to groups not in use (reserved idle groups
//! # and idle ones), by the identity their runtime's OCI bundle gives them (config.json
//! # annotations; crate::pods::trusted). namespace and container are required and matched
//! # exactly; pod, optional, is a prefix of the pod's name. Default: [].
//! trusted_containers = [{ namespace = "gpu-operator", container = "nvidia-vfio-manager" }]
//!
//! # Reserved devices, each with the driver it is meant for. Exactly one selector per entry:
//! #   group  = "14"             every member of IOMMU group 14 (a string or an integer)
//! #   device = "0000:01:00.0"   one device, by address (DDDD:BB:DD.F)
//! #   id     = "10de:2204"      every device with this vendor:device (4 hex digits each)
//! #   class  = "0x0300"         every device whose class code starts with these hex digits
//! #                             (2, 4 or 6 digits, "0x" optional: "0x03" is any display device)
//! #   slot   = "3"              every function in the physical slot of this name
//! #                             (/sys/bus/pci/slots/<name>/address)
//! # Prefer id, class, slot or device to group numbers, which change with kernel and firmware.
//! # nodes = { "label" = "value" }: only on nodes with all these labels (see [`NodeLabels`]);
//! #   entries for different nodes may select the same devices.
//! # driver = the intended driver, or "none" for members that must stay unbound.
//! # Default driver: "vfio-pci".
//! # rebind = true: a member bound to another driver is unbound from it and probed again, so
//! #   it takes the intended driver; default false: it is reported (reserved_wrong_driver).
//! # A reserved device reserves its whole group: companions (other members not selected
//! # themselves) get the same intended driver, except bridges and ports, which may stay
//! # unbound or on an allowed driver (pcieport). The agent pins driver_override of every
//! # reserved member to its intended driver, so autoprobe and bind cannot attach anything else.
//! [[reserve]]
//! group = "14"
//! driver = "vfio-pci"
//!
//! [[reserve]]
//! id = "10de:2204"
//! driver = "vfio-pci"
//! ```
use std::path::PathBuf;

use crate::model::driver::{is_allowed_by_default, DEFAULT_DENIED};
use crate::model::Device;
pub use crate::pci::{ClassPrefix, DriverName, PciAddress, PciId};
pub use crate::pods::trusted::TrustedContainer;

mod decide;
mod file;
pub mod host_path;
pub mod known_drivers;
pub mod labels;
mod reservations;
mod verdict;
pub mod watch;
pub mod writer_watch;

pub use decide::{
    intended_driver, pins, reserved_groups, unmatched, violations, Action, Pin, Rule, Violation,
};
pub use file::{PolicyError, POLICY_LIMIT};
pub use labels::NodeLabels;
pub use reservations::Reservations;
pub use verdict::{Offence, Offender, Verdict};

/// A parsed node policy. [`Policy::default`] is the policy without a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The file it was read from, `None` for the default policy.
    pub source: Option<PathBuf>,
    pub protect_user_groups: bool,
    pub allowed_drivers: Vec<DriverName>,
    pub denied_drivers: Vec<DriverName>,
    pub trusted_writers: Vec<PathBuf>,
    pub trusted_containers: Vec<TrustedContainer>,
    /// The `[[reserve]]` entries in file order, indexed by what they select.
    pub reserve: Reservations,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            source: None,
            protect_user_groups: true,
            allowed_drivers: Vec::new(),
            denied_drivers: DEFAULT_DENIED
                .iter()
                .filter_map(|d| DriverName::parse(d).ok())
                .collect(),
            trusted_writers: Vec::new(),
            trusted_containers: Vec::new(),
            reserve: Reservations::default(),
        }
    }
}

impl Policy {
    /// Whether `driver` may be bound next to user-owned devices: a `driver_managed_dma` driver or
    /// one in `allowed_drivers`, and not in `denied_drivers`.
    pub fn allows(&self, driver: &str) -> bool {
        !self.denies(driver)
            && (is_allowed_by_default(driver)
                || self.allowed_drivers.iter().any(|d| d.as_str() == driver))
    }

    /// Whether `driver` is in `denied_drivers`.
    pub fn denies(&self, driver: &str) -> bool {
        self.denied_drivers.iter().any(|d| d.as_str() == driver)
    }

    /// This policy as it applies to a node with `labels`: reservations scoped with `nodes` to
    /// other nodes are left out (they are neither in force nor unmatched here).
    pub fn for_node(mut self, labels: &NodeLabels) -> Policy {
        if self.reserve.iter().any(|r| !r.nodes.is_empty()) {
            let kept = self
                .reserve
                .iter()
                .filter(|r| labels.matches(&r.nodes))
                .cloned()
                .collect();
            self.reserve = Reservations::new(kept);
        }
        self
    }

    /// The first reservation that selects `device` itself.
    pub fn reservation_of(&self, device: &Device) -> Option<&Reserve> {
        self.reserve.first_of(device)
    }
}

/// One `[[reserve]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserve {
    pub selector: Selector,
    pub driver: Intended,
    /// Unbind members that sit on another driver so they take the intended one (default:
    /// report them and leave them).
    pub rebind: bool,
    /// Line of the entry in the policy file (1-based), for messages.
    pub line: usize,
    /// The node labels (`key`, `value`) a node must all carry for the entry to apply there
    /// (`nodes = { ... }`), sorted by key; empty: every node.
    pub nodes: Vec<(String, String)>,
}

/// What a `[[reserve]]` entry selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every member of this IOMMU group.
    Group(u32),
    /// One device by address, `0000:01:00.0` (lowercase).
    Device(PciAddress),
    /// Every device with this vendor and device ID.
    Id(PciId),
    /// Every device whose 24-bit class code starts with these hex digits.
    Class(ClassPrefix),
    /// Every function in the physical slot of this name (`bus/pci/slots/<name>`).
    Slot(String),
}

impl Selector {
    /// Whether this selector selects `device` itself.
    pub fn matches(&self, device: &Device) -> bool {
        match self {
            Selector::Group(g) => device.group == *g,
            Selector::Device(a) => device.address == a.as_str(),
            Selector::Id(id) => id.matches(device.vendor, device.device),
            Selector::Class(prefix) => device.class.is_some_and(|c| prefix.matches(c)),
            Selector::Slot(name) => device.physical_slot.as_deref() == Some(name.as_str()),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Group(g) => write!(f, "group {g}"),
            Selector::Device(a) => write!(f, "device {a}"),
            Selector::Id(id) => write!(f, "id {id}"),
            Selector::Class(p) => write!(f, "class {p}"),
            Selector::Slot(name) => write!(f, "slot {name:?}"),
        }
    }
}

/// The driver a reserved device is meant for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intended {
    /// Bound to this driver (and `driver_override` pinned to it).
    Driver(DriverName),
    /// Unbound, `driver_override` pinned to `none`.
    Unbound,
}

impl Intended {
    /// The `driver_override` value that pins it.
    pub fn driver_override(&self) -> &str {
        match self {
            Intended::Driver(d) => d.as_str(),
            Intended::Unbound => "none",
        }
    }
}

impl std::fmt::Display for Intended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.driver_override())
    }
}

#[cfg(test)]
mod tests;
