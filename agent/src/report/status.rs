//! `enforcer status`: every group the kernel's pinned state protects or could hand back, how it
//! stands (in use, reserved, idle), its members and pins, and who uses it. Pure: built from the
//! pinned state, a group map and the holders a /proc scan found.
//!
//! # JSON shape (`--json`)
//! ```text
//! {
//!   "opens_counted": true,
//!   "groups": [{
//!     "group": "8", "state": "in_use" | "reserved" | "idle", "reserved": false,
//!     "user_bound": 2, "claims": 1, "opens": 1,
//!     "members": [{"device": "0000:01:00.0", "driver": "vfio-pci" | null,
//!                  "driver_override": "vfio-pci" | null}],
//!     "users": [{"pid": 4242, "comm": "qemu", "path": "/dev/vfio/8",
//!                "pod_uid": "8d2f7c1e-..." | null, "container_id": "4f3e..." | null}]
//!   }]
//! }
//! ```
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    enforce::pinned::{ProtectionState, Standing},
    model::{GroupMap, Holder},
};

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Whether the LSM file hooks count VFIO opens (else a bound group counts as in use).
    pub opens_counted: bool,
    pub groups: Vec<GroupStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub state: Standing,
    pub reserved: bool,
    pub user_bound: i32,
    pub claims: i32,
    pub opens: i32,
    pub members: Vec<Member>,
    pub users: Vec<User>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub device: String,
    pub driver: Option<String>,
    pub driver_override: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct User {
    pub pid: u32,
    pub comm: String,
    pub path: String,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

impl User {
    fn of(h: &Holder) -> Self {
        User {
            pid: h.pid,
            comm: h.comm.clone(),
            path: h.path.clone(),
            pod_uid: h.pod.as_ref().map(|p| p.pod_uid.clone()),
            container_id: h.pod.as_ref().and_then(|p| p.container_id.clone()),
        }
    }
}

impl Status {
    pub fn new(state: &ProtectionState, map: &GroupMap) -> Self {
        let groups = state
            .groups()
            .into_iter()
            .map(|g| GroupStatus {
                group: g.group.to_string(),
                state: g.standing,
                reserved: g.reserved,
                user_bound: g.user_bound,
                claims: g.claims,
                opens: g.opens,
                members: map
                    .group(g.group)
                    .map(|grp| {
                        grp.devices
                            .values()
                            .map(|d| Member {
                                device: d.address.clone(),
                                driver: d.driver.clone(),
                                driver_override: d.driver_override.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                users: map.holders(g.group).map(User::of).collect(),
            })
            .collect();
        Status {
            opens_counted: state.counted,
            groups,
        }
    }

    /// Groups in use, each with the pods (or processes) using it: what `detach` names.
    pub fn in_use(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|g| g.state == Standing::InUse)
            .map(|g| {
                let users: Vec<String> = g
                    .users
                    .iter()
                    .map(|u| match &u.pod_uid {
                        Some(pod) => format!("pod {pod} (pid {} {})", u.pid, u.comm),
                        None => format!("pid {} {}", u.pid, u.comm),
                    })
                    .collect();
                if users.is_empty() {
                    format!("group {} (used by a descriptor no process shows)", g.group)
                } else {
                    format!("group {} (used by {})", g.group, users.join(", "))
                }
            })
            .collect()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.groups.is_empty() {
            out.push_str(
                "nothing protected: no group is reserved, in use or bound to a user driver\n",
            );
        }
        for g in &self.groups {
            let _ = writeln!(
                out,
                "group {}: {}{} (members on user drivers {}, claims {}, open files {})",
                g.group,
                g.state.as_str().replace('_', " "),
                if g.reserved && g.state != Standing::Reserved {
                    ", reserved"
                } else {
                    ""
                },
                g.user_bound,
                g.claims,
                g.opens
            );
            for m in &g.members {
                let _ = writeln!(
                    out,
                    "  {}  driver {}  pin {}",
                    m.device,
                    m.driver.as_deref().unwrap_or("none"),
                    m.driver_override.as_deref().unwrap_or("none")
                );
            }
            for u in &g.users {
                let _ = writeln!(
                    out,
                    "  used by pid {} ({}) through {}{}",
                    u.pid,
                    u.comm,
                    u.path,
                    u.pod_uid
                        .as_deref()
                        .map(|p| format!(", pod {p}"))
                        .unwrap_or_default()
                );
            }
        }
        if !self.opens_counted {
            out.push_str("VFIO opens are not counted by programs that outlive the agent (no BPF LSM): every group bound to a user driver counts as in use\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use iommu_enforcer_common::GroupState;

    use super::*;
    use crate::model::Device;

    #[test]
    fn status_names_members_pins_and_users_and_detach_names_groups_in_use() {
        let mut map = GroupMap::new();
        let mut gpu = Device::new("0000:01:00.0", 8);
        gpu.driver = Some("vfio-pci".into());
        gpu.driver_override = Some("vfio-pci".into());
        map.add_device(gpu);
        map.add_device(Device::new("0000:02:00.0", 9));
        map.set_holders(vec![Holder {
            pid: 42,
            comm: "qemu".into(),
            fd: Some(3),
            path: "/dev/vfio/8".into(),
            group: Some(8),
            device: None,
            pod: None,
        }]);
        let state = ProtectionState {
            groups: BTreeMap::from([(
                8,
                GroupState {
                    user_bound: 1,
                    claims: 1,
                },
            )]),
            group_rdev: BTreeMap::new(),
            opens: BTreeMap::new(),
            reserved: BTreeSet::from([9]),
            counted: true,
        };
        let status = Status::new(&state, &map);
        let text = status.text();
        assert!(text.contains("group 8: in use"), "{text}");
        assert!(
            text.contains("0000:01:00.0  driver vfio-pci  pin vfio-pci"),
            "{text}"
        );
        assert!(
            text.contains("used by pid 42 (qemu) through /dev/vfio/8"),
            "{text}"
        );
        assert!(text.contains("group 9: reserved"), "{text}");
        assert_eq!(status.in_use(), ["group 8 (used by pid 42 qemu)"]);
        let json = serde_json::to_value(&status).expect("serialises");
        assert_eq!(json["groups"][0]["state"], "in_use");
        assert_eq!(json["groups"][1]["state"], "reserved");
        assert_eq!(json["opens_counted"], true);
    }
}
