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

use crate::{metrics::Metrics, nfd::FeatureFile, timestamp::rfc3339};

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
        if let Some(nfd) = &self.nfd {
            // A panic elsewhere while holding the lock leaves plain data: keep using it.
            let mut file = nfd.lock().unwrap_or_else(|p| p.into_inner());
            match file.observe(lines) {
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
