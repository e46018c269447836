//! Prometheus metrics and the HTTP endpoint that serves them (docs/design.md section 4).
//!
//! Every metric is derived from the agent's own output lines ([`Metrics::observe`]), typed
//! (the schema crate's `Line`, the same values stdout prints as JSON), so the numbers a
//! dashboard shows and the JSON events a script reads come from one source. Which line feeds
//! which metric:
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
//! | `event` `policy_applied` (field `digest`) / `policy_rejected` | `policy_info` / `policy_reload_failures_total` |
//!
//! Counters whose label values are known in advance (`violations_total` by rule and action,
//! `reservation_actions_total` by kind, action and result, `claims_total` by scope and result,
//! and the unlabelled ones) are exported at 0 from the start, so an alert's `increase()` sees
//! the first event.
//!
//! `violations_total`, `bind_events_total`, `claims_total` and `vfio_opens_total` also carry
//! `namespace` and `pod`: the pod a device plugin allocated the event's device to
//! (`allocated_to`, from the kubelet's pod-resources socket), empty when the agent does not know
//! it. Bounded: the first [`POD_SERIES`] pods get their own label values, every later one is
//! counted under `namespace="other", pod="other"`, so a node that churns pods cannot grow the
//! series without end.
//!
//! What no line says (the set of groups the policy reserves, how many reservations match
//! nothing) comes from [`Metrics::set_reserved`] and [`Metrics::set_unmatched_reservations`].
mod families;
mod http;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use iommu_enforcer_schema::{
    Action, Event, HookState, Kind, Line, Mechanism, MechanismState, Outcome, Owner, ProgramState,
    Rule, Scope,
};
use log::warn;
use prometheus::{Encoder, TextEncoder};

use self::families::Families;
pub use self::{
    families::{HTTP_REFUSALS, PREFIX, READ_FAILURES},
    http::{parse_addr, serve, serve_on_thread, Limits, MetricsServer},
};

/// How many distinct pods get their own `namespace`/`pod` label values; later ones are `other`.
pub const POD_SERIES: usize = 64;
/// The label value of the pods past [`POD_SERIES`].
pub const OTHER: &str = "other";

/// Content type of the text exposition format served on `/metrics`.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Program statuses, the values of `program_status{status}`.
/// `standby`: an LSM hook loaded and verified, attached only while there is something to veto
/// (the write-time check). `not_needed`: another program does its work on this kernel.
pub const PROGRAM_STATUSES: [&str; 5] = ["attached", "standby", "not_needed", "absent", "failed"];

/// The `program_status{status}` of a program state, without its free-text reason (a label value
/// comes from a small set). Attached without a pinned link is still attached.
fn status_label(state: &ProgramState) -> &'static str {
    match state {
        ProgramState::Attached | ProgramState::AttachedUnpinned => "attached",
        ProgramState::Absent(_) => "absent",
        ProgramState::Failed(_) => "failed",
        ProgramState::Standby => "standby",
        ProgramState::NotNeeded(_) => "not_needed",
    }
}

fn hook_label(state: HookState) -> &'static str {
    match state {
        HookState::Attached => "attached",
        HookState::Standby => "standby",
    }
}

/// LSM hooks the agent's veto programs attach to (ebpf/src/lsm_hooks.rs). The capability
/// report keys a program by its target, and an LSM program's target is its hook.
const LSM_HOOKS: [&str; 3] = ["kernfs_init_security", "file_open", "file_permission"];

