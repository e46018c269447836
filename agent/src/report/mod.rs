//! The one-shot reports of `enforcer audit` and `enforcer groups`: computed from a group map,
//! the scan problems and a policy, rendered as text for operators or as one JSON object.
//!
//! # JSON shape (`--json`)
//! ```text
//! {
//!   "groups": [{
//!     "id": "12", "owner": "kernel|user|none|conflict", "viable": false,
//!     "reasons": ["0000:01:00.1 is bound to snd_hda_intel (kernel DMA) while 0000:01:00.0 is on vfio-pci"],
//!     "why_shared": "functions of one multifunction device without ACS (0000:01:00)" | null,
//!     "reserved": false, "claimed": false,
//!     "holders": [{"pid": 4242, "comm": "qemu", "fd": 17, "path": "/dev/vfio/12", "device": null,
//!                  "pod_uid": "8d2f7c1e-..." | null, "container_id": "4f3e..." | null}],
//!     "devices": [{"address": "0000:01:00.0", "vendor": "0x10de", "device": "0x2204",
//!                  "class": "0x030000", "driver": "vfio-pci" | null, "driver_override": null,
//!                  "bridge": false, "port_type": "endpoint" | null, "acs": "none",
//!                  "multifunction": true, "parents": ["0000:00:01.0"], "intended": "vfio-pci" | null,
//!                  "allocated_to": {"namespace", "pod", "container", "resource"} (only when
//!                  --pod-resources-socket is given and a device plugin allocated it)}],
//!     "others": [{"name": "AMDI0010:00", "driver": null}]
//!   }],
//!   "violations": [{"group": "12", "device": "0000:01:00.1", "driver": "snd_hda_intel",
//!                   "rule": "split_group", "action": "would_veto", "message": "..."}],
//!   "pins": [{"group": "14", "device": "0000:02:00.0", "driver_override": "vfio-pci"}],
//!   "unmatched_reservations": ["group 99 (policy line 7)"],
//!   "unknown_drivers": [{"driver": "vfio_pci", "key": "reserve", "line": 3,
//!                        "did_you_mean": "vfio-pci", "message": "..."}],
//!   "scan_problems": [{"group": "7", "device": "0000:05:00.0", "kind": "vanished",
//!                      "path": "...", "message": "..."}],
//!   "enforcement": {"bpf_lsm": true|false|null, "vetoes": "available"|"unavailable: ..."|null}
//! }
//! ```
//! `enforcer groups --json` prints `{groups, scan_problems}` of the same shape.
use std::collections::BTreeSet;

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::model::{Acs, Device, GroupMap, Owner};
use crate::policy::{self, Pin, Policy, Violation};
use crate::sysfs::ScanProblem;

pub mod status;
mod text;

/// What enforcement the node can have; `null` fields when the one-shot audit does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    /// `bpf` is in `/sys/kernel/security/lsm`: vetoes can run.
    pub bpf_lsm: Option<bool>,
    /// `available`, or `unavailable: <why>`: whether the agent can veto on this node.
    pub vetoes: Option<String>,
}

impl Enforcement {
    /// From the active LSM list under a sysfs root (`kernel/security/lsm`).
    pub fn probe(sysfs_root: &std::path::Path) -> Self {
        let path = sysfs_root.join("kernel/security/lsm");
        match crate::bounded::read_text(&path, crate::bounded::ATTRIBUTE_LIMIT) {
            Ok(list) => {
                let bpf = list.trim().split(',').any(|m| m == "bpf");
                Enforcement {
                    bpf_lsm: Some(bpf),
                    vetoes: Some(if bpf {
                        "available".to_string()
                    } else {
                        "unavailable: bpf is not among the active LSMs (boot with lsm=...,bpf)"
                            .to_string()
                    }),
                }
            }
            Err(e) => Enforcement {
                bpf_lsm: None,
                vetoes: Some(format!("unknown: {}: {e}", path.display())),
            },
        }
    }
}

