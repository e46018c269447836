//! Where the agent's lines go: stdout, one JSON object per line (docs/events.md; nothing else
//! goes to stdout), and in process, as typed values, the metrics and NFD's node labels.
use std::{
    io::{self, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use log::{info, warn};

use iommu_enforcer_schema::Line;
use serde::Serialize;

use crate::{
    metrics::Metrics,
    nfd::{passthrough_groups, FeatureFile},
    node::NodeState,
    timestamp::rfc3339,
};

/// A line as printed: `time` (RFC 3339, UTC, microseconds: when the agent printed it) first,
/// then the line's own fields.
#[derive(Serialize)]
struct Stamped<'a> {
    time: &'a str,
    #[serde(flatten)]
    line: &'a Line,
}

/// The JSON text of `line` as printed at `at`.
pub fn to_json(line: &Line, at: SystemTime) -> serde_json::Result<String> {
    let time = rfc3339(at);
    serde_json::to_string(&Stamped { time: &time, line })
}

/// Where output lines go: stdout as JSON, one flush per line so a reader sees each event as it
/// happens, and the metrics and node labels, which read the same typed lines (no JSON between). A closed stdout is not a reason to
/// stop guarding the node: write errors are dropped.
#[derive(Clone, Default)]
pub struct Sink {
    metrics: Option<Arc<Metrics>>,
    /// NFD's feature file of node labels (`--nfd-features-dir`), fed from the same lines.
    nfd: Option<Arc<Mutex<FeatureFile>>>,
}

impl Sink {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics, nfd: None }
    }

    /// Also keeps NFD's feature file in `dir` current, when given.
    pub fn with_nfd(mut self, dir: Option<&Path>) -> Self {
        self.nfd = dir.map(|d| Arc::new(Mutex::new(FeatureFile::new(d))));
        self
    }

    pub fn emit(&self, lines: &[Line]) {
        if lines.is_empty() {
            return;
        }
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let now = SystemTime::now();
        for line in lines {
            if let Ok(json) = to_json(line, now) {
                let _ = writeln!(out, "{json}");
            }
            if let Some(m) = &self.metrics {
                m.observe(line);
            }
        }
        let _ = out.flush();
        self.with_nfd_file(|file| file.observe(lines));
    }

    /// True when the node labels are kept (`--nfd-features-dir`): only then is their renewal
    /// timer armed.
    pub fn has_nfd(&self) -> bool {
        self.nfd.is_some()
    }

    /// Tells the node labels which groups passthrough uses (reserved, or a member on
    /// vfio-pci), from the node as it is now: call before emitting the lines of a change.
    pub fn track(&self, node: &NodeState) {
        self.with_nfd_file(|file| {
            file.set_passthrough(passthrough_groups(node.map(), node.policy()))
        });
    }

    /// Rewrites the node labels with a fresh expiry (every `nfd::RENEW`).
    pub fn renew_nfd(&self) {
        self.with_nfd_file(FeatureFile::renew);
    }

    fn with_nfd_file(
        &self,
        f: impl FnOnce(&mut FeatureFile) -> Result<bool, crate::nfd::NfdError>,
    ) {
        if let Some(nfd) = &self.nfd {
            // A panic elsewhere while holding the lock leaves plain data: keep using it.
            let mut file = nfd.lock().unwrap_or_else(|p| p.into_inner());
            match f(&mut file) {
                Ok(true) => info!("node labels: wrote {}", file.path().display()),
                Ok(false) => {}
                Err(e) => warn!("node labels: {e}"),
            }
        }
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn every_line_starts_with_its_time() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_203_805_123_456);
        for line in [
            Line::Ready { groups: 3 },
            Line::Lost { count: 2 },
            Line::Shutdown {
                signal: "SIGTERM".into(),
            },
        ] {
            let json = to_json(&line, at).expect("serializes");
            assert!(
                json.starts_with(r#"{"time":"2026-12-02T09:30:05.123456Z","type":"#),
                "{json}"
            );
            // The line's own fields are unchanged.
            let mut value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            value.as_object_mut().map(|o| o.remove("time"));
            assert_eq!(value, serde_json::to_value(&line).expect("serializes"));
        }
    }
}