/// Whether a capability-report key is an LSM program: one of [`LSM_HOOKS`], or spelled
/// `lsm/<hook>` as its ELF section.
fn is_lsm_program(name: &str) -> bool {
    LSM_HOOKS.contains(&name) || name.starts_with("lsm/")
}

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
    /// The digest of the policy in force, per the last `policy_applied` event.
    policy_digest: Option<String>,
    /// The pods with label values of their own (at most [`POD_SERIES`]).
    pods: BTreeSet<(String, String)>,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        Ok(Metrics {
            families: Families::new()?,
            ready: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        })
    }

    /// Updates the metrics from one line the agent prints.
    pub fn observe(&self, line: &Line) {
        match line {
            Line::Capabilities {
                kernel,
                bpf_lsm,
                dry_run,
                programs,
                enforcement,
                ..
            } => self.capabilities(kernel, *bpf_lsm, *dry_run, programs, enforcement),
            Line::Ready { .. } => self.set_ready(true),
            Line::Shutdown { .. } => self.set_ready(false),
            Line::Event(ev) => self.event(ev),
            Line::Verdict {
                group,
                owner,
                viable,
                ..
            } => self.verdict(group, *owner, *viable),
            Line::Lost { count } => self.families.events_lost.inc_by(*count),
            Line::Restart { missed, .. } => self.families.events_lost.inc_by(*missed),
            Line::Resync { .. } => self.families.resyncs.inc(),
            Line::GroupRemoved { group } => self.group_removed(group),
            Line::LsmHook { hook, state } => self.program_changed(hook, hook_label(*state)),
            Line::Stalled { .. } => {}
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

    /// A pod-resources `List` failed (daemon::attribution).
    pub fn pod_resources_failed(&self, reason: &str) {
        self.families
            .pod_resources_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// What the last pod-resources `List` gave: PCI devices allocated, ids that are no address.
    pub fn set_pod_resources(&self, devices: usize, ignored_ids: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.families.pod_resources_devices.set(gauge(devices));
        self.families
            .pod_resources_ignored_ids
            .set(gauge(ignored_ids));
    }

    /// A read of the agent's own failed and its last known value was kept, or a pin write
    /// failed and is retried (`what`: [`crate::enforce::facts::Fact`]).
    pub fn read_failed(&self, what: &str) {
        self.families.read_failures.with_label_values(&[what]).inc();
    }

    /// Output lines dropped because the output queue was full (daemon::output).
    pub fn output_lines_dropped(&self, n: u64) {
        self.families.output_lines_dropped.inc_by(n);
    }

    /// The metrics endpoint closed a connection itself (`reason`: one of
    /// [`families::HTTP_REFUSALS`]).
    pub fn http_connection_refused(&self, reason: &str) {
        self.families
            .http_connections_refused
            .with_label_values(&[reason])
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

    /// How many `[[reserve]]` entries of the policy in force select nothing on this node.
    pub fn set_unmatched_reservations(&self, n: usize) {
        self.families.unmatched_reservations.set(gauge(n));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut gathered = self.families.registry.gather();
        // An unknown pod is no `namespace`/`pod` label at all (Prometheus reads an empty value
        // as absent; the text says so too).
        for mf in &mut gathered {
            for m in mf.mut_metric().iter_mut() {
                let labels = m.take_label();
                m.set_label(
                    labels
                        .into_iter()
                        .filter(|l| {
                            !(l.value().is_empty() && ["namespace", "pod"].contains(&l.name()))
                        })
                        .collect(),
                );
            }
        }
        if let Err(e) = TextEncoder::new().encode(&gathered, &mut buf) {
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
        programs: &BTreeMap<String, ProgramState>,
        enforcement: &BTreeMap<Mechanism, MechanismState>,
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
            let status = status_label(report);
            state.statuses.insert(program.clone(), status);
            if status == "attached" {
                attached += 1;
            }
            if status == "attached" || status == "standby" {
                lsm_attached |= is_lsm_program(program);
            }
            for s in PROGRAM_STATUSES {
                self.set_gauge(&f.program_status, &[program, s], s == status);
            }
        }
        f.programs_attached.set(gauge(attached));
        state.dry_run = dry_run;
        // The agent's own word per mechanism when the line has it; else what the line implies.
        // Either way bpf_lsm must say `bpf` is an active LSM: without it an attached LSM
        // program never runs (docs/design.md section 2).
        let said = |m: Mechanism| enforcement.get(&m).map(|s| *s == MechanismState::Active);
        state.lsm_active = said(Mechanism::Lsm).unwrap_or(lsm_attached) && bpf_lsm && !dry_run;
        state.reservation_mode_active = said(Mechanism::Reservation).unwrap_or(true) && !dry_run;
        self.update_enforcement(&state);
    }

    /// The `namespace` and `pod` label values of `ev`: its allocation's, `other` past the cap,
    /// empty when unknown.
    fn pod_labels(&self, ev: &Event) -> (String, String) {
        let Some(a) = &ev.allocated_to else {
            return (String::new(), String::new());
        };
        let key = (a.namespace.clone(), a.pod.clone());
        let mut state = self.state();
        if state.pods.contains(&key) {
            return key;
        }
        if state.pods.len() < POD_SERIES {
            state.pods.insert(key.clone());
            return key;
        }
        (OTHER.to_owned(), OTHER.to_owned())
    }

    fn event(&self, ev: &Event) {
        let f = &self.families;
        let or_unknown = |v: &Option<String>| v.as_deref().unwrap_or(UNKNOWN).to_owned();
        let result = ev.result.as_str();
        let (ns, pod) = match ev.kind {
            Kind::Bind | Kind::Unbind | Kind::Claim | Kind::VfioOpen | Kind::Veto => {
                self.pod_labels(ev)
            }
            _ => (String::new(), String::new()),
        };
        let (ns, pod) = (ns.as_str(), pod.as_str());
        match ev.kind {
            Kind::Bind | Kind::Unbind => {
                self.inc(
                    &f.bind_events,
                    &[&or_unknown(&ev.driver), ev.kind.as_str(), result, ns, pod],
                );
            }
            Kind::Refusal => self.inc(
                &f.kernel_refusals,
                &[
                    &or_unknown(&ev.group),
                    &or_unknown(&ev.device),
                    &or_unknown(&ev.driver),
                    &or_unknown(&ev.errno),
                ],
            ),
            Kind::Claim => self.inc(
                &f.claims,
                &[ev.scope.map_or(UNKNOWN, Scope::as_str), result, ns, pod],
            ),
            Kind::VfioOpen => self.inc(&f.vfio_opens, &[&or_unknown(&ev.group), result, ns, pod]),
            Kind::Pin | Kind::PinRestored | Kind::Rebind | Kind::ReservationBlocked => {
                let Some(action) = ev
                    .action
                    .filter(|a| Action::of_reservation(ev.kind).contains(a))
                else {
                    warn!(
                        "metrics: {} event with action {:?} not counted",
                        ev.kind, ev.action
                    );
                    return;
                };
                self.inc(
                    &f.reservation_actions,
                    &[ev.kind.as_str(), action.as_str(), result],
                );
                if ev.kind != Kind::ReservationBlocked {
                    let device = or_unknown(&ev.device);
                    let mut state = self.state();
                    if ev.result == Outcome::Ok {
                        state.failed_pins.remove(&device);
                    } else {
                        state.failed_pins.insert(device);
                    }
                    self.update_enforcement(&state);
                }
            }
            Kind::Veto => {
                let action = match ev.action {
                    Some(a) if Action::VETO.contains(&a) => a,
                    Some(a) => {
                        warn!("metrics: veto event with action {a} not counted");
                        return;
                    }
                    // A veto without an action is what the mode makes of it.
                    None if self.state().dry_run => Action::WouldVeto,
                    None => Action::Vetoed,
                };
                let rule = ev.rule.map_or(UNKNOWN, Rule::as_str);
                self.inc(&f.violations, &[rule, action.as_str(), ns, pod]);
            }
            Kind::PolicyApplied => self.policy_applied(ev.digest.as_deref().unwrap_or(UNKNOWN)),
            Kind::PolicyRejected => f.policy_reload_failures.inc(),
            // Kinds without a counter (release, device_added, vfio_release, handback, ...): a
            // new kind is counted only when it gets a counter of its own here.
            _ => {}
        }
    }

    fn verdict(&self, group: &str, owner: Owner, viable: bool) {
        let f = &self.families;
        for o in Owner::ALL {
            self.set_gauge(&f.group_owner, &[group, o.as_str()], o == owner);
        }
        self.set_gauge(&f.group_viable, &[group], viable);
        let mut state = self.state();
        state.viable.insert(group.to_owned(), viable);
        if state.reserved.contains(group) {
            self.set_gauge(&f.reserved_group_viable, &[group], viable);
        }
    }

    /// A policy is in force: its digest is the one `policy_info` series (the old one is
    /// removed after the new one is set, so a scrape never sees none).
    fn policy_applied(&self, digest: &str) {
        let f = &self.families;
        self.set_gauge(&f.policy_info, &[digest], true);
        let mut state = self.state();
        if let Some(old) = state.policy_digest.replace(digest.to_owned()) {
            if old != digest {
                let _ = f.policy_info.remove_label_values(&[&old]);
            }
        }
    }

    /// An LSM hook was attached (it has something to veto) or put back on standby.
    fn program_changed(&self, program: &str, status: &'static str) {
        let f = &self.families;
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
        for o in Owner::ALL {
            let _ = f.group_owner.remove_label_values(&[group, o.as_str()]);
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
        self.set_gauge(&f.enforcement_active, &[Mechanism::Lsm.as_str()], lsm);
        let reservation_label = Mechanism::Reservation.as_str();
        self.set_gauge(&f.enforcement_active, &[reservation_label], reservation);
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
