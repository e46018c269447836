//! Node labels through Node Feature Discovery's local feature source: with
//! `--nfd-features-dir DIR` (NFD's `features.d`, mounted from the host) the agent keeps
//! `DIR/iommu-enforcer` current with
//!
//! ```text
//! # +expiry-time=<RFC 3339, UTC: written + EXPIRY>
//! iommu-enforcer.io/enforcement=active|dry-run|unavailable
//! iommu-enforcer.io/non-viable-groups=<count>
//! ```
//!
//! nfd-worker reads the file and nfd-master labels the node. The names carry their own
//! namespace, so NFD (v0.13+) does not prefix them with `feature.node.kubernetes.io/`; only
//! `kubernetes.io` and its sub-namespaces are denied by default. The state is derived from the
//! agent's own output lines (the capabilities line, verdicts, group removals), like the metrics,
//! plus which groups passthrough uses ([`passthrough_groups`]), read from the group map.
//!
//! `non-viable-groups` counts only the groups a scheduler of passthrough workloads has to care
//! about: not viable, and reserved by the policy, in use (held or claimed: owner `user` or
//! `conflict`) or user-owned (a member on vfio-pci or a variant). A GPU left on its host driver
//! is not viable but harms nothing: counting it made the affinity example exclude every node
//! with a host driver (14 of the 42 groups of the `eight-gpu-server` fixture).
//!
//! NFD drops a file's labels after its `# +expiry-time` (the directive applies to the lines
//! after it): the labels vanish, `enforcement=active` with them, when no agent renews the file.
//! The agent writes it when its text changes and renews it every [`RENEW`] (half of
//! [`EXPIRY`]): the one timer it arms for this, and only with `--nfd-features-dir`. The file is
//! written atomically (a temp file in the same directory, then rename).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use iommu_enforcer_schema::{Line, MechanismState, Owner};

use crate::{
    model::GroupMap,
    policy::{reserved_groups, Policy},
    timestamp::rfc3339,
};

/// Name of the feature file in NFD's `features.d`.
pub const FILE_NAME: &str = "iommu-enforcer";
pub const ENFORCEMENT: &str = "iommu-enforcer.io/enforcement";
pub const NON_VIABLE_GROUPS: &str = "iommu-enforcer.io/non-viable-groups";
/// How long NFD keeps the labels after a write: ten NFD re-label intervals (60 s by default),
/// so a slow or busy agent never lets them lapse, and a stopped one loses them within minutes.
pub const EXPIRY: Duration = Duration::from_secs(600);
/// How often a running agent rewrites the file with a fresh expiry when nothing changed.
pub const RENEW: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct NfdError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// What the last verdict of a group said that the count needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupState {
    viable: bool,
    /// Held by a VFIO user or claimed (owner `user` or `conflict`).
    in_use: bool,
}

/// The groups passthrough uses besides those in use: reserved by the policy, or with a member
/// on vfio-pci or a variant (user-owned). Their ids as the output lines name them.
pub fn passthrough_groups(map: &GroupMap, policy: &Policy) -> BTreeSet<String> {
    let mut ids = reserved_groups(map, policy);
    ids.extend(
        map.groups()
            .filter(|g| map.user_bound_member(g.id).is_some())
            .map(|g| g.id),
    );
    ids.into_iter().map(|g| g.to_string()).collect()
}

/// What the labels say, from the agent's lines and the passthrough groups. Pure.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeLabels {
    /// `None` until the capabilities line: nothing is written before the agent knows.
    enforcement: Option<&'static str>,
    groups: BTreeMap<String, GroupState>,
    passthrough: BTreeSet<String>,
}

impl NodeLabels {
    /// Follows one output line.
    pub fn observe(&mut self, line: &Line) {
        match line {
            Line::Capabilities {
                dry_run,
                enforcement,
                ..
            } => {
                self.enforcement = Some(if *dry_run {
                    "dry-run"
                } else if enforcement.values().any(|s| *s == MechanismState::Active) {
                    "active"
                } else {
                    "unavailable"
                });
            }
            Line::Verdict {
                group,
                owner,
                viable,
                ..
            } => {
                let in_use = matches!(owner, Owner::User | Owner::Conflict);
                self.groups.insert(
                    group.clone(),
                    GroupState {
                        viable: *viable,
                        in_use,
                    },
                );
            }
            Line::GroupRemoved { group } => {
                self.groups.remove(group);
            }
            _ => {}
        }
    }

