//! `event` lines: one per kernel record, and one per reservation action of the agent.
use serde::{Deserialize, Serialize};

use crate::text_enum::wire_enum;

wire_enum! {
    /// What happened (docs/events.md, "Event kinds").
    pub enum Kind {
        /// `really_probe` returned; `result` ok when the driver bound.
        Bind = "bind",
        /// The kernel refused a driver's DMA use of a device (5.19+).
        Refusal = "refusal",
        /// A bound driver is being released from a device.
        Unbind = "unbind",
        /// User-space DMA ownership of a group or (iommufd) a device taken ...
        Claim = "claim",
        /// ... and given back.
        Release = "release",
        DeviceAdded = "device_added",
        DeviceRemoved = "device_removed",
        /// The agent put a policy file in force (at start, and when the file changed): `digest`.
        PolicyApplied = "policy_applied",
        /// A changed policy file was invalid and the old policy stays: `line`, `column`, `error`.
        PolicyRejected = "policy_rejected",
        /// `/dev/vfio/N` or a VFIO cdev opened.
        VfioOpen = "vfio_open",
        /// The last reference to a VFIO group or cdev file went away.
        VfioRelease = "vfio_release",
        /// A bind stopped before `really_probe` by a pinned `driver_override`.
        PinRefused = "pin_refused",
        /// A task other than the agent stored a device's `driver_override`.
        DriverOverrideWrite = "driver_override_write",
        /// An LSM hook refused (or, dry-run, would have refused) an operation.
        Veto = "veto",
        /// The agent wrote a reservation's `driver_override`.
        Pin = "pin",
        /// The agent wrote a pin again after it changed behind its back.
        PinRestored = "pin_restored",
        /// The agent moved a reserved device off its driver and probed it again.
        Rebind = "rebind",
        /// A reserved device sits on a driver the policy does not allow moving it from.
        ReservationBlocked = "reservation_blocked",
        /// A `[[reserve]]` entry of the policy in force selects nothing on this node (a group,
        /// device, id, class or slot it does not have): a warning, said once per entry while
        /// it stays unmatched; `path` and `line` name the entry, `error` says which.
        ReservationUnmatched = "reservation_unmatched",
        /// A step of giving a device of an idle group back to the host: its user driver let
        /// go of it, its `driver_override` was cleared, or a host driver bound it.
        Handback = "handback",
    }
}

impl Kind {
    /// The agent's own reservation actions (`reservation_actions_total{kind}`).
    pub const RESERVATION: [Kind; 4] = [
        Kind::Pin,
        Kind::PinRestored,
        Kind::Rebind,
        Kind::ReservationBlocked,
    ];
}

wire_enum! {
    /// Whether the operation an event reports succeeded.
    pub enum Outcome {
        Ok = "ok",
        Error = "error",
    }
}

impl Outcome {
    pub fn of(ok: bool) -> Self {
        if ok {
            Outcome::Ok
        } else {
            Outcome::Error
        }
    }
}

wire_enum! {
    /// What a claim or release covers.
    pub enum Scope {
        Group = "group",
        /// One device (iommufd's per-device claim).
        Device = "device",
    }
}

wire_enum! {
    /// The rule behind a veto or an agent action.
    pub enum Rule {
        ProtectedDriverOverride = "protected_driver_override",
        ProtectedRemove = "protected_remove",
        ProtectedBind = "protected_bind",
        ProtectedUnbind = "protected_unbind",
        ProtectedNewId = "protected_new_id",
        ProtectedDriversProbe = "protected_drivers_probe",
        ProtectedRemoveId = "protected_remove_id",
        ProtectedReset = "protected_reset",
        ProtectedResetSubordinate = "protected_reset_subordinate",
        ProtectedSlotPower = "protected_slot_power",
        ProtectedProbe = "protected_probe",
        /// Config space of a device in a protected group or of a bridge above one.
        ProtectedConfig = "protected_config",
        /// A BAR or ROM of such a device written or mapped writable.
        ProtectedResource = "protected_resource",
        /// The pins that hold the protection state removed, renamed or unmounted.
        ProtectedPins = "protected_pins",
        VfioOpenNotViable = "vfio_open_not_viable",
        /// A VFIO open that would put a group in use while a writable control-file descriptor
        /// that only the write-time check can judge is open and the check is not armed yet
        /// (EAGAIN: the agent arms it).
        VfioOpenUnarmed = "vfio_open_unarmed",
        /// A record whose rule bits this agent does not know (a newer eBPF object).
        Unknown = "unknown",
        /// The agent's reservation actions.
        Reservation = "reservation",
    }
}

