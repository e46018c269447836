//! Decoding ring-buffer records into owned, typed events. Pure.
use iommu_enforcer_common::{Event, EventKind, COMM_LEN, GROUP_UNKNOWN, NAME_LEN};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than an event ({1} bytes)")]
    Short(usize, usize),
    #[error("record has unknown kind {0}")]
    UnknownKind(u32),
}

/// One kernel event, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    pub kind: EventKind,
    pub ret: i32,
    pub pid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub ktime_ns: u64,
    pub group: Option<u32>,
    /// (major, minor) of the opened VFIO node.
    pub rdev: Option<(u32, u32)>,
    /// Kind-specific detail (vetoes: watched kind and flags).
    pub detail: u32,
    pub comm: String,
    pub device: String,
    pub driver: Option<String>,
}

pub fn decode(bytes: &[u8]) -> Result<KernelEvent, RecordError> {
    let size = std::mem::size_of::<Event>();
    if bytes.len() < size {
        return Err(RecordError::Short(bytes.len(), size));
    }
    // SAFETY: length checked; Event is plain old data, and read_unaligned needs no alignment.
    let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u32(ev.kind).ok_or(RecordError::UnknownKind(ev.kind))?;
    let driver = c_string::<NAME_LEN>(&ev.driver);
    Ok(KernelEvent {
        kind,
        ret: ev.ret,
        pid: ev.pid,
        tgid: ev.tgid,
        cgroup_id: ev.cgroup_id,
        ktime_ns: ev.ktime_ns,
        group: (ev.group != GROUP_UNKNOWN && ev.group >= 0).then_some(ev.group as u32),
        // Kernel-internal dev_t: major in the top 12 bits, minor in the low 20.
        rdev: (ev.rdev != 0).then_some((ev.rdev >> 20, ev.rdev & 0xf_ffff)),
        detail: ev.detail,
        comm: c_string::<COMM_LEN>(&ev.comm),
        device: c_string::<NAME_LEN>(&ev.device),
        driver: (!driver.is_empty()).then_some(driver),
    })
}

fn c_string<const N: usize>(b: &[u8; N]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(N);
    String::from_utf8_lossy(&b[..end]).into_owned()
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
        assert_eq!(k.kind, EventKind::UseDefaultDomain);
        assert_eq!((k.ret, k.pid, k.tgid, k.group), (-16, 42, 41, Some(9)));
        assert_eq!((k.comm.as_str(), k.device.as_str()), ("sh", "0000:00:05.1"));
        assert_eq!(k.driver.as_deref(), Some("e1000"));
        assert_eq!(errno_name(-k.ret), Some("EBUSY"));
    }

    #[test]
    fn decodes_vfio_rdev_and_unknown_group() {
        let mut ev = Event::zeroed();
        ev.kind = EventKind::VfioGroupOpen as u32;
        ev.rdev = (245 << 20) | 3;
        let k = decode(&bytes(&ev)).expect("decodes");
        assert_eq!(k.rdev, Some((245, 3)));
        assert_eq!(k.group, None);
        assert_eq!(k.driver, None);
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
        assert_eq!((k.ret, errno_of_ret(k.ret)), (i32::MIN, None));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(decode(&[0; 8]), Err(RecordError::Short(8, _))));
        let mut ev = Event::zeroed();
        ev.kind = 999;
        assert_eq!(decode(&bytes(&ev)), Err(RecordError::UnknownKind(999)));
    }
}
