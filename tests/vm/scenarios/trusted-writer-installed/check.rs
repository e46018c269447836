//! `trusted-writer-installed`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario, ONE};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Rule};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "trusted-writer-installed",
    boots: ONE,
    dry_run: false,
    policy: Some("reserve-late-writer.toml"),
    check: trusted_writer_installed,
}];

fn trusted_writer_installed(c: &Checker) {
    expect_fact(c, "before", "error_EPERM");
    expect_fact(c, "reresolved", "yes");
    expect_fact(c, "after", "ok");
    expect_fact(c, "fn1_override", "none");
    let fn1 = c.dev("VM_DEV_FN1");
    let vetoes = c
        .events(Kind::Veto)
        .rule(Rule::ProtectedDriverOverride)
        .device(fn1)
        .list();
    let comms: Vec<&str> = vetoes.iter().map(|e| e.comm.as_str()).collect();
    // Refused once, before it was installed; the installed one was let through.
    c.expect(
        comms == ["late-writer"],
        format!("expected one veto of late-writer's write, got {comms:?}"),
    );
}
