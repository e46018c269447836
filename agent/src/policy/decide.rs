//! Decisions: what is wrong with a group map under a policy, and what the agent would do.
//!
//! # Rules
//! | rule | when | action |
//! |---|---|---|
//! | `split_group` | a member is on vfio-pci (or a variant) while another is bound to a kernel DMA driver the policy does not allow | `would_veto` |
//! | `denied_driver` | a member is bound to a denied driver in a group that is user-owned, reserved, or has a member on vfio-pci | `would_veto` |
//! | `conflict` | the group is held/claimed by user space while a member is bound to a kernel DMA driver | `report` |
//! | `reserved_wrong_driver` | a reserved member is bound to another driver than the intended one | `would_rebind` |
//! | `reserved_wrong_override` | a reserved member's `driver_override` names another driver | `would_pin` |
//! | `reserved_not_viable` | a reserved group is not viable under the policy (one per group) | `would_veto` |
//!
//! # Actions
//! - `would_veto`: the agent (unless `--dry-run`) vetoes VFIO opens and claims of the group, and
//!   any write that would bind a disallowed driver into it, until the member leaves this driver.
//! - `would_pin`: the agent writes the intended driver to the member's `driver_override`.
//! - `would_rebind`: the member has to leave its driver for the reservation to hold; the agent
//!   pins `driver_override`, so the member takes the intended driver at its next probe.
//! - `report`: nothing the agent can change; an operator has to act.
//!
//! Reserved members whose `driver_override` is simply unset are not violations: they are the
//! planned [`pins`] the agent makes at start.
use std::collections::BTreeSet;

use serde::{Serialize, Serializer};

use super::{DriverName, Intended, Offence, Policy, Reserve};
use crate::model::driver::{is_driver_managed_dma, is_user_driver};
use crate::model::{Device, GroupMap, Owner};

/// A rule a group breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    SplitGroup,
    DeniedDriver,
    Conflict,
    ReservedWrongDriver,
    ReservedWrongOverride,
    ReservedNotViable,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SplitGroup => "split_group",
            Rule::DeniedDriver => "denied_driver",
            Rule::Conflict => "conflict",
            Rule::ReservedWrongDriver => "reserved_wrong_driver",
            Rule::ReservedWrongOverride => "reserved_wrong_override",
            Rule::ReservedNotViable => "reserved_not_viable",
        }
    }
}

/// What the agent does about a violation (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    WouldVeto,
    WouldPin,
    WouldRebind,
    Report,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::WouldVeto => "would_veto",
            Action::WouldPin => "would_pin",
            Action::WouldRebind => "would_rebind",
            Action::Report => "report",
        }
    }
}

/// One broken rule. Serializes as `{group: "14", device, driver, rule, action, message}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    #[serde(serialize_with = "group_string")]
    pub group: u32,
    /// The member concerned; `None` for whole-group rules.
    pub device: Option<String>,
    /// Its bound driver; `None` when unbound or for whole-group rules.
    pub driver: Option<String>,
    pub rule: Rule,
    pub action: Action,
    /// One line for operators.
    pub message: String,
}

/// A `driver_override` write the agent would make: a reserved or protected member whose
/// override is unset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pin {
    #[serde(serialize_with = "group_string")]
    pub group: u32,
    pub device: String,
    /// The value to write (`none` keeps the member unbound).
    pub driver_override: String,
}

fn group_string<S: Serializer>(group: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(group)
}

/// A user driver the kernel named, as the driver to pin. One that is no driver name (it could
/// not be written to `driver_override`) pins `none`: nothing else may bind (fail closed).
fn as_intended(driver: &str) -> Intended {
    DriverName::parse(driver).map_or(Intended::Unbound, Intended::Driver)
}

