//! Names the pod and container of every event line from its cgroup id, before the lines are
//! printed: one cache look-up per event, one bounded walk of the cgroup2 mount per batch with
//! an unknown id (crate::pods::cgroup_ids). An id that cannot be answered leaves both fields
//! null and is counted by reason.
//!
//! With `--pod-resources-socket`, events on a device a device plugin allocated also name that
//! pod (`allocated_to`), from the kubelet's `List` (crate::pods::resources): listed at start,
//! and again, at most once per [`RELIST`] ([`RETRY`] after a failure), when a VFIO event names
//! a device (or a group none of whose members) the table knows. No timer: an idle agent never
//! lists. A call waits at most its deadline (2 s) on its own thread, as sysfs reads do.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iommu_enforcer_schema::{Allocation, Event, Kind, Line, Rule};
use log::{debug, info, warn};

use crate::{
    metrics::Metrics,
    pods::{
        resources::{self, Table},
        CgroupIds, Failure,
    },
};

/// The shortest time between two lists that events ask for.
pub const RELIST: Duration = Duration::from_secs(10);
/// ... after a list that failed: a kubelet that does not answer costs at most a deadline a
/// minute.
pub const RETRY: Duration = Duration::from_secs(60);

pub struct Attribution {
    ids: CgroupIds,
    allocations: Option<Allocations>,
}

/// The pod-resources table and when it was last asked for.
struct Allocations {
    socket: PathBuf,
    table: Table,
    last: Option<(Instant, bool)>,
    lists: u64,
}

impl Allocations {
    fn list(&mut self, metrics: Option<&Metrics>) {
        self.lists += 1;
        let ok = match resources::list_blocking(&self.socket, resources::DEADLINE) {
            Ok(pods) => {
                self.table = Table::from_pods(&pods);
                debug!(
                    "pod-resources: {} pods, {} PCI devices allocated, {} other device ids",
                    pods.len(),
                    self.table.devices.len(),
                    self.table.ignored_ids
                );
                if let Some(m) = metrics {
                    m.set_pod_resources(self.table.devices.len(), self.table.ignored_ids);
                }
                true
            }
            Err(e) => {
                // The table stands: allocations rarely change, a stale one is better than none.
                warn!(
                    "pod-resources {}: {e}; keeping the {} allocations known",
                    self.socket.display(),
                    self.table.devices.len()
                );
                if let Some(m) = metrics {
                    m.pod_resources_failed(e.reason());
                }
                false
            }
        };
        self.last = Some((Instant::now(), ok));
    }

    fn may_list(&self, now: Instant) -> bool {
        match self.last {
            None => true,
            Some((at, ok)) => now.duration_since(at) >= if ok { RELIST } else { RETRY },
        }
    }

    /// The allocation of the event's device, or else of the first allocated member of its group.
    fn find(&self, e: &Event, members: &dyn Fn(&str) -> Vec<String>) -> Option<&Allocation> {
        if let Some(a) = e.device.as_deref().and_then(|d| self.table.get(d)) {
            return Some(a);
        }
        let group = e.group.as_deref()?;
        members(group).iter().find_map(|m| self.table.get(m))
    }

    fn annotate(
        &mut self,
        lines: &mut [Line],
        metrics: Option<&Metrics>,
        members: &dyn Fn(&str) -> Vec<String>,
        may_list: bool,
    ) {
        let unknown = lines.iter().any(|l| match l {
            Line::Event(e) => vfio_use(e) && self.find(e, members).is_none(),
            _ => false,
        });
        if may_list && unknown && self.may_list(Instant::now()) {
            self.list(metrics);
        }
        for line in lines.iter_mut() {
            if let Line::Event(e) = line {
                e.allocated_to = self.find(e, members).cloned();
            }
        }
    }
}

/// An event of a process using a device through VFIO: the moment a pod's allocation matters.
fn vfio_use(e: &Event) -> bool {
    matches!(e.kind, Kind::VfioOpen | Kind::Claim)
        || (e.kind == Kind::Veto
            && matches!(
                e.rule,
                Some(Rule::VfioOpenNotViable | Rule::VfioOpenUnarmed)
            ))
}

