//! Decoding ring-buffer records, once, at the boundary: one [`Record`] variant per kind with
//! only the fields that kind carries, and the bits of `detail` spelled out. Nothing past this
//! module reads the raw record. Pure.
use iommu_enforcer_common::{
    override_written, veto, watched, Event, EventKind, COMM_LEN, GROUP_UNKNOWN, NAME_LEN,
};
use iommu_enforcer_schema::{Rule, Scope, Why};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than an event ({1} bytes)")]
    Short(usize, usize),
    #[error("record has unknown kind {0}")]
    UnknownKind(u32),
}

/// One kernel event, decoded: who caused it, when, and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    pub task: Task,
    pub ktime_ns: u64,
    pub record: Record,
}

/// The task a record was made in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    /// Thread id and thread-group id (the user-visible pid).
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup_id: u64,
}

/// The device and IOMMU group a record names; either may be unknown to the program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Kernel device name (`0000:01:00.1`).
    pub device: Option<String>,
    pub group: Option<u32>,
}

/// A character device number: (major, minor).
pub type Rdev = (u32, u32);

/// Which VFIO node a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfioNodeKind {
    /// `/dev/vfio/N`: a whole group.
    Group,
    /// `/dev/vfio/devices/vfioX`: one device (iommufd).
    Cdev,
}

/// What a record reports, by kind (common's [`EventKind`] documents each program).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `really_probe` returned `ret` (what means "bound" depends on the kernel release).
    Probe {
        target: Target,
        driver: Option<String>,
        ret: i32,
    },
    /// The kernel refused a driver's DMA use of a device (`iommu_device_use_default_domain`).
    DmaRefused {
        target: Target,
        driver: Option<String>,
        ret: i32,
    },
    /// A bound driver is being unbound from a device.
    Unbind {
        target: Target,
        driver: Option<String>,
    },
    /// User space claimed DMA ownership of a group or (iommufd) a device.
    Claim {
        scope: Scope,
        target: Target,
        ret: i32,
    },
    /// ... and gave it back.
    Release {
        scope: Scope,
        target: Target,
    },
    DeviceAdded {
        target: Target,
    },
    DeviceRemoved {
        target: Target,
    },
    /// A VFIO node opened; `rdev` is unknown when the program could not read it.
    VfioOpen {
        node: VfioNodeKind,
        rdev: Option<Rdev>,
        ret: i32,
    },
    /// The last reference to a VFIO node's file went away.
    VfioRelease {
        node: VfioNodeKind,
        rdev: Option<Rdev>,
    },
    /// A bind stopped by a pinned `driver_override`: `driver` is the refused driver.
    PinRefused {
        target: Target,
        driver: Option<String>,
        ret: i32,
    },
    /// A task other than the agent stored a device's `driver_override`.
    OverrideWritten {
        target: Target,
        /// The override as the kernel took the write: the bytes up to a newline; `None`
        /// clears it.
        value: Option<String>,
        ret: i32,
        /// The writer runs in a container the policy trusts, untraced.
        by_trusted_container: bool,
    },
    /// An LSM hook refused (or, dry-run, would have refused) an operation.
    Veto {
        target: Target,
        driver: Option<String>,
        /// The VFIO node of a refused open.
        rdev: Option<Rdev>,
        veto: Veto,
        ret: i32,
    },
    /// A module was loaded: absent kprobe targets may be there now.
    ModuleLoad,
    /// A writable descriptor only the write-time check can judge was counted while it was
    /// not armed: `wanted` asks the agent to arm it.
    WriteCheck {
        wanted: bool,
    },
}

/// A veto record's `detail`, spelled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Veto {
    /// What was watched, as the rule that refused it.
    pub rule: Rule,
    /// Refused; else (dry-run) it would have been.
    pub denied: bool,
    /// The hook could not read the written data and failed closed.
    pub fail_closed: bool,
    /// What else the hook knew.
    pub why: Vec<Why>,
}

