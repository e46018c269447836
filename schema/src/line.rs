//! One output line: the `type` field selects the variant (docs/events.md).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Event, HookState, Mechanism, MechanismState, Owner, ProgramState};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Capabilities {
        kernel: String,
        btf: bool,
        bpf_lsm: bool,
        dry_run: bool,
        /// How kept pins are watched: `event (...)`, or `poll every 1 s (...)` where the
        /// program that records `driver_override` stores cannot attach.
        pin_watch: String,
        /// By program target.
        programs: BTreeMap<String, ProgramState>,
        enforcement: BTreeMap<Mechanism, MechanismState>,
    },
    Ready {
        groups: usize,
    },
    Event(Box<Event>),
    Verdict {
        group: String,
        owner: Owner,
        viable: bool,
        reasons: Vec<String>,
    },
    Lost {
        count: u64,
    },
    /// A new agent on pins an earlier one left: how many ran before, and how many records
    /// overflowed the ring while none read it (the records that fitted are read and printed).
    Restart {
        agents_before: u64,
        missed: u64,
    },
    Resync {
        groups: usize,
    },
    /// A group left the node (its last device was removed).
    GroupRemoved {
        group: String,
    },
    /// A re-read of sysfs or procfs did not finish in time (the kernel blocked it); the live
    /// map stands until a later re-read succeeds.
    Stalled {
        what: String,
        error: String,
    },
    /// An LSM hook was attached (it has something to veto) or put back on standby.
    LsmHook {
        hook: String,
        state: HookState,
    },
    Shutdown {
        signal: String,
    },
}

