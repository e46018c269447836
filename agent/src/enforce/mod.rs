//! Enforcement: keep reserved and user-owned groups viable. The eBPF programs keep the
//! protection state in the kernel and veto, there, binds, sysfs writes and VFIO opens that would
//! break a group; the agent loads them the topology and the policy (`kernel_state`,
//! `kernel_maps`) and pins every protected member's `driver_override`, so that autoprobe and
//! `bind` cannot even try another driver. In dry-run nothing is written or denied: the same
//! decisions are reported as `would_*`.
pub mod facts;
pub mod kernel_maps;
pub mod kernel_state;
pub mod pinned;
pub mod plan;
pub mod sysfs_files;
pub mod write_check;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use iommu_enforcer_common::{config, watched, WatchedFile, ADDR_LEN};
use iommu_enforcer_schema::{Action, Body, Event, Kind, Line, Mechanism, MechanismState, Outcome};
use log::{info, warn};

use self::{
    facts::{absent_is_none, Fact, FactsRead, Unknown},
    kernel_maps::KernelMaps,
    kernel_state::{key, Content, NodeFacts, OpenCount},
    plan::{Plan, Reservation},
    sysfs_files::{exe_key, node_rdev},
};
use crate::{
    bpf::record::{errno_name, KernelEvent, Record},
    metrics::Metrics,
    model::driver::is_user_driver,
    node::NodeState,
    policy::Policy,
    render::{allocation_of, Allocated},
};

/// The first retry of a failed pin or rebind write comes this long after the failure; each
/// further one twice as long after the last, up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// The retry schedule of one failed write: 100 ms, 200 ms, 400 ms, ... then every 5 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failed attempts so far.
    pub failures: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
}

impl Backoff {
    pub fn first() -> Self {
        Backoff {
            failures: 1,
            delay: RETRY_FIRST,
        }
    }

    /// After one more failed attempt.
    pub fn next(self) -> Self {
        Backoff {
            failures: self.failures.saturating_add(1),
            delay: (self.delay * 2).min(RETRY_MAX),
        }
    }
}

/// A write the agent owes the kernel: retried at `due` until it holds or the device is no
/// longer protected (gone, released).
#[derive(Clone, Copy, Debug)]
struct Pending {
    backoff: Backoff,
    due: Instant,
}

/// (dev, inode) of every writer that exists; the others are logged and trusted once they
/// appear (the agent watches their paths).
fn trusted_keys(paths: &[PathBuf]) -> BTreeMap<(u64, u64), u8> {
    let mut trusted = BTreeMap::new();
    for path in paths {
        match exe_key(path) {
            Ok(key) => {
                trusted.insert(key, 1);
            }
            Err(e) => warn!(
                "trusted writer {}: {e}; not trusted until it is there",
                path.display()
            ),
        }
    }
    trusted
}

pub struct Enforcer {
    sysfs: PathBuf,
    dev: PathBuf,
    dry_run: bool,
    kernel: Option<KernelMaps>,
    trusted: BTreeMap<(u64, u64), u8>,
    /// Reservation outcomes already reported, so a standing decision is said once.
    reported: BTreeSet<String>,
    /// Groups the policy reserved at the last [`Enforcer::apply`].
    reserved: BTreeSet<u32>,
    /// Devices whose pin this agent wrote (or found in place): a later change is restored.
    pinned: BTreeMap<String, String>,
    /// /proc, for the VFIO major (`devices`).
    proc: PathBuf,
    /// How the kernel counts VFIO opens: the major is kept from the last good read.
    opens: OpenCount,
    /// cgroup ids of the containers the policy trusts, as last resolved.
    trusted_cgroups: BTreeSet<u64>,
    /// Devices of reserved groups whose pin a trusted container changed: the reservation gives
    /// way (no pin restored, no rebind) until the device is on a user driver again.
    yielded: BTreeSet<String>,
    /// The node facts last known: a read that fails (EMFILE...) keeps them ([`facts`]).
    facts: NodeFacts,
    /// VFIO_DENY entries of device cdevs last computed, kept for a group whose cdevs could not
    /// be read.
    cdev_deny: BTreeMap<u32, WatchedFile>,
    /// Pin and rebind writes that failed, by device: retried on a timer ([`Self::next_retry`]).
    pending: BTreeMap<String, Pending>,
    /// Facts whose read failed at the last pass: said once per failure episode.
    failing: BTreeSet<Fact>,
    metrics: Option<Arc<Metrics>>,
}