impl Veto {
    fn from_detail(detail: u32) -> Self {
        let rule = match detail & veto::KIND_MASK {
            watched::DRIVER_OVERRIDE => Rule::ProtectedDriverOverride,
            watched::REMOVE => Rule::ProtectedRemove,
            watched::BIND => Rule::ProtectedBind,
            watched::UNBIND => Rule::ProtectedUnbind,
            watched::NEW_ID => Rule::ProtectedNewId,
            watched::DRIVERS_PROBE => Rule::ProtectedDriversProbe,
            watched::VFIO_GROUP | watched::VFIO_CDEV if detail & veto::NOT_ARMED != 0 => {
                Rule::VfioOpenUnarmed
            }
            watched::VFIO_GROUP | watched::VFIO_CDEV => Rule::VfioOpenNotViable,
            watched::RESET => Rule::ProtectedReset,
            watched::RESET_SUBORDINATE => Rule::ProtectedResetSubordinate,
            watched::SLOT_POWER => Rule::ProtectedSlotPower,
            watched::PROBE => Rule::ProtectedProbe,
            watched::REMOVE_ID => Rule::ProtectedRemoveId,
            watched::CONFIG => Rule::ProtectedConfig,
            watched::RESOURCE => Rule::ProtectedResource,
            watched::PINS => Rule::ProtectedPins,
            _ => Rule::Unknown,
        };
        Self {
            rule,
            denied: detail & veto::DENIED != 0,
            fail_closed: detail & veto::TARGET_UNKNOWN != 0,
            why: [
                (veto::ABOVE, Why::AboveProtectedGroup),
                (veto::AT_OPEN, Why::OpenedForWriting),
                (veto::NOT_THIS_WRITE, Why::NotThisWritesRegisters),
                (veto::TRACED, Why::TrustedWriterTraced),
                (veto::NOT_ARMED, Why::WriteCheckNotArmed),
            ]
            .into_iter()
            .filter(|(bit, _)| detail & bit != 0)
            .map(|(_, w)| w)
            .collect(),
        }
    }

    /// Refused only until the write-time check is armed (EAGAIN).
    pub fn until_armed(&self) -> bool {
        self.why.contains(&Why::WriteCheckNotArmed)
    }
}

pub fn decode(bytes: &[u8]) -> Result<KernelEvent, RecordError> {
    let size = std::mem::size_of::<Event>();
    if bytes.len() < size {
        return Err(RecordError::Short(bytes.len(), size));
    }
    // SAFETY: length checked; Event is plain old data, and read_unaligned needs no alignment.
    let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u32(ev.kind).ok_or(RecordError::UnknownKind(ev.kind))?;
    Ok(KernelEvent {
        task: Task {
            pid: ev.pid,
            tgid: ev.tgid,
            comm: c_string::<COMM_LEN>(&ev.comm),
            cgroup_id: ev.cgroup_id,
        },
        ktime_ns: ev.ktime_ns,
        record: record(kind, &ev),
    })
}

/// The fields `kind`'s programs fill (ebpf/src), typed.
fn record(kind: EventKind, ev: &Event) -> Record {
    let target = || Target {
        device: non_empty(c_string::<NAME_LEN>(&ev.device)),
        group: (ev.group != GROUP_UNKNOWN && ev.group >= 0).then_some(ev.group as u32),
    };
    let driver = || non_empty(c_string::<NAME_LEN>(&ev.driver));
    // Kernel-internal dev_t: major in the top 12 bits, minor in the low 20.
    let rdev = (ev.rdev != 0).then_some((ev.rdev >> 20, ev.rdev & 0xf_ffff));
    let ret = ev.ret;
    match kind {
        EventKind::Probe => Record::Probe {
            target: target(),
            driver: driver(),
            ret,
        },
        EventKind::UseDefaultDomain => Record::DmaRefused {
            target: target(),
            driver: driver(),
            ret,
        },
        EventKind::Unbind => Record::Unbind {
            target: target(),
            driver: driver(),
        },
        EventKind::GroupClaim | EventKind::DeviceClaim => Record::Claim {
            scope: scope_of(kind),
            target: target(),
            ret,
        },
        EventKind::GroupRelease | EventKind::DeviceRelease => Record::Release {
            scope: scope_of(kind),
            target: target(),
        },
        EventKind::DeviceAdded => Record::DeviceAdded { target: target() },
        EventKind::DeviceRemoved => Record::DeviceRemoved { target: target() },
        EventKind::VfioGroupOpen | EventKind::VfioCdevOpen => Record::VfioOpen {
            node: node_of(kind),
            rdev,
            ret,
        },
        EventKind::VfioGroupRelease | EventKind::VfioCdevRelease => Record::VfioRelease {
            node: node_of(kind),
            rdev,
        },
        EventKind::PinRefused => Record::PinRefused {
            target: target(),
            driver: driver(),
            ret,
        },
        EventKind::OverrideWritten => Record::OverrideWritten {
            target: target(),
            value: written_override(driver().as_deref()),
            ret,
            by_trusted_container: ev.detail & override_written::TRUSTED_CONTAINER != 0,
        },
        EventKind::Veto => Record::Veto {
            target: target(),
            driver: driver(),
            rdev,
            veto: Veto::from_detail(ev.detail),
            ret,
        },
        EventKind::ModuleLoad => Record::ModuleLoad,
        EventKind::WriteCheck => Record::WriteCheck {
            wanted: ev.detail != 0,
        },
    }
}