impl Attribution {
    /// Over the cgroup2 mount at `cgroup_root`; walks it once now, so the pods that exist are
    /// known even if their processes exit before their first event is read.
    pub fn new(cgroup_root: &Path) -> Self {
        let mut ids = CgroupIds::new(cgroup_root);
        match ids.refresh() {
            Ok(()) => info!(
                "pod attribution from the cgroup2 tree at {}",
                cgroup_root.display()
            ),
            // Not fatal: cgroup2 may be mounted later, each miss looks again.
            Err(f) => info!(
                "pod attribution: {} at {} ({}); events get pod_uid null until it is there",
                "no complete cgroup2 tree",
                cgroup_root.display(),
                f.as_str()
            ),
        }
        Self {
            ids,
            allocations: None,
        }
    }

    /// Also names the pod a device plugin allocated each event's device to, from the kubelet's
    /// pod-resources socket at `socket`: listed once now.
    pub fn with_pod_resources(mut self, socket: Option<&Path>, metrics: Option<&Metrics>) -> Self {
        let Some(socket) = socket else {
            return self;
        };
        let mut allocations = Allocations {
            socket: socket.to_path_buf(),
            table: Table::default(),
            last: None,
            lists: 0,
        };
        allocations.list(metrics);
        info!(
            "device allocations from the kubelet's pod-resources socket {}: {} PCI devices allocated",
            socket.display(),
            allocations.table.devices.len()
        );
        self.allocations = Some(allocations);
        self
    }

    /// Lists of the pod-resources socket made so far (0 without one).
    #[cfg(test)]
    pub fn pod_resources_lists(&self) -> u64 {
        self.allocations.as_ref().map_or(0, |a| a.lists)
    }

    /// Fills `allocated_to` of every event in `lines` whose device (or a member of whose group,
    /// `members`) is allocated, listing again first when a VFIO event names one the table does
    /// not know and `may_list`.
    pub fn allocate(
        &mut self,
        lines: &mut [Line],
        metrics: Option<&Metrics>,
        members: &dyn Fn(&str) -> Vec<String>,
        may_list: bool,
    ) {
        if let Some(a) = &mut self.allocations {
            a.annotate(lines, metrics, members, may_list);
        }
    }

    /// Fills `pod_uid` and `container_id` of every event in `lines`.
    pub fn attribute(&mut self, lines: &mut [Line], metrics: Option<&Metrics>) {
        let events = || {
            lines.iter().filter_map(|l| match l {
                Line::Event(e) if e.cgroup_id != 0 => Some(e.cgroup_id),
                _ => None,
            })
        };
        let before = self.ids.walks;
        self.ids.prepare(events().collect::<Vec<_>>());
        if self.ids.walks != before {
            debug!(
                "pod attribution: walked the cgroup2 tree ({} walks so far)",
                self.ids.walks
            );
        }
        for line in lines.iter_mut() {
            let Line::Event(e) = line else { continue };
            if e.cgroup_id == 0 {
                continue;
            }
            match self.ids.lookup(e.cgroup_id) {
                Ok(Some(pod)) => {
                    e.pod_uid = Some(pod.pod_uid.clone());
                    e.container_id.clone_from(&pod.container_id);
                }
                Ok(None) => {}
                Err(f) => failed(metrics, f),
            }
        }
    }
}

