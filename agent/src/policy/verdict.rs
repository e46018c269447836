//! The verdict on a group: its owner and whether it is viable for user ownership under this
//! policy, with one reason per offending member. Here, where the policy lives, so that the
//! model does not need the policy to describe a group.
use serde::Serialize;

use super::Policy;
use crate::model::{bound_drivers, GroupMap, Owner};

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

impl Policy {
    /// Members of `group` in `map` bound to a driver this policy does not allow next to
    /// user-owned devices, in address order (non-PCI members last).
    pub fn offenders(&self, map: &GroupMap, group: u32) -> Vec<Offender> {
        let Some(g) = map.group(group) else {
            return Vec::new();
        };
        let pci = g.devices.len();
        bound_drivers(g)
            .enumerate()
            .filter(|(_, (_, driver))| !self.allows(driver))
            .map(|(i, (device, driver))| Offender {
                device: device.to_string(),
                driver: driver.to_string(),
                offence: if self.denies(driver) {
                    Offence::Denied
                } else {
                    Offence::KernelDma
                },
                pci: i < pci,
            })
            .collect()
    }

    /// Owner, viability and reasons of `group` in `map` under this policy; `None` when the
    /// group is not in the map. Viable means every member is unbound or bound to a driver the
    /// policy allows (by default: vfio-pci and its variants, pci-stub, pcieport).
    pub fn verdict(&self, map: &GroupMap, group: u32) -> Option<Verdict> {
        let owner = map.owner(group)?;
        let offenders = self.offenders(map, group);
        let partner = map.user_bound_member(group);
        let holder = map.holders(group).next();
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
                    (None, None) if map.is_claimed(group) => {
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
