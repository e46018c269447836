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
            attribution,
        }
    }

    /// Reads every record in the ring buffer, applies it, prints the resulting lines, then
    /// re-reads whatever the records said changed.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let mut follow = FollowUp::default();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            let ev = match record::decode(&item) {
                Ok(ev) => ev,
                Err(e) => {
                    warn!("dropping a malformed ring-buffer record: {e}");
                    continue;
                }
            };
            let path = ev.rdev.map(|rdev| self.node_path(rdev));
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
        if follow.rescan_sysfs {
            self.enforcer.forget_devices();
            match scan::group_map(&self.sysfs_root) {
                Ok(map) => lines.extend(self.node.resync(map)),
                Err(e) => warn!("resync from sysfs failed, keeping the live map: {e}"),
            }
        }
        if follow.rescan_holders {
            let holders = scan::holders(&self.proc_root, &self.sysfs_root);
            lines.extend(self.node.set_holders(holders));
        }
        lines.extend(self.enforcer.apply(&mut self.node));
        self.sink.emit(&lines);
        if let Some(m) = self.sink.metrics() {
            m.set_reserved(self.enforcer.reserved().iter().map(u32::to_string));
        }
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
