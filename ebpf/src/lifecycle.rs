//! The agent's identity in the pinned CONFIG map must not outlive the agent: a process that
//! later gets the same pid would inherit its right to write protected files. And modules
//! loading: the one moment an absent kprobe target can appear.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use iommu_enforcer_common::{config, EventKind};

use crate::{
    record::{emit, NO_GROUP},
    state,
};

/// `module_load(struct module *mod)`: fires once the module's symbols are in kallsyms and its
/// functions in ftrace's table, so the agent looks for absent targets then and only then.
#[btf_tracepoint(function = "module_load")]
pub fn module_loaded(ctx: BtfTracePointContext) -> i32 {
    emit(&ctx, EventKind::ModuleLoad, 0, NO_GROUP, |_| {});
    0
}

/// `sched_process_exit(struct task_struct *p)`: runs for the exiting task itself.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    // The group leader's exit ends the process.
    if pid == tgid && tgid != 0 && tgid == state::config(config::AGENT_TGID) {
        state::clear_agent();
    }
    if pid == tgid && tgid != 0 && tgid == state::config(config::DETACH_TGID) {
        state::clear_detacher();
    }
    0
}
