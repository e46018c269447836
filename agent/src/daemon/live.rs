//! The running agent's state between events: the node, the enforcer, the VFIO node table, and
//! where lines go. Applies ring-buffer records and the re-reads they call for.
use std::{collections::BTreeMap, path::PathBuf};

use aya::maps::{MapData, RingBuf};
use log::warn;

use super::{
    attribution::Attribution,
    output::{Line, Sink},
    scan,
    state::{FollowUp, NodeState},
    vfio_nodes,
};
use crate::{
    bpf::{loader::Loaded, record},
    enforce::Enforcer,
    io_deadline::{self, Stalled},
};

/// Where the agent reads the node from.
pub struct Roots {
    pub sysfs: PathBuf,
    pub proc: PathBuf,
    pub dev: PathBuf,
}

pub struct Live {
    /// The programs (dropping it detaches them all).
    pub loaded: Loaded,
    pub node: NodeState,
    pub enforcer: Enforcer,
    pub sink: Sink,
    pub sysfs_root: PathBuf,
    pub proc_root: PathBuf,
    pub dev_root: PathBuf,
    /// (major, minor) -> /dev path of VFIO nodes, refreshed when an unknown one shows up.
    nodes: BTreeMap<(u32, u32), String>,
    /// The kernel work the last `stalled` line named: said once while it stays stuck.
    stall_reported: Option<String>,
    /// cgroup id -> pod and container of the events.
    pub attribution: Attribution,
}

impl Live {
    pub fn new(
        loaded: Loaded,
        node: NodeState,
        enforcer: Enforcer,
        sink: Sink,
        roots: Roots,
        attribution: Attribution,
    ) -> Self {
        let nodes = vfio_nodes::vfio_nodes(&roots.dev);
        Self {
            loaded,
            node,
            enforcer,
            sink,
            sysfs_root: roots.sysfs,
            proc_root: roots.proc,
            dev_root: roots.dev,
            nodes,
            stall_reported: None,
            attribution,
        }
    }

    /// Reads every record in the ring buffer, applies it, prints the resulting lines, then
    /// re-reads whatever the records said changed.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let mut follow = FollowUp::default();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            let mut ev = match record::decode(&item) {
                Ok(ev) => ev,
                Err(e) => {
                    warn!("dropping a malformed ring-buffer record: {e}");
                    continue;
                }
            };
            let path = ev.rdev.map(|rdev| self.node_path(rdev));
            // A cdev open's record has only the node: name the device behind it (its group
            // follows from the map).
            if ev.device.is_empty() {
                if let Some(d) = path
                    .as_deref()
                    .and_then(|p| vfio_nodes::device_of_cdev(&self.sysfs_root, p))
                {
                    ev.device = d;
                }
            }
            let (lines, f) = self.node.apply(&ev, path);
            out.extend(lines);
            follow.rescan_sysfs |= f.rescan_sysfs;
            follow.rescan_holders |= f.rescan_holders;
        }
        if out.is_empty() {
            return;
        }
        self.attribution.attribute(&mut out, self.sink.metrics());
        self.sink.emit(&out);
        // Even without a re-read, a bind may have changed a group's viability: the enforcer
        // updates pins and the LSM maps right away, not at the next housekeeping pass.
        self.follow_up(follow);
    }

    fn node_path(&mut self, rdev: (u32, u32)) -> String {
        if !self.nodes.contains_key(&rdev) {
            self.nodes = vfio_nodes::vfio_nodes(&self.dev_root);
        }
        self.nodes
            .get(&rdev)
            .cloned()
            .unwrap_or_else(|| format!("char {}:{}", rdev.0, rdev.1))
    }

    /// Re-reads what changed, then lets the enforcer catch up with the node.
    pub fn follow_up(&mut self, follow: FollowUp) {
        let mut lines = Vec::new();
        // Scans run with a deadline: a device mid-removal can block a sysfs read for as long
        // as its VFIO group is held, and this thread is the agent's only event loop.
        if follow.rescan_sysfs {
            let root = self.sysfs_root.clone();
            match io_deadline::run("sysfs scan", io_deadline::SCAN, move || {
                scan::group_map(&root)
            }) {
                Ok(Ok(map)) => {
                    self.stall_reported = None;
                    lines.extend(self.node.resync(map));
                }
                Ok(Err(e)) => warn!("resync from sysfs failed, keeping the live map: {e}"),
                Err(stalled) => lines.extend(self.stalled("sysfs scan", &stalled)),
            }
        }
        if follow.rescan_holders {
            let (proc_root, sysfs_root) = (self.proc_root.clone(), self.sysfs_root.clone());
            match io_deadline::run("holders scan", io_deadline::SCAN, move || {
                scan::holders(&proc_root, &sysfs_root)
            }) {
                Ok(holders) => {
                    self.stall_reported = None;
                    lines.extend(self.node.set_holders(holders));
                }
                Err(stalled) => lines.extend(self.stalled("holders scan", &stalled)),
            }
        }
        lines.extend(self.enforcer.apply(&mut self.node));
        self.sink.emit(&lines);
        if let Some(m) = self.sink.metrics() {
            m.set_reserved(self.enforcer.reserved().iter().map(u32::to_string));
        }
    }

    /// A scan that did not finish: the live map is kept, and the next event that calls for a
    /// re-read tries again. Said once per stuck piece of kernel work, not at every retry.
    fn stalled(&mut self, what: &str, stalled: &Stalled) -> Option<Line> {
        let culprit = match stalled {
            Stalled::Busy { what: stuck, .. } => stuck.clone(),
            Stalled::TimedOut { .. } => what.to_string(),
        };
        if self.stall_reported.as_ref() == Some(&culprit) {
            return None;
        }
        warn!("{what}: {stalled}; keeping the live map");
        self.stall_reported = Some(culprit);
        Some(Line::Stalled {
            what: what.to_string(),
            error: stalled.to_string(),
        })
    }

    /// Records were lost: say how many, then rebuild everything from sysfs and procfs.
    pub fn lost(&mut self, count: u64) {
        self.sink.emit(&[Line::Lost { count }]);
        self.follow_up(FollowUp {
            rescan_sysfs: true,
            rescan_holders: true,
        });
    }
}
