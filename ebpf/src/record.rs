//! The ring buffer, the loss counter and filling the fields every record carries.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    EbpfContext,
};
use iommu_enforcer_common::{
    agent_log, config, veto as veto_flags, Event, EventKind, GROUP_UNKNOWN,
};

/// 256 KiB: about 1700 records, far more than a burst of binds produces between two polls.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that did not fit in the ring buffer, per CPU; the agent sums them, reports them and
/// resyncs from sysfs.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The agents' own bookkeeping (see `common::agent_log`), pinned with the ring and `LOST` so
/// that a new agent knows what the last one reported. No program touches it.
#[map(name = "AGENT_LOG")]
static AGENT_LOG: Array<u64> = Array::with_max_entries(agent_log::LEN, 0);

/// Reserves a record, lets `fill` write the event-specific fields, and submits it. Counts the
/// record as lost when the buffer is full.
#[inline(always)]
pub fn emit<C: EbpfContext>(
    // Only a program's context may emit (the type says so); nothing is read from it.
    _ctx: &C,
    kind: EventKind,
    ret: i32,
    group: i32,
    fill: impl FnOnce(&mut Event),
) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: `lost` points at this CPU's slot of a per-CPU array, alive while the
            // program runs: no other writer can race this increment.
            unsafe { *lost += 1 };
        }
        // Counted, not logged: a log line per lost record would flood the log ring in the
        // very burst that filled this one; the agent reports the count and resyncs.
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

/// A previous LSM's verdict passed on: any error stays an error.
#[inline(always)]
pub fn lsm_ret(prev: i32) -> i32 {
    if prev < 0 {
        prev
    } else {
        -1
    }
}

const EPERM: i32 = 1;
const EAGAIN: i32 = 11;

/// A hook's refusal: reports a `Veto` record (`detail` without `DENIED`, which this adds when it
/// denies; `fill` writes the rest) and returns -EPERM, or, in dry-run, reports the would-be veto
/// and returns 0.
#[inline(always)]
pub fn veto<C: EbpfContext>(
    ctx: &C,
    detail: u32,
    group: i32,
    fill: impl FnOnce(&mut Event),
) -> i32 {
    refuse(ctx, detail, group, EPERM, fill)
}

/// [`veto`] of what is refused only until the write-time check is armed (`NOT_ARMED`): -EAGAIN,
/// so that the caller knows to try again.
#[inline(always)]
pub fn veto_until_armed<C: EbpfContext>(
    ctx: &C,
    detail: u32,
    group: i32,
    fill: impl FnOnce(&mut Event),
) -> i32 {
    refuse(ctx, detail | veto_flags::NOT_ARMED, group, EAGAIN, fill)
}

#[inline(always)]
fn refuse<C: EbpfContext>(
    ctx: &C,
    detail: u32,
    group: i32,
    errno: i32,
    fill: impl FnOnce(&mut Event),
) -> i32 {
    let deny = crate::state::config(config::DRY_RUN) == 0;
    let detail = detail | if deny { veto_flags::DENIED } else { 0 };
    emit(
        ctx,
        EventKind::Veto,
        if deny { -errno } else { 0 },
        group,
        |ev| {
            ev.detail = detail;
            fill(ev);
        },
    );
    // Literal returns: 6.x's verifier checks the range of an LSM program's result.
    if deny {
        -errno
    } else {
        0
    }
}

/// An LSM program's result, clamped where the verifier sees it: 6.x checks that it lies in
/// [-4095, 0], and LLVM otherwise folds `if deny { -EPERM } else { 0 }` into a `neg` whose range
/// the verifier does not track. `black_box` keeps the clamp from being folded away.
#[inline(always)]
pub fn lsm_verdict(r: i32) -> i32 {
    let r = core::hint::black_box(r);
    if r > 0 {
        return 0;
    }
    // Never reached (errnos are above -4096); returning a literal -1 here would be emitted as
    // the 64-bit 0xffffffff, outside the range.
    if r < -4095 {
        return 0;
    }
    r
}