/// The driver `device` is meant for, `None` when nothing reserves or protects it.
///
/// - A device a `[[reserve]]` entry selects: that entry's driver (the first entry wins).
/// - Another member of a group holding such a device (a companion): the driver of the group's
///   first selected device; bridges and ports are left alone (`None`) unless selected by
///   address.
/// - With `protect_user_groups`, a member of a user-owned group, or of a group with a member on
///   a user driver (vfio-pci: pinned at that bind, before any VM claims the group): its user
///   driver when it is on one, else the group's user driver, else `none`; bridges are left alone.
pub fn intended_driver(map: &GroupMap, policy: &Policy, device: &str) -> Option<Intended> {
    let dev = map.device(device)?;
    if let Some(r) = policy.reservation_of(dev) {
        let by_address = matches!(&r.selector, super::Selector::Device(_));
        if !dev.bridge || by_address {
            return Some(r.driver.clone());
        }
        return None;
    }
    if dev.bridge {
        return None;
    }
    if let Some(r) = group_reservation(map, policy, dev.group) {
        return Some(r.driver.clone());
    }
    let user =
        map.owner(dev.group) == Some(Owner::User) || map.user_bound_member(dev.group).is_some();
    if policy.protect_user_groups && user {
        if let Some(d) = dev.driver.as_deref().filter(|d| is_user_driver(d)) {
            return Some(as_intended(d));
        }
        if dev.driver.is_none() {
            return Some(match map.user_bound_member(dev.group) {
                Some((_, d)) => as_intended(d),
                None => Intended::Unbound,
            });
        }
    }
    None
}

/// The reservation of the group's first selected member, if any.
fn group_reservation<'p>(map: &GroupMap, policy: &'p Policy, group: u32) -> Option<&'p Reserve> {
    map.group(group)?
        .devices
        .values()
        .find_map(|d| policy.reservation_of(d))
}

/// Groups holding at least one reserved device.
pub fn reserved_groups(map: &GroupMap, policy: &Policy) -> BTreeSet<u32> {
    map.groups()
        .filter(|g| group_reservation(map, policy, g.id).is_some())
        .map(|g| g.id)
        .collect()
}

/// Reservations that select no device of this node (a group or device that is not there, an
/// ID or class with no device). Not violations: one policy may serve many nodes.
pub fn unmatched<'p>(map: &GroupMap, policy: &'p Policy) -> Vec<&'p Reserve> {
    let mut matched = vec![false; policy.reserve.len()];
    for d in map.devices() {
        for i in policy.reserve.positions_of(d) {
            matched[i] = true;
        }
    }
    policy
        .reserve
        .iter()
        .zip(matched)
        .filter_map(|(r, m)| (!m).then_some(r))
        .collect()
}