fn failed(metrics: Option<&Metrics>, f: Failure) {
    if let Some(m) = metrics {
        m.pod_attribution_failed(f);
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::MetadataExt};

    use super::*;
    use iommu_enforcer_schema::{Event, Kind, Outcome};

    fn event(cgroup_id: u64) -> Line {
        let mut e = Event::new(Kind::VfioOpen, Outcome::Ok);
        e.group = Some("8".into());
        (e.pid, e.tgid, e.comm, e.cgroup_id) = (1, 1, "vfio-holder".into(), cgroup_id);
        Line::Event(Box::new(e))
    }

    fn pod_of(line: &Line) -> (Option<&str>, Option<&str>) {
        match line {
            Line::Event(e) => (e.pod_uid.as_deref(), e.container_id.as_deref()),
            _ => panic!("not an event"),
        }
    }

    #[test]
    fn events_get_their_pod_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
        let id = "ab".repeat(32);
        let pod = dir.path().join(format!(
            "kubepods/besteffort/pod1234abcd-0000-1111-2222-333344445555/{id}"
        ));
        fs::create_dir_all(&pod).unwrap();
        let container_cgroup = fs::metadata(&pod).unwrap().ino();
        let pod_cgroup = fs::metadata(pod.parent().unwrap()).unwrap().ino();
        let kubepods = fs::metadata(dir.path().join("kubepods")).unwrap().ino();
        let mut attribution = Attribution::new(dir.path());
        // The container exits, its cgroup goes: the walk at start already knew it.
        fs::remove_dir(&pod).unwrap();
        let metrics = Metrics::new().unwrap();
        let mut lines = vec![
            event(0),
            event(container_cgroup),
            event(pod_cgroup),
            event(kubepods),
            event(u64::MAX),
        ];
        attribution.attribute(&mut lines, Some(&metrics));
        let uid = Some("1234abcd-0000-1111-2222-333344445555");
        assert_eq!(pod_of(&lines[0]), (None, None));
        assert_eq!(pod_of(&lines[1]), (uid, Some(id.as_str())));
        assert_eq!(pod_of(&lines[2]), (uid, None));
        // `kubepods` itself is no pod; u64::MAX is no cgroup there is.
        assert_eq!(pod_of(&lines[3]), (None, None));
        assert_eq!(pod_of(&lines[4]), (None, None));
        let text = metrics.render();
        assert!(
            text.contains(r#"iommu_enforcer_pod_attribution_failures_total{reason="not_found"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"iommu_enforcer_pod_attribution_failures_total{reason="no_cgroup2"} 0"#
            ),
            "{text}"
        );
    }

    #[test]
    fn allocated_devices_and_groups_name_their_pod_and_unknown_vfio_use_lists_again_boundedly() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        // No kubelet there: the list at start fails, counted, and the agent goes on.
        let mut attribution = Attribution::new(dir.path())
            .with_pod_resources(Some(&dir.path().join("kubelet.sock")), Some(&metrics));
        assert_eq!(attribution.pod_resources_lists(), 1);
        let allocation = Allocation {
            namespace: "vms".into(),
            pod: "virt-launcher-vm-a".into(),
            container: "compute".into(),
            resource: "nvidia.com/GH100_H100".into(),
        };
        let a = attribution.allocations.as_mut().unwrap();
        a.table
            .devices
            .insert("0000:41:00.0".into(), allocation.clone());
        // As if the last list had just succeeded: no list for RELIST.
        a.last = Some((Instant::now(), true));
        let members = |g: &str| match g {
            "14" => vec!["0000:40:00.0".to_string(), "0000:41:00.0".to_string()],
            _ => vec!["0000:50:00.0".to_string()],
        };
        let on = |kind, device: Option<&str>, group: &str| {
            let mut e = Event::new(kind, iommu_enforcer_schema::Outcome::Ok);
            e.device = device.map(Into::into);
            e.group = Some(group.into());
            Line::Event(Box::new(e))
        };
        let allocated = |l: &Line| l.as_event().unwrap().allocated_to.clone();
        let mut lines = vec![
            on(Kind::Bind, Some("0000:41:00.0"), "14"),
            on(Kind::VfioOpen, None, "14"),
            on(Kind::Bind, Some("0000:50:00.0"), "20"),
        ];
        attribution.allocate(&mut lines, Some(&metrics), &members, true);
        assert_eq!(allocated(&lines[0]), Some(allocation.clone()));
        assert_eq!(allocated(&lines[1]), Some(allocation.clone()));
        assert_eq!(allocated(&lines[2]), None);
        // Every device known or the event no VFIO use: no list.
        assert_eq!(attribution.pod_resources_lists(), 1);
        // A VFIO open of a group the table does not know, within RELIST of the last list: none.
        let mut open = vec![on(Kind::VfioOpen, None, "20")];
        attribution.allocate(&mut open, Some(&metrics), &members, true);
        assert_eq!(attribution.pod_resources_lists(), 1);
        // Past it: one list (failing here, counted), then none until RETRY.
        attribution.allocations.as_mut().unwrap().last = Some((Instant::now() - RELIST, true));
        attribution.allocate(&mut open, Some(&metrics), &members, true);
        attribution.allocate(&mut open, Some(&metrics), &members, true);
        assert_eq!(attribution.pod_resources_lists(), 2);
        assert_eq!(allocated(&open[0]), None);
        // The table outlives a failed list.
        let mut again = vec![on(Kind::Claim, None, "14")];
        attribution.allocate(&mut again, Some(&metrics), &members, false);
        assert_eq!(allocated(&again[0]), Some(allocation));
        let text = metrics.render();
        assert!(
            text.contains(r#"iommu_enforcer_pod_resources_failures_total{reason="no_socket"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"iommu_enforcer_pod_resources_failures_total{reason="timeout"} 0"#),
            "{text}"
        );
    }
}
