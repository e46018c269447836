//! Rendering: a decoded record, what applying it did to the node, and who caused it, as the
//! `event` lines the agent prints. Pure: the daemon resolves the pod and allocation first, so
//! every line leaves here final.
use iommu_enforcer_schema::{Action, Allocation, Body, Event, Kind, Line, Outcome};

use crate::{
    bpf::record::{errno_name, errno_of_ret, KernelEvent, Record},
    model::GroupMap,
    node::{Applied, ProbeConvention},
};

/// What the daemon resolved about a record before it is rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributed {
    /// The pod (`metadata.uid`) and container of the task's cgroup.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// The pod a device plugin allocated the device (or a member of the group) to.
    pub allocated_to: Option<Allocation>,
}

/// The pod a device plugin allocated a device to, by PCI address (the kubelet's
/// pod-resources table).
pub type Allocated<'a> = dyn Fn(&str) -> Option<Allocation> + 'a;

/// The allocation an event on `device` and `group` names: the device's, or else that of the
/// first allocated member of the group.
pub fn allocation_of(
    map: &GroupMap,
    device: Option<&str>,
    group: Option<u32>,
    allocated: &Allocated<'_>,
) -> Option<Allocation> {
    device.and_then(allocated).or_else(|| {
        let g = map.group(group?)?;
        g.devices.keys().find_map(|m| allocated(m))
    })
}

/// The lines of one record: its event, then the hand-back step it was, if any. Nothing for
/// records that are not printed (module loads, write-check requests).
pub fn event_lines(
    ev: &KernelEvent,
    applied: &Applied,
    convention: ProbeConvention,
    who: &Attributed,
) -> Vec<Line> {
    let Some(event) = event(ev, applied, convention, who) else {
        return Vec::new();
    };
    let handback = applied.handback.as_ref().map(|step| Event {
        kind: Kind::Handback,
        driver: step.driver.clone(),
        ..event.clone()
    });
    std::iter::once(event)
        .chain(handback)
        .map(|e| Line::Event(Box::new(e)))
        .collect()
}

/// A record's line before the fields every event has: its typed body, how the operation went,
/// and the driver it names.
struct Rendered {
    body: Body,
    ok: bool,
    errno: Option<&'static str>,
    ret: i32,
    driver: Option<String>,
}

impl Rendered {
    fn new(body: Body, ok: bool, errno: Option<&'static str>, ret: i32) -> Self {
        Self {
            body,
            ok,
            errno,
            ret,
            driver: None,
        }
    }

    fn driver(self, driver: &Option<String>) -> Self {
        Self {
            driver: driver.clone(),
            ..self
        }
    }
}

/// One render arm per record kind; the fields every event shares are filled after.
fn event(
    ev: &KernelEvent,
    applied: &Applied,
    convention: ProbeConvention,
    who: &Attributed,
) -> Option<Event> {
    let path = || applied.path.clone();
    let r = match &ev.record {
        Record::Probe { driver, ret, .. } => Rendered::new(
            Body::Bind,
            convention.bound(*ret),
            probe_errno(convention, *ret),
            *ret,
        )
        .driver(driver),
        Record::DmaRefused { driver, ret, .. } => {
            Rendered::new(Body::Refusal, false, errno_of_ret(*ret), *ret).driver(driver)
        }
        Record::Unbind { driver, .. } => Rendered::new(Body::Unbind, true, None, 0).driver(driver),
        Record::Claim { scope, ret, .. } => Rendered::new(
            Body::Claim { scope: *scope },
            *ret == 0,
            errno_of_ret(*ret),
            *ret,
        ),
        Record::Release { scope, .. } => {
            Rendered::new(Body::Release { scope: *scope }, true, None, 0)
        }
        Record::DeviceAdded { .. } => Rendered::new(Body::DeviceAdded, true, None, 0),
        Record::DeviceRemoved { .. } => Rendered::new(Body::DeviceRemoved, true, None, 0),
        Record::VfioOpen { ret, .. } => Rendered::new(
            Body::VfioOpen { path: path() },
            *ret == 0,
            errno_of_ret(*ret),
            *ret,
        ),
        Record::VfioRelease { .. } => {
            Rendered::new(Body::VfioRelease { path: path() }, true, None, 0)
        }
        Record::PinRefused { driver, ret, .. } => {
            Rendered::new(Body::PinRefused, false, errno_name(19), *ret).driver(driver)
        }
        Record::OverrideWritten { value, ret, .. } => Rendered::new(
            Body::DriverOverrideWrite,
            *ret >= 0,
            errno_of_ret(*ret),
            *ret,
        )
        .driver(value),
        Record::Veto {
            driver, veto, ret, ..
        } => {
            let body = Body::Veto {
                path: path(),
                rule: veto.rule,
                action: if veto.denied {
                    Action::Vetoed
                } else {
                    Action::WouldVeto
                },
                fail_closed: veto.fail_closed,
                why: veto.why.clone(),
            };
            // `result` is the vetoed operation's: refused, or (dry-run) let through.
            Rendered::new(body, !veto.denied, errno_of_ret(*ret), *ret).driver(driver)
        }
        Record::ModuleLoad | Record::WriteCheck { .. } => return None,
    };
    Some(Event {
        device: applied.device.clone(),
        driver: r.driver,
        group: applied.group.map(|g| g.to_string()),
        ret: r.ret,
        errno: r.errno.map(str::to_owned),
        pid: ev.task.pid,
        tgid: ev.task.tgid,
        comm: ev.task.comm.clone(),
        cgroup_id: ev.task.cgroup_id,
        pod_uid: who.pod_uid.clone(),
        container_id: who.container_id.clone(),
        allocated_to: who.allocated_to.clone(),
        ..Event::of(r.body, Outcome::of(r.ok))
    })
}

