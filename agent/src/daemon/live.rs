//! The running agent's state between events: the node, the enforcer, the VFIO node table, and
//! where lines go. Applies ring-buffer records and the re-reads they call for.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use log::{info, warn};

use iommu_enforcer_schema::{HookState, Line};

use super::{
    accounting::{self, Ledger},
    attribution::{Allocatable, Attribution},
    output::Sink,
    scan, vfio_nodes,
};
use crate::{
    bpf::{
        loader::Loaded,
        programs::WRITE_CHECK,
        record::{self, KernelEvent, Rdev, Record, VfioNodeKind},
    },
    enforce::{
        write_check::{Need, WriteCheck},
        Enforcer,
    },
    io_deadline,
    node::{Applied, FollowUp, NodeState, VfioNode},
    pods::containers::TrustedContainers,
    render::{self, Attributed},
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
    /// The loss counter as reported (set from the pinned bookkeeping at start).
    pub ledger: Ledger,
    /// When the loss counter is to be read again: set while records are being lost, so that
    /// a flood that keeps the ring full resyncs every [`LOSS_RESYNC`] rather than when the
    /// ring drains. `None` (no timer) once a check finds no new loss.
    pub loss_recheck: Option<Instant>,
    /// When the last resync after a loss ran.
    last_loss_resync: Option<Instant>,
    /// The containers the policy trusts, when it trusts some.
    pub containers: Option<TrustedContainers>,
    /// When the write-time program is wanted (`enforce::write_check`).
    pub write_check: WriteCheck,
    /// Reservations that select nothing on this node, as said.
    unmatched: super::unmatched::Unmatched,
}

/// What a scan of the trusted containers found.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContainerScan {
    /// The set of trusted cgroups changed (the enforcer has it; an apply syncs the kernel).
    pub changed: bool,
    /// Some containers are still pending: worth a retry after a backoff.
    pub pending: bool,
}

/// How long a drain waits for a record's lines to reach stdout before it consumes the record
/// (the output thread writes them): past it, stdout is taken as not read and nothing waits.
const PRINTED_BEFORE_CONSUMED: Duration = Duration::from_millis(200);
/// While records are being lost, the node is re-read this often.
pub const LOSS_RESYNC: Duration = Duration::from_secs(1);
/// Records read between two looks at the loss counter inside one drain.
const LOSS_CHECK_EVERY: u32 = 256;

