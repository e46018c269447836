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

use iommu_enforcer_schema::Allocation;
use log::{debug, info, warn};

use crate::{
    metrics::Metrics,
    model::GroupMap,
    pods::{
        resources::{self, Table},
        CgroupIds, Failure,
    },
    render::allocation_of,
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

    /// The allocation of `on`'s device, or else of the first allocated member of its group.
    fn find(&self, on: &Allocatable, map: &GroupMap) -> Option<Allocation> {
        allocation_of(map, on.device, on.group, &|d| self.table.get(d).cloned())
    }
}

/// What an event is on, for its allocation: its device and group, and whether it is a process
/// using them through VFIO (the moment a pod's allocation matters: an unknown one is worth
/// listing again).
pub struct Allocatable<'a> {
    pub device: Option<&'a str>,
    pub group: Option<u32>,
    pub vfio_use: bool,
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

    /// The pod a device plugin allocated `on`'s device (or a member of its group in `map`)
    /// to, listing again first when `may_list` and `on` is a VFIO use the table does not know.
    pub fn allocation_of(
        &mut self,
        on: &Allocatable,
        map: &GroupMap,
        metrics: Option<&Metrics>,
        may_list: bool,
    ) -> Option<Allocation> {
        let a = self.allocations.as_mut()?;
        let unknown = on.vfio_use && a.find(on, map).is_none();
        if may_list && unknown && a.may_list(Instant::now()) {
            a.list(metrics);
        }
        a.find(on, map)
    }

    /// The allocation of `device` in the table as it is (never listing): for the agent's own
    /// events, built by the enforcer.
    pub fn allocated(&self, device: &str) -> Option<Allocation> {
        self.allocations.as_ref()?.table.get(device).cloned()
    }

    /// The pod (`metadata.uid`) and container of the cgroup `cgroup_id`: both `None` outside
    /// a pod, for id 0, and when the id cannot be answered (counted by reason).
    pub fn pod_of(
        &mut self,
        cgroup_id: u64,
        metrics: Option<&Metrics>,
    ) -> (Option<String>, Option<String>) {
        if cgroup_id == 0 {
            return (None, None);
        }
        let before = self.ids.walks;
        self.ids.prepare(vec![cgroup_id]);
        if self.ids.walks != before {
            debug!(
                "pod attribution: walked the cgroup2 tree ({} walks so far)",
                self.ids.walks
            );
        }
        match self.ids.lookup(cgroup_id) {
            Ok(Some(pod)) => (Some(pod.pod_uid.clone()), pod.container_id.clone()),
            Ok(None) => (None, None),
            Err(f) => {
                failed(metrics, f);
                (None, None)
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
        let mut pod_of = |id| attribution.pod_of(id, Some(&metrics));
        let uid = Some("1234abcd-0000-1111-2222-333344445555".to_string());
        assert_eq!(pod_of(0), (None, None));
        assert_eq!(pod_of(container_cgroup), (uid.clone(), Some(id.clone())));
        assert_eq!(pod_of(pod_cgroup), (uid, None));
        // `kubepods` itself is no pod; u64::MAX is no cgroup there is.
        assert_eq!(pod_of(kubepods), (None, None));
        assert_eq!(pod_of(u64::MAX), (None, None));
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
        let mut map = GroupMap::new();
        for (address, group) in [
            ("0000:40:00.0", 14),
            ("0000:41:00.0", 14),
            ("0000:50:00.0", 20),
        ] {
            map.add_device(crate::model::Device::new(address, group));
        }
        let on = |vfio_use, device: Option<&'static str>, group| Allocatable {
            device,
            group: Some(group),
            vfio_use,
        };
        let allocate = |a: &mut Attribution, on: Allocatable, may_list| {
            a.allocation_of(&on, &map, Some(&metrics), may_list)
        };
        assert_eq!(
            allocate(&mut attribution, on(false, Some("0000:41:00.0"), 14), true),
            Some(allocation.clone())
        );
        assert_eq!(
            allocate(&mut attribution, on(true, None, 14), true),
            Some(allocation.clone())
        );
        assert_eq!(
            allocate(&mut attribution, on(false, Some("0000:50:00.0"), 20), true),
            None
        );
        assert_eq!(
            attribution.allocated("0000:41:00.0"),
            Some(allocation.clone())
        );
        // Every device known or the event no VFIO use: no list.
        assert_eq!(attribution.pod_resources_lists(), 1);
        // A VFIO open of a group the table does not know, within RELIST of the last list: none.
        allocate(&mut attribution, on(true, None, 20), true);
        assert_eq!(attribution.pod_resources_lists(), 1);
        // Past it: one list (failing here, counted), then none until RETRY.
        attribution.allocations.as_mut().unwrap().last = Some((Instant::now() - RELIST, true));
        allocate(&mut attribution, on(true, None, 20), true);
        assert_eq!(allocate(&mut attribution, on(true, None, 20), true), None);
        assert_eq!(attribution.pod_resources_lists(), 2);
        // The table outlives a failed list.
        assert_eq!(
            allocate(&mut attribution, on(true, None, 14), false),
            Some(allocation)
        );
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
