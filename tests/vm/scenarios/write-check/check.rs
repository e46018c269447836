//! `write-check`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, HookState, Kind, Line, Rule, Why};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "write-check",
    // Not 5.10: a detached LSM program cannot be attached again there, so the check stays
    // attached (docs/cost.md).
    boots: &[("6.1", None), ("7.3", None)],
    dry_run: false,
    policy: None,
    check: write_check,
}];

/// The write-time check is attached only while needed, and what it alone could judge waits
/// for it (issue 20).
fn write_check(c: &Checker) {
    let g = c.fact("group");
    let vga = c.dev("VM_GPU_VGA");
    expect_fact(c, "steady_in_use", "detached");
    expect_fact(c, "unbind_open_unarmed", "EAGAIN");
    expect_fact(c, "armed_after_refusal", "attached");
    expect_fact(c, "unbind_in_use", "error_EPERM");
    expect_fact(c, "vga_driver", "vfio-pci");
    expect_fact(c, "idle_settled", "detached");
    expect_fact(c, "held_open", "ok");
    expect_fact(c, "vfio_open_unarmed", "EAGAIN");
    expect_fact(c, "armed_for_descriptor", "attached");
    expect_fact(c, "vfio_open_armed", "ok");
    expect_fact(c, "held_write", "EPERM");
    expect_fact(c, "final", "detached");
    expect_fact(c, "vga_final", "vfio-pci");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedUnbind)
        .why(Why::WriteCheckNotArmed)
        .errno("EAGAIN")
        .note("the unbind opened before the check was armed")
        .expect(1);
    c.events(Kind::Veto)
        .group(&g)
        .device(vga)
        .rule(Rule::ProtectedUnbind)
        .action(Action::Vetoed)
        .errno("EPERM")
        .note("the unbind written once armed")
        .expect(1);
    c.events(Kind::Veto)
        .rule(Rule::VfioOpenUnarmed)
        .why(Why::WriteCheckNotArmed)
        .errno("EAGAIN")
        .note("the VFIO open while an unjudged descriptor was open")
        .expect(1);
    c.events(Kind::Veto)
        .group(&g)
        .device(vga)
        .rule(Rule::ProtectedDriverOverride)
        .errno("EPERM")
        .note("the write of the descriptor opened while the group was idle")
        .expect(1);
    let hook = |state: HookState| {
        c.lines.iter().any(|l| {
            matches!(l, Line::LsmHook { hook, state: s } if hook == "file_permission" && *s == state)
        })
    };
    c.expect(
        hook(HookState::Attached) && hook(HookState::Standby),
        "file_permission was not both attached and put back on standby",
    );
}
