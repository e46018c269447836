//! Names the pod and container of every event line from its cgroup id, before the lines are
//! printed: one cache look-up per event, one bounded walk of the cgroup2 mount per batch with
//! an unknown id (crate::pods::cgroup_ids). An id that cannot be answered leaves both fields
//! null and is counted by reason.
use std::path::Path;

use iommu_enforcer_schema::Line;
use log::{debug, info};

use crate::{
    metrics::Metrics,
    pods::{CgroupIds, Failure},
};

pub struct Attribution {
    ids: CgroupIds,
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
        Self { ids }
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
}