impl Line {
    /// The wire name of the line's `type`, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Line::Capabilities { .. } => "capabilities",
            Line::Ready { .. } => "ready",
            Line::Event(_) => "event",
            Line::Verdict { .. } => "verdict",
            Line::Lost { .. } => "lost",
            Line::Restart { .. } => "restart",
            Line::Resync { .. } => "resync",
            Line::GroupRemoved { .. } => "group_removed",
            Line::Stalled { .. } => "stalled",
            Line::LsmHook { .. } => "lsm_hook",
            Line::Shutdown { .. } => "shutdown",
        }
    }

    pub fn as_event(&self) -> Option<&Event> {
        match self {
            Line::Event(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Kind, Outcome, Rule, Why};

    /// The wire format docs/events.md describes, byte for byte: what users' scripts parse.
    #[test]
    fn lines_print_as_docs_events_md_spells_them() {
        let mut veto = Event::new(Kind::Veto, Outcome::Error);
        veto.device = Some("0000:00:03.0".into());
        veto.group = Some("12".into());
        veto.ret = -1;
        veto.errno = Some("EPERM".into());
        veto.rule = Some(Rule::ProtectedBind);
        veto.action = Some(Action::Vetoed);
        veto.fail_closed = true;
        veto.why = vec![Why::NotThisWritesRegisters];
        veto.pid = 7;
        veto.tgid = 7;
        veto.comm = "sh".into();
        veto.cgroup_id = 42;
        let line = Line::Event(Box::new(veto));
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"type":"event","kind":"veto","device":"0000:00:03.0","driver":null,"#,
                r#""group":"12","ret":-1,"errno":"EPERM","result":"error","#,
                r#""rule":"protected_bind","action":"vetoed","fail_closed":true,"#,
                r#""why":["not_this_writes_registers"],"pid":7,"tgid":7,"comm":"sh","#,
                r#""cgroup_id":42,"pod_uid":null,"container_id":null}"#
            )
        );
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), line);

        let caps = Line::Capabilities {
            kernel: "6.12.1".into(),
            btf: true,
            bpf_lsm: true,
            dry_run: false,
            pin_watch: "event".into(),
            programs: BTreeMap::from([
                ("file_open".into(), ProgramState::Attached),
                (
                    "vfio_device_fops_cdev_open".into(),
                    ProgramState::Absent(Some("notrace".into())),
                ),
            ]),
            enforcement: BTreeMap::from([
                (Mechanism::Reservation, MechanismState::DryRun),
                (Mechanism::Lsm, MechanismState::Unavailable("no bpf".into())),
            ]),
        };
        let json = serde_json::to_string(&caps).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"type":"capabilities","kernel":"6.12.1","btf":true,"bpf_lsm":true,"#,
                r#""dry_run":false,"pin_watch":"event","programs":{"file_open":"attached","#,
                r#""vfio_device_fops_cdev_open":"absent: notrace"},"#,
                r#""enforcement":{"lsm":"unavailable: no bpf","reservation":"dry_run"}}"#
            )
        );
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), caps);

        let verdict = Line::Verdict {
            group: "3".into(),
            owner: Owner::Conflict,
            viable: false,
            reasons: vec!["x".into()],
        };
        assert_eq!(
            serde_json::to_string(&verdict).unwrap(),
            r#"{"type":"verdict","group":"3","owner":"conflict","viable":false,"reasons":["x"]}"#
        );
        let hook = Line::LsmHook {
            hook: "file_open".into(),
            state: HookState::Attached,
        };
        assert_eq!(
            serde_json::to_string(&hook).unwrap(),
            r#"{"type":"lsm_hook","hook":"file_open","state":"attached"}"#
        );
    }

    #[test]
    fn an_allocated_device_names_its_pod_last() {
        let mut open = Event::new(Kind::VfioOpen, Outcome::Ok);
        open.device = Some("0000:01:00.0".into());
        open.group = Some("14".into());
        open.path = Some("/dev/vfio/14".into());
        (open.pid, open.tgid, open.comm, open.cgroup_id) = (9, 9, "qemu-kvm".into(), 77);
        open.pod_uid = Some("8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f".into());
        open.allocated_to = Some(crate::Allocation {
            namespace: "vms".into(),
            pod: "virt-launcher-gpu-vm-x7k2p".into(),
            container: "compute".into(),
            resource: "nvidia.com/GH100_H100".into(),
        });
        let line = Line::Event(Box::new(open));
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"type":"event","kind":"vfio_open","device":"0000:01:00.0","driver":null,"#,
                r#""group":"14","ret":0,"errno":null,"result":"ok","path":"/dev/vfio/14","#,
                r#""pid":9,"tgid":9,"comm":"qemu-kvm","cgroup_id":77,"#,
                r#""pod_uid":"8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f","container_id":null,"#,
                r#""allocated_to":{"namespace":"vms","pod":"virt-launcher-gpu-vm-x7k2p","#,
                r#""container":"compute","resource":"nvidia.com/GH100_H100"}}"#
            )
        );
        assert_eq!(serde_json::from_str::<Line>(&json).unwrap(), line);
    }

    #[test]
    fn optional_fields_left_out_read_back_as_absent() {
        let json = concat!(
            r#"{"type":"event","kind":"bind","device":"0000:00:03.0","driver":"e1000","#,
            r#""group":null,"ret":0,"errno":null,"result":"ok","pid":1,"tgid":1,"comm":"k","#,
            r#""cgroup_id":0,"pod_uid":null,"container_id":null}"#
        );
        let line: Line = serde_json::from_str(json).unwrap();
        let ev = line.as_event().unwrap();
        assert_eq!(
            (ev.kind, ev.result, ev.rule, ev.fail_closed),
            (Kind::Bind, Outcome::Ok, None, false)
        );
        assert!(ev.why.is_empty());
        assert_eq!(serde_json::to_string(&line).unwrap(), json);
    }

    /// The agent's own events (enforce/, daemon/policy_reload.rs, daemon/unmatched.rs), built
    /// from their typed bodies, print as before the typed-record refactor: byte for byte.
    #[test]
    fn agent_made_events_print_as_before() {
        let agent = |body, result| {
            let mut e = Event::of(body, result);
            (e.pid, e.tgid, e.comm) = (3, 3, "enforcer".into());
            e
        };
        let reservation = |kind, action, bound_to: Option<&str>| {
            let body = crate::Body::Reservation {
                kind,
                action,
                bound_to: bound_to.map(Into::into),
            };
            let mut e = agent(body, Outcome::Ok);
            e.device = Some("0000:00:05.1".into());
            e.driver = Some("vfio-pci".into());
            e.group = Some("9".into());
            e
        };
        let mut failed_pin = reservation(Kind::Pin, Action::Pinned, None);
        (failed_pin.result, failed_pin.ret) = (Outcome::Error, -16);
        failed_pin.errno = Some("EBUSY".into());
        let applied = agent(
            crate::Body::PolicyApplied {
                path: Some("/etc/iommu-enforcer/policy.toml".into()),
                digest: "e3b0c442".into(),
            },
            Outcome::Ok,
        );
        let rejected = agent(
            crate::Body::PolicyRejected {
                path: Some("/etc/p.toml".into()),
                line: Some(7),
                column: Some(9),
                error: "p.toml:7:9: bad".into(),
            },
            Outcome::Error,
        );
        let unmatched = agent(
            crate::Body::ReservationUnmatched {
                path: Some("/etc/p.toml".into()),
                line: Some(3),
                error: "no group 40".into(),
            },
            Outcome::Ok,
        );
        let cases = [
            (
                reservation(Kind::Pin, Action::WouldPin, None),
                concat!(
                    r#"{"type":"event","kind":"pin","device":"0000:00:05.1","driver":"vfio-pci","#,
                    r#""group":"9","ret":0,"errno":null,"result":"ok","rule":"reservation","#,
                    r#""action":"would_pin","pid":3,"tgid":3,"comm":"enforcer","cgroup_id":0,"#,
                    r#""pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                failed_pin,
                concat!(
                    r#"{"type":"event","kind":"pin","device":"0000:00:05.1","driver":"vfio-pci","#,
                    r#""group":"9","ret":-16,"errno":"EBUSY","result":"error","rule":"reservation","#,
                    r#""action":"pinned","pid":3,"tgid":3,"comm":"enforcer","cgroup_id":0,"#,
                    r#""pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                reservation(Kind::PinRestored, Action::Pinned, None),
                concat!(
                    r#"{"type":"event","kind":"pin_restored","device":"0000:00:05.1","#,
                    r#""driver":"vfio-pci","group":"9","ret":0,"errno":null,"result":"ok","#,
                    r#""rule":"reservation","action":"pinned","pid":3,"tgid":3,"comm":"enforcer","#,
                    r#""cgroup_id":0,"pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                reservation(Kind::Rebind, Action::Rebound, Some("e1000")),
                concat!(
                    r#"{"type":"event","kind":"rebind","device":"0000:00:05.1","driver":"vfio-pci","#,
                    r#""group":"9","ret":0,"errno":null,"result":"ok","rule":"reservation","#,
                    r#""action":"rebound","bound_to":"e1000","pid":3,"tgid":3,"comm":"enforcer","#,
                    r#""cgroup_id":0,"pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                reservation(Kind::ReservationBlocked, Action::Report, Some("nvidia")),
                concat!(
                    r#"{"type":"event","kind":"reservation_blocked","device":"0000:00:05.1","#,
                    r#""driver":"vfio-pci","group":"9","ret":0,"errno":null,"result":"ok","#,
                    r#""rule":"reservation","action":"report","bound_to":"nvidia","pid":3,"#,
                    r#""tgid":3,"comm":"enforcer","cgroup_id":0,"pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                applied,
                concat!(
                    r#"{"type":"event","kind":"policy_applied","device":null,"driver":null,"#,
                    r#""group":null,"ret":0,"errno":null,"result":"ok","#,
                    r#""path":"/etc/iommu-enforcer/policy.toml","digest":"e3b0c442","pid":3,"#,
                    r#""tgid":3,"comm":"enforcer","cgroup_id":0,"pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                rejected,
                concat!(
                    r#"{"type":"event","kind":"policy_rejected","device":null,"driver":null,"#,
                    r#""group":null,"ret":0,"errno":null,"result":"error","path":"/etc/p.toml","#,
                    r#""line":7,"column":9,"error":"p.toml:7:9: bad","pid":3,"tgid":3,"#,
                    r#""comm":"enforcer","cgroup_id":0,"pod_uid":null,"container_id":null}"#
                ),
            ),
            (
                unmatched,
                concat!(
                    r#"{"type":"event","kind":"reservation_unmatched","device":null,"driver":null,"#,
                    r#""group":null,"ret":0,"errno":null,"result":"ok","path":"/etc/p.toml","#,
                    r#""line":3,"error":"no group 40","pid":3,"tgid":3,"comm":"enforcer","#,
                    r#""cgroup_id":0,"pod_uid":null,"container_id":null}"#
                ),
            ),
        ];
        for (event, want) in cases {
            let line = Line::Event(Box::new(event));
            assert_eq!(serde_json::to_string(&line).unwrap(), want);
            assert_eq!(serde_json::from_str::<Line>(want).unwrap(), line);
        }
    }

    #[test]
    fn every_kind_and_rule_has_its_own_spelling() {
        let mut seen = std::collections::BTreeSet::new();
        for k in Kind::ALL {
            assert!(seen.insert(k.as_str()), "{k}");
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
        }
        assert!(!Rule::VETOES.contains(&Rule::Reservation));
        for kind in Kind::RESERVATION {
            assert!(!Action::of_reservation(kind).is_empty(), "{kind}");
        }
    }
}
