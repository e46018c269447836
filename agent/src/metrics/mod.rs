//! Prometheus metrics and the HTTP endpoint that serves them (DESIGN.md section 4).
//!
//! Every metric is derived from the agent's own output lines ([`Metrics::observe`]), so the
//! numbers a dashboard shows and the JSON events a script reads come from one source. Which
//! line feeds which metric:
//!
//! | line | metrics |
//! |---|---|
//! | `capabilities` | `build_info`, `dry_run`, `programs_attached`, `program_status`, `enforcement_active` (its `enforcement` map) |
//! | `ready` / `shutdown` | readiness of `/readyz` |
//! | `event` `bind` / `unbind` | `bind_events_total` |
//! | `event` `refusal` | `kernel_refusals_total` |
//! | `event` `claim` | `claims_total` |
//! | `event` `vfio_open` | `vfio_opens_total` |
//! | `event` `veto` (fields `rule`, `action`) | `violations_total` |
//! | `event` `pin` / `rebind` / `reservation_blocked` | `reservation_actions_total`; a failed pin holds `enforcement_active{mechanism="reservation"}` at 0 |
//! | `verdict` | `group_owner`, `group_viable`, `reserved_group_viable` |
//! | `lost`, `restart` (field `missed`) | `events_lost_total` |
//! | `resync` | `resyncs_total` |
//! | `group_removed` | drops the group's `group_owner` and `group_viable` series |
//! | `lsm_hook` | `program_status` and `programs_attached` of that hook (attached or standby) |
//!
//! Counters whose label values are known in advance (`violations_total` by rule and action,
//! `reservation_actions_total` by kind, action and result, `claims_total` by scope and result,
//! and the unlabelled ones) are exported at 0 from the start, so an alert's `increase()` sees
//! the first event.
//!
//! What no line says (the set of groups the policy reserves) comes from
//! [`Metrics::set_reserved`].
mod families;
mod http;
mod view;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use log::warn;
use prometheus::{Encoder, TextEncoder};

use self::{families::Families, view::View};
pub use self::{
    families::PREFIX,
    http::{parse_addr, serve, MetricsServer},
};
use crate::daemon::output::Line;

/// Content type of the text exposition format served on `/metrics`.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Enforcement mechanisms, the values of `enforcement_active{mechanism}`.
pub const MECHANISMS: [&str; 2] = ["lsm", "reservation"];

/// Owners a verdict can give, the values of `group_owner{owner}`.
pub const OWNERS: [&str; 4] = ["kernel", "user", "none", "conflict"];

/// Program statuses, the values of `program_status{status}`.
/// `standby`: an LSM hook loaded and verified, attached only while there is something to veto.
pub const PROGRAM_STATUSES: [&str; 4] = ["attached", "standby", "absent", "failed"];

/// What a veto event's `action` may be, the values of `violations_total{action}`.
pub const ACTIONS: [&str; 3] = ["vetoed", "would_veto", "allowed"];

/// Reservation event kinds and their actions, the values of `reservation_actions_total`.
pub const RESERVATION_KINDS: [&str; 4] = ["pin", "pin_restored", "rebind", "reservation_blocked"];
pub const RESERVATION_ACTIONS: [&str; 5] =
    ["pinned", "rebound", "would_pin", "would_rebind", "report"];

/// Rules a veto event names (the eBPF hooks' record `detail`, spelled out in
/// `daemon::state`), the values of `violations_total{rule}`.
pub const VETO_RULES: [&str; 10] = [
    "protected_driver_override",
    "protected_remove",
    "protected_bind",
    "protected_unbind",
    "protected_new_id",
    "protected_reset",
    "protected_reset_subordinate",
    "protected_slot_power",
    "protected_probe",
    "vfio_open_not_viable",
];

/// The action each reservation kind may take, the valid `(kind, action)` pairs of
/// `reservation_actions_total`.
pub const RESERVATION_KIND_ACTIONS: [(&str, &str); 6] = [
    ("pin", "pinned"),
    ("pin", "would_pin"),
    ("pin_restored", "pinned"),
    ("rebind", "rebound"),
    ("rebind", "would_rebind"),
    ("reservation_blocked", "report"),
];