    /// Replaces the groups reserved or user-owned ([`passthrough_groups`]).
    pub fn set_passthrough(&mut self, groups: BTreeSet<String>) {
        self.passthrough = groups;
    }

    /// Not viable, and reserved, in use or user-owned.
    pub fn non_viable(&self) -> usize {
        self.groups
            .iter()
            .filter(|(id, s)| !s.viable && (s.in_use || self.passthrough.contains(*id)))
            .count()
    }

    /// The labels' text, or `None` before the capabilities line.
    pub fn labels(&self) -> Option<String> {
        let enforcement = self.enforcement?;
        Some(format!(
            "{ENFORCEMENT}={enforcement}\n{NON_VIABLE_GROUPS}={}\n",
            self.non_viable()
        ))
    }

    /// The feature file's text when written at `now`, or `None` before the capabilities line.
    pub fn render(&self, now: SystemTime) -> Option<String> {
        let labels = self.labels()?;
        Some(format!(
            "# Written by iommu-enforcer; do not edit.\n# +expiry-time={}\n{labels}",
            expiry_time(now + EXPIRY)
        ))
    }
}

/// `t` as NFD's expiry directive reads it (Go's `time.RFC3339`): UTC, whole seconds.
fn expiry_time(t: SystemTime) -> String {
    let full = rfc3339(t);
    match full.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => full,
    }
}

/// The feature file and the labels last written to it.
#[derive(Debug)]
pub struct FeatureFile {
    dir: PathBuf,
    labels: NodeLabels,
    written: Option<String>,
}

impl FeatureFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            labels: NodeLabels::default(),
            written: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Follows a batch of lines; rewrites the file when its labels changed. `Ok(true)` when it
    /// was written.
    pub fn observe(&mut self, lines: &[Line]) -> Result<bool, NfdError> {
        for line in lines {
            self.labels.observe(line);
        }
        self.write_if_changed()
    }

    /// Replaces the passthrough groups ([`passthrough_groups`]); rewrites the file when its
    /// labels changed.
    pub fn set_passthrough(&mut self, groups: BTreeSet<String>) -> Result<bool, NfdError> {
        self.labels.set_passthrough(groups);
        self.write_if_changed()
    }

    /// Rewrites the file with a fresh expiry (the labels unchanged). `Ok(false)` before the
    /// capabilities line.
    pub fn renew(&mut self) -> Result<bool, NfdError> {
        self.write(SystemTime::now(), true)
    }

    fn write_if_changed(&mut self) -> Result<bool, NfdError> {
        self.write(SystemTime::now(), false)
    }

    fn write(&mut self, now: SystemTime, always: bool) -> Result<bool, NfdError> {
        let Some(labels) = self.labels.labels() else {
            return Ok(false);
        };
        if !always && self.written.as_deref() == Some(labels.as_str()) {
            return Ok(false);
        }
        let text = self.labels.render(now).unwrap_or_default();
        write_atomically(&self.path(), &text)?;
        self.written = Some(labels);
        Ok(true)
    }
}

/// `text` to `path` through `path.tmp` and a rename, so nfd-worker never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<(), NfdError> {
    let tmp = path.with_extension("tmp");
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |error| NfdError { path: p, error }
    };
    let mut f = fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    fs::rename(&tmp, path).map_err(err(path))
}

#[cfg(test)]
mod tests {
    use iommu_enforcer_schema::Mechanism;

    use super::*;
    use crate::node::{NodeState, ProbeConvention};

    fn caps(dry_run: bool, lsm: &str, reservation: &str) -> Line {
        Line::Capabilities {
            kernel: "6.1.0".into(),
            btf: true,
            bpf_lsm: true,
            dry_run,
            pin_watch: "event".into(),
            programs: BTreeMap::new(),
            enforcement: [
                (Mechanism::Lsm, lsm.parse().expect("a mechanism state")),
                (
                    Mechanism::Reservation,
                    reservation.parse().expect("a mechanism state"),
                ),
            ]
            .into(),
        }
    }

