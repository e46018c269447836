//! `daemonset-caps`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, lsm_runs, Scenario, EVERY};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "daemonset-caps",
    boots: EVERY,
    dry_run: false,
    policy: None,
    check: daemonset_caps,
}];

fn daemonset_caps(c: &Checker) {
    // Measured on every Debian kernel here: 3, which makes the prerequisite necessary.
    expect_fact(c, "default_paranoid", "3");
    expect_fact(c, "caps_ready", "yes");
    // BPF (39), PERFMON (38), SYS_RESOURCE (24), SYS_PTRACE (19), DAC_READ_SEARCH (2); 5.10
    // knows BPF and PERFMON too (5.8+).
    expect_fact(c, "cap_eff", "000000c001080004");
    expect_fact(c, "readyz", "200");
    expect_fact(c, "failed_programs", "0");
    if lsm_runs(c) {
        expect_fact(c, "veto", "error_EPERM");
        expect_fact(c, "lsm_active", "1");
    }
    expect_fact(c, "alive", "yes");
}
