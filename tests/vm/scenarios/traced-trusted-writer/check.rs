//! `traced-trusted-writer`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario, LSM, RESERVE};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Kind, Rule, Why};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "traced-trusted-writer",
    boots: LSM,
    dry_run: false,
    policy: RESERVE,
    check: traced_trusted_writer,
}];

fn traced_trusted_writer(c: &Checker) {
    expect_fact(c, "traced", "error_EPERM");
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "untraced", "ok");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedDriverOverride)
        .device(c.dev("VM_DEV_FN1"))
        .action(Action::Vetoed)
        .why(Why::TrustedWriterTraced)
        .expect(1);
}