/// `enforcer audit`.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    pub groups: Vec<GroupReport>,
    pub violations: Vec<Violation>,
    pub pins: Vec<Pin>,
    pub unmatched_reservations: Vec<String>,
    /// The policy's driver names no driver or module of this kernel offers (filled by the CLI,
    /// which reads what the kernel offers).
    pub unknown_drivers: Vec<policy::known_drivers::UnknownDriver>,
    pub scan_problems: Vec<ScanProblem>,
    pub enforcement: Enforcement,
}

/// `enforcer groups`.
#[derive(Clone, Debug, Serialize)]
pub struct Groups {
    pub groups: Vec<GroupReport>,
    pub scan_problems: Vec<ScanProblem>,
}

/// One group with its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    /// The group number as the kernel spells it: `"14"`.
    pub id: String,
    pub owner: Owner,
    pub viable: bool,
    pub reasons: Vec<String>,
    pub why_shared: Option<String>,
    /// A `[[reserve]]` entry selects a member.
    pub reserved: bool,
    /// A user-space DMA-ownership claim is recorded (daemon only).
    pub claimed: bool,
    pub holders: Vec<HolderReport>,
    pub devices: Vec<DeviceReport>,
    /// Non-PCI members.
    pub others: Vec<OtherReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HolderReport {
    pub pid: u32,
    pub comm: String,
    /// Always known in a scan; `null` only for a holder known from a kernel record.
    pub fd: Option<u32>,
    pub path: String,
    /// The device behind a cdev; `null` for the group file.
    pub device: Option<String>,
    /// The holder's pod (`metadata.uid`) and container (runtime id), from its cgroup; `null`
    /// outside a pod.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

/// One PCI member, spelled as sysfs spells it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceReport {
    pub address: String,
    /// `"0x10de"`.
    pub vendor: Option<String>,
    /// `"0x2204"`.
    pub device: Option<String>,
    /// `"0x030000"`.
    pub class: Option<String>,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    pub bridge: bool,
    pub port_type: Option<crate::model::PortType>,
    pub acs: Acs,
    pub multifunction: bool,
    pub parents: Vec<String>,
    /// The driver a reservation (or user-group protection) intends for it.
    pub intended: Option<String>,
    /// The pod a device plugin allocated it to, from the kubelet's pod-resources socket
    /// (`--pod-resources-socket`); left out when not allocated or not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_to: Option<iommu_enforcer_schema::Allocation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OtherReport {
    pub name: String,
    pub driver: Option<String>,
}

fn hex(v: Option<u32>, width: usize) -> Option<String> {
    v.map(|v| format!("0x{v:0width$x}"))
}

fn device_report(map: &GroupMap, policy: &Policy, d: &Device) -> DeviceReport {
    DeviceReport {
        address: d.address.clone(),
        vendor: hex(d.vendor.map(u32::from), 4),
        device: hex(d.device.map(u32::from), 4),
        class: hex(d.class, 6),
        driver: d.driver.clone(),
        driver_override: d.driver_override.clone(),
        bridge: d.bridge,
        port_type: d.port_type,
        acs: d.acs,
        multifunction: d.multifunction,
        parents: d.parents.clone(),
        intended: policy::intended_driver(map, policy, &d.address).map(|i| i.to_string()),
        allocated_to: None,
    }
}

/// Names, on every device of `groups`, the pod it is allocated to (`table`).
pub fn set_allocations(groups: &mut [GroupReport], table: &crate::pods::resources::Table) {
    for d in groups.iter_mut().flat_map(|g| g.devices.iter_mut()) {
        d.allocated_to = table.get(&d.address).cloned();
    }
}

/// Every group of the map with its owner, verdict under `policy` and why-shared line.
pub fn group_reports(map: &GroupMap, policy: &Policy) -> Vec<GroupReport> {
    let reserved = policy::reserved_groups(map, policy);
    map.groups()
        .filter_map(|g| group_report(map, policy, &reserved, g))
        .collect()
}