/// Every rule the map breaks under the policy, by group, then rule.
pub fn violations(map: &GroupMap, policy: &Policy) -> Vec<Violation> {
    let reserved = reserved_groups(map, policy);
    let mut out = Vec::new();
    for g in map.groups() {
        let Some(verdict) = policy.verdict(map, g.id) else {
            continue;
        };
        let user_member = map.user_bound_member(g.id);
        let user_owned = matches!(verdict.owner, Owner::User | Owner::Conflict);
        let is_reserved = reserved.contains(&g.id);

        for o in policy.offenders(map, g.id) {
            match o.offence {
                Offence::KernelDma => {
                    if let Some((u, ud)) = user_member {
                        out.push(Violation {
                            group: g.id,
                            device: Some(o.device.clone()),
                            driver: Some(o.driver.clone()),
                            rule: Rule::SplitGroup,
                            action: Action::WouldVeto,
                            message: format!(
                                "group {} is split: {} is bound to {} (kernel DMA) while {u} is on {ud}",
                                g.id, o.device, o.driver
                            ),
                        });
                    }
                }
                Offence::Denied => {
                    if user_member.is_some() || user_owned || is_reserved {
                        out.push(Violation {
                            group: g.id,
                            device: Some(o.device.clone()),
                            driver: Some(o.driver.clone()),
                            rule: Rule::DeniedDriver,
                            action: Action::WouldVeto,
                            message: format!(
                                "{} is bound to {}, which the policy denies next to user-owned devices (group {})",
                                o.device, o.driver, g.id
                            ),
                        });
                    }
                }
            }
        }

        if verdict.owner == Owner::Conflict {
            let holder = map
                .holders(g.id)
                .next()
                .map(|h| format!("held by {} (pid {})", h.comm, h.pid))
                .unwrap_or_else(|| "claimed by user space".to_string());
            let kernel_members = g
                .devices
                .values()
                .filter_map(|d| Some((d.address.as_str(), d.driver.as_deref()?)))
                .chain(
                    g.others
                        .iter()
                        .filter_map(|m| Some((m.name.as_str(), m.driver.as_deref()?))),
                )
                .filter(|(_, drv)| !is_driver_managed_dma(drv));
            for (dev, drv) in kernel_members {
                out.push(Violation {
                    group: g.id,
                    device: Some(dev.to_string()),
                    driver: Some(drv.to_string()),
                    rule: Rule::Conflict,
                    action: Action::Report,
                    message: format!(
                        "group {} is {holder} while {dev} is bound to {drv} (kernel DMA)",
                        g.id
                    ),
                });
            }
        }

        if is_reserved {
            for d in g.devices.values() {
                if let Some(intended) = intended_driver(map, policy, &d.address) {
                    out.extend(check_reserved(d, &intended));
                }
            }
            if !verdict.viable {
                out.push(Violation {
                    group: g.id,
                    device: None,
                    driver: None,
                    rule: Rule::ReservedNotViable,
                    action: Action::WouldVeto,
                    message: format!(
                        "group {} is reserved but not viable: {}",
                        g.id,
                        verdict.reasons.join("; ")
                    ),
                });
            }
        }
    }
    out
}

fn check_reserved(d: &Device, intended: &Intended) -> Option<Violation> {
    let wanted = intended.driver_override();
    let violation = |rule, action, message| Violation {
        group: d.group,
        device: Some(d.address.clone()),
        driver: d.driver.clone(),
        rule,
        action,
        message,
    };
    match (intended, d.driver.as_deref()) {
        (Intended::Driver(want), Some(have)) if have != want.as_str() => {
            return Some(violation(
                Rule::ReservedWrongDriver,
                Action::WouldRebind,
                format!("{} is reserved for {want} but bound to {have}", d.address),
            ))
        }
        (Intended::Unbound, Some(have)) => {
            return Some(violation(
                Rule::ReservedWrongDriver,
                Action::WouldRebind,
                format!(
                    "{} is reserved to stay unbound but bound to {have}",
                    d.address
                ),
            ))
        }
        _ => {}
    }
    match d.driver_override.as_deref() {
        Some(o) if o != wanted => Some(violation(
            Rule::ReservedWrongOverride,
            Action::WouldPin,
            format!(
                "driver_override of {} is {o}, reserved for {wanted}",
                d.address
            ),
        )),
        _ => None,
    }
}

/// The `driver_override` writes the agent would make at start: every reserved or protected
/// member (see [`intended_driver`]) whose override is unset and which is unbound or already on
/// its intended driver (members on another driver are `reserved_wrong_driver` violations).
pub fn pins(map: &GroupMap, policy: &Policy) -> Vec<Pin> {
    map.devices()
        .filter(|d| d.driver_override.is_none())
        .filter_map(|d| {
            let intended = intended_driver(map, policy, &d.address)?;
            let fits = match (&intended, d.driver.as_deref()) {
                (_, None) => true,
                (Intended::Driver(want), Some(have)) => want.as_str() == have,
                (Intended::Unbound, Some(_)) => false,
            };
            fits.then(|| Pin {
                group: d.group,
                device: d.address.clone(),
                driver_override: intended.driver_override().to_string(),
            })
        })
        .collect()
}
