//! Every metric the agent exports, by name, with its help text and labels (docs/design.md section 4).
//! Labels are bounded by the node's hardware and the policy: group, device address, driver,
//! errno, owner, program. Never pid, comm or cgroup id: those live in the JSON events.
use iommu_enforcer_schema::{Action, Kind, Mechanism, Outcome, Rule, Scope};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Reasons the metrics endpoint closes a connection itself, the values of
/// `http_connections_refused_total{reason}`.
pub const HTTP_REFUSALS: [&str; 3] = ["over_cap", "header_timeout", "write_timeout"];

/// What a failed read was for, the values of `read_failures_total{what}` (the enforcer's
/// `enforce::facts::Fact`, spelled out here so that metrics does not depend on enforce).
pub const READ_FAILURES: [&str; 8] = [
    "slots",
    "drivers",
    "vfio_nodes",
    "vfio_cdevs",
    "proc_devices",
    "device_driver",
    "sysfs_scan",
    "pin_write",
];

/// Prefix of every metric name.
pub const PREFIX: &str = "iommu_enforcer";

/// The registry and the metrics in it. Updated only by [`super::Metrics`].
pub(super) struct Families {
    pub registry: Registry,
    pub violations: IntCounterVec,
    pub reservation_actions: IntCounterVec,
    pub kernel_refusals: IntCounterVec,
    pub bind_events: IntCounterVec,
    pub claims: IntCounterVec,
    pub vfio_opens: IntCounterVec,
    pub group_owner: IntGaugeVec,
    pub group_viable: IntGaugeVec,
    pub reserved_groups: IntGauge,
    pub reserved_group_viable: IntGaugeVec,
    pub unmatched_reservations: IntGauge,
    pub events_lost: IntCounter,
    pub resyncs: IntCounter,
    pub enforcement_active: IntGaugeVec,
    pub programs_attached: IntGauge,
    pub program_status: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub dry_run: IntGauge,
    pub pod_attribution_failures: IntCounterVec,
    pub pod_resources_failures: IntCounterVec,
    pub pod_resources_devices: IntGauge,
    pub pod_resources_ignored_ids: IntGauge,
    pub policy_reload_failures: IntCounter,
    pub policy_info: IntGaugeVec,
    pub read_failures: IntCounterVec,
    pub output_lines_dropped: IntCounter,
    pub http_connections_refused: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

impl Families {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(opts(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(opts(name, help))?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(opts(name, help))?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let families = Families {
            violations: counter_vec(
                "violations_total",
                "Policy violations by rule and what the agent did: vetoed, would_veto (dry run) or allowed.",
                &["rule", "action", "namespace", "pod"],
            )?,
            reservation_actions: counter_vec(
                "reservation_actions_total",
                "Reservation decisions on group members: pin, rebind (pinned, rebound, would_pin, would_rebind) or reservation_blocked (report), by result.",
                &["kind", "action", "result"],
            )?,
            kernel_refusals: counter_vec(
                "kernel_refusals_total",
                "The kernel refused a driver's DMA use of a device (iommu_device_use_default_domain failed, 5.19+).",
                &["group", "device", "driver", "errno"],
            )?,
            bind_events: counter_vec(
                "bind_events_total",
                "Driver bind attempts and unbinds seen by the probes, by driver and result.",
                &["driver", "kind", "result", "namespace", "pod"],
            )?,
            claims: counter_vec(
                "claims_total",
                "User-space DMA ownership claims of a group or a device (iommufd), by result.",
                &["scope", "result", "namespace", "pod"],
            )?,
            vfio_opens: counter_vec(
                "vfio_opens_total",
                "Opens of /dev/vfio/N or a VFIO device cdev, by group and result.",
                &["group", "result", "namespace", "pod"],
            )?,
            group_owner: gauge_vec(
                "group_owner",
                "1 for the group's current owner (kernel, user, none, conflict), 0 for the others.",
                &["group", "owner"],
            )?,
            group_viable: gauge_vec(
                "group_viable",
                "1 when every member of the group is unbound or on a driver_managed_dma driver.",
                &["group"],
            )?,
            reserved_groups: gauge(
                "reserved_groups",
                "Number of groups the policy reserves for passthrough.",
            )?,
            unmatched_reservations: gauge(
                "unmatched_reservations",
                "Number of [[reserve]] entries of the policy in force that select nothing on this node (a warning: one policy may serve many nodes; a typo or a missing device looks the same).",
            )?,
            reserved_group_viable: gauge_vec(
                "reserved_group_viable",
                "1 when a reserved group is viable; 0 when it is not or was not seen on this node.",
                &["group"],
            )?,
            events_lost: counter(
                "events_lost_total",
                "Kernel event records dropped before the agent read them (a sysfs resync follows).",
            )?,
            resyncs: counter(
                "resyncs_total",
                "Times the group map was re-read from sysfs.",
            )?,
            enforcement_active: gauge_vec(
                "enforcement_active",
                "1 when the mechanism really enforces: lsm (BPF LSM vetoes) or reservation (driver_override pins).",
                &["mechanism"],
            )?,
            programs_attached: gauge(
                "programs_attached",
                "Number of eBPF programs attached, from the capability report.",
            )?,
            program_status: gauge_vec(
                "program_status",
                "1 for each eBPF program's current status (attached, absent, failed), 0 for the others.",
                &["program", "status"],
            )?,
            build_info: gauge_vec(
                "build_info",
                "Always 1: the agent's version and the kernel release it runs on.",
                &["version", "kernel"],
            )?,
            dry_run: gauge(
                "dry_run",
                "1 when the agent runs with --dry-run: violations are counted as would_veto, nothing is denied.",
            )?,
            pod_attribution_failures: counter_vec(
                "pod_attribution_failures_total",
                "Events whose pod could not be named from their cgroup id, by reason: no_cgroup2 (none mounted at --cgroup-root), not_found (the cgroup was gone before the agent walked the tree), walk_limit, io.",
                &["reason"],
            )?,
            pod_resources_failures: counter_vec(
                "pod_resources_failures_total",
                "Calls to the kubelet's pod-resources List (--pod-resources-socket) that gave no answer, by reason: no_socket, connect, timeout (2 s), protocol (HTTP/2), grpc_status (not OK), decode (gRPC framing or protobuf).",
                &["reason"],
            )?,
            pod_resources_devices: gauge(
                "pod_resources_devices",
                "PCI devices the last pod-resources List said a device plugin allocated to a pod.",
            )?,
            pod_resources_ignored_ids: gauge(
                "pod_resources_ignored_device_ids",
                "Device ids of the last pod-resources List that are no PCI address (GPU UUIDs, ...): not joined to any event.",
            )?,
            policy_reload_failures: counter(
                "policy_reload_failures_total",
                "Changed policy files the agent rejected (invalid or unreadable): the policy in force before stays.",
            )?,
            policy_info: gauge_vec(
                "policy_info",
                "Always 1, one series: the SHA-256 (hex) of the policy file in force.",
                &["digest"],
            )?,
            read_failures: counter_vec(
                "read_failures_total",
                "Reads and writes of the agent's own that failed for a reason other than \"does not exist\" (EMFILE, EIO, a stall), by what was read: slots, drivers, vfio_nodes, vfio_cdevs, proc_devices, device_driver, sysfs_scan (the last known state was kept), pin_write (retried with backoff).",
                &["what"],
            )?,
            output_lines_dropped: counter(
                "output_lines_dropped_total",
                "Output lines (JSON events on stdout) dropped because the output queue was full: stdout was not read fast enough.",
            )?,
            http_connections_refused: counter_vec(
                "http_connections_refused_total",
                "Connections to the metrics endpoint closed by the agent, by reason: over_cap (a connection still sending its request was dropped for a new one), header_timeout, write_timeout (a client that did not read its response).",
                &["reason"],
            )?,
            registry,
        };
        families.start_at_zero()?;
        Ok(families)
    }

    /// Every series whose label values are known in advance exists from the start at 0, so the
    /// first event is an increase from 0 that increase() and the alerts see, not a series that
    /// appears at 1. Series labelled by group, device or driver cannot be known in advance: the
    /// alerts on those also fire when a series appears (dashboards/alerts.yaml).
    fn start_at_zero(&self) -> prometheus::Result<()> {
        for what in READ_FAILURES {
            self.read_failures.get_metric_with_label_values(&[what])?;
        }
        for reason in HTTP_REFUSALS {
            self.http_connections_refused
                .get_metric_with_label_values(&[reason])?;
        }
        for mechanism in Mechanism::ALL {
            self.enforcement_active
                .get_metric_with_label_values(&[mechanism.as_str()])?
                .set(0);
        }
        for rule in Rule::VETOES {
            for action in Action::VETO {
                self.violations.get_metric_with_label_values(&[
                    rule.as_str(),
                    action.as_str(),
                    "",
                    "",
                ])?;
            }
        }
        for kind in Kind::RESERVATION {
            for action in Action::of_reservation(kind) {
                for result in Outcome::ALL {
                    self.reservation_actions.get_metric_with_label_values(&[
                        kind.as_str(),
                        action.as_str(),
                        result.as_str(),
                    ])?;
                }
            }
        }
        for reason in crate::pods::Failure::ALL {
            self.pod_attribution_failures
                .get_metric_with_label_values(&[reason.as_str()])?;
        }
        for reason in crate::pods::resources::ListError::REASONS {
            self.pod_resources_failures
                .get_metric_with_label_values(&[reason])?;
        }
        for scope in Scope::ALL {
            for result in Outcome::ALL {
                self.claims.get_metric_with_label_values(&[
                    scope.as_str(),
                    result.as_str(),
                    "",
                    "",
                ])?;
            }
        }
        Ok(())
    }
}