/// Results of an event, the values of every `result` label.
pub const RESULTS: [&str; 2] = ["ok", "error"];

/// Scopes of a DMA ownership claim, the values of `claims_total{scope}`.
pub const CLAIM_SCOPES: [&str; 2] = ["group", "device"];

/// Label value for a field the line left null.
const UNKNOWN: &str = "unknown";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot build the metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    #[error(
        "--metrics-addr {addr:?}: {reason}; expected IP:PORT, such as 0.0.0.0:9477 or [::]:9477"
    )]
    Addr { addr: String, reason: String },
    /// The cause is in the message, not chained: `{:#}` would print it twice.
    #[error("--metrics-addr {addr}: cannot listen: {error}")]
    Bind { addr: String, error: std::io::Error },
}

/// The agent's metrics. Shared (`Arc`) between the daemon, which feeds it lines, and the HTTP
/// server, which renders it.
pub struct Metrics {
    families: Families,
    ready: AtomicBool,
    state: Mutex<State>,
}

/// What the metrics remember between lines, to derive gauges that depend on several lines.
#[derive(Default)]
struct State {
    dry_run: bool,
    /// The LSM hooks veto, per the last capabilities line.
    lsm_active: bool,
    /// Reservation pins are written (not dry run), per the last capabilities line.
    reservation_mode_active: bool,
    reserved: BTreeSet<String>,
    /// Devices whose last pin or rebind failed: their group is not held by its pin.
    failed_pins: BTreeSet<String>,
    /// Viability of every group by its last verdict.
    viable: BTreeMap<String, bool>,
    /// Kernel release and program names of the last capabilities line.
    kernel: Option<String>,
    programs: BTreeSet<String>,
    /// Status of every program, from the capabilities line and later `lsm_hook` lines.
    statuses: BTreeMap<String, &'static str>,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        Ok(Metrics {
            families: Families::new()?,
            ready: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        })
    }

    /// Updates the metrics from one line the agent printed (or is about to print).
    pub fn observe(&self, line: &Line) {
        match serde_json::to_value(line) {
            Ok(value) => self.observe_value(value),
            Err(e) => warn!("metrics: cannot read back an output line: {e}"),
        }
    }

    /// Updates the metrics from one JSON line in the docs/events.md format, e.g. replayed from a
    /// recorded agent stdout. Lines that do not parse are skipped with a warning.
    pub fn observe_json(&self, line: &str) {
        match serde_json::from_str(line) {
            Ok(value) => self.observe_value(value),
            Err(e) => warn!("metrics: skipping a line that is not JSON: {e}"),
        }
    }

    fn observe_value(&self, value: serde_json::Value) {
        let view: View = match serde_json::from_value(value) {
            Ok(v) => v,
            Err(e) => {
                warn!("metrics: skipping a line that does not follow docs/events.md: {e}");
                return;
            }
        };
        match view {
            View::Capabilities {
                kernel,
                bpf_lsm,
                dry_run,
                programs,
                enforcement,
            } => self.capabilities(&kernel, bpf_lsm, dry_run, &programs, enforcement.as_ref()),
            View::Ready {} => self.set_ready(true),
            View::Shutdown {} => self.set_ready(false),
            View::Event(ev) => self.event(&ev),
            View::Verdict {
                group,
                owner,
                viable,
            } => self.verdict(&group, &owner, viable),
            View::Lost { count } => self.families.events_lost.inc_by(count),
            View::Restart { missed } => self.families.events_lost.inc_by(missed),
            View::Resync {} => self.families.resyncs.inc(),
            View::GroupRemoved { group } => self.group_removed(&group),
            View::LsmHook { hook, state } => self.program_changed(&hook, &state),
            View::Other => {}
        }
    }

    /// Readiness of `/readyz`. A `ready` line sets it, a `shutdown` line clears it.
    /// An event whose pod could not be named (daemon::attribution).
    pub fn pod_attribution_failed(&self, reason: crate::pods::Failure) {
        self.families
            .pod_attribution_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The groups the policy reserves for passthrough, as the enforcer planned them; call again
    /// whenever the plan changes. A reserved group counts as viable only once a verdict said
    /// so: one the node does not have is not viable. `enforcement_active{mechanism=
    /// "reservation"}` is 1 only while this set is not empty, the agent is not in dry run, and
    /// no pin failed.
    pub fn set_reserved<I, S>(&self, groups: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut state = self.state();
        let reserved: BTreeSet<String> = groups.into_iter().map(Into::into).collect();
        // Remove only what left, never reset: a scrape in between would see no series at all.
        for gone in state.reserved.difference(&reserved) {
            let _ = self
                .families
                .reserved_group_viable
                .remove_label_values(&[gone]);
        }
        state.reserved = reserved;
        self.families
            .reserved_groups
            .set(gauge(state.reserved.len()));
        for group in &state.reserved {
            let viable = state.viable.get(group).copied().unwrap_or(false);
            self.set_gauge(&self.families.reserved_group_viable, &[group], viable);
        }
        self.update_enforcement(&state);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.families.registry.gather(), &mut buf) {
            warn!("metrics: cannot encode: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn capabilities(
        &self,
        kernel: &str,
        bpf_lsm: bool,
        dry_run: bool,
        programs: &BTreeMap<String, String>,
        enforcement: Option<&BTreeMap<String, String>>,
    ) {
        let f = &self.families;
        let mut state = self.state();
        // Series of a previous capabilities line that this one no longer has are removed, not
        // reset: a scrape in between must not see the families empty.
        let version = env!("CARGO_PKG_VERSION");
        if let Some(old) = state.kernel.replace(kernel.to_owned()) {
            if old != kernel {
                let _ = f.build_info.remove_label_values(&[version, &old]);
            }
        }
        self.set_gauge(&f.build_info, &[version, kernel], true);
        f.dry_run.set(i64::from(dry_run));
        let now: BTreeSet<String> = programs.keys().cloned().collect();
        for gone in state.programs.difference(&now) {
            for s in PROGRAM_STATUSES {
                let _ = f.program_status.remove_label_values(&[gone, s]);
            }
        }
        state.programs = now;
        let mut attached = 0;
        let mut lsm_attached = false;
        state.statuses.clear();
        for (program, report) in programs {
            let status = view::program_status(report);
            state.statuses.insert(program.clone(), status);
            if status == "attached" {
                attached += 1;
            }
            if status == "attached" || status == "standby" {
                lsm_attached |= view::is_lsm_program(program);
            }
            for s in PROGRAM_STATUSES {
                self.set_gauge(&f.program_status, &[program, s], s == status);
            }
        }
        f.programs_attached.set(gauge(attached));
        state.dry_run = dry_run;
        // The agent's own word per mechanism (`active`, `dry_run`, `unavailable: why`) when the
        // line has it; else what the line implies. Either way bpf_lsm must say `bpf` is an
        // active LSM: without it an attached LSM program never runs (DESIGN.md section 2).
        let said =
            |mechanism: &str| enforcement.map(|e| e.get(mechanism).is_some_and(|s| s == "active"));
        state.lsm_active = said("lsm").unwrap_or(lsm_attached) && bpf_lsm && !dry_run;
        state.reservation_mode_active = said("reservation").unwrap_or(true) && !dry_run;
        self.update_enforcement(&state);
    }

    fn event(&self, ev: &view::EventView) {
        let f = &self.families;
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| UNKNOWN.to_owned());
        let result = or_unknown(&ev.result);
        match ev.kind.as_str() {
            "bind" | "unbind" => {
                self.inc(
                    &f.bind_events,
                    &[&or_unknown(&ev.driver), &ev.kind, &result],
                );
            }
            "refusal" => self.inc(
                &f.kernel_refusals,
                &[
                    &or_unknown(&ev.group),
                    &or_unknown(&ev.device),
                    &or_unknown(&ev.driver),
                    &or_unknown(&ev.errno),
                ],
            ),
            "claim" => self.inc(&f.claims, &[&or_unknown(&ev.scope), &result]),
            "vfio_open" => self.inc(&f.vfio_opens, &[&or_unknown(&ev.group), &result]),
            kind @ ("pin" | "pin_restored" | "rebind" | "reservation_blocked") => {
                let action = ev.action.as_deref().unwrap_or(UNKNOWN);
                if !RESERVATION_ACTIONS.contains(&action) {
                    warn!("metrics: {kind} event with unknown action {action:?} not counted");
                    return;
                }
                self.inc(&f.reservation_actions, &[kind, action, &result]);
                if kind != "reservation_blocked" {
                    let device = or_unknown(&ev.device);
                    let mut state = self.state();
                    if result == "ok" {
                        state.failed_pins.remove(&device);
                    } else {
                        state.failed_pins.insert(device);
                    }
                    self.update_enforcement(&state);
                }
            }
            "veto" => {
                let action = match &ev.action {
                    Some(a) => a.clone(),
                    // A veto without an action is what the mode makes of it.
                    None if self.state().dry_run => "would_veto".to_owned(),
                    None => "vetoed".to_owned(),
                };
                if !ACTIONS.contains(&action.as_str()) {
                    warn!("metrics: veto event with unknown action {action:?} not counted");
                    return;
                }
                self.inc(&f.violations, &[&or_unknown(&ev.rule), &action]);
            }
            _ => {}
        }
    }

    fn verdict(&self, group: &str, owner: &str, viable: bool) {
        let f = &self.families;
        for o in OWNERS {
            self.set_gauge(&f.group_owner, &[group, o], o == owner);
        }
        if !OWNERS.contains(&owner) {
            warn!("metrics: verdict for group {group} with unknown owner {owner:?}");
            self.set_gauge(&f.group_owner, &[group, owner], true);
        }
        self.set_gauge(&f.group_viable, &[group], viable);
        let mut state = self.state();
        state.viable.insert(group.to_owned(), viable);
        if state.reserved.contains(group) {
            self.set_gauge(&f.reserved_group_viable, &[group], viable);
        }
    }

    /// An LSM hook was attached (it has something to veto) or put back on standby.
    fn program_changed(&self, program: &str, report: &str) {
        let f = &self.families;
        let status = view::program_status(report);
        for s in PROGRAM_STATUSES {
            self.set_gauge(&f.program_status, &[program, s], s == status);
        }
        let mut state = self.state();
        state.statuses.insert(program.to_owned(), status);
        let attached = state
            .statuses
            .values()
            .filter(|s| **s == "attached")
            .count();
        f.programs_attached.set(gauge(attached));
    }

    /// A group left the node (hot-unplug): its series go with it.
    fn group_removed(&self, group: &str) {
        let f = &self.families;
        for o in OWNERS {
            let _ = f.group_owner.remove_label_values(&[group, o]);
        }
        let _ = f.group_viable.remove_label_values(&[group]);
        self.state().viable.remove(group);
    }

    fn update_enforcement(&self, state: &State) {
        let lsm = state.lsm_active && !state.dry_run;
        let reservation = state.reservation_mode_active
            && !state.dry_run
            && !state.reserved.is_empty()
            && state.failed_pins.is_empty();
        let f = &self.families;
        self.set_gauge(&f.enforcement_active, &["lsm"], lsm);
        self.set_gauge(&f.enforcement_active, &["reservation"], reservation);
    }

    fn inc(&self, vec: &prometheus::IntCounterVec, labels: &[&str]) {
        match vec.get_metric_with_label_values(labels) {
            Ok(c) => c.inc(),
            Err(e) => warn!("metrics: {e}"),
        }
    }

    fn set_gauge(&self, vec: &prometheus::IntGaugeVec, labels: &[&str], on: bool) {
        match vec.get_metric_with_label_values(labels) {
            Ok(g) => g.set(i64::from(on)),
            Err(e) => warn!("metrics: {e}"),
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
