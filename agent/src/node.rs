//! The live node: the group map kept current from kernel events, and which verdicts the agent
//! has already reported. Pure: the daemon does the I/O and hands results in; enforce reads and
//! updates it. Its own module so that neither has to reach into the other for it.
use std::collections::{BTreeMap, BTreeSet};

use iommu_enforcer_common::{veto, watched, EventKind};
use iommu_enforcer_schema::{Action, Event, Kind, Line, Outcome, Rule, Scope, Why};

use crate::{
    bpf::{
        features::release_at_least,
        record::{errno_name, errno_of_ret, KernelEvent},
    },
    model::{driver::is_user_driver, GroupMap, Holder},
    policy::{Policy, Verdict},
};

/// How this kernel's `really_probe` says "bound": 1 before 5.13, 0 since (commit ef6dcbdd8eb2,
/// which also turned probe errors into positive return values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeConvention {
    OneIsBound,
    ZeroIsBound,
}

impl ProbeConvention {
    /// From a kernel release such as `5.10.0-32-amd64` or `6.12.118+deb13-amd64`.
    pub fn for_release(release: &str) -> Self {
        if release_at_least(release, (5, 13)) || !release_at_least(release, (1, 0)) {
            Self::ZeroIsBound
        } else {
            Self::OneIsBound
        }
    }

    fn bound(self, ret: i32) -> bool {
        match self {
            Self::OneIsBound => ret == 1,
            Self::ZeroIsBound => ret == 0,
        }
    }
}

/// What the daemon must do after applying an event, beyond printing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowUp {
    /// Group membership changed: re-read sysfs.
    pub rescan_sysfs: bool,
    /// Holders unknown (records lost): re-read them from procfs. Opens and releases do not
    /// ask for it: their records say who holds what.
    pub rescan_holders: bool,
}

/// The VFIO node a record concerned, resolved by the caller: its /dev path and, for a cdev,
/// the device behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VfioNode {
    pub path: String,
    pub device: Option<String>,
}

pub struct NodeState {
    map: GroupMap,
    policy: Policy,
    convention: ProbeConvention,
    /// Open DMA-ownership claims per group (a group claim, or iommufd device claims).
    claims: BTreeMap<u32, u32>,
    reported: BTreeMap<u32, Verdict>,
    /// Devices of idle groups that left a user driver or its pin: a host driver binding one
    /// is the hand-back's last step.
    handing_back: BTreeSet<String>,
}

impl NodeState {
    pub fn new(map: GroupMap, policy: Policy, convention: ProbeConvention) -> Self {
        Self {
            map,
            policy,
            convention,
            claims: BTreeMap::new(),
            reported: BTreeMap::new(),
            handing_back: BTreeSet::new(),
        }
    }

