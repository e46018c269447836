//! Rendering: a decoded record, what applying it did to the node, and who caused it, as the
//! `event` lines the agent prints. Pure: the daemon resolves the pod and allocation first, so
//! every line leaves here final.
use iommu_enforcer_schema::{Action, Allocation, Event, Kind, Line, Outcome};

use crate::{
    bpf::record::{errno_name, errno_of_ret, KernelEvent, Record},
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

/// The kind-specific part of a record's event line.
struct Body {
    kind: Kind,
    ok: bool,
    errno: Option<&'static str>,
    ret: i32,
    driver: Option<String>,
}

impl Body {
    fn new(kind: Kind, ok: bool, errno: Option<&'static str>, ret: i32) -> Self {
        Self {
            kind,
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
    let failed = |ret: i32| ret != 0;
    let mut scope = None;
    let mut veto = None;
    let body = match &ev.record {
        Record::Probe { driver, ret, .. } => Body::new(
            Kind::Bind,
            convention.bound(*ret),
            probe_errno(convention, *ret),
            *ret,
        )
        .driver(driver),
        Record::DmaRefused { driver, ret, .. } => {
            Body::new(Kind::Refusal, false, errno_of_ret(*ret), *ret).driver(driver)
        }
        Record::Unbind { driver, .. } => Body::new(Kind::Unbind, true, None, 0).driver(driver),
        Record::Claim { scope: s, ret, .. } => {
            scope = Some(*s);
            Body::new(Kind::Claim, !failed(*ret), errno_of_ret(*ret), *ret)
        }
        Record::Release { scope: s, .. } => {
            scope = Some(*s);
            Body::new(Kind::Release, true, None, 0)
        }
        Record::DeviceAdded { .. } => Body::new(Kind::DeviceAdded, true, None, 0),
        Record::DeviceRemoved { .. } => Body::new(Kind::DeviceRemoved, true, None, 0),
        Record::VfioOpen { ret, .. } => {
            Body::new(Kind::VfioOpen, !failed(*ret), errno_of_ret(*ret), *ret)
        }
        Record::VfioRelease { .. } => Body::new(Kind::VfioRelease, true, None, 0),
        Record::PinRefused { driver, ret, .. } => {
            Body::new(Kind::PinRefused, false, errno_name(19), *ret).driver(driver)
        }
        Record::OverrideWritten { value, ret, .. } => Body::new(
            Kind::DriverOverrideWrite,
            *ret >= 0,
            errno_of_ret(*ret),
            *ret,
        )
        .driver(value),
        Record::Veto {
            driver,
            veto: v,
            ret,
            ..
        } => {
            veto = Some(v);
            // `result` is the vetoed operation's: refused, or (dry-run) let through.
            Body::new(Kind::Veto, !v.denied, errno_of_ret(*ret), *ret).driver(driver)
        }
        Record::ModuleLoad | Record::WriteCheck { .. } => return None,
    };
    Some(Event {
        kind: body.kind,
        device: applied.device.clone(),
        driver: body.driver,
        group: applied.group.map(|g| g.to_string()),
        ret: body.ret,
        errno: body.errno.map(str::to_owned),
        result: Outcome::of(body.ok),
        scope,
        path: applied.path.clone(),
        rule: veto.map(|v| v.rule),
        action: veto.map(|v| {
            if v.denied {
                Action::Vetoed
            } else {
                Action::WouldVeto
            }
        }),
        fail_closed: veto.is_some_and(|v| v.fail_closed),
        why: veto.map(|v| v.why.clone()).unwrap_or_default(),
        bound_to: None,
        digest: None,
        line: None,
        column: None,
        error: None,
        pid: ev.task.pid,
        tgid: ev.task.tgid,
        comm: ev.task.comm.clone(),
        cgroup_id: ev.task.cgroup_id,
        pod_uid: who.pod_uid.clone(),
        container_id: who.container_id.clone(),
        allocated_to: who.allocated_to.clone(),
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
