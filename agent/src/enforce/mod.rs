//! Enforcement: keep reserved and user-owned groups viable. The eBPF programs keep the
//! protection state in the kernel and veto, there, binds, sysfs writes and VFIO opens that would
//! break a group; the agent loads them the topology and the policy (`kernel_state`,
//! `kernel_maps`) and pins every protected member's `driver_override`, so that autoprobe and
//! `bind` cannot even try another driver. In dry-run nothing is written or denied: the same
//! decisions are reported as `would_*`.
pub mod kernel_maps;
pub mod kernel_state;
pub mod pinned;
pub mod plan;
pub mod sysfs_files;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use iommu_enforcer_common::{watched, WatchedFile, ADDR_LEN};
use iommu_enforcer_schema::{Action, Event, Kind, Line, Mechanism, MechanismState, Outcome, Rule};
use log::{info, warn};

use self::{
    kernel_maps::KernelMaps,
    kernel_state::{key, Content, NodeFacts, OpenCount},
    plan::{Plan, Reservation},
    sysfs_files::{exe_key, node_rdev},
};
use crate::{bpf::record::errno_name, node::NodeState, policy::Policy};

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

    /// Whether the LSM file hooks are attached and run, so that opens are counted and a group
    /// that is only bound to a user driver is idle. Takes effect at the next apply.
    pub fn set_opens_counted(&mut self, counted: bool) {
        self.opens.counted = counted;
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
        sysfs_files::pins_differ(&self.sysfs, pins).unwrap_or(false)
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
        let nodes = self.group_nodes();
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
    pub fn apply(&mut self, node: &mut NodeState) -> Vec<Line> {
        let mut lines = Vec::new();
        let in_use = self.in_use(node);
        let mut plan = Plan::compute_with(node.map(), node.policy(), &in_use);
        // A pin of a group no longer protected (idle, not reserved) is the operator's now.
        self.pinned
            .retain(|device, _| plan.protected.contains_key(device));
        let mut restored = BTreeSet::new();
        if !self.dry_run {
            let mut changed = false;
            for address in plan.protected.keys() {
                // Unknown (the read stalled) is not unset: keep what the model says.
                let Ok(live) = sysfs_files::current_override(&self.sysfs, address) else {
                    continue;
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
                plan = Plan::compute_with(node.map(), node.policy(), &in_use);
            }
        }
        self.reserved.clone_from(&plan.reserved);
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
            lines.extend(self.reserve(node, r, restore));
        }
        if self.kernel.is_some() {
            let content = self.content(&plan, node);
            if let Some(k) = self.kernel.as_mut() {
                k.sync(&content);
            }
        }
        lines
    }

    /// `/dev/vfio/<group>` nodes: group -> kernel dev_t.
    fn group_nodes(&self) -> BTreeMap<u32, u32> {
        fs::read_dir(self.dev.join("vfio"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let group: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((group, node_rdev(&e.path())?))
            })
            .collect()
    }

    fn content(&mut self, plan: &Plan, node: &NodeState) -> Content {
        let facts = NodeFacts {
            slots: sysfs_files::slots(&self.sysfs),
            drivers: sysfs_files::drivers(&self.sysfs),
            group_nodes: self.group_nodes(),
        };
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
            for (device, cdev) in self.cdevs(node, group) {
                if let Some(rdev) = node_rdev(&self.dev.join("vfio/devices").join(&cdev)) {
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
        }
        // An unreadable /proc/devices (EMFILE, say) keeps the major last read.
        if let Ok(text) = fs::read_to_string(self.proc.join("devices")) {
            self.opens.vfio_major = kernel_state::vfio_major(&text).unwrap_or(0);
        }
        c.set_config(
            std::process::id(),
            self.dry_run,
            node.policy().protect_user_groups,
            self.opens,
        );
        c
    }

    /// (device, `vfioX`) of the group's members that have an iommufd cdev.
    fn cdevs(&self, node: &NodeState, group: u32) -> Vec<(String, String)> {
        let Some(g) = node.map().group(group) else {
            return Vec::new();
        };
        g.devices
            .keys()
            .flat_map(|address| {
                let dir = self
                    .sysfs
                    .join("bus/pci/devices")
                    .join(address)
                    .join("vfio-dev");
                fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| {
                        (
                            address.clone(),
                            e.file_name().to_string_lossy().into_owned(),
                        )
                    })
            })
            .collect()
    }

    /// Carries out (or, dry-run, reports) one reservation. Standing decisions are reported
    /// once; changes every time they happen.
    fn reserve(&mut self, node: &mut NodeState, r: &Reservation, restore: bool) -> Vec<Line> {
        if !self.dry_run && self.already_in_place(r) {
            self.pinned
                .insert(r.device().to_string(), r.value().to_string());
            // The model follows the kernel through events, which trail the agent's own writes:
            // a pass that runs before the last rebind's events arrive must not move it again.
            return node.set_driver_override(r.device(), Some(r.value()));
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
        let mut lines = Vec::new();
        if changed {
            info!("{kind} {action} {device} (group {group}) to {value}");
            self.pinned.insert(device.clone(), value.clone());
            lines.extend(node.set_driver_override(device, Some(value)));
        } else {
            let key = format!("{kind}:{device}:{value}:{}", result.is_ok());
            if !self.reported.insert(key) {
                return lines;
            }
        }
        if let Err(e) = &result {
            warn!("{kind} {device} to {value}: {e}");
        }
        let os_errno = result.as_ref().err().and_then(|e| e.raw_os_error());
        let pid = std::process::id();
        let mut event = Event::new(kind, Outcome::of(result.is_ok()));
        event.device = Some(device.clone());
        event.driver = Some(value.clone());
        event.group = Some(group.to_string());
        event.ret = os_errno.map_or(0, |e| -e);
        event.errno = os_errno.and_then(errno_name).map(str::to_owned);
        event.rule = Some(Rule::Reservation);
        event.action = Some(action);
        event.bound_to = from.cloned();
        (event.pid, event.tgid, event.comm) = (pid, pid, "enforcer".into());
        lines.insert(0, Line::Event(Box::new(event)));
        lines
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
                    && (!probe || sysfs_files::bound_driver(&self.sysfs, device).is_some())
            }
            Reservation::Rebind { device, value, .. } => {
                sysfs_files::bound_driver(&self.sysfs, device).as_deref() == Some(value)
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

        let first = rebound(&enforcer.apply(&mut node));
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
        let second = rebound(&enforcer.apply(&mut node));
        assert_eq!(
            second,
            ["0000:0a:00.3"],
            "only the function still on its host driver is moved again"
        );
    }

    #[test]
    fn the_pin_watch_sees_only_a_pin_changed_behind_its_back() {
        let (dir, built) = fixture_node();
        let (mut node, mut enforcer) = reserve_group_12(&dir, &built);
        enforcer.apply(&mut node);
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