    pub fn map(&self) -> &GroupMap {
        &self.map
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Puts a new policy in force (a changed policy file); returns the verdicts it changed.
    pub fn set_policy(&mut self, policy: Policy) -> Vec<Line> {
        self.policy = policy;
        self.changed_verdicts()
    }

    /// Verdict lines for every group whose verdict differs from the last one reported (all of
    /// them the first time).
    pub fn changed_verdicts(&mut self) -> Vec<Line> {
        let ids: Vec<u32> = self.map.groups().map(|g| g.id).collect();
        ids.into_iter()
            .filter_map(|g| self.verdict_if_changed(g))
            .collect()
    }

    fn verdict_if_changed(&mut self, group: u32) -> Option<Line> {
        let verdict = self.policy.verdict(&self.map, group)?;
        if self.reported.get(&group) == Some(&verdict) {
            return None;
        }
        self.reported.insert(group, verdict.clone());
        Some(Line::Verdict {
            group: group.to_string(),
            owner: verdict.owner,
            viable: verdict.viable,
            reasons: verdict.reasons,
        })
    }

    /// Records a `driver_override` the agent wrote.
    pub fn set_driver_override(&mut self, device: &str, value: Option<&str>) -> Vec<Line> {
        match self.map.set_driver_override(device, value) {
            Some(group) => self.verdict_if_changed(group).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Replaces the holders with a fresh proc scan.
    pub fn set_holders(&mut self, holders: Vec<Holder>) -> Vec<Line> {
        self.map.set_holders(holders);
        self.changed_verdicts()
    }

    /// Replaces the map with a fresh sysfs scan (after lost records or membership changes). The
    /// claims seen are kept: sysfs does not show them.
    pub fn resync(&mut self, mut map: GroupMap) -> Vec<Line> {
        map.set_holders(self.map.all_holders().to_vec());
        for (&group, &n) in &self.claims {
            map.record_claim(group, n > 0);
        }
        let gone: Vec<u32> = self
            .reported
            .keys()
            .filter(|g| map.group(**g).is_none())
            .copied()
            .collect();
        self.reported.retain(|g, _| map.group(*g).is_some());
        self.map = map;
        let mut lines = vec![Line::Resync {
            groups: self.map.groups().count(),
        }];
        lines.extend(gone.into_iter().map(|g| Line::GroupRemoved {
            group: g.to_string(),
        }));
        lines.extend(self.changed_verdicts());
        lines
    }

    /// Applies one kernel event; returns the lines to print and what to re-read.
    /// `vfio_path` is the node a VFIO record concerned, resolved by the caller.
    pub fn apply(&mut self, ev: &KernelEvent, vfio_path: Option<String>) -> (Vec<Line>, FollowUp) {
        let node = vfio_path.map(|path| VfioNode { path, device: None });
        self.apply_node(ev, node)
    }

    /// [`Self::apply`] with the device behind a cdev resolved too.
    pub fn apply_node(
        &mut self,
        ev: &KernelEvent,
        node: Option<VfioNode>,
    ) -> (Vec<Line>, FollowUp) {
        let mut follow = FollowUp::default();
        let step = self.handback_step(ev);
        let cdev_device = node.as_ref().and_then(|n| n.device.clone());
        let vfio_path = node.map(|n| n.path);
        let mut scope = None;
        let mut path = None;
        let mut veto_of = None;
        let failed = |ret: i32| ret != 0;
        let (kind, ok, errno) = match ev.kind {
            EventKind::Probe => {
                let bound = self.convention.bound(ev.ret);
                if bound {
                    self.map.set_driver(&ev.device, ev.driver.as_deref());
                }
                (Kind::Bind, bound, probe_errno(self.convention, ev.ret))
            }
            EventKind::UseDefaultDomain => (Kind::Refusal, false, errno_of_ret(ev.ret)),
            EventKind::Unbind => {
                self.map.set_driver(&ev.device, None);
                (Kind::Unbind, true, None)
            }
            EventKind::GroupClaim | EventKind::DeviceClaim => {
                scope = Some(scope_of(ev.kind));
                if !failed(ev.ret) {
                    if let Some(g) = ev.group {
                        *self.claims.entry(g).or_default() += 1;
                        self.map.record_claim(g, true);
                    }
                }
                (Kind::Claim, !failed(ev.ret), errno_of_ret(ev.ret))
            }
            EventKind::GroupRelease | EventKind::DeviceRelease => {
                scope = Some(scope_of(ev.kind));
                if let Some(g) = ev.group {
                    let n = self.claims.entry(g).or_default();
                    *n = n.saturating_sub(1);
                    let still = *n > 0;
                    self.map.record_claim(g, still);
                }
                (Kind::Release, true, None)
            }
            EventKind::DeviceAdded | EventKind::DeviceRemoved => {
                follow.rescan_sysfs = true;
                let kind = if ev.kind == EventKind::DeviceAdded {
                    Kind::DeviceAdded
                } else {
                    Kind::DeviceRemoved
                };
                (kind, true, None)
            }
            EventKind::VfioGroupOpen | EventKind::VfioCdevOpen => {
                path = vfio_path;
                if let (false, Some(p)) = (failed(ev.ret), &path) {
                    // The opener holds it now; its descriptor number is not in the record.
                    self.map.add_holder(Holder {
                        pid: ev.tgid,
                        comm: ev.comm.clone(),
                        fd: None,
                        path: p.clone(),
                        group: group_of_node(p),
                        device: cdev_device.clone(),
                        // The event line carries the pod, resolved from its cgroup id.
                        pod: None,
                    });
                }
                (Kind::VfioOpen, !failed(ev.ret), errno_of_ret(ev.ret))
            }
            EventKind::VfioGroupRelease | EventKind::VfioCdevRelease => {
                // The last reference went away (fds in flight included): nobody holds that
                // file any more.
                path = vfio_path;
                if let Some(p) = &path {
                    let whole = ev.kind == EventKind::VfioGroupRelease;
                    self.map.release_holder(p, ev.tgid, whole);
                }
                (Kind::VfioRelease, true, None)
            }
            // The daemon handles these before they get here; nothing to print.
            EventKind::ModuleLoad | EventKind::WriteCheck => return (Vec::new(), follow),
            EventKind::PinRefused => (Kind::PinRefused, false, errno_name(19)),
            // The daemon's pass after the drain re-reads the pins against sysfs: a pin this
            // write changed is restored there (`pin_restored`).
            EventKind::OverrideWritten => {
                (Kind::DriverOverrideWrite, ev.ret >= 0, errno_of_ret(ev.ret))
            }
            EventKind::Veto => {
                path = vfio_path;
                let veto = Veto::from_detail(ev.detail);
                let ok = veto.action != Action::Vetoed;
                veto_of = Some(veto);
                // `result` is the vetoed operation's: refused, or (dry-run) let through.
                (Kind::Veto, ok, errno_of_ret(ev.ret))
            }
        };
        let group = ev
            .group
            .or_else(|| self.map.group_of(&ev.device))
            .or_else(|| cdev_device.as_deref().and_then(|d| self.map.group_of(d)))
            .or_else(|| path.as_deref().and_then(group_of_node));
        let line = Line::Event(Box::new(Event {
            kind,
            // A cdev record carries no device of its own: the one behind the node is named.
            device: (!ev.device.is_empty())
                .then(|| ev.device.clone())
                .or(cdev_device),
            driver: if ev.kind == EventKind::OverrideWritten {
                written_override(ev.driver.as_deref())
            } else {
                ev.driver.clone()
            },
            group: group.map(|g| g.to_string()),
            ret: ev.ret,
            errno: errno.map(str::to_owned),
            result: Outcome::of(ok),
            scope,
            path,
            rule: veto_of.as_ref().map(|v| v.rule),
            action: veto_of.as_ref().map(|v| v.action),
            fail_closed: veto_of.as_ref().is_some_and(|v| v.fail_closed),
            why: veto_of.map(|v| v.why).unwrap_or_default(),
            bound_to: None,
            digest: None,
            line: None,
            column: None,
            error: None,
            pid: ev.pid,
            tgid: ev.tgid,
            comm: ev.comm.clone(),
            cgroup_id: ev.cgroup_id,
            pod_uid: None,
            container_id: None,
            allocated_to: None,
        }));
        let handback = step.map(|driver| {
            let mut line = line.clone();
            if let Line::Event(e) = &mut line {
                e.kind = Kind::Handback;
                e.driver = driver;
            }
            line
        });
        let mut lines = vec![line];
        lines.extend(handback);
        if let Some(g) = group {
            lines.extend(self.verdict_if_changed(g));
        }
        (lines, follow)
    }

    /// Whether user space uses `group`: a VFIO holder or a DMA-ownership claim, as the records
    /// in order say (the kernel's own count decides the vetoes; this only names the steps).
    pub fn in_use(&self, group: u32) -> bool {
        self.map.holders(group).next().is_some() || self.map.is_claimed(group)
    }

    fn reserved(&self, group: u32) -> bool {
        self.map.group(group).is_some_and(|g| {
            g.devices
                .values()
                .any(|d| self.policy.reservation_of(d).is_some())
        })
    }

    /// Whether `ev` is a step of handing a device of an idle group back to the host, judged on
    /// the state before it applies; `Some(driver)` for the `handback` line.
    fn handback_step(&mut self, ev: &KernelEvent) -> Option<Option<String>> {
        let dev = self.map.device(&ev.device)?;
        // A reserved group's pins are the agent's to keep (a trusted writer's change is
        // restored); one in use cannot be handed back.
        if self.in_use(dev.group) || self.reserved(dev.group) {
            return None;
        }
        let user = |d: Option<&str>| d.is_some_and(is_user_driver);
        match ev.kind {
            EventKind::Unbind if user(ev.driver.as_deref()) => {
                self.handing_back.insert(ev.device.clone());
                Some(ev.driver.clone())
            }
            EventKind::OverrideWritten if ev.ret >= 0 => {
                let new = written_override(ev.driver.as_deref());
                let left = user(dev.driver_override.as_deref()) && !user(new.as_deref());
                // Nobody restores an idle group's pins: the model takes the new value now.
                self.map.set_driver_override(&ev.device, new.as_deref());
                left.then(|| {
                    self.handing_back.insert(ev.device.clone());
                    new
                })
            }
            EventKind::Probe if self.convention.bound(ev.ret) && !user(ev.driver.as_deref()) => {
                self.handing_back
                    .remove(&ev.device)
                    .then(|| ev.driver.clone())
            }
            _ => None,
        }
    }
}

/// What a `driver_override` write sets, as the kernel takes it: the written bytes up to a
/// newline; nothing (or a lone newline) clears the override.
fn written_override(written: Option<&str>) -> Option<String> {
    let value = written?.split('\n').next().unwrap_or("");
    (!value.is_empty()).then(|| value.to_owned())
}

/// A veto record's `detail`, spelled out.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Veto {
    rule: Rule,
    action: Action,
    fail_closed: bool,
    why: Vec<Why>,
}

impl Veto {
    fn from_detail(detail: u32) -> Self {
        let rule = match detail & veto::KIND_MASK {
            watched::DRIVER_OVERRIDE => Rule::ProtectedDriverOverride,
            watched::REMOVE => Rule::ProtectedRemove,
            watched::BIND => Rule::ProtectedBind,
            watched::UNBIND => Rule::ProtectedUnbind,
            watched::NEW_ID => Rule::ProtectedNewId,
            watched::DRIVERS_PROBE => Rule::ProtectedDriversProbe,
            watched::VFIO_GROUP | watched::VFIO_CDEV if detail & veto::NOT_ARMED != 0 => {
                Rule::VfioOpenUnarmed
            }
            watched::VFIO_GROUP | watched::VFIO_CDEV => Rule::VfioOpenNotViable,
            watched::RESET => Rule::ProtectedReset,
            watched::RESET_SUBORDINATE => Rule::ProtectedResetSubordinate,
            watched::SLOT_POWER => Rule::ProtectedSlotPower,
            watched::PROBE => Rule::ProtectedProbe,
            watched::REMOVE_ID => Rule::ProtectedRemoveId,
            watched::CONFIG => Rule::ProtectedConfig,
            watched::RESOURCE => Rule::ProtectedResource,
            watched::PINS => Rule::ProtectedPins,
            _ => Rule::Unknown,
        };
        Self {
            rule,
            action: if detail & veto::DENIED != 0 {
                Action::Vetoed
            } else {
                Action::WouldVeto
            },
            fail_closed: detail & veto::TARGET_UNKNOWN != 0,
            why: [
                (veto::ABOVE, Why::AboveProtectedGroup),
                (veto::AT_OPEN, Why::OpenedForWriting),
                (veto::NOT_THIS_WRITE, Why::NotThisWritesRegisters),
                (veto::TRACED, Why::TrustedWriterTraced),
                (veto::NOT_ARMED, Why::WriteCheckNotArmed),
            ]
            .into_iter()
            .filter(|(bit, _)| detail & bit != 0)
            .map(|(_, w)| w)
            .collect(),
        }
    }
}

fn scope_of(kind: EventKind) -> Scope {
    match kind {
        EventKind::DeviceClaim | EventKind::DeviceRelease => Scope::Device,
        _ => Scope::Group,
    }
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

/// The group number of a legacy group node path (`/dev/vfio/14` -> 14).
pub fn group_of_node(path: &str) -> Option<u32> {
    path.strip_prefix("/dev/vfio/")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Owner};

    #[test]
    fn group_nodes() {
        assert_eq!(group_of_node("/dev/vfio/14"), Some(14));
        assert_eq!(group_of_node("/dev/vfio/vfio"), None);
        assert_eq!(group_of_node("/dev/vfio/devices/vfio0"), None);
    }

    /// The two-function device of the VM test node: .0 on vfio-pci, .1 unbound, group 9.
    fn node() -> NodeState {
        let mut map = GroupMap::new();
        let mut f0 = Device::new("0000:00:05.0", 9);
        f0.driver = Some("vfio-pci".into());
        map.add_device(f0);
        map.add_device(Device::new("0000:00:05.1", 9));
        let mut n = NodeState::new(map, Policy::default(), ProbeConvention::ZeroIsBound);
        n.changed_verdicts();
        n
    }

    fn event(
        kind: EventKind,
        ret: i32,
        device: &str,
        driver: Option<&str>,
        group: Option<u32>,
    ) -> KernelEvent {
        KernelEvent {
            kind,
            ret,
            pid: 100,
            tgid: 100,
            cgroup_id: 1,
            ktime_ns: 0,
            group,
            rdev: None,
            detail: 0,
            comm: "sh".into(),
            device: device.into(),
            driver: driver.map(Into::into),
        }
    }

    fn event_line(lines: &[Line]) -> &Event {
        match &lines[0] {
            Line::Event(e) => e,
            other => panic!("expected an event line, got {other:?}"),
        }
    }

    fn verdicts(lines: &[Line]) -> Vec<(String, Owner, bool)> {
        lines
            .iter()
            .filter_map(|l| match l {
                Line::Verdict {
                    group,
                    owner,
                    viable,
                    ..
                } => Some((group.clone(), *owner, *viable)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn probe_conventions_by_release() {
        assert_eq!(
            ProbeConvention::for_release("5.10.0-32-amd64"),
            ProbeConvention::OneIsBound
        );
        assert_eq!(
            ProbeConvention::for_release("5.13.0"),
            ProbeConvention::ZeroIsBound
        );
        assert_eq!(
            ProbeConvention::for_release("6.1.0-56-amd64"),
            ProbeConvention::ZeroIsBound
        );
        assert_eq!(
            ProbeConvention::for_release("6.12.118+deb13-amd64"),
            ProbeConvention::ZeroIsBound
        );
    }

    #[test]
    fn claim_makes_the_group_user_owned_and_release_gives_it_back() {
        let mut n = node();
        let (lines, _) = n.apply(&event(EventKind::GroupClaim, 0, "", None, Some(9)), None);
        let e = event_line(&lines);
        assert_eq!(
            (e.kind, e.result, e.scope, e.group.as_deref()),
            (Kind::Claim, Outcome::Ok, Some(Scope::Group), Some("9"))
        );
        assert_eq!(verdicts(&lines), [("9".to_string(), Owner::User, true)]);
        let (lines, _) = n.apply(&event(EventKind::GroupRelease, 0, "", None, Some(9)), None);
        assert_eq!(event_line(&lines).kind, Kind::Release);
        assert_eq!(verdicts(&lines), [("9".to_string(), Owner::None, true)]);
    }

    #[test]
    fn refused_bind_is_reported_and_leaves_the_device_unbound() {
        let mut n = node();
        n.apply(&event(EventKind::GroupClaim, 0, "", None, Some(9)), None);
        let (lines, _) = n.apply(
            &event(
                EventKind::UseDefaultDomain,
                -16,
                "0000:00:05.1",
                Some("e1000"),
                Some(9),
            ),
            None,
        );
        let e = event_line(&lines);
        assert_eq!(
            (e.kind, e.errno.as_deref(), e.result),
            (Kind::Refusal, Some("EBUSY"), Outcome::Error)
        );
        assert_eq!(
            (e.device.as_deref(), e.driver.as_deref()),
            (Some("0000:00:05.1"), Some("e1000"))
        );
        let (lines, _) = n.apply(
            &event(
                EventKind::Probe,
                -16,
                "0000:00:05.1",
                Some("e1000"),
                Some(9),
            ),
            None,
        );
        assert_eq!(
            (event_line(&lines).kind, event_line(&lines).result),
            (Kind::Bind, Outcome::Error)
        );
        assert!(verdicts(&lines).is_empty(), "nothing changed");
        assert_eq!(
            n.map()
                .device("0000:00:05.1")
                .and_then(|d| d.driver.clone()),
            None
        );
    }

    /// `ret = i32::MIN` has no negation: every kind of record carrying it is applied without a
    /// panic (overflow checks are on in tests) and reported as a failure with no errno name.
    #[test]
    fn a_record_with_ret_i32_min_is_an_unknown_errno_not_a_panic() {
        for convention in [ProbeConvention::OneIsBound, ProbeConvention::ZeroIsBound] {
            let mut n = node();
            n.convention = convention;
            for kind in [
                EventKind::Probe,
                EventKind::UseDefaultDomain,
                EventKind::GroupClaim,
                EventKind::DeviceClaim,
                EventKind::VfioGroupOpen,
                EventKind::VfioCdevOpen,
                EventKind::Veto,
            ] {
                let ev = event(kind, i32::MIN, "0000:00:05.1", Some("e1000"), Some(9));
                let (lines, _) = n.apply(&ev, None);
                let e = event_line(&lines);
                assert_eq!((e.ret, e.errno.as_deref()), (i32::MIN, None), "{kind:?}");
            }
            assert_eq!(
                n.map()
                    .device("0000:00:05.1")
                    .and_then(|d| d.driver.clone()),
                None,
                "a failed probe binds nothing"
            );
        }
        assert_eq!(probe_errno(ProbeConvention::ZeroIsBound, i32::MIN), None);
        assert_eq!(probe_errno(ProbeConvention::OneIsBound, -16), Some("EBUSY"));
    }

    #[test]
    fn kernel_bind_then_claim_failure_leaves_a_non_viable_group() {
        let mut n = node();
        let (lines, _) = n.apply(
            &event(EventKind::Probe, 0, "0000:00:05.1", Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(event_line(&lines).result, Outcome::Ok);
        assert_eq!(verdicts(&lines), [("9".to_string(), Owner::Kernel, false)]);
        let (lines, _) = n.apply(&event(EventKind::GroupClaim, -1, "", None, Some(9)), None);
        let e = event_line(&lines);
        assert_eq!(
            (e.result, e.errno.as_deref()),
            (Outcome::Error, Some("EPERM"))
        );
        assert!(verdicts(&lines).is_empty());
        let v = n.policy().verdict(n.map(), 9).expect("group 9");
        assert!(
            v.reasons.iter().any(|r| r.contains("0000:00:05.1")),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn unbind_and_rebind_follow_the_driver() {
        let mut n = node();
        n.apply(
            &event(
                EventKind::Unbind,
                0,
                "0000:00:05.0",
                Some("vfio-pci"),
                Some(9),
            ),
            None,
        );
        assert_eq!(
            n.map()
                .device("0000:00:05.0")
                .and_then(|d| d.driver.clone()),
            None
        );
        n.apply(
            &event(
                EventKind::Probe,
                0,
                "0000:00:05.0",
                Some("vfio-pci"),
                Some(9),
            ),
            None,
        );
        assert_eq!(
            n.map()
                .device("0000:00:05.0")
                .and_then(|d| d.driver.clone())
                .as_deref(),
            Some("vfio-pci")
        );
    }

    fn handbacks(lines: &[Line]) -> Vec<(String, Option<String>)> {
        lines
            .iter()
            .filter_map(|l| match l {
                Line::Event(e) if e.kind == Kind::Handback => {
                    Some((e.device.clone().unwrap_or_default(), e.driver.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_idle_group_handed_back_is_a_handback_event_per_step() {
        let mut n = node();
        n.map.set_driver_override("0000:00:05.0", Some("vfio-pci"));
        let dev = "0000:00:05.0";
        let (unbind, _) = n.apply(
            &event(EventKind::Unbind, 0, dev, Some("vfio-pci"), Some(9)),
            None,
        );
        assert_eq!(handbacks(&unbind), [(dev.into(), Some("vfio-pci".into()))]);
        let (clear, _) = n.apply(
            &event(EventKind::OverrideWritten, 1, dev, Some("\n"), Some(9)),
            None,
        );
        assert_eq!(handbacks(&clear), [(dev.into(), None)]);
        let (bind, _) = n.apply(
            &event(EventKind::Probe, 0, dev, Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(handbacks(&bind), [(dev.into(), Some("e1000".into()))]);
        // The same host driver binding again is no hand-back.
        let (again, _) = n.apply(
            &event(EventKind::Probe, 0, dev, Some("e1000"), Some(9)),
            None,
        );
        assert!(handbacks(&again).is_empty());
    }

    #[test]
    fn a_group_in_use_or_reserved_is_never_handed_back() {
        let mut n = node();
        n.map.record_claim(9, true);
        let (lines, _) = n.apply(
            &event(
                EventKind::Unbind,
                0,
                "0000:00:05.0",
                Some("vfio-pci"),
                Some(9),
            ),
            None,
        );
        assert!(handbacks(&lines).is_empty(), "claimed: in use");
        let mut r = node();
        r.policy = Policy::parse("[[reserve]]\ngroup = 9\n", std::path::Path::new("t.toml"))
            .expect("valid policy");
        let (lines, _) = r.apply(
            &event(
                EventKind::Unbind,
                0,
                "0000:00:05.0",
                Some("vfio-pci"),
                Some(9),
            ),
            None,
        );
        assert!(
            handbacks(&lines).is_empty(),
            "reserved: the agent's pins stand"
        );
    }

    #[test]
    fn five_ten_probe_returns_one_on_success() {
        let mut n = node();
        n.convention = ProbeConvention::OneIsBound;
        let (lines, _) = n.apply(
            &event(EventKind::Probe, 1, "0000:00:05.1", Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(event_line(&lines).result, Outcome::Ok);
        let (lines, _) = n.apply(
            &event(EventKind::Probe, 0, "0000:00:05.1", Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(
            (
                event_line(&lines).result,
                event_line(&lines).errno.as_deref()
            ),
            (Outcome::Error, None)
        );
    }

    #[test]
    fn vfio_open_and_release_follow_the_holder_without_a_proc_scan() {
        let mut n = node();
        let mut ev = event(EventKind::VfioGroupOpen, 0, "", None, None);
        ev.rdev = Some((245, 0));
        let (lines, follow) = n.apply(&ev, Some("/dev/vfio/9".into()));
        let e = event_line(&lines);
        assert_eq!(
            (e.kind, e.group.as_deref(), e.path.as_deref()),
            (Kind::VfioOpen, Some("9"), Some("/dev/vfio/9"))
        );
        assert_eq!(follow, FollowUp::default());
        let held: Vec<(u32, Option<u32>)> = n.map().holders(9).map(|h| (h.pid, h.fd)).collect();
        assert_eq!(held, [(100, None)]);
        // A failed open holds nothing.
        let mut busy = event(EventKind::VfioGroupOpen, -16, "", None, None);
        busy.tgid = 200;
        n.apply(&busy, Some("/dev/vfio/9".into()));
        assert_eq!(n.map().holders(9).count(), 1);
        // The release is the file's last reference (another process may have closed it).
        let mut rel = event(EventKind::VfioGroupRelease, 0, "", None, None);
        rel.tgid = 300;
        let (lines, follow) = n.apply(&rel, Some("/dev/vfio/9".into()));
        assert_eq!(event_line(&lines).kind, Kind::VfioRelease);
        assert_eq!(follow, FollowUp::default());
        assert_eq!(n.map().holders(9).count(), 0);
    }

    #[test]
    fn cdev_holders_count_for_their_device_group_and_go_one_at_a_time() {
        let mut n = node();
        let cdev = || {
            Some(VfioNode {
                path: "/dev/vfio/devices/vfio0".into(),
                device: Some("0000:00:05.0".into()),
            })
        };
        let open = event(EventKind::VfioCdevOpen, 0, "", None, None);
        let (lines, _) = n.apply_node(&open, cdev());
        assert_eq!(event_line(&lines).group.as_deref(), Some("9"));
        // The record names no device; the line names the one behind the cdev.
        assert_eq!(event_line(&lines).device.as_deref(), Some("0000:00:05.0"));
        n.apply_node(&open, cdev());
        assert_eq!(n.map().holders(9).count(), 2);
        let release = event(EventKind::VfioCdevRelease, 0, "", None, None);
        n.apply_node(&release, cdev());
        assert_eq!(n.map().holders(9).count(), 1);
        n.apply_node(&release, cdev());
        assert_eq!(n.map().holders(9).count(), 0);
    }

    #[test]
    fn a_module_load_prints_nothing() {
        let mut n = node();
        let (lines, follow) = n.apply(&event(EventKind::ModuleLoad, 0, "", None, None), None);
        assert!(lines.is_empty());
        assert_eq!(follow, FollowUp::default());
    }

    #[test]
    fn membership_changes_ask_for_a_resync() {
        let mut n = node();
        let (_, follow) = n.apply(
            &event(EventKind::DeviceAdded, 0, "0000:00:06.0", None, Some(10)),
            None,
        );
        assert!(follow.rescan_sysfs);
        let mut map = n.map().clone();
        map.add_device(Device::new("0000:00:06.0", 10));
        let lines = n.resync(map);
        assert!(matches!(lines[0], Line::Resync { groups: 2 }));
        assert_eq!(verdicts(&lines), [("10".to_string(), Owner::None, true)]);
        let lines = n.resync(GroupMap::new());
        assert!(
            lines.contains(&Line::GroupRemoved { group: "9".into() }),
            "{lines:?}"
        );
        assert!(
            lines.contains(&Line::GroupRemoved { group: "10".into() }),
            "{lines:?}"
        );
    }

    #[test]
    fn an_override_write_is_an_event_with_the_value_the_kernel_took() {
        let mut n = node();
        for (written, ret, value, result) in [
            ("none\n", 5, Some("none"), Outcome::Ok),
            ("\n", 1, None, Outcome::Ok),
            ("e1000\nrest", 11, Some("e1000"), Outcome::Ok),
            ("vfio-pci\n", -12, Some("vfio-pci"), Outcome::Error),
        ] {
            let ev = event(
                EventKind::OverrideWritten,
                ret,
                "0000:00:05.1",
                Some(written),
                Some(9),
            );
            let (lines, follow) = n.apply(&ev, None);
            let line = event_line(&lines);
            assert_eq!(line.kind, Kind::DriverOverrideWrite);
            assert_eq!(line.driver.as_deref(), value, "{written:?}");
            assert_eq!(line.result, result);
            assert_eq!(line.group.as_deref(), Some("9"));
            // The model follows sysfs at the pass after the drain, not the record.
            assert_eq!(follow, FollowUp::default());
        }
    }
}
