//! The labels of this node, for reservations scoped to a pool of nodes (`nodes = { ... }` in a
//! `[[reserve]]` entry). Read from `--node-labels-file` and, for the agent, the feature files
//! of Node Feature Discovery's `features.d` (`--nfd-features-dir`): both hold `key=value` lines,
//! `#` comments and blank lines, as NFD's local source reads them. The agent reads no API.
use std::collections::BTreeMap;
use std::path::Path;

use crate::bounded;

/// A label file is small; a larger one is refused unread.
const LABELS_LIMIT: usize = 1 << 20;

/// Node labels: key -> value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLabels(BTreeMap<String, String>);

impl NodeLabels {
    /// Labels from `key=value` lines (a key alone is `key=`, as NFD reads it); comments and
    /// blank lines skipped. A later line wins.
    pub fn parse(text: &str) -> NodeLabels {
        let mut labels = NodeLabels::default();
        labels.extend_from(text);
        labels
    }

    fn extend_from(&mut self, text: &str) {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            self.0
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }

    /// Labels from `file` (when given) and every file of `nfd_dir` but `skip` (the agent's
    /// own). Unreadable sources are left out and said in the returned messages.
    pub fn read(
        file: Option<&Path>,
        nfd_dir: Option<&Path>,
        skip: &str,
    ) -> (NodeLabels, Vec<String>) {
        let mut labels = NodeLabels::default();
        let mut problems = Vec::new();
        if let Some(dir) = nfd_dir {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            for path in names {
                if path.file_name().is_some_and(|n| n == skip) {
                    continue;
                }
                // Not a regular file (a directory, NFD's own temp files gone mid-read): skipped.
                if let Ok(text) = bounded::read_text(&path, LABELS_LIMIT) {
                    labels.extend_from(&text);
                }
            }
        }
        if let Some(file) = file {
            match bounded::read_text(file, LABELS_LIMIT) {
                Ok(text) => labels.extend_from(&text),
                Err(e) => problems.push(format!("node labels {}: {e}", file.display())),
            }
        }
        (labels, problems)
    }

    /// Whether every `(key, value)` of `wanted` is a label of this node.
    pub fn matches(&self, wanted: &[(String, String)]) -> bool {
        wanted
            .iter()
            .all(|(k, v)| self.0.get(k).is_some_and(|have| have == v))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn key_value_lines_as_nfd_reads_them() {
        let l = NodeLabels::parse(
            "# +expiry-time=2026-12-07T20:40:00Z\n\nnvidia.com/gpu.product=NVIDIA-H100\n  pool = a \nflag\npool=b\n",
        );
        assert_eq!(l.get("nvidia.com/gpu.product"), Some("NVIDIA-H100"));
        assert_eq!(l.get("pool"), Some("b"), "a later line wins");
        assert_eq!(l.get("flag"), Some(""));
        assert_eq!(l.get("# +expiry-time"), None);
        assert!(l.matches(&[]));
        assert!(l.matches(&[pair("pool", "b"), pair("flag", "")]));
        assert!(!l.matches(&[pair("pool", "b"), pair("zone", "x")]));
        assert!(!l.matches(&[pair("pool", "a")]));
    }

    #[test]
    fn read_from_a_file_and_nfd_features_but_not_the_agents_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let features = dir.path().join("features.d");
        std::fs::create_dir(&features).expect("mkdir");
        std::fs::write(features.join("gpu"), "pool=gpu\nzone=a\n").expect("write");
        std::fs::write(features.join("iommu-enforcer"), "pool=own\n").expect("write");
        let file = dir.path().join("labels");
        std::fs::write(&file, "zone=b\n").expect("write");
        let (l, problems) = NodeLabels::read(Some(&file), Some(&features), "iommu-enforcer");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((l.get("pool"), l.get("zone")), (Some("gpu"), Some("b")));
        let (_, problems) = NodeLabels::read(Some(&dir.path().join("absent")), None, "");
        assert_eq!(problems.len(), 1);
    }
}
