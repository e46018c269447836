//! Owner of a group: who holds its DMA, from the bound drivers, holders and claims. Whether
//! it is viable is the policy's call ([`crate::policy::Policy::verdict`]).
use super::driver::{is_driver_managed_dma, is_user_driver};
use super::{Group, GroupMap};

/// Who owns a group's DMA: the output schema's type, computed here.
pub use iommu_enforcer_schema::Owner;

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

    /// The first member of `group` bound to vfio-pci or a variant: `(address, driver)`.
    pub fn user_bound_member(&self, group: u32) -> Option<(&str, &str)> {
        self.group(group)?.devices.values().find_map(|d| {
            d.driver
                .as_deref()
                .filter(|drv| is_user_driver(drv))
                .map(|drv| (d.address.as_str(), drv))
        })
    }
}

/// `(member, driver)` for every bound member, PCI devices first.
pub fn bound_drivers(g: &Group) -> impl Iterator<Item = (&str, &str)> {
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
