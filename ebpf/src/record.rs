//! The ring buffer, the loss counter and filling the fields every record carries.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
    EbpfContext,
};
use aya_log_ebpf::warn;
use iommu_enforcer_common::{Event, EventKind, GROUP_UNKNOWN};

/// 256 KiB: about 1700 records, far more than a burst of binds produces between two polls.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that did not fit in the ring buffer, per CPU; the agent sums them, reports them and
/// resyncs from sysfs.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Reserves a record, lets `fill` write the event-specific fields, and submits it. Counts the
/// record as lost when the buffer is full.
#[inline(always)]
pub fn emit<C: EbpfContext>(
    ctx: &C,
    kind: EventKind,
    ret: i32,
    group: i32,
    fill: impl FnOnce(&mut Event),
) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // Per-CPU slot: no other writer can race this increment.
            unsafe { *lost += 1 };
        }
        warn!(
            ctx,
            "ring buffer full: a record of kind {} was lost", kind as u32
        );
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned slot of size_of::<Event>().
    unsafe {
        ev.write(Event::zeroed());
        let ev = &mut *ev;
        ev.kind = kind as u32;
        ev.ret = ret;
        ev.group = group;
        let pid_tgid = bpf_get_current_pid_tgid();
        ev.pid = pid_tgid as u32;
        ev.tgid = (pid_tgid >> 32) as u32;
        ev.cgroup_id = bpf_get_current_cgroup_id();
        ev.ktime_ns = bpf_ktime_get_ns();
        if let Ok(comm) = bpf_get_current_comm() {
            ev.comm = comm;
        }
        fill(ev);
    }
    entry.submit(0);
}

/// `group` when the program could not resolve it.
pub const NO_GROUP: i32 = GROUP_UNKNOWN;