/// What a `driver_override` write sets, as the kernel takes it: the written bytes up to a
/// newline; nothing (or a lone newline) clears the override.
fn written_override(written: Option<&str>) -> Option<String> {
    let value = written?.split('\n').next().unwrap_or("");
    (!value.is_empty()).then(|| value.to_owned())
}

fn scope_of(kind: EventKind) -> Scope {
    match kind {
        EventKind::DeviceClaim | EventKind::DeviceRelease => Scope::Device,
        _ => Scope::Group,
    }
}

fn node_of(kind: EventKind) -> VfioNodeKind {
    match kind {
        EventKind::VfioCdevOpen | EventKind::VfioCdevRelease => VfioNodeKind::Cdev,
        _ => VfioNodeKind::Group,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn c_string<const N: usize>(b: &[u8; N]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(N);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Record {
    /// The device and group the record names, for kinds that name one.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Record::Probe { target, .. }
            | Record::DmaRefused { target, .. }
            | Record::Unbind { target, .. }
            | Record::Claim { target, .. }
            | Record::Release { target, .. }
            | Record::DeviceAdded { target }
            | Record::DeviceRemoved { target }
            | Record::PinRefused { target, .. }
            | Record::OverrideWritten { target, .. }
            | Record::Veto { target, .. } => Some(target),
            Record::VfioOpen { .. }
            | Record::VfioRelease { .. }
            | Record::ModuleLoad
            | Record::WriteCheck { .. } => None,
        }
    }

    /// The VFIO node the record concerns, to resolve to a /dev path.
    pub fn vfio_node(&self) -> Option<(VfioNodeKind, Rdev)> {
        match self {
            Record::VfioOpen { node, rdev, .. } | Record::VfioRelease { node, rdev } => {
                rdev.map(|r| (*node, r))
            }
            // A refused open names the node; the device behind a cdev is not looked up.
            Record::Veto { rdev, .. } => rdev.map(|r| (VfioNodeKind::Group, r)),
            _ => None,
        }
    }

    /// After which the write-time check is held attached for a while: a descriptor it must
    /// judge, an open refused until it is armed, and a group going idle (a hand-back, whose
    /// bus-wide `unbind` only it can judge, usually follows).
    pub fn asks_for_write_check(&self) -> bool {
        match self {
            Record::WriteCheck { wanted } => *wanted,
            Record::Veto { veto, .. } => veto.until_armed(),
            Record::VfioRelease { .. } | Record::Release { .. } => true,
            _ => false,
        }
    }

    /// A process using a device through VFIO: the moment a pod's allocation matters.
    pub fn is_vfio_use(&self) -> bool {
        match self {
            Record::VfioOpen { .. } | Record::Claim { .. } => true,
            Record::Veto { veto, .. } => {
                matches!(veto.rule, Rule::VfioOpenNotViable | Rule::VfioOpenUnarmed)
            }
            _ => false,
        }
    }
}

/// The symbolic name of a (positive) errno, for events and logs ([`crate::errno`]).
pub fn errno_name(errno: i32) -> Option<&'static str> {
    crate::errno::name(errno)
}

