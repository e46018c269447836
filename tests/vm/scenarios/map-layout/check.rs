//! `map-layout`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, lsm_runs, Scenario, ONE};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    // Upgrade and rollback across a map layout change: the agent's own logic, one kernel
    // with BPF LSM.
    name: "map-layout",
    boots: ONE,
    dry_run: false,
    policy: None,
    check: map_layout,
}];

fn map_layout(c: &Checker) {
    let layout = format!("maps-v{}", iommu_enforcer_common::pins::MAP_LAYOUT);
    expect_fact(c, "boot_layouts", &layout);
    let links: usize = c.fact("links").parse().unwrap_or(0);
    c.expect(links >= 10, format!("only {links} links pinned"));
    // Same layout: adopted.
    expect_fact(c, "same_ready", "yes");
    expect_fact(c, "same_adopted", "1");
    // Another layout: refused, nothing replaced, the old programs still veto.
    expect_fact(c, "upgrade_rc", "2");
    expect_fact(c, "upgrade_names_layout", "yes");
    expect_fact(c, "upgrade_stdout_lines", "0");
    expect_fact(c, "links_after_refusal", &links.to_string());
    expect_fact(c, "layouts_after_refusal", &layout);
    if lsm_runs(c) {
        // Refused either way: at the write (EPERM) while the write-time check is attached, or
        // at the open (EAGAIN) once it went back to standby (docs/cost.md).
        let bind = c.fact("bind_after_refusal");
        c.expect(
            bind == "error_EPERM" || bind == "error_EAGAIN",
            format!("the bind after the refused upgrade was not refused: {bind}"),
        );
    }
    expect_fact(c, "upgrade_detach_rc", "1");
    expect_fact(c, "upgrade_detach_force_rc", "0");
    expect_fact(c, "layouts_after_detach", "");
    expect_fact(c, "upgraded_ready", "yes");
    expect_fact(c, "upgraded_layouts", "maps-v3");
    // The rollback, the same way back.
    expect_fact(c, "rollback_rc", "2");
    expect_fact(c, "rollback_names_layout", "yes");
    expect_fact(c, "rollback_detach_rc", "1");
    expect_fact(c, "rollback_detach_force_rc", "0");
    expect_fact(c, "rolled_back_ready", "yes");
    expect_fact(c, "rolled_back_layouts", &layout);
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "alive", "yes");
}
