//! The agent's stdout: one JSON object per line (docs/events.md). Nothing else goes to stdout.
use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use log::{info, warn};

use serde::Serialize;

use crate::{metrics::Metrics, model::Owner, nfd::FeatureFile, timestamp::rfc3339};

/// One output line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Capabilities {
        kernel: String,
        btf: bool,
        bpf_lsm: bool,
        dry_run: bool,
        /// How kept pins are watched: `event (...)`, or `poll every 1 s (...)` where the
        /// program that records `driver_override` stores cannot attach.
        pin_watch: String,
        programs: BTreeMap<String, String>,
        /// Per mechanism (`lsm`, `reservation`): `active`, `dry_run` or `unavailable: why`.
        enforcement: BTreeMap<String, String>,
    },
    Ready {
        groups: usize,
    },
    Event(Box<EventLine>),
    Verdict {
        group: String,
        owner: Owner,
        viable: bool,
        reasons: Vec<String>,
    },
    Lost {
        count: u64,
    },
    /// A new agent on pins an earlier one left: how many ran before, and how many records
    /// overflowed the ring while none read it (the records that fitted are read and printed).
    Restart {
        agents_before: u64,
        missed: u64,
    },
    Resync {
        groups: usize,
    },
    /// A group left the node (its last device was removed).
    GroupRemoved {
        group: String,
    },
    /// A re-read of sysfs or procfs did not finish in time (the kernel blocked it); the live
    /// map stands until a later re-read succeeds.
    Stalled {
        what: String,
        error: String,
    },
    /// An LSM hook was attached (it has something to veto) or detached back to standby.
    LsmHook {
        hook: String,
        state: String,
    },
    Shutdown {
        signal: String,
    },
}

/// A kernel event, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventLine {
    pub kind: &'static str,
    pub device: Option<String>,
    pub driver: Option<String>,
    pub group: Option<String>,
    pub ret: i32,
    pub errno: Option<&'static str>,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Vetoes: the rule that decided, `vetoed` or `would_veto`, and whether the hook could not
    /// read the written data and failed closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_closed: bool,
    /// Vetoes: what else the hook knew (`above_protected_group`, `opened_for_writing`,
    /// `not_this_writes_registers`, `trusted_writer_traced`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<&'static str>,
    /// Reservations: the driver a member sits on instead of the intended one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The pod (`metadata.uid`) and container (runtime id) of `cgroup_id`, from kubelet's
    /// cgroup layout; `null` outside a pod or when the cgroup could not be found.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

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

/// Where output lines go: stdout, one flush per line so a reader sees each event as it happens,
/// and the metrics, which are derived from the same lines. A closed stdout is not a reason to
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