/// The errno name of a kernel return value (`-16` -> `EBUSY`): `None` for success, positive
/// values, errnos without a name and `i32::MIN`, which has no negation (a corrupt or hostile
/// record must not panic the agent; `ret` keeps the raw value).
pub fn errno_of_ret(ret: i32) -> Option<&'static str> {
    ret.checked_neg().and_then(errno_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(ev: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const Event).cast::<u8>(),
                std::mem::size_of::<Event>(),
            )
        }
        .to_vec()
    }

    fn put(dst: &mut [u8], s: &str) {
        dst[..s.len()].copy_from_slice(s.as_bytes());
    }

    #[test]
    fn decodes_a_refusal() {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::UseDefaultDomain as u32;
        ev.ret = -16;
        ev.pid = 42;
        ev.tgid = 41;
        ev.group = 9;
        put(&mut ev.comm, "sh");
        put(&mut ev.device, "0000:00:05.1");
        put(&mut ev.driver, "e1000");
        let k = decode(&bytes(&ev)).expect("decodes");
        assert_eq!(
            (k.task.pid, k.task.tgid, k.task.comm.as_str()),
            (42, 41, "sh")
        );
        assert_eq!(
            k.record,
            Record::DmaRefused {
                target: Target {
                    device: Some("0000:00:05.1".into()),
                    group: Some(9),
                },
                driver: Some("e1000".into()),
                ret: -16,
            }
        );
        assert_eq!(errno_name(16), Some("EBUSY"));
    }

    #[test]
    fn decodes_vfio_rdev_and_unknown_group() {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::VfioGroupOpen as u32;
        ev.rdev = (245 << 20) | 3;
        let k = decode(&bytes(&ev)).expect("decodes");
        assert_eq!(
            k.record,
            Record::VfioOpen {
                node: VfioNodeKind::Group,
                rdev: Some((245, 3)),
                ret: 0,
            }
        );
        assert_eq!(k.record.vfio_node(), Some((VfioNodeKind::Group, (245, 3))));
    }

    #[test]
    fn errno_of_any_return_value_never_panics() {
        assert_eq!(errno_of_ret(-16), Some("EBUSY"));
        assert_eq!(errno_of_ret(0), None);
        assert_eq!(errno_of_ret(1), None);
        assert_eq!(errno_of_ret(-4000), None);
        assert_eq!(errno_of_ret(i32::MIN), None);
        assert_eq!(errno_of_ret(i32::MAX), None);
        let mut ev = Event::zeroed();
        ev.kind = EventKind::GroupClaim as u32;
        ev.ret = i32::MIN;
        let k = decode(&bytes(&ev)).expect("decodes");
        assert!(matches!(k.record, Record::Claim { ret: i32::MIN, .. }));
    }

    #[test]
    fn veto_detail_bits_are_named_fields() {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::Veto as u32;
        ev.detail = watched::VFIO_CDEV | veto::DENIED | veto::NOT_ARMED | veto::TARGET_UNKNOWN;
        let Record::Veto { veto: v, .. } = decode(&bytes(&ev)).expect("decodes").record else {
            panic!("a veto");
        };
        assert_eq!(
            v,
            Veto {
                rule: Rule::VfioOpenUnarmed,
                denied: true,
                fail_closed: true,
                why: vec![Why::WriteCheckNotArmed],
            }
        );
        assert!(v.until_armed());
        ev.detail = 200 | veto::ABOVE | veto::TRACED;
        let Record::Veto { veto: v, .. } = decode(&bytes(&ev)).expect("decodes").record else {
            panic!("a veto");
        };
        assert_eq!((v.rule, v.denied), (Rule::Unknown, false));
        assert_eq!(v.why, [Why::AboveProtectedGroup, Why::TrustedWriterTraced]);
    }

    #[test]
    fn an_override_write_carries_the_value_the_kernel_took() {
        for (written, value) in [
            ("none\n", Some("none")),
            ("\n", None),
            ("", None),
            ("e1000\nrest", Some("e1000")),
        ] {
            let mut ev = Event::zeroed();
            ev.kind = EventKind::OverrideWritten as u32;
            ev.detail = override_written::TRUSTED_CONTAINER;
            put(&mut ev.driver, written);
            let k = decode(&bytes(&ev)).expect("decodes");
            let Record::OverrideWritten {
                value: got,
                by_trusted_container,
                ..
            } = k.record
            else {
                panic!("an override write");
            };
            assert_eq!(
                (got.as_deref(), by_trusted_container),
                (value, true),
                "{written:?}"
            );
        }
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(decode(&[0; 8]), Err(RecordError::Short(8, _))));
        let mut ev = Event::zeroed();
        ev.kind = 999;
        assert_eq!(decode(&bytes(&ev)), Err(RecordError::UnknownKind(999)));
    }
}