impl Rule {
    /// The rules the hooks veto by (docs/events.md; the `violations_total{rule}` label values
    /// exported from the start). drivers_probe and remove_id are no longer vetoed: their
    /// rules stay spelled only for records of an older eBPF object.
    pub const VETOES: [Rule; 14] = [
        Rule::ProtectedDriverOverride,
        Rule::ProtectedRemove,
        Rule::ProtectedBind,
        Rule::ProtectedUnbind,
        Rule::ProtectedNewId,
        Rule::ProtectedReset,
        Rule::ProtectedResetSubordinate,
        Rule::ProtectedSlotPower,
        Rule::ProtectedConfig,
        Rule::ProtectedResource,
        Rule::ProtectedPins,
        Rule::ProtectedProbe,
        Rule::VfioOpenNotViable,
        Rule::VfioOpenUnarmed,
    ];
}

wire_enum! {
    /// What the agent or a hook did.
    pub enum Action {
        /// Vetoes: refused.
        Vetoed = "vetoed",
        /// Vetoes in dry-run: would have refused.
        WouldVeto = "would_veto",
        /// Vetoes: let through (kept as a label value of `violations_total`).
        Allowed = "allowed",
        Pinned = "pinned",
        Rebound = "rebound",
        WouldPin = "would_pin",
        WouldRebind = "would_rebind",
        /// `reservation_blocked`: reported, nothing done.
        Report = "report",
    }
}

impl Action {
    /// The actions of a veto (`violations_total{action}`).
    pub const VETO: [Action; 3] = [Action::Vetoed, Action::WouldVeto, Action::Allowed];

    /// The actions each reservation kind may take (`reservation_actions_total{kind,action}`).
    pub fn of_reservation(kind: Kind) -> &'static [Action] {
        match kind {
            Kind::Pin => &[Action::Pinned, Action::WouldPin],
            Kind::PinRestored => &[Action::Pinned],
            Kind::Rebind => &[Action::Rebound, Action::WouldRebind],
            Kind::ReservationBlocked => &[Action::Report],
            _ => &[],
        }
    }
}

wire_enum! {
    /// What else a veto's hook knew.
    pub enum Why {
        /// The target is a bridge, port or slot above a protected group.
        AboveProtectedGroup = "above_protected_group",
        /// Refused at open.
        OpenedForWriting = "opened_for_writing",
        /// io_uring, a worker, task work or another fd: the registers did not describe this
        /// write.
        NotThisWritesRegisters = "not_this_writes_registers",
        TrustedWriterTraced = "trusted_writer_traced",
        /// Refused until the write-time check is armed (-EAGAIN: try again).
        WriteCheckNotArmed = "write_check_not_armed",
    }
}

/// A kernel event or an agent action, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: Kind,
    pub device: Option<String>,
    pub driver: Option<String>,
    pub group: Option<String>,
    pub ret: i32,
    /// `EBUSY`, ... (the name of `-ret`, or of the agent's own write's error).
    pub errno: Option<String>,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Vetoes and reservations: the rule that decided and what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Vetoes: the hook could not read the written data and failed closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_closed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<Why>,
    /// Reservations: the driver a member sits on instead of the intended one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    /// `policy_applied`: the SHA-256 (hex) of the policy file's bytes now in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `policy_rejected`: where in the file (1-based; column in characters), when the file was
    /// read and its text is at fault, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The pod (`metadata.uid`) and container (runtime id) of `cgroup_id`, from kubelet's
    /// cgroup layout; `null` outside a pod or when the cgroup could not be found.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// The pod a device plugin allocated the event's device (or, for a group, a member) to, from
    /// the kubelet's pod-resources socket (`--pod-resources-socket`); left out when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_to: Option<Allocation>,
}

