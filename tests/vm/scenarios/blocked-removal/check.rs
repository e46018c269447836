//! `blocked-removal`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_alive_and, expect_fact, Scenario};
use crate::checks::Checker;
use iommu_enforcer_schema::Line;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "blocked-removal",
    // Only without BPF LSM is the remove of a held device not refused.
    boots: &[("5.10", None)],
    dry_run: false,
    policy: None,
    check: blocked_removal,
}];

fn blocked_removal(c: &Checker) {
    expect_fact(c, "remove_blocked", "yes");
    let state = c.fact("agent_main_state");
    c.expect(
        state != "D",
        "the agent's event loop was asleep in the kernel (D) while the removal blocked",
    );
    expect_fact(c, "healthz_during_stall", "200");
    let stalled = c.of_type(|l| matches!(l, Line::Stalled { .. })).len();
    c.expect(stalled >= 1, "no `stalled` line while sysfs was blocked");
    expect_fact(c, "removed_after_release", "yes");
    expect_fact(c, "healthz_after", "200");
    expect_alive_and(c, "none");
}