/// What a drain saw that the event loop acts on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drained {
    /// A module loaded: absent kprobe targets may be there now.
    pub module_loaded: bool,
    /// A veto named a container not decided yet, and some are still pending after the scan
    /// it caused: worth a retry after a backoff.
    pub containers_pending: bool,
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
            ledger: Ledger::default(),
            containers: None,
            unmatched: Default::default(),
            loss_recheck: None,
            last_loss_resync: None,
            write_check: WriteCheck::default(),
        }
    }

    /// Reads every record in the ring buffer, applies it, prints the resulting lines, then
    /// re-reads whatever the records said changed, and last reads the loss counter.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Drained {
        let mut follow = FollowUp::default();
        let mut drained = Drained::default();
        let mut printed = false;
        // Containers that vetoes named and that are not decided yet.
        let mut asked: Vec<String> = Vec::new();
        let mut read = 0u32;
        while let Some(item) = ring.next() {
            read = read.wrapping_add(1);
            let ev = match record::decode(&item) {
                Ok(ev) => ev,
                Err(e) => {
                    warn!("dropping a malformed ring-buffer record: {e}");
                    continue;
                }
            };
            if ev.record == Record::ModuleLoad {
                drained.module_loaded = true;
                continue;
            }
            if ev.record.asks_for_write_check() {
                self.write_check.hold(Instant::now());
            }
            if let Record::WriteCheck { .. } = ev.record {
                continue;
            }
            self.enforcer.observe(&ev);
            let node = ev
                .record
                .vfio_node()
                .map(|(kind, rdev)| self.vfio_node(kind, rdev));
            let applied = self.node.apply(&ev, node);
            let who = self.attributed(&ev, &applied);
            if let (Record::Veto { .. }, Some(id), Some(t)) =
                (&ev.record, &who.container_id, &self.containers)
            {
                if t.should_rescan_for(id) && !asked.contains(id) {
                    asked.push(id.clone());
                }
            }
            let mut lines = render::event_lines(&ev, &applied, self.node.convention(), &who);
            lines.extend(applied.verdict);
            if !lines.is_empty() {
                self.sink.track(&self.node);
            }
            // Printed before the record leaves the ring (dropping `item` consumes it): an
            // agent killed here leaves the record for the next one instead of losing it.
            self.sink.emit(&lines);
            printed |= !lines.is_empty();
            if !lines.is_empty() {
                // On stdout before it leaves the ring, unless stdout is not being read.
                self.sink.flush_within(PRINTED_BEFORE_CONSUMED);
            }
            drop(item);
            follow.rescan_sysfs |= applied.follow.rescan_sysfs;
            follow.rescan_holders |= applied.follow.rescan_holders;
            // A flood can keep the ring from draining for seconds: losses are read and acted
            // on during the drain too, at most every LOSS_RESYNC.
            if read.is_multiple_of(LOSS_CHECK_EVERY) && self.loss_resync_allowed() {
                self.check_losses();
            }
        }
        // Read after the ring is empty: a record lost while it was full stands behind records
        // still unread then, and their submission wakes the loop again, so no loss waits for
        // a timer to be seen.
        if self.check_losses() {
            return drained;
        }
        self.sync_write_check();
        if !asked.is_empty() {
            // A container vetoed before it was resolved (its bundle or cgroup came after the
            // last scan): trusted from its next write if the policy names it.
            log::debug!("trusted containers: vetoes by {asked:?}, not decided yet: scanning");
            drained.containers_pending = self.scan_containers(&asked).pending;
        }
        if printed {
            // Even without a re-read, a bind may have changed a group's viability: the
            // enforcer updates pins and the LSM maps right away.
            self.follow_up(follow);
        }
        drained
    }

    /// Attaches or detaches the write-time program as `write_check` wants it now. Attached:
    /// the program first, then `CONFIG[WRITE_ARMED]`; detached: the flag first, read back
    /// from the kernel, then the program, so the hooks never count on a check that is gone. A
    /// failure keeps it attached (fail closed) or refuses what it would judge until it is.
    pub fn sync_write_check(&mut self) {
        let now = Instant::now();
        self.write_check.expire(now);
        let writers = self.loaded.writers().unwrap_or_else(|e| {
            warn!("reading the write-check count: {e}; keeping the write-time check attached");
            1
        });
        let need = Need {
            writers,
            trusted_handback: self.enforcer.trusted_handback(self.node.policy()),
        };
        // While descriptors are counted the check stays, and is looked at again a linger later
        // (the kernel says nothing when the last one goes).
        if writers > 0 {
            self.write_check.hold(now);
        }
        let want = self.write_check.wanted(now, need) || self.loaded.write_check_fixed();
        let armed = self.loaded.write_check_armed();
        let state = if want && !armed {
            if let Err(e) = self.loaded.arm_write_check() {
                warn!("attaching the write-time check: {e}; what only it can judge is refused meanwhile");
                return;
            }
            self.enforcer.set_write_armed(true);
            let lines = self.enforce();
            self.sink.emit(&lines);
            info!("write-time check attached ({writers} descriptor(s) to judge at write)");
            HookState::Attached
        } else if !want && armed {
            self.enforcer.set_write_armed(false);
            let lines = self.enforce();
            self.sink.emit(&lines);
            if !self.enforcer.kernel_write_armed_is(false) {
                warn!("the kernel still counts on the write-time check; keeping it attached");
                self.enforcer.set_write_armed(true);
                return;
            }
            if let Err(e) = self.loaded.disarm_write_check() {
                warn!("detaching the write-time check: {e}; keeping it attached");
                self.enforcer.set_write_armed(true);
                let lines = self.enforce();
                self.sink.emit(&lines);
                return;
            }
            info!("write-time check detached: read(2) and write(2) run no program");
            HookState::Standby
        } else {
            return;
        };
        self.sink.emit(&[Line::LsmHook {
            hook: WRITE_CHECK.to_string(),
            state,
        }]);
    }

    fn loss_resync_allowed(&self) -> bool {
        self.last_loss_resync
            .is_none_or(|t| t.elapsed() >= LOSS_RESYNC)
    }

    /// Reads the loss counter; on a new loss says so and resyncs, and arms the re-check
    /// timer ([`Self::loss_recheck`]); without one disarms it. True when a loss was seen.
    pub fn check_losses(&mut self) -> bool {
        let lost = self
            .loaded
            .lost_total()
            .map(|total| self.ledger.observe(total));
        match lost {
            Ok(0) => {
                self.loss_recheck = None;
                false
            }
            Ok(n) => {
                accounting::commit(&mut self.loaded, &self.ledger);
                self.last_loss_resync = Some(Instant::now());
                self.loss_recheck = Some(Instant::now() + LOSS_RESYNC);
                self.lost(n);
                true
            }
            Err(e) => {
                warn!("cannot read the loss counter: {e}");
                false
            }
        }
    }

    /// Scans the runtimes' state for the trusted containers; a changed set goes to the
    /// enforcer (the kernel map follows at its next apply).
    pub fn scan_containers(&mut self, asked: &[String]) -> ContainerScan {
        let Some(t) = self.containers.as_mut() else {
            return ContainerScan::default();
        };
        let changed = match t.scan(asked) {
            Some(set) => {
                self.enforcer.set_trusted_cgroups(set);
                true
            }
            None => false,
        };
        ContainerScan {
            changed,
            pending: t.pending(),
        }
    }

    /// The node a VFIO record names, and for a cdev the device behind it.
    fn vfio_node(&mut self, kind: VfioNodeKind, rdev: Rdev) -> VfioNode {
        let path = self.node_path(rdev);
        let device = (kind == VfioNodeKind::Cdev)
            .then(|| vfio_nodes::cdev_device(&self.sysfs_root, &path))
            .flatten();
        VfioNode { path, device }
    }

    /// The pod of the record's task and the allocation of what it is on, resolved before it
    /// is rendered (listing the pod-resources table again for a VFIO use it does not know).
    fn attributed(&mut self, ev: &KernelEvent, applied: &Applied) -> Attributed {
        let metrics = self.sink.metrics();
        let (pod_uid, container_id) = self.attribution.pod_of(ev.task.cgroup_id, metrics);
        let on = Allocatable {
            device: applied.device.as_deref(),
            group: applied.group,
            vfio_use: ev.record.is_vfio_use(),
        };
        let map = self.node.map();
        Attributed {
            pod_uid,
            container_id,
            allocated_to: self.attribution.allocation_of(&on, map, metrics, true),
        }
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

    /// One pass of the enforcer over the node; its own events (pins, rebinds) name their
    /// device's pod from the pod-resources table as it is.
    pub fn enforce(&mut self) -> Vec<Line> {
        let table = &self.attribution;
        self.enforcer
            .apply(&mut self.node, &|device| table.allocated(device))
    }

    /// Re-reads what changed, then lets the enforcer catch up with the node.
    pub fn follow_up(&mut self, follow: FollowUp) {
        let mut lines = Vec::new();
        // Scans run with a deadline: a device mid-removal can block a sysfs read for as long
        // as its VFIO group is held, and this thread is the agent's only event loop.
        if follow.rescan_sysfs {
            let root = self.sysfs_root.clone();
            match io_deadline::run_progressing(
                "sysfs scan",
                io_deadline::SCAN,
                &io_deadline::SCAN_PROGRESS,
                move || scan::group_map_known(&root),
            ) {
                Ok(Ok(map)) => lines.extend(self.node.resync(map)),
                Ok(Err(e)) => {
                    if let Some(m) = self.sink.metrics() {
                        m.read_failed(crate::enforce::facts::Fact::SysfsScan.as_str());
                    }
                    warn!("resync from sysfs failed, keeping the live map: {e}");
                }
                Err(stalled) => warn!("sysfs scan: {stalled}; keeping the live map"),
            }
        }
        if follow.rescan_holders {
            let (proc_root, sysfs_root) = (self.proc_root.clone(), self.sysfs_root.clone());
            match io_deadline::run("holders scan", io_deadline::SCAN, move || {
                scan::holders(&proc_root, &sysfs_root)
            }) {
                Ok(holders) => lines.extend(self.node.set_holders(holders)),
                Err(stalled) => warn!("holders scan: {stalled}; keeping the holders known"),
            }
        }
        lines.extend(self.enforce());
        lines.extend(self.stalled());
        let (said, unmatched) = self.unmatched.update(self.node.map(), self.node.policy());
        lines.extend(said);
        self.sink.track(&self.node);
        self.sink.emit(&lines);
        if let Some(m) = self.sink.metrics() {
            m.set_reserved(self.enforcer.reserved().iter().map(u32::to_string));
            m.set_unmatched_reservations(unmatched);
        }
        // A policy that now trusts a writer for a reserved group (or no longer does) moves the
        // write-time check.
        self.sync_write_check();
    }

    /// Sysfs work the kernel is still holding after this pass (a read or write past its
    /// deadline): what it skipped is retried by the next event that calls for it. Said once
    /// per stuck piece of work, not at every pass.
    fn stalled(&mut self) -> Option<Line> {
        let Some((what, since)) = io_deadline::stuck() else {
            self.stall_reported = None;
            return None;
        };
        if self.stall_reported.as_ref() == Some(&what) {
            return None;
        }
        self.stall_reported = Some(what.clone());
        Some(Line::Stalled {
            error: format!(
                "blocked in the kernel for {} ms; work that needs sysfs waits until it returns",
                since.as_millis()
            ),
            what,
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
