//! `claim-over-kernel-driver`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{Scenario, SIX};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Outcome};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "claim-over-kernel-driver",
    boots: SIX,
    dry_run: true,
    policy: None,
    check: claim_over_kernel_driver,
}];

fn claim_over_kernel_driver(c: &Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    c.expect(
        c.fact("fn1_driver") == "e1000",
        format!(
            "{fn1} was not on e1000 before the claim ({})",
            c.fact("fn1_driver")
        ),
    );
    c.events(Kind::Claim)
        .group(&g)
        .errno("EPERM")
        .result(Outcome::Error)
        .expect_at_least(1);
    match c.verdicts(&g).last() {
        None => c.problem(format!("no verdict line for group {g}")),
        Some(v) => {
            c.expect(
                !v.viable,
                format!("last verdict of group {g} is viable: {v:?}"),
            );
            c.expect(
                v.reasons.iter().any(|s| s.contains(fn1)),
                format!("last verdict of group {g} has no reason naming {fn1}: {v:?}"),
            );
        }
    }
}