    fn verdict_of(group: &str, owner: Owner, viable: bool) -> Line {
        Line::Verdict {
            group: group.into(),
            owner,
            viable,
            reasons: vec![],
        }
    }

    /// A verdict of a group held by a VFIO user.
    fn verdict(group: &str, viable: bool) -> Line {
        verdict_of(group, Owner::User, viable)
    }

    fn label(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    }

    fn count(l: &NodeLabels) -> Option<String> {
        label(&l.labels().expect("labels"), NON_VIABLE_GROUPS)
    }

    #[test]
    fn enforcement_is_active_dry_run_or_unavailable() {
        for (line, want) in [
            (
                caps(false, "active", "unavailable: no reserved groups"),
                "active",
            ),
            (
                caps(false, "unavailable: bpf not in lsm", "active"),
                "active",
            ),
            (caps(true, "dry_run", "dry_run"), "dry-run"),
            (
                caps(false, "unavailable: bpf not in lsm", "unavailable: none"),
                "unavailable",
            ),
        ] {
            let mut l = NodeLabels::default();
            l.observe(&line);
            let text = l.labels().expect("labels after capabilities");
            assert_eq!(label(&text, ENFORCEMENT).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn non_viable_groups_follow_verdicts_and_removals() {
        let mut l = NodeLabels::default();
        assert_eq!(l.labels(), None, "nothing before the capabilities line");
        for line in [
            caps(false, "active", "active"),
            verdict("14", false),
            verdict("15", false),
            verdict("16", true),
        ] {
            l.observe(&line);
        }
        assert_eq!(count(&l).as_deref(), Some("2"));
        l.observe(&verdict("14", true));
        assert_eq!(count(&l).as_deref(), Some("1"));
        l.observe(&Line::GroupRemoved { group: "15".into() });
        assert_eq!(count(&l).as_deref(), Some("0"));
    }

    #[test]
    fn only_groups_passthrough_uses_are_counted() {
        let mut l = NodeLabels::default();
        for line in [
            caps(false, "active", "active"),
            // A GPU on its host driver: not viable, nobody's business.
            verdict_of("8", Owner::Kernel, false),
            // Held by a VM while a companion is on a host driver (5.10's BUG case).
            verdict_of("9", Owner::Conflict, false),
            // Reserved, its companion on a host driver.
            verdict_of("10", Owner::Kernel, false),
            // A member on vfio-pci, another on a host driver, nobody holding it.
            verdict_of("11", Owner::Kernel, false),
            // Reserved and viable.
            verdict_of("12", Owner::None, true),
        ] {
            l.observe(&line);
        }
        assert_eq!(count(&l).as_deref(), Some("1"), "only the one in use");
        l.set_passthrough(["10", "11", "12"].map(String::from).into());
        assert_eq!(count(&l).as_deref(), Some("3"));
        // The host driver leaves group 8: still 3, group 8 was never counted.
        l.observe(&verdict_of("8", Owner::None, true));
        assert_eq!(count(&l).as_deref(), Some("3"));
    }

    /// The labels an agent started on a fixture would write: its start verdicts and the
    /// passthrough groups of the map.
    fn fixture_labels(name: &str, policy: &str) -> (NodeLabels, usize) {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = iommu_fixtures::fixture(name).expect("fixture");
        let built = iommu_fixtures::build(spec, dir.path()).expect("fixture builds");
        let map = crate::sysfs::scan(&built.sysfs).expect("scan").to_map();
        let holders = crate::sysfs::scan_holders(&built.proc, &built.sysfs).holders;
        let policy = Policy::parse(policy, Path::new("policy.toml")).expect("policy");
        let passthrough = passthrough_groups(&map, &policy);
        let mut node = NodeState::new(map, policy, ProbeConvention::ZeroIsBound);
        let mut l = NodeLabels::default();
        l.observe(&caps(false, "active", "active"));
        let verdicts = node.set_holders(holders);
        // What the label counted before: every group on a kernel DMA driver.
        let every_non_viable = verdicts
            .iter()
            .filter(|v| matches!(v, Line::Verdict { viable: false, .. }))
            .count();
        for v in &verdicts {
            l.observe(v);
        }
        l.set_passthrough(passthrough);
        (l, every_non_viable)
    }

    #[test]
    fn eight_gpu_server_counts_none_of_its_host_driver_groups() {
        // 42 groups; 14 not viable: six H100s on nvidia (groups 8, 9, 18, 19, 28, 29) and eight
        // ConnectX-6 on mlx5_core (10, 11, 20, 21, 30, 31, 40, 41), each alone in its group
        // behind a downstream port with ACS. None is reserved, held or next to a vfio-pci
        // member; the two passed-through GPUs (38, 39: vfio-pci, held by QEMU) are viable.
        // So a node the README's affinity example should accept: 0.
        let (l, before) = fixture_labels("eight-gpu-server", "");
        assert_eq!(before, 14, "the fixture's non-viable groups");
        assert_eq!(l.groups.len(), 42);
        assert_eq!(
            l.passthrough,
            BTreeSet::from(["38".to_string(), "39".to_string()])
        );
        assert_eq!(count(&l).as_deref(), Some("0"));

        // Reserving the first H100 for passthrough while nvidia still has it makes that group
        // matter: 1.
        let (l, _) = fixture_labels(
            "eight-gpu-server",
            "[[reserve]]\ndevice = \"0000:12:00.0\"\ndriver = \"vfio-pci\"\n",
        );
        assert!(l.passthrough.contains("8"), "{:?}", l.passthrough);
        assert_eq!(count(&l).as_deref(), Some("1"));
    }

    #[test]
    fn the_file_expires_after_expiry_and_the_directive_comes_first() {
        let mut l = NodeLabels::default();
        l.observe(&caps(false, "active", "active"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_203_805_123_456);
        let text = l.render(now).expect("text");
        assert_eq!(
            text,
            "# Written by iommu-enforcer; do not edit.\n\
             # +expiry-time=2026-12-02T09:40:05Z\n\
             iommu-enforcer.io/enforcement=active\n\
             iommu-enforcer.io/non-viable-groups=0\n"
        );
        assert!(RENEW * 2 <= EXPIRY, "renewed well before it expires");
    }

    #[test]
    fn the_file_is_written_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut f = FeatureFile::new(dir.path());
        assert!(
            !f.observe(&[verdict("14", false)]).expect("ok"),
            "no capabilities yet"
        );
        assert!(!f.renew().expect("ok"), "nothing to renew yet");
        assert!(!f.path().exists());
        assert!(f
            .observe(&[caps(true, "dry_run", "dry_run")])
            .expect("written"));
        let text = fs::read_to_string(f.path()).expect("the file");
        assert!(text.contains("\n# +expiry-time=20"), "{text}");
        assert!(
            text.contains("iommu-enforcer.io/enforcement=dry-run\n"),
            "{text}"
        );
        assert!(
            text.contains("iommu-enforcer.io/non-viable-groups=1\n"),
            "{text}"
        );
        // Same state: not rewritten (an operator's edit stays until the state changes or the
        // next renewal).
        fs::write(f.path(), "edited").expect("edit");
        assert!(!f.observe(&[verdict("14", false)]).expect("ok"));
        assert_eq!(fs::read_to_string(f.path()).expect("file"), "edited");
        assert!(!f
            .set_passthrough(BTreeSet::from(["14".to_string()]))
            .expect("ok"));
        assert!(f.renew().expect("renewed"));
        let renewed = fs::read_to_string(f.path()).expect("file");
        assert!(
            renewed.contains("\n# +expiry-time=20") && renewed.ends_with("non-viable-groups=1\n"),
            "{renewed}"
        );
        assert!(f.observe(&[verdict("14", true)]).expect("written"));
        let text = fs::read_to_string(f.path()).expect("the file");
        assert!(text.contains("non-viable-groups=0\n"), "{text}");
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_path() {
        let mut f = FeatureFile::new(Path::new("/nonexistent/features.d"));
        let e = f
            .observe(&[caps(false, "active", "active")])
            .expect_err("cannot write");
        assert!(e.to_string().starts_with("/nonexistent/features.d/"), "{e}");
    }
}