/// What an event carries beyond the fields every event has, by kind: only that kind's fields
/// (docs/events.md). [`Event::of`] spreads it into the flat wire form, whose keys and their
/// order stay as [`Event`] declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Bind,
    Refusal,
    Unbind,
    DeviceAdded,
    DeviceRemoved,
    PinRefused,
    DriverOverrideWrite,
    Handback,
    Claim {
        scope: Scope,
    },
    Release {
        scope: Scope,
    },
    VfioOpen {
        path: Option<String>,
    },
    VfioRelease {
        path: Option<String>,
    },
    Veto {
        /// The VFIO node of a refused open.
        path: Option<String>,
        rule: Rule,
        action: Action,
        fail_closed: bool,
        why: Vec<Why>,
    },
    /// `pin`, `pin_restored`, `rebind` or `reservation_blocked` ([`Kind::RESERVATION`]).
    Reservation {
        kind: Kind,
        action: Action,
        bound_to: Option<String>,
    },
    PolicyApplied {
        path: Option<String>,
        digest: String,
    },
    PolicyRejected {
        path: Option<String>,
        line: Option<u32>,
        column: Option<u32>,
        error: String,
    },
    ReservationUnmatched {
        path: Option<String>,
        line: Option<u32>,
        error: String,
    },
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Bind => Kind::Bind,
            Body::Refusal => Kind::Refusal,
            Body::Unbind => Kind::Unbind,
            Body::DeviceAdded => Kind::DeviceAdded,
            Body::DeviceRemoved => Kind::DeviceRemoved,
            Body::PinRefused => Kind::PinRefused,
            Body::DriverOverrideWrite => Kind::DriverOverrideWrite,
            Body::Handback => Kind::Handback,
            Body::Claim { .. } => Kind::Claim,
            Body::Release { .. } => Kind::Release,
            Body::VfioOpen { .. } => Kind::VfioOpen,
            Body::VfioRelease { .. } => Kind::VfioRelease,
            Body::Veto { .. } => Kind::Veto,
            Body::Reservation { kind, .. } => *kind,
            Body::PolicyApplied { .. } => Kind::PolicyApplied,
            Body::PolicyRejected { .. } => Kind::PolicyRejected,
            Body::ReservationUnmatched { .. } => Kind::ReservationUnmatched,
        }
    }
}

/// A device plugin's allocation of a PCI device, as the kubelet's pod-resources `List` says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The extended resource name the device plugin registered: `nvidia.com/GH100_H100`.
    pub resource: String,
}

impl Event {
    /// An event with `body`'s kind and fields; the builders fill in the fields every event
    /// has (device, driver, group, ret, errno, process, pod).
    pub fn of(body: Body, result: Outcome) -> Self {
        let mut e = Event::new(body.kind(), result);
        match body {
            Body::Claim { scope } | Body::Release { scope } => e.scope = Some(scope),
            Body::VfioOpen { path } | Body::VfioRelease { path } => e.path = path,
            Body::Veto {
                path,
                rule,
                action,
                fail_closed,
                why,
            } => {
                (e.path, e.rule, e.action) = (path, Some(rule), Some(action));
                (e.fail_closed, e.why) = (fail_closed, why);
            }
            Body::Reservation {
                action, bound_to, ..
            } => {
                (e.rule, e.action, e.bound_to) = (Some(Rule::Reservation), Some(action), bound_to);
            }
            Body::PolicyApplied { path, digest } => (e.path, e.digest) = (path, Some(digest)),
            Body::PolicyRejected {
                path,
                line,
                column,
                error,
            } => (e.path, e.line, e.column, e.error) = (path, line, column, Some(error)),
            Body::ReservationUnmatched { path, line, error } => {
                (e.path, e.line, e.error) = (path, line, Some(error));
            }
            Body::Bind
            | Body::Refusal
            | Body::Unbind
            | Body::DeviceAdded
            | Body::DeviceRemoved
            | Body::PinRefused
            | Body::DriverOverrideWrite
            | Body::Handback => {}
        }
        e
    }

    /// An event of `kind` with nothing else known yet: the builders fill in the rest.
    pub fn new(kind: Kind, result: Outcome) -> Self {
        Event {
            kind,
            device: None,
            driver: None,
            group: None,
            ret: 0,
            errno: None,
            result,
            scope: None,
            path: None,
            rule: None,
            action: None,
            fail_closed: false,
            why: Vec::new(),
            bound_to: None,
            digest: None,
            line: None,
            column: None,
            error: None,
            pid: 0,
            tgid: 0,
            comm: String::new(),
            cgroup_id: 0,
            pod_uid: None,
            container_id: None,
            allocated_to: None,
        }
    }
}