impl Enforcer {
    pub fn new(
        sysfs: &Path,
        dev: &Path,
        dry_run: bool,
        kernel: Option<KernelMaps>,
        policy: &Policy,
    ) -> Self {
        let trusted = trusted_keys(&policy.trusted_writers);
        Self {
            sysfs: sysfs.to_path_buf(),
            dev: dev.to_path_buf(),
            dry_run,
            kernel,
            trusted,
            reported: BTreeSet::new(),
            reserved: BTreeSet::new(),
            pinned: BTreeMap::new(),
            proc: PathBuf::from("/proc"),
            opens: OpenCount::default(),
            trusted_cgroups: BTreeSet::new(),
            yielded: BTreeSet::new(),
            facts: NodeFacts::default(),
            cdev_deny: BTreeMap::new(),
            pending: BTreeMap::new(),
            failing: BTreeSet::new(),
            metrics: None,
        }
    }

    /// Where read failures and retries are counted.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// When the earliest failed pin or rebind write is due again: `None` when none is pending
    /// (the daemon arms no timer then).
    pub fn next_retry(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Reports reads that failed for a reason other than absence, whose last known values
    /// were kept: a warning when a fact starts failing (and when it reads again), a count
    /// each time.
    fn report_unknown(&mut self, unknown: Vec<Unknown>) {
        let now: BTreeSet<Fact> = unknown.iter().map(|u| u.what).collect();
        for u in &unknown {
            if let Some(m) = &self.metrics {
                m.read_failed(u.what.as_str());
            }
        }
        for what in now.difference(&self.failing) {
            if let Some(u) = unknown.iter().find(|u| u.what == *what) {
                warn!(
                    "reading {}: {} ({}); keeping the last known state, the kernel maps are not changed for it",
                    what.as_str(),
                    crate::errno::of_io(&u.error),
                    u.error
                );
            }
        }
        for what in self.failing.difference(&now) {
            info!("reading {} works again", what.as_str());
        }
        self.failing = now;
    }

    /// Follows the records that move a reservation's hand: a trusted container that changed a
    /// device's pin owns its binding (vfio-manager's `unbind --all`) until the device is on a
    /// user driver again (its `bind --all`).
    pub fn observe(&mut self, ev: &KernelEvent) {
        match &ev.record {
            Record::OverrideWritten {
                target,
                ret,
                by_trusted_container: true,
                ..
            } if *ret >= 0 => {
                let device = target.device.clone().unwrap_or_default();
                if self.yielded.insert(device.clone()) {
                    info!(
                        "{device}: a trusted container changed its pin; the reservation gives way until it is on a user driver again"
                    );
                }
                self.pinned.remove(&device);
            }
            Record::Probe { target, driver, .. }
                if driver.as_deref().is_some_and(is_user_driver) =>
            {
                self.yielded
                    .remove(target.device.as_deref().unwrap_or_default());
            }
            _ => {}
        }
    }

    /// The containers the policy trusts, by cgroup id: the kernel map follows at the next
    /// [`Enforcer::apply`].
    pub fn set_trusted_cgroups(&mut self, cgroups: BTreeSet<u64>) {
        self.trusted_cgroups = cgroups;
    }

    /// Where /proc is (its `devices` names the VFIO major).
    pub fn with_proc_root(mut self, proc: &Path) -> Self {
        self.proc = proc.to_path_buf();
        self
    }

    /// The kernel dev_t of the bpffs instance holding the pins and the inode numbers of their
    /// directories, which the hooks then guard.
    pub fn set_pins(&mut self, dev: u32, dirs: [u32; 3]) {
        self.opens.pin_dev = dev;
        self.opens.pin_dirs = dirs;
    }

    /// Whether the LSM file hooks are attached and run, so that opens are counted and a group
    /// that is only bound to a user driver is idle. Takes effect at the next apply.
    pub fn set_opens_counted(&mut self, counted: bool) {
        self.opens.counted = counted;
    }

    /// Whether the write-time program is attached (`CONFIG[WRITE_ARMED]`). Takes effect at the
    /// next apply: set after attaching it, and before detaching it.
    pub fn set_write_armed(&mut self, armed: bool) {
        self.opens.write_armed = armed;
    }

    /// Whether the kernel holds `CONFIG[WRITE_ARMED]` as `armed` (read back: the write-time
    /// program is detached only once the kernel no longer counts on it). True without maps.
    pub fn kernel_write_armed_is(&self, armed: bool) -> bool {
        match &self.kernel {
            Some(k) => k.config_slot(config::WRITE_ARMED) == Some(u32::from(armed)),
            None => true,
        }
    }

    /// Whether the policy trusts writers or containers and reserves a group they may hand
    /// back: their writes are let through only while the write-time check is attached, so it
    /// stays attached (from the policy, not from what has been resolved yet: a container that
    /// starts later writes at once).
    pub fn trusted_handback(&self, policy: &crate::policy::Policy) -> bool {
        (!policy.trusted_writers.is_empty() || !policy.trusted_containers.is_empty())
            && !self.reserved.is_empty()
    }

    /// Groups user space uses: the kernel's own count where the programs keep one, else
    /// what the group map shows.
    pub fn in_use(&self, node: &NodeState) -> BTreeSet<u32> {
        match &self.kernel {
            Some(k) => node
                .map()
                .groups()
                .map(|g| g.id)
                .filter(|g| k.in_use(*g))
                .collect(),
            None => plan::in_use_by_model(node.map()),
        }
    }

    /// The trusted writers changed on disk (policy::writer_watch): trust what the paths name
    /// now. The kernel map follows at the next [`Enforcer::apply`].
    pub fn set_trusted_writers(&mut self, paths: &[PathBuf]) {
        self.trusted = trusted_keys(paths);
        info!(
            "trusted writers re-resolved: {} of {} present",
            self.trusted.len(),
            paths.len()
        );
    }

    /// Whether pins are being kept: what the daemon polls by itself on a kernel where no
    /// program records `driver_override` stores (elsewhere each store is a record).
    pub fn keeps_pins(&self) -> bool {
        !self.dry_run && !self.pinned.is_empty()
    }

    /// Whether some kept pin no longer reads as written: one read per pinned device, so the
    /// watch costs that much and not a whole pass over the node (a read that stalls is not a
    /// change).
    pub fn pins_drifted(&self) -> bool {
        let pins = self
            .pinned
            .iter()
            .map(|(d, v)| (d.clone(), v.clone()))
            .collect();
        sysfs_files::pins_differ(&self.sysfs, pins).unwrap_or_else(|e| {
            if let Some(m) = &self.metrics {
                m.read_failed(Fact::DeviceDriver.as_str());
            }
            warn!("pin watch: {e}; the pins read as unknown, not changed");
            false
        })
    }

    /// Groups the policy reserves, as of the last [`Enforcer::apply`].
    pub fn reserved(&self) -> &BTreeSet<u32> {
        &self.reserved
    }

    /// The kernel maps, when the programs loaded.
    pub fn kernel(&self) -> Option<&KernelMaps> {
        self.kernel.as_ref()
    }

    /// A first start: seeds the in-kernel state from what sysfs and /proc show now.
    pub fn seed(&mut self, node: &NodeState, claims_exist: bool) {
        let mut unknown = Vec::new();
        let nodes = facts::carry_listing(
            &self.facts.group_nodes,
            self.group_nodes(),
            Fact::VfioNodes,
            &mut unknown,
        );
        self.report_unknown(unknown);
        if let Some(k) = self.kernel.as_mut() {
            let groups = kernel_state::seed(node.map(), claims_exist);
            let opens = kernel_state::seed_opens(node.map(), &nodes);
            info!(
                "first start: seeding the kernel's protection state ({} groups with members on user drivers or claimed, {} open VFIO nodes)",
                groups.len(),
                opens.len()
            );
            k.seed(&groups, &opens);
        }
    }

    /// Brings pins and the kernel maps in line with the node; returns what it did. Pins are
    /// compared with what sysfs shows now, not with the model: one cleared behind the agent's
    /// back (a path no hook sees, a trusted writer) is restored and reported.
    /// The plan for the node, less the devices a trusted container took over.
    fn plan(&self, node: &NodeState, in_use: &BTreeSet<u32>) -> Plan {
        let mut plan = Plan::compute_with(node.map(), node.policy(), in_use);
        plan.protected
            .retain(|device, _| !self.yielded.contains(device));
        plan.reservations
            .retain(|r| !self.yielded.contains(r.device()));
        plan
    }

    /// `allocated` is the pod a device plugin allocated a device to (the pod-resources
    /// table): the events of this pass name it as they are built.
    pub fn apply(&mut self, node: &mut NodeState, allocated: &Allocated<'_>) -> Vec<Line> {
        let mut lines = Vec::new();
        let in_use = self.in_use(node);
        let mut plan = self.plan(node, &in_use);
        // A pin of a group no longer protected (idle, not reserved) is the operator's now.
        self.pinned
            .retain(|device, _| plan.protected.contains_key(device));
        let mut restored = BTreeSet::new();
        let mut unknown = Vec::new();
        if !self.dry_run {
            let mut changed = false;
            for address in plan.protected.keys() {
                // Unknown (the read stalled, EMFILE) is not unset: keep what the model says.
                let live = match sysfs_files::current_override(&self.sysfs, address) {
                    Ok(live) => live,
                    Err(error) => {
                        unknown.push(Unknown {
                            what: Fact::DeviceDriver,
                            error,
                        });
                        continue;
                    }
                };
                let model = node
                    .map()
                    .device(address)
                    .and_then(|d| d.driver_override.clone());
                if live != model {
                    if self
                        .pinned
                        .get(address)
                        .is_some_and(|p| Some(p) != live.as_ref())
                    {
                        restored.insert(address.clone());
                    }
                    lines.extend(node.set_driver_override(address, live.as_deref()));
                    changed = true;
                }
            }
            if changed {
                plan = self.plan(node, &in_use);
            }
        }
        self.reserved.clone_from(&plan.reserved);
        let mut failed = BTreeSet::new();
        for r in &plan.reservations {
            // Use may have ended since `in_use` was read: a pin written now would undo the
            // hand-back that the release allowed.
            let group = r.group();
            if !plan.reserved.contains(&group)
                && self.kernel.as_ref().is_some_and(|k| !k.in_use(group))
            {
                continue;
            }
            let restore = restored.contains(r.device());
            let (more, ok) = self.reserve(node, r, restore, allocated);
            lines.extend(more);
            if !ok {
                failed.insert(r.device().to_string());
            }
        }
        self.schedule_retries(&failed, Instant::now());
        if self.kernel.is_some() {
            let content = self.content(&plan, node, &mut unknown);
            if let Some(k) = self.kernel.as_mut() {
                k.sync(&content);
            }
        }
        self.report_unknown(unknown);
        lines
    }

    /// Keeps a retry for every write that failed in this pass (a new one at the first delay,
    /// one past its due time at the next), and forgets the others: they held, or their
    /// device is no longer protected.
    fn schedule_retries(&mut self, failed: &BTreeSet<String>, now: Instant) {
        self.pending.retain(|device, _| failed.contains(device));
        for device in failed {
            match self.pending.get_mut(device) {
                None => {
                    let backoff = Backoff::first();
                    self.pending.insert(
                        device.clone(),
                        Pending {
                            backoff,
                            due: now + backoff.delay,
                        },
                    );
                }
                Some(p) if p.due <= now => {
                    p.backoff = p.backoff.next();
                    p.due = now + p.backoff.delay;
                    if p.backoff.failures.is_power_of_two() {
                        warn!(
                            "{device}: pin still failing after {} attempts; next in {} ms",
                            p.backoff.failures,
                            p.backoff.delay.as_millis()
                        );
                    }
                }
                // Failed again on another event before its due time: the schedule stands.
                Some(_) => {}
            }
        }
    }

    /// `/dev/vfio/<group>` nodes: group -> kernel dev_t; a node whose stat failed is listed
    /// with the error, a listing that failed is the error (unknown, not "no nodes").
    fn group_nodes(&self) -> facts::Listing<u32, u32> {
        let mut out = BTreeMap::new();
        let Some(dir) = absent_is_none(fs::read_dir(self.dev.join("vfio")))? else {
            return Ok(out);
        };
        for entry in dir {
            let entry = entry?;
            let Some(group) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            match node_rdev(&entry.path()) {
                Ok(Some(rdev)) => {
                    out.insert(group, Ok(rdev));
                }
                Ok(None) => {}
                Err(e) => {
                    out.insert(group, Err(e));
                }
            }
        }
        Ok(out)
    }

    /// What the pass read, now.
    fn read_facts(&self) -> FactsRead {
        FactsRead {
            slots: sysfs_files::slots(&self.sysfs),
            drivers: sysfs_files::drivers(&self.sysfs),
            group_nodes: self.group_nodes(),
        }
    }

    fn content(&mut self, plan: &Plan, node: &NodeState, unknown: &mut Vec<Unknown>) -> Content {
        let read = self.read_facts();
        let content = self.content_from(plan, node, read, unknown);
        // An unreadable /proc/devices (EMFILE, say) keeps the major last read.
        match fs::read_to_string(self.proc.join("devices")) {
            Ok(text) => {
                self.opens.vfio_major = kernel_state::vfio_major(&text).unwrap_or(0);
                self.opens.vfio_dev_major =
                    kernel_state::vfio_dev_major(&text, self.opens.vfio_major);
            }
            Err(error) => unknown.push(Unknown {
                what: Fact::ProcDevices,
                error,
            }),
        }
        let mut c = content;
        c.set_config(
            std::process::id(),
            self.dry_run,
            node.policy().protect_user_groups,
            self.opens,
        );
        c
    }

    /// The desired content from what this pass read (`read`), where a read failed from what
    /// was last known. Records what it used as the last known for the next pass.
    fn content_from(
        &mut self,
        plan: &Plan,
        node: &NodeState,
        read: FactsRead,
        unknown: &mut Vec<Unknown>,
    ) -> Content {
        let facts = facts::carry(&self.facts, read, unknown);
        let mut c = Content::compute(node.map(), node.policy(), &facts);
        c.trusted_exe = self.trusted.clone();
        c.trusted_cgroups = self.trusted_cgroups.iter().map(|g| (*g, 1)).collect();
        c.reserved = plan.reserved.iter().map(|g| (*g, 1)).collect();
        for &group in &plan.not_viable {
            if let Some(&rdev) = facts.group_nodes.get(&group) {
                c.vfio_deny.insert(
                    rdev,
                    WatchedFile {
                        kind: watched::VFIO_GROUP,
                        group,
                        device: [0; ADDR_LEN],
                    },
                );
            }
            match self.cdev_rdevs(node, group) {
                Ok(found) => {
                    for (device, rdev) in found {
                        c.vfio_deny.insert(
                            rdev,
                            WatchedFile {
                                kind: watched::VFIO_CDEV,
                                group,
                                device: key(&device),
                            },
                        );
                    }
                }
                // Unknown: the group's cdev entries stay as last computed.
                Err(error) => {
                    unknown.push(Unknown {
                        what: Fact::VfioCdevs,
                        error,
                    });
                    for (rdev, w) in &self.cdev_deny {
                        if w.group == group {
                            c.vfio_deny.insert(*rdev, *w);
                        }
                    }
                }
            }
        }
        self.cdev_deny = c
            .vfio_deny
            .iter()
            .filter(|(_, w)| w.kind == watched::VFIO_CDEV)
            .map(|(r, w)| (*r, *w))
            .collect();
        self.facts = facts;
        c
    }

    /// (device, kernel dev_t) of the iommufd cdevs of the group's members; an error when a
    /// read failed for a reason other than absence.
    fn cdev_rdevs(&self, node: &NodeState, group: u32) -> io::Result<Vec<(String, u32)>> {
        let Some(g) = node.map().group(group) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for address in g.devices.keys() {
            let dir = self
                .sysfs
                .join("bus/pci/devices")
                .join(address)
                .join("vfio-dev");
            let Some(entries) = absent_is_none(fs::read_dir(dir))? else {
                continue;
            };
            for entry in entries {
                let cdev = entry?.file_name();
                if let Some(rdev) = node_rdev(&self.dev.join("vfio/devices").join(&cdev))? {
                    out.push((address.clone(), rdev));
                }
            }
        }
        Ok(out)
    }

    /// Carries out (or, dry-run, reports) one reservation. Standing decisions are reported
    /// once; changes every time they happen.
    /// The second value is false when a write was tried and failed (to be retried).
    fn reserve(
        &mut self,
        node: &mut NodeState,
        r: &Reservation,
        restore: bool,
        allocated: &Allocated<'_>,
    ) -> (Vec<Line>, bool) {
        if !self.dry_run && self.already_in_place(r) {
            self.pinned
                .insert(r.device().to_string(), r.value().to_string());
            // The model follows the kernel through events, which trail the agent's own writes:
            // a pass that runs before the last rebind's events arrive must not move it again.
            return (node.set_driver_override(r.device(), Some(r.value())), true);
        }
        let (kind, group, device, value, from) = match r {
            Reservation::Pin {
                group,
                device,
                value,
                ..
            } => (
                if restore {
                    Kind::PinRestored
                } else {
                    Kind::Pin
                },
                *group,
                device,
                value,
                None,
            ),
            Reservation::Rebind {
                group,
                device,
                value,
                from,
            } => (Kind::Rebind, *group, device, value, Some(from)),
            Reservation::Blocked {
                group,
                device,
                value,
                from,
            } => (Kind::ReservationBlocked, *group, device, value, Some(from)),
        };
        let (action, result) = match r {
            Reservation::Blocked { .. } => (Action::Report, Ok(())),
            Reservation::Pin { .. } if self.dry_run => (Action::WouldPin, Ok(())),
            Reservation::Rebind { .. } if self.dry_run => (Action::WouldRebind, Ok(())),
            Reservation::Pin { probe, .. } => (
                Action::Pinned,
                sysfs_files::pin(&self.sysfs, device, value).and_then(|()| {
                    if *probe {
                        sysfs_files::probe(&self.sysfs, device)
                    } else {
                        Ok(())
                    }
                }),
            ),
            Reservation::Rebind { .. } => (
                Action::Rebound,
                sysfs_files::pin(&self.sysfs, device, value)
                    .and_then(|()| sysfs_files::rebind(&self.sysfs, device)),
            ),
        };
        let changed = result.is_ok() && matches!(action, Action::Pinned | Action::Rebound);
        let ok = result.is_ok();
        if let (Err(_), Some(m)) = (&result, &self.metrics) {
            m.read_failed(Fact::PinWrite.as_str());
        }
        let mut lines = Vec::new();
        if changed {
            info!("{kind} {action} {device} (group {group}) to {value}");
            self.pinned.insert(device.clone(), value.clone());
            lines.extend(node.set_driver_override(device, Some(value)));
        } else {
            let key = format!("{kind}:{device}:{value}:{}", result.is_ok());
            if !self.reported.insert(key) {
                return (lines, ok);
            }
        }
        if let Err(e) = &result {
            warn!("{kind} {device} to {value}: {e}");
        }
        let os_errno = result.as_ref().err().and_then(|e| e.raw_os_error());
        let pid = std::process::id();
        let body = Body::Reservation {
            kind,
            action,
            bound_to: from.cloned(),
        };
        let mut event = Event::of(body, Outcome::of(result.is_ok()));
        event.device = Some(device.clone());
        event.driver = Some(value.clone());
        event.group = Some(group.to_string());
        event.ret = os_errno.map_or(0, |e| -e);
        event.errno = os_errno.and_then(errno_name).map(str::to_owned);
        (event.pid, event.tgid, event.comm) = (pid, pid, "enforcer".into());
        event.allocated_to = allocation_of(node.map(), Some(device), Some(group), allocated);
        lines.insert(0, Line::Event(Box::new(event)));
        (lines, ok)
    }

    /// Whether sysfs already shows what `r` would write (read live, not from the model).
    fn already_in_place(&self, r: &Reservation) -> bool {
        match r {
            Reservation::Pin {
                device,
                value,
                probe,
                ..
            } => {
                sysfs_files::current_override(&self.sysfs, device)
                    .is_ok_and(|live| live.as_deref() == Some(value))
                    && (!probe
                        || sysfs_files::bound_driver(&self.sysfs, device)
                            .is_ok_and(|d| d.is_some()))
            }
            Reservation::Rebind { device, value, .. } => {
                sysfs_files::bound_driver(&self.sysfs, device)
                    .is_ok_and(|d| d.as_deref() == Some(value))
            }
            Reservation::Blocked { .. } => false,
        }
    }
}

/// What enforces on this node, honestly, per mechanism (the capabilities line's
/// `enforcement`): the LSM only where `bpf` is an active LSM and its hooks loaded.
pub fn status(
    bpf_lsm_active: bool,
    lsm_ready: bool,
    dry_run: bool,
) -> BTreeMap<Mechanism, MechanismState> {
    let lsm = if !bpf_lsm_active {
        MechanismState::Unavailable(
            "bpf is not among the active LSMs (boot with lsm=...,bpf)".to_owned(),
        )
    } else if !lsm_ready {
        MechanismState::Unavailable("the LSM hooks did not load".to_owned())
    } else if dry_run {
        MechanismState::DryRun
    } else {
        MechanismState::Active
    };
    let reservation = if dry_run {
        MechanismState::DryRun
    } else {
        MechanismState::Active
    };
    BTreeMap::from([(Mechanism::Lsm, lsm), (Mechanism::Reservation, reservation)])
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::node::ProbeConvention;

    /// The kernel moving a device to another driver: the device's `driver` link.
    fn relink(sysfs: &Path, device: &str, driver: &str) {
        let link = sysfs.join("bus/pci/devices").join(device).join("driver");
        let target = fs::read_link(&link).expect("bound in the fixture");
        fs::remove_file(&link).expect("unlink");
        symlink(target.with_file_name(driver), &link).expect("relink");
    }

    fn rebound(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| match l {
                Line::Event(e) if e.kind == Kind::Rebind && e.action == Some(Action::Rebound) => {
                    e.device.clone()
                }
                _ => None,
            })
            .collect()
    }