/// The report of group `g`; `None` when the policy gives it no verdict.
fn group_report(
    map: &GroupMap,
    policy: &Policy,
    reserved: &BTreeSet<u32>,
    g: &crate::model::Group,
) -> Option<GroupReport> {
    let verdict = policy.verdict(map, g.id)?;
    Some(GroupReport {
        id: g.id.to_string(),
        owner: verdict.owner,
        viable: verdict.viable,
        reasons: verdict.reasons,
        why_shared: map.why_shared(g.id),
        reserved: reserved.contains(&g.id),
        claimed: map.is_claimed(g.id),
        holders: map
            .holders(g.id)
            .map(|h| HolderReport {
                pid: h.pid,
                comm: h.comm.clone(),
                fd: h.fd,
                path: h.path.clone(),
                device: h.device.clone(),
                pod_uid: h.pod.as_ref().map(|p| p.pod_uid.clone()),
                container_id: h.pod.as_ref().and_then(|p| p.container_id.clone()),
            })
            .collect(),
        devices: g
            .devices
            .values()
            .map(|d| device_report(map, policy, d))
            .collect(),
        others: g
            .others
            .iter()
            .map(|m| OtherReport {
                name: m.name.clone(),
                driver: m.driver.clone(),
            })
            .collect(),
    })
}

impl Audit {
    /// Computes the audit of `map` under `policy`.
    pub fn new(map: &GroupMap, scan_problems: Vec<ScanProblem>, policy: &Policy) -> Audit {
        Audit {
            groups: group_reports(map, policy),
            ..Audit::without_groups(map, scan_problems, policy)
        }
    }

    /// [`Audit::new`] with no group reports, for [`StreamedAudit`].
    pub fn without_groups(
        map: &GroupMap,
        scan_problems: Vec<ScanProblem>,
        policy: &Policy,
    ) -> Audit {
        Audit {
            groups: Vec::new(),
            violations: policy::violations(map, policy),
            pins: policy::pins(map, policy),
            unmatched_reservations: policy::unmatched(map, policy)
                .into_iter()
                .map(|r| format!("{} (policy line {})", r.selector, r.line))
                .collect(),
            unknown_drivers: Vec::new(),
            scan_problems,
            enforcement: Enforcement::default(),
        }
    }

    /// The operator's report.
    pub fn text(&self) -> String {
        text::audit(self)
    }
}

/// `enforcer audit --json` with its groups reported one at a time as they are written, not all
/// held first (a 100,000-device node's reports were tens of MB): the JSON of [`Audit`], field
/// for field, from `rest` (an audit without groups) and the map the groups come from.
pub struct StreamedAudit<'a> {
    pub map: &'a GroupMap,
    pub policy: &'a Policy,
    /// Each device's pod, with `--pod-resources-socket`.
    pub allocations: Option<&'a crate::pods::resources::Table>,
    pub rest: &'a Audit,
}

struct GroupStream<'a>(&'a StreamedAudit<'a>);

impl Serialize for GroupStream<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let reserved = policy::reserved_groups(a.map, a.policy);
        s.collect_seq(a.map.groups().filter_map(|g| {
            let mut r = group_report(a.map, a.policy, &reserved, g)?;
            if let Some(table) = a.allocations {
                set_allocations(std::slice::from_mut(&mut r), table);
            }
            Some(r)
        }))
    }
}

impl Serialize for StreamedAudit<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The fields of `Audit`, in its order.
        let r = self.rest;
        let mut st = s.serialize_struct("Audit", 7)?;
        st.serialize_field("groups", &GroupStream(self))?;
        st.serialize_field("violations", &r.violations)?;
        st.serialize_field("pins", &r.pins)?;
        st.serialize_field("unmatched_reservations", &r.unmatched_reservations)?;
        st.serialize_field("unknown_drivers", &r.unknown_drivers)?;
        st.serialize_field("scan_problems", &r.scan_problems)?;
        st.serialize_field("enforcement", &r.enforcement)?;
        st.end()
    }
}

impl Groups {
    pub fn new(map: &GroupMap, scan_problems: Vec<ScanProblem>, policy: &Policy) -> Groups {
        Groups {
            groups: group_reports(map, policy),
            scan_problems,
        }
    }

    /// The group map as tables.
    pub fn text(&self) -> String {
        text::groups(self)
    }
}

#[cfg(test)]
mod tests;
