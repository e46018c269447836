//! The live node: the group map kept current from kernel events, and which verdicts the agent
//! has already reported. Pure: the daemon does the I/O and hands results in; enforce reads and
//! updates it. Its own module so that neither has to reach into the other for it.
use std::collections::{BTreeMap, BTreeSet};

use iommu_enforcer_schema::Line;

use crate::{
    bpf::{
        features::release_at_least,
        record::{KernelEvent, Record, VfioNodeKind},
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

    /// Whether a probe that returned `ret` bound the driver.
    pub fn bound(self, ret: i32) -> bool {
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

/// What applying a record resolved and changed: what [`crate::render`] needs besides the
/// record, and what the daemon acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The device the record names, or for a cdev the one behind the node.
    pub device: Option<String>,
    /// The group: the record's, else the device's in the map, else the node's.
    pub group: Option<u32>,
    /// The VFIO node (opens, releases and vetoes of opens).
    pub path: Option<String>,
    /// The record was a step of handing a device of an idle group back to the host.
    pub handback: Option<HandbackStep>,
    /// The group's verdict, when the record changed it.
    pub verdict: Option<Line>,
    pub follow: FollowUp,
}

/// A hand-back step: the user driver that let go, the new `driver_override` (`None`:
/// cleared), or the host driver that bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandbackStep {
    pub driver: Option<String>,
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

    /// How this kernel's `really_probe` says "bound".
    pub fn convention(&self) -> ProbeConvention {
        self.convention
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

    /// Applies one kernel record to the node: the state update alone, returning what it
    /// resolved and changed for [`crate::render`] and the daemon. `node` is the VFIO node the
    /// record concerned (and, for a cdev, the device behind it), resolved by the caller.
    pub fn apply(&mut self, ev: &KernelEvent, node: Option<VfioNode>) -> Applied {
        // The daemon handles these before they get here.
        if matches!(ev.record, Record::ModuleLoad | Record::WriteCheck { .. }) {
            return Applied::default();
        }
        // Judged on the state before the record applies.
        let handback = self.handback_step(&ev.record);
        let follow = self.update(ev, node.as_ref());
        let applied = self.resolve(&ev.record, node);
        Applied {
            handback,
            follow,
            verdict: applied.group.and_then(|g| self.verdict_if_changed(g)),
            ..applied
        }
    }

    /// The record's change to the drivers, claims and holders; what to re-read after it.
    fn update(&mut self, ev: &KernelEvent, node: Option<&VfioNode>) -> FollowUp {
        let path = node.map(|n| n.path.as_str());
        match &ev.record {
            Record::Probe {
                target,
                driver,
                ret,
            } => {
                if let (true, Some(d)) = (self.convention.bound(*ret), &target.device) {
                    self.map.set_driver(d, driver.as_deref());
                }
            }
            Record::Unbind { target, .. } => {
                if let Some(d) = &target.device {
                    self.map.set_driver(d, None);
                }
            }
            Record::Claim { target, ret, .. } => {
                if let (0, Some(g)) = (*ret, target.group) {
                    *self.claims.entry(g).or_default() += 1;
                    self.map.record_claim(g, true);
                }
            }
            Record::Release { target, .. } => {
                if let Some(g) = target.group {
                    let n = self.claims.entry(g).or_default();
                    *n = n.saturating_sub(1);
                    let still = *n > 0;
                    self.map.record_claim(g, still);
                }
            }
            Record::DeviceAdded { .. } | Record::DeviceRemoved { .. } => {
                return FollowUp {
                    rescan_sysfs: true,
                    ..FollowUp::default()
                };
            }
            Record::VfioOpen { ret: 0, .. } => {
                if let Some(p) = path {
                    // The opener holds it now; its descriptor number is not in the record.
                    self.map.add_holder(Holder {
                        pid: ev.task.tgid,
                        comm: ev.task.comm.clone(),
                        fd: None,
                        path: p.to_owned(),
                        group: group_of_node(p),
                        device: node.and_then(|n| n.device.clone()),
                        // The event line carries the pod, resolved from its cgroup id.
                        pod: None,
                    });
                }
            }
            Record::VfioRelease { node, .. } => {
                // The last reference went away (fds in flight included): nobody holds that
                // file any more.
                if let Some(p) = path {
                    let whole = *node == VfioNodeKind::Group;
                    self.map.release_holder(p, ev.task.tgid, whole);
                }
            }
            // The rest only report (a kind that changes nothing needs no arm here). An
            // override write is followed by the daemon's pass after the drain, which re-reads
            // the pins against sysfs and restores a changed one (`pin_restored`).
            _ => {}
        }
        FollowUp::default()
    }

    /// The device, group and VFIO node the record's line names, from the record, the map as
    /// it is now, and the node the caller resolved.
    fn resolve(&self, record: &Record, node: Option<VfioNode>) -> Applied {
        let (path, cdev_device) = node.map_or((None, None), |n| (Some(n.path), n.device));
        let names_node = matches!(
            record,
            Record::VfioOpen { .. } | Record::VfioRelease { .. } | Record::Veto { .. }
        );
        let path = path.filter(|_| names_node);
        let target = record.target();
        let own_device = target.and_then(|t| t.device.clone());
        let group = target
            .and_then(|t| t.group)
            .or_else(|| own_device.as_deref().and_then(|d| self.map.group_of(d)))
            .or_else(|| cdev_device.as_deref().and_then(|d| self.map.group_of(d)))
            .or_else(|| path.as_deref().and_then(group_of_node));
        Applied {
            // A cdev record carries no device of its own: the one behind the node is named.
            device: own_device.or(cdev_device),
            group,
            path,
            ..Applied::default()
        }
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

    /// Whether `record` is a step of handing a device of an idle group back to the host,
    /// judged on the state before it applies.
    fn handback_step(&mut self, record: &Record) -> Option<HandbackStep> {
        let device = record.target()?.device.as_deref()?;
        let dev = self.map.device(device)?;
        // A reserved group's pins are the agent's to keep (a trusted writer's change is
        // restored); one in use cannot be handed back.
        if self.in_use(dev.group) || self.reserved(dev.group) {
            return None;
        }
        let user = |d: Option<&str>| d.is_some_and(is_user_driver);
        let driver = match record {
            Record::Unbind { driver, .. } if user(driver.as_deref()) => driver.clone(),
            Record::OverrideWritten { value, ret, .. } if *ret >= 0 => {
                let left = user(dev.driver_override.as_deref()) && !user(value.as_deref());
                // Nobody restores an idle group's pins: the model takes the new value now.
                self.map.set_driver_override(device, value.as_deref());
                if !left {
                    return None;
                }
                value.clone()
            }
            Record::Probe { driver, ret, .. }
                if self.convention.bound(*ret) && !user(driver.as_deref()) =>
            {
                if !self.handing_back.remove(device) {
                    return None;
                }
                return Some(HandbackStep {
                    driver: driver.clone(),
                });
            }
            _ => return None,
        };
        self.handing_back.insert(device.to_owned());
        Some(HandbackStep { driver })
    }
}

/// The group number of a legacy group node path (`/dev/vfio/14` -> 14).
pub fn group_of_node(path: &str) -> Option<u32> {
    path.strip_prefix("/dev/vfio/")?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        bpf::record::decode,
        model::{Device, Owner},
        render,
    };
    use iommu_enforcer_common::EventKind;
    use iommu_enforcer_schema::{Event, Kind, Outcome, Scope};

    #[test]
    fn group_nodes() {
        assert_eq!(group_of_node("/dev/vfio/14"), Some(14));
        assert_eq!(group_of_node("/dev/vfio/vfio"), None);
        assert_eq!(group_of_node("/dev/vfio/devices/vfio0"), None);
    }

    /// The two-function device of the VM test node: .0 on vfio-pci, .1 unbound, group 9.
    pub(crate) fn node() -> NodeState {
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
        let mut ev = iommu_enforcer_common::Event::zeroed();
        ev.kind = kind as u32;
        ev.ret = ret;
        (ev.pid, ev.tgid, ev.cgroup_id) = (100, 100, 1);
        ev.group = group.map_or(-1, |g| g as i32);
        ev.comm[..2].copy_from_slice(b"sh");
        ev.device[..device.len()].copy_from_slice(device.as_bytes());
        let driver = driver.unwrap_or("");
        ev.driver[..driver.len()].copy_from_slice(driver.as_bytes());
        // SAFETY: the record is repr(C) plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const iommu_enforcer_common::Event).cast::<u8>(),
                std::mem::size_of::<iommu_enforcer_common::Event>(),
            )
        };
        decode(bytes).expect("decodes")
    }

    /// The state update and the render, as the daemon runs them (no pod).
    fn apply(n: &mut NodeState, ev: &KernelEvent, path: Option<String>) -> (Vec<Line>, FollowUp) {
        let node = path.map(|path| VfioNode { path, device: None });
        apply_node(n, ev, node)
    }

    fn apply_node(
        n: &mut NodeState,
        ev: &KernelEvent,
        node: Option<VfioNode>,
    ) -> (Vec<Line>, FollowUp) {
        let applied = n.apply(ev, node);
        let mut lines = render::event_lines(ev, &applied, n.convention(), &Default::default());
        lines.extend(applied.verdict);
        (lines, applied.follow)
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
        let (lines, _) = apply(
            &mut n,
            &event(EventKind::GroupClaim, 0, "", None, Some(9)),
            None,
        );
        let e = event_line(&lines);
        assert_eq!(
            (e.kind, e.result, e.scope, e.group.as_deref()),
            (Kind::Claim, Outcome::Ok, Some(Scope::Group), Some("9"))
        );
        assert_eq!(verdicts(&lines), [("9".to_string(), Owner::User, true)]);
        let (lines, _) = apply(
            &mut n,
            &event(EventKind::GroupRelease, 0, "", None, Some(9)),
            None,
        );
        assert_eq!(event_line(&lines).kind, Kind::Release);
        assert_eq!(verdicts(&lines), [("9".to_string(), Owner::None, true)]);
    }

    #[test]
    fn refused_bind_is_reported_and_leaves_the_device_unbound() {
        let mut n = node();
        apply(
            &mut n,
            &event(EventKind::GroupClaim, 0, "", None, Some(9)),
            None,
        );
        let (lines, _) = apply(
            &mut n,
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
        let (lines, _) = apply(
            &mut n,
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
                let (lines, _) = apply(&mut n, &ev, None);
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
    }

    #[test]
    fn kernel_bind_then_claim_failure_leaves_a_non_viable_group() {
        let mut n = node();
        let (lines, _) = apply(
            &mut n,
            &event(EventKind::Probe, 0, "0000:00:05.1", Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(event_line(&lines).result, Outcome::Ok);
        assert_eq!(verdicts(&lines), [("9".to_string(), Owner::Kernel, false)]);
        let (lines, _) = apply(
            &mut n,
            &event(EventKind::GroupClaim, -1, "", None, Some(9)),
            None,
        );
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
        apply(
            &mut n,
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
        apply(
            &mut n,
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
        let (unbind, _) = apply(
            &mut n,
            &event(EventKind::Unbind, 0, dev, Some("vfio-pci"), Some(9)),
            None,
        );
        assert_eq!(handbacks(&unbind), [(dev.into(), Some("vfio-pci".into()))]);
        let (clear, _) = apply(
            &mut n,
            &event(EventKind::OverrideWritten, 1, dev, Some("\n"), Some(9)),
            None,
        );
        assert_eq!(handbacks(&clear), [(dev.into(), None)]);
        let (bind, _) = apply(
            &mut n,
            &event(EventKind::Probe, 0, dev, Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(handbacks(&bind), [(dev.into(), Some("e1000".into()))]);
        // The same host driver binding again is no hand-back.
        let (again, _) = apply(
            &mut n,
            &event(EventKind::Probe, 0, dev, Some("e1000"), Some(9)),
            None,
        );
        assert!(handbacks(&again).is_empty());
    }

    #[test]
    fn a_group_in_use_or_reserved_is_never_handed_back() {
        let mut n = node();
        n.map.record_claim(9, true);
        let (lines, _) = apply(
            &mut n,
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
        let (lines, _) = apply(
            &mut r,
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
        let (lines, _) = apply(
            &mut n,
            &event(EventKind::Probe, 1, "0000:00:05.1", Some("e1000"), Some(9)),
            None,
        );
        assert_eq!(event_line(&lines).result, Outcome::Ok);
        let (lines, _) = apply(
            &mut n,
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
        let ev = event(EventKind::VfioGroupOpen, 0, "", None, None);
        let (lines, follow) = apply(&mut n, &ev, Some("/dev/vfio/9".into()));
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
        busy.task.tgid = 200;
        apply(&mut n, &busy, Some("/dev/vfio/9".into()));
        assert_eq!(n.map().holders(9).count(), 1);
        // The release is the file's last reference (another process may have closed it).
        let mut rel = event(EventKind::VfioGroupRelease, 0, "", None, None);
        rel.task.tgid = 300;
        let (lines, follow) = apply(&mut n, &rel, Some("/dev/vfio/9".into()));
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
        let (lines, _) = apply_node(&mut n, &open, cdev());
        assert_eq!(event_line(&lines).group.as_deref(), Some("9"));
        // The record names no device; the line names the one behind the cdev.
        assert_eq!(event_line(&lines).device.as_deref(), Some("0000:00:05.0"));
        apply_node(&mut n, &open, cdev());
        assert_eq!(n.map().holders(9).count(), 2);
        let release = event(EventKind::VfioCdevRelease, 0, "", None, None);
        apply_node(&mut n, &release, cdev());
        assert_eq!(n.map().holders(9).count(), 1);
        apply_node(&mut n, &release, cdev());
        assert_eq!(n.map().holders(9).count(), 0);
    }

    #[test]
    fn a_module_load_prints_nothing() {
        let mut n = node();
        let (lines, follow) = apply(
            &mut n,
            &event(EventKind::ModuleLoad, 0, "", None, None),
            None,
        );
        assert!(lines.is_empty());
        assert_eq!(follow, FollowUp::default());
    }

    #[test]
    fn membership_changes_ask_for_a_resync() {
        let mut n = node();
        let (_, follow) = apply(
            &mut n,
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
            let (lines, follow) = apply(&mut n, &ev, None);
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
