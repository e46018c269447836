//! The agent's output lines as docs/events.md spells them, read back for the metrics. Metrics
//! are computed from the serialized line, field by field, so they can never disagree with the
//! JSON a reader sees, and fields added later (the veto's `rule` and `action`) are picked up
//! without a change here. Unknown fields are ignored; unknown line types are skipped.
use std::collections::BTreeMap;

use serde::Deserialize;

/// One output line (the `type` field selects the variant).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum View {
    Capabilities {
        kernel: String,
        #[serde(default)]
        bpf_lsm: bool,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        programs: BTreeMap<String, String>,
        /// Per mechanism: `active`, `dry_run` or `unavailable: <why>`.
        #[serde(default)]
        enforcement: Option<BTreeMap<String, String>>,
    },
    Ready {},
    Event(EventView),
    Verdict {
        group: String,
        owner: String,
        viable: bool,
    },
    Lost {
        count: u64,
    },
    Restart {
        missed: u64,
    },
    Resync {},
    GroupRemoved {
        group: String,
    },
    LsmHook {
        hook: String,
        state: String,
    },
    Shutdown {},
    #[serde(other)]
    Other,
}

/// The fields of an `event` line the metrics use.
#[derive(Debug, Deserialize)]
pub(super) struct EventView {
    pub kind: String,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub errno: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Veto events (enforcement): the policy rule that matched.
    #[serde(default)]
    pub rule: Option<String>,
    /// Veto events: `vetoed`, `would_veto` or `allowed`.
    #[serde(default)]
    pub action: Option<String>,
}

/// Status of one program in the capability report, without the free-text reason of a failure
/// (a label value must come from a small set).
pub(super) fn program_status(report: &str) -> &'static str {
    match report {
        "attached" => "attached",
        "standby" => "standby",
        r if r == "absent" || r.starts_with("absent:") => "absent",
        _ => "failed",
    }
}

/// LSM hooks the agent's veto programs attach to (ebpf/src/lsm_hooks.rs). The capability
/// report keys a program by its target, and an LSM program's target is its hook.
const LSM_HOOKS: [&str; 2] = ["file_open", "file_permission"];

/// Whether a capability-report key is an LSM program: one of [`LSM_HOOKS`], or spelled
/// `lsm/<hook>` as its ELF section.
pub(super) fn is_lsm_program(name: &str) -> bool {
    LSM_HOOKS.contains(&name) || name.starts_with("lsm/")
}
