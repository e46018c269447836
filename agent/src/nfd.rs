//! Node labels through Node Feature Discovery's local feature source: with
//! `--nfd-features-dir DIR` (NFD's `features.d`, mounted from the host) the agent keeps
//! `DIR/iommu-enforcer` current with
//!
//! ```text
//! iommu-enforcer.io/enforcement=active|dry-run|unavailable
//! iommu-enforcer.io/non-viable-groups=<count>
//! ```
//!
//! nfd-worker reads the file and nfd-master labels the node. The names carry their own
//! namespace, so NFD (v0.13+) does not prefix them with `feature.node.kubernetes.io/`; only
//! `kubernetes.io` and its sub-namespaces are denied by default. The state is derived from the
//! agent's own output lines (the capabilities line, verdicts, group removals), like the metrics.
//! The file is written atomically (a temp file in the same directory, then rename) and only when
//! its text changes.
use std::{
    collections::BTreeMap,
    fs, io,
    io::Write,
    path::{Path, PathBuf},
};

use iommu_enforcer_schema::{Line, MechanismState};

/// Name of the feature file in NFD's `features.d`.
pub const FILE_NAME: &str = "iommu-enforcer";
pub const ENFORCEMENT: &str = "iommu-enforcer.io/enforcement";
pub const NON_VIABLE_GROUPS: &str = "iommu-enforcer.io/non-viable-groups";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct NfdError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// What the labels say, from the agent's lines. Pure.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeLabels {
    /// `None` until the capabilities line: nothing is written before the agent knows.
    enforcement: Option<&'static str>,
    viable: BTreeMap<String, bool>,
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
            Line::Verdict { group, viable, .. } => {
                self.viable.insert(group.clone(), *viable);
            }
            Line::GroupRemoved { group } => {
                self.viable.remove(group);
            }
            _ => {}
        }
    }

    /// The feature file's text, or `None` before the capabilities line.
    pub fn render(&self) -> Option<String> {
        let enforcement = self.enforcement?;
        let non_viable = self.viable.values().filter(|v| !**v).count();
        Some(format!(
            "# Written by iommu-enforcer; do not edit.\n{ENFORCEMENT}={enforcement}\n{NON_VIABLE_GROUPS}={non_viable}\n"
        ))
    }
}

/// The feature file and the text last written to it.
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

    /// Follows a batch of lines; rewrites the file when its text changed. `Ok(true)` when it
    /// was written.
    pub fn observe(&mut self, lines: &[Line]) -> Result<bool, NfdError> {
        for line in lines {
            self.labels.observe(line);
        }
        let Some(text) = self.labels.render() else {
            return Ok(false);
        };
        if self.written.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_atomically(&self.path(), &text)?;
        self.written = Some(text);
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
    use iommu_enforcer_schema::{Mechanism, Owner};

    use super::*;

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

    fn verdict(group: &str, viable: bool) -> Line {
        Line::Verdict {
            group: group.into(),
            owner: Owner::Kernel,
            viable,
            reasons: vec![],
        }
    }

    fn label(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
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
            let text = l.render().expect("rendered after capabilities");
            assert_eq!(label(&text, ENFORCEMENT).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn non_viable_groups_follow_verdicts_and_removals() {
        let mut l = NodeLabels::default();
        assert_eq!(l.render(), None, "nothing before the capabilities line");
        for line in [
            caps(false, "active", "active"),
            verdict("14", false),
            verdict("15", false),
            verdict("16", true),
        ] {
            l.observe(&line);
        }
        let count = |l: &NodeLabels| label(&l.render().expect("text"), NON_VIABLE_GROUPS);
        assert_eq!(count(&l).as_deref(), Some("2"));
        l.observe(&verdict("14", true));
        assert_eq!(count(&l).as_deref(), Some("1"));
        l.observe(&Line::GroupRemoved { group: "15".into() });
        assert_eq!(count(&l).as_deref(), Some("0"));
    }

    #[test]
    fn the_file_is_written_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut f = FeatureFile::new(dir.path());
        assert!(
            !f.observe(&[verdict("14", false)]).expect("ok"),
            "no capabilities yet"
        );
        assert!(!f.path().exists());
        assert!(f
            .observe(&[caps(true, "dry_run", "dry_run")])
            .expect("written"));
        let text = fs::read_to_string(f.path()).expect("the file");
        assert!(
            text.contains("iommu-enforcer.io/enforcement=dry-run\n"),
            "{text}"
        );
        assert!(
            text.contains("iommu-enforcer.io/non-viable-groups=1\n"),
            "{text}"
        );
        // Same state: not rewritten (an operator's edit stays until the state changes).
        fs::write(f.path(), "edited").expect("edit");
        assert!(!f.observe(&[verdict("14", false)]).expect("ok"));
        assert_eq!(fs::read_to_string(f.path()).expect("file"), "edited");
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