    /// The consumer GPU fixture, built in a temporary directory kept alive by the caller.
    fn fixture_node() -> (tempfile::TempDir, iommu_fixtures::Node) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = iommu_fixtures::fixture("consumer-gpu-audio-split").expect("fixture");
        let built = iommu_fixtures::build(spec, dir.path()).expect("builds");
        (dir, built)
    }

    /// The node and an enforcer whose policy reserves group 12 with `rebind = true`.
    fn reserve_group_12(
        dir: &tempfile::TempDir,
        built: &iommu_fixtures::Node,
    ) -> (NodeState, Enforcer) {
        let policy = Policy::parse(
            "[[reserve]]\ngroup = 12\nrebind = true\n",
            Path::new("test.toml"),
        )
        .expect("valid policy");
        let map = crate::sysfs::scan(&built.sysfs).expect("scans").to_map();
        let node = NodeState::new(map, policy.clone(), ProbeConvention::ZeroIsBound);
        let enforcer = Enforcer::new(&built.sysfs, dir.path(), false, None, &policy);
        (node, enforcer)
    }

    #[test]
    fn a_pass_before_the_rebind_events_arrive_does_not_rebind_again() {
        let (dir, built) = fixture_node();
        let (mut node, mut enforcer) = reserve_group_12(&dir, &built);

        let first = rebound(&enforcer.apply(&mut node, &|_| None));
        assert_eq!(first, ["0000:0a:00.1", "0000:0a:00.2", "0000:0a:00.3"]);
        for device in &first {
            assert_eq!(
                sysfs_files::current_override(&built.sysfs, device)
                    .expect("read")
                    .as_deref(),
                Some("vfio-pci")
            );
        }

        // The kernel has moved two of them; the model has not heard of it yet.
        relink(&built.sysfs, "0000:0a:00.1", "vfio-pci");
        relink(&built.sysfs, "0000:0a:00.2", "vfio-pci");
        let second = rebound(&enforcer.apply(&mut node, &|_| None));
        assert_eq!(
            second,
            ["0000:0a:00.3"],
            "only the function still on its host driver is moved again"
        );
    }

    #[test]
    fn the_agents_events_name_the_allocation_as_they_are_built() {
        let (dir, built) = fixture_node();
        let (mut node, mut enforcer) = reserve_group_12(&dir, &built);
        let allocation = iommu_enforcer_schema::Allocation {
            namespace: "vms".into(),
            pod: "gpu-vm".into(),
            container: "compute".into(),
            resource: "nvidia.com/GPU".into(),
        };
        // Only one member is allocated: every event on the group names it.
        let table = |d: &str| (d == "0000:0a:00.3").then(|| allocation.clone());
        let lines = enforcer.apply(&mut node, &table);
        let events: Vec<&Event> = lines.iter().filter_map(Line::as_event).collect();
        assert!(!events.is_empty());
        for e in events {
            assert_eq!(e.allocated_to.as_ref(), Some(&allocation), "{e:?}");
        }
    }

    #[test]
    fn the_pin_watch_sees_only_a_pin_changed_behind_its_back() {
        let (dir, built) = fixture_node();
        let (mut node, mut enforcer) = reserve_group_12(&dir, &built);
        enforcer.apply(&mut node, &|_| None);
        assert!(enforcer.keeps_pins());
        assert!(!enforcer.pins_drifted(), "just written");
        // As the kernel shows a cleared override (a fixture file is not truncated by a write).
        let file = built
            .sysfs
            .join("bus/pci/devices/0000:0a:00.2/driver_override");
        fs::write(file, "(null)\n").expect("cleared");
        assert!(enforcer.pins_drifted(), "a cleared pin is seen");
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;
    use crate::node::ProbeConvention;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn reads_failing_with_emfile_leave_the_desired_content_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = iommu_fixtures::fixture("consumer-gpu-audio-split").expect("fixture");
        let built = iommu_fixtures::build(spec, dir.path()).expect("builds");
        let slot = built.sysfs.join("bus/pci/slots/3");
        fs::create_dir_all(&slot).expect("mkdir");
        fs::write(slot.join("address"), "0000:0a:00\n").expect("slot");
        let policy = Policy::parse("[[reserve]]\ngroup = 12\n", Path::new("test.toml"))
            .expect("valid policy");
        let map = crate::sysfs::scan(&built.sysfs).expect("scans").to_map();
        let node = NodeState::new(map, policy.clone(), ProbeConvention::ZeroIsBound);
        let mut enforcer = Enforcer::new(&built.sysfs, dir.path(), true, None, &policy);
        let plan = Plan::compute_with(node.map(), node.policy(), &BTreeSet::from([12]));
        assert!(plan.not_viable.contains(&12), "{:?}", plan.not_viable);

        // A good pass: the slot, the drivers and group 12's node are known.
        let mut read = enforcer.read_facts();
        read.group_nodes = Ok(BTreeMap::from([(12, Ok((245 << 20) | 12))]));
        let mut unknown = Vec::new();
        let before = enforcer.content_from(&plan, &node, read, &mut unknown);
        assert!(unknown.is_empty());
        assert!(!before.slots.is_empty(), "the slot is loaded");
        assert!(!before.user_drivers.is_empty(), "the drivers are loaded");
        assert_eq!(before.group_rdev.get(&12), Some(&((245 << 20) | 12)));
        assert!(before.vfio_deny.contains_key(&((245 << 20) | 12)));

        // Out of descriptors: every listing fails.
        let failed = FactsRead {
            slots: Err(emfile()),
            drivers: Err(emfile()),
            group_nodes: Err(emfile()),
        };
        let after = enforcer.content_from(&plan, &node, failed, &mut unknown);
        assert_eq!(after, before, "nothing is lifted by a failed read");
        assert_eq!(unknown.len(), 3);

        // Listings that work but entries that fail: the same.
        let partial = FactsRead {
            slots: Ok(BTreeMap::from([("3".to_string(), Err(emfile()))])),
            drivers: Err(emfile()),
            group_nodes: Ok(BTreeMap::from([(12, Err(emfile()))])),
        };
        let after = enforcer.content_from(&plan, &node, partial, &mut unknown);
        assert_eq!(after, before);

        // The node really gone (a successful read without it): its entries go.
        let gone = FactsRead {
            slots: Ok(BTreeMap::new()),
            drivers: Ok(BTreeSet::new()),
            group_nodes: Ok(BTreeMap::new()),
        };
        let after = enforcer.content_from(&plan, &node, gone, &mut unknown);
        assert!(after.group_rdev.is_empty() && after.slots.is_empty());
    }

    #[test]
    fn the_retry_schedule_doubles_from_100ms_to_5s() {
        let mut b = Backoff::first();
        let mut delays = vec![b.delay.as_millis()];
        for _ in 0..8 {
            b = b.next();
            delays.push(b.delay.as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.failures, 9);
    }

    #[test]
    fn a_retry_is_armed_only_while_a_write_is_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = Enforcer::new(dir.path(), dir.path(), false, None, &Policy::default());
        assert_eq!(e.next_retry(), None, "idle: no timer");
        let t0 = Instant::now();
        let failed = BTreeSet::from(["0000:0a:00.1".to_string()]);
        e.schedule_retries(&failed, t0);
        assert_eq!(e.next_retry(), Some(t0 + RETRY_FIRST));
        // Failing again on another event before it is due: the schedule stands.
        e.schedule_retries(&failed, t0 + Duration::from_millis(10));
        assert_eq!(e.next_retry(), Some(t0 + RETRY_FIRST));
        // Due and failing: the next delay doubles.
        let t1 = t0 + RETRY_FIRST;
        e.schedule_retries(&failed, t1);
        assert_eq!(e.next_retry(), Some(t1 + 2 * RETRY_FIRST));
        // It held (or the device went): nothing pending, no timer.
        e.schedule_retries(&BTreeSet::new(), t1);
        assert_eq!(e.next_retry(), None);
    }
}