/// The errno of a failed probe: negative for driver-core errors, positive for the driver's own
/// probe errors since 5.13; a 0 before 5.13 is a failure with no reason given.
fn probe_errno(convention: ProbeConvention, ret: i32) -> Option<&'static str> {
    match (convention, ret) {
        (ProbeConvention::ZeroIsBound, r) if r > 0 => errno_name(r),
        (_, r) if r < 0 => errno_of_ret(r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bpf::record::{Target, Task, Veto},
        model::Device,
        node::HandbackStep,
    };
    use iommu_enforcer_schema::{Rule, Why};

    fn task() -> Task {
        Task {
            pid: 8,
            tgid: 7,
            comm: "sh".into(),
            cgroup_id: 42,
        }
    }

    #[test]
    fn a_veto_renders_from_the_record_and_what_was_resolved_alone() {
        let ev = KernelEvent {
            task: task(),
            ktime_ns: 0,
            record: Record::Veto {
                target: Target::default(),
                driver: None,
                rdev: Some((245, 9)),
                veto: Veto {
                    rule: Rule::VfioOpenNotViable,
                    denied: false,
                    fail_closed: false,
                    why: vec![Why::AboveProtectedGroup],
                },
                ret: 0,
            },
        };
        let applied = Applied {
            group: Some(9),
            path: Some("/dev/vfio/9".into()),
            ..Applied::default()
        };
        let who = Attributed {
            pod_uid: Some("uid".into()),
            ..Attributed::default()
        };
        let lines = event_lines(&ev, &applied, ProbeConvention::ZeroIsBound, &who);
        let [Line::Event(e)] = lines.as_slice() else {
            panic!("one event: {lines:?}");
        };
        assert_eq!(
            (e.kind, e.result, e.rule, e.action),
            (
                Kind::Veto,
                Outcome::Ok,
                Some(Rule::VfioOpenNotViable),
                Some(Action::WouldVeto)
            )
        );
        assert_eq!(
            (e.group.as_deref(), e.path.as_deref(), e.pod_uid.as_deref()),
            (Some("9"), Some("/dev/vfio/9"), Some("uid"))
        );
        assert_eq!((e.pid, e.tgid, e.cgroup_id), (8, 7, 42));
    }

    #[test]
    fn a_handback_step_is_a_second_line_with_its_own_driver() {
        let ev = KernelEvent {
            task: task(),
            ktime_ns: 0,
            record: Record::Unbind {
                target: Target {
                    device: Some("0000:00:05.0".into()),
                    group: Some(9),
                },
                driver: Some("vfio-pci".into()),
            },
        };
        let applied = Applied {
            device: Some("0000:00:05.0".into()),
            group: Some(9),
            handback: Some(HandbackStep { driver: None }),
            ..Applied::default()
        };
        let lines = event_lines(
            &ev,
            &applied,
            ProbeConvention::ZeroIsBound,
            &Default::default(),
        );
        let kinds: Vec<_> = lines
            .iter()
            .filter_map(Line::as_event)
            .map(|e| (e.kind, e.driver.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Kind::Unbind, Some("vfio-pci".into())),
                (Kind::Handback, None)
            ]
        );
    }

    #[test]
    fn a_probe_error_is_named_by_the_kernels_convention() {
        let probe = |ret| KernelEvent {
            task: task(),
            ktime_ns: 0,
            record: Record::Probe {
                target: Target::default(),
                driver: None,
                ret,
            },
        };
        let errno = |convention, ret| {
            let lines = event_lines(
                &probe(ret),
                &Applied::default(),
                convention,
                &Default::default(),
            );
            lines[0].as_event().and_then(|e| e.errno.clone())
        };
        assert_eq!(
            errno(ProbeConvention::ZeroIsBound, 12).as_deref(),
            Some("ENOMEM")
        );
        assert_eq!(errno(ProbeConvention::OneIsBound, 12), None);
        assert_eq!(
            errno(ProbeConvention::OneIsBound, -16).as_deref(),
            Some("EBUSY")
        );
        assert_eq!(errno(ProbeConvention::ZeroIsBound, i32::MIN), None);
    }

    #[test]
    fn an_allocation_is_the_devices_else_a_members() {
        let mut map = GroupMap::new();
        map.add_device(Device::new("0000:40:00.0", 14));
        map.add_device(Device::new("0000:41:00.0", 14));
        let alloc = |pod: &str| Allocation {
            namespace: "vms".into(),
            pod: pod.into(),
            container: "c".into(),
            resource: "r".into(),
        };
        let table = |d: &str| (d == "0000:41:00.0").then(|| alloc("a"));
        assert_eq!(
            allocation_of(&map, Some("0000:41:00.0"), None, &table),
            Some(alloc("a"))
        );
        assert_eq!(
            allocation_of(&map, Some("0000:40:00.0"), Some(14), &table),
            Some(alloc("a"))
        );
        assert_eq!(allocation_of(&map, None, Some(15), &table), None);
        assert_eq!(
            allocation_of(&map, Some("0000:40:00.0"), None, &table),
            None
        );
    }
}
