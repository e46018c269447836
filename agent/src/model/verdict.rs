//! Owner and viability of a group.
use serde::Serialize;

use super::driver::{is_driver_managed_dma, is_user_driver};
use super::{Group, GroupMap};
use crate::policy::Policy;

/// Who owns a group's DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// A member is bound to a driver that uses the kernel DMA API (not `driver_managed_dma`).
    Kernel,
    /// A process holds the group's VFIO group file or a member's cdev, or a claim was recorded.
    User,
    /// Neither.
    None,
    /// Both: the state the kernel refuses since 5.19 and BUG()s on before it.
    Conflict,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Kernel => "kernel",
            Owner::User => "user",
            Owner::None => "none",
            Owner::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group's owner, its viability for user ownership under a policy, and why it is not viable
/// (one reason per offending member).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub owner: Owner,
    pub viable: bool,
    pub reasons: Vec<String>,
}

/// Why a member's driver keeps its group from being viable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offence {
    /// The driver uses the kernel DMA API and the policy does not allow it.
    KernelDma,
    /// The policy lists the driver in `denied_drivers`.
    Denied,
}

/// A member bound to a driver that is not allowed next to user-owned devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offender {
    /// PCI address, or the name of a non-PCI member.
    pub device: String,
    pub driver: String,
    pub offence: Offence,
    /// `false` for non-PCI members.
    pub pci: bool,
}

impl GroupMap {
    /// The owner of `group`, `None` when the group is not in the map.
    pub fn owner(&self, group: u32) -> Option<Owner> {
        let g = self.group(group)?;
        let user = self.holders(group).next().is_some() || self.is_claimed(group);
        let kernel = bound_drivers(g).any(|(_, d)| !is_driver_managed_dma(d));
        Some(match (user, kernel) {
            (true, true) => Owner::Conflict,
            (true, false) => Owner::User,
            (false, true) => Owner::Kernel,
            (false, false) => Owner::None,
        })
    }

    /// Members of `group` bound to a driver the policy does not allow next to user-owned
    /// devices, in address order (non-PCI members last).
    pub fn offenders(&self, group: u32, policy: &Policy) -> Vec<Offender> {
        let Some(g) = self.group(group) else {
            return Vec::new();
        };
        let pci = g.devices.len();
        bound_drivers(g)
            .enumerate()
            .filter(|(_, (_, driver))| !policy.allows(driver))
            .map(|(i, (device, driver))| Offender {
                device: device.to_string(),
                driver: driver.to_string(),
                offence: if policy.denies(driver) {
                    Offence::Denied
                } else {
                    Offence::KernelDma
                },
                pci: i < pci,
            })
            .collect()
    }

    /// The first member of `group` bound to vfio-pci or a variant: `(address, driver)`.
    pub fn user_bound_member(&self, group: u32) -> Option<(&str, &str)> {
        self.group(group)?.devices.values().find_map(|d| {
            d.driver
                .as_deref()
                .filter(|drv| is_user_driver(drv))
                .map(|drv| (d.address.as_str(), drv))
        })
    }

    /// Owner, viability and reasons of `group` under `policy`; `None` when the group is not in
    /// the map. Viable means every member is unbound or bound to a driver the policy allows
    /// (by default: vfio-pci and its variants, pci-stub, pcieport).
    pub fn verdict(&self, group: u32, policy: &Policy) -> Option<Verdict> {
        let owner = self.owner(group)?;
        let offenders = self.offenders(group, policy);
        let partner = self.user_bound_member(group);
        let holder = self.holders(group).next();
        let reasons = offenders
            .iter()
            .map(|o| {
                let name = if o.pci {
                    o.device.clone()
                } else {
                    format!("{} (not PCI)", o.device)
                };
                let why = match o.offence {
                    Offence::KernelDma => "kernel DMA",
                    Offence::Denied => "denied by policy",
                };
                let context = match (partner, holder) {
                    (Some((dev, drv)), _) => format!(" while {dev} is on {drv}"),
                    (None, Some(h)) => {
                        format!(" while the group is held by {} (pid {})", h.comm, h.pid)
                    }
                    (None, None) if self.is_claimed(group) => {
                        " while the group is claimed by user space".to_string()
                    }
                    (None, None) => String::new(),
                };
                format!("{name} is bound to {} ({why}){context}", o.driver)
            })
            .collect::<Vec<_>>();
        Some(Verdict {
            owner,
            viable: offenders.is_empty(),
            reasons,
        })
    }
}

/// `(member, driver)` for every bound member, PCI devices first.
fn bound_drivers(g: &Group) -> impl Iterator<Item = (&str, &str)> {
    let pci = g
        .devices
        .values()
        .filter_map(|d| Some((d.address.as_str(), d.driver.as_deref()?)));
    let other = g
        .others
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.driver.as_deref()?)));
    pci.chain(other)
}
