//! `claim-user-group`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{Scenario, ALL, ARM64};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Outcome, Owner};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "claim-user-group",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: claim_user_group,
    },
    Scenario {
        name: "claim-user-group",
        boots: ALL,
        dry_run: false,
        policy: None,
        check: claim_user_group,
    },
];

fn claim_user_group(c: &Checker) {
    let g = c.fact("group");
    c.expect(
        !g.is_empty(),
        "script did not report the group of the two-function device",
    );
    for dev in [c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1")] {
        c.events(Kind::Bind)
            .device(dev)
            .driver("vfio-pci")
            .result(Outcome::Ok)
            .expect(1);
    }
    if c.is_5_10() {
        c.events(Kind::VfioOpen)
            .group(&g)
            .result(Outcome::Ok)
            .expect_at_least(1);
    } else {
        c.events(Kind::Claim)
            .group(&g)
            .result(Outcome::Ok)
            .expect(1);
    }
    c.verdicts(&g).owner(Owner::User).expect_at_least(1);
}
