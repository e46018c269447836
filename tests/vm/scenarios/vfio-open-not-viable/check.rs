//! `vfio-open-not-viable`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, expect_hook_attached, Scenario, ARM64, LSM};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Kind, Outcome, Rule};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "vfio-open-not-viable",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: vfio_open_vetoed,
    },
    Scenario {
        name: "vfio-open-not-viable",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: vfio_open_vetoed,
    },
    Scenario {
        name: "vfio-open-not-viable",
        boots: &[("7.3", None)],
        dry_run: true,
        policy: None,
        check: vfio_open_would_veto,
    },
];

fn vfio_open_vetoed(c: &Checker) {
    let g = c.fact("group");
    expect_hook_attached(c, "file_open");
    expect_fact(c, "fn1_driver", "e1000");
    let hold = c.fact("hold");
    c.expect(
        hold.contains("EPERM"),
        format!("the holder's open was not refused with EPERM: {hold}"),
    );
    c.events(Kind::Veto)
        .group(&g)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::Vetoed)
        .expect(1);
    c.events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .note("despite the veto")
        .expect_none();
}

fn vfio_open_would_veto(c: &Checker) {
    let g = c.fact("group");
    expect_fact(c, "fn1_driver", "e1000");
    c.events(Kind::Veto)
        .group(&g)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::WouldVeto)
        .expect(1);
    c.events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .note("dry-run: the open should have gone through")
        .expect_at_least(1);
    c.events(Kind::Claim)
        .group(&g)
        .errno("EPERM")
        .note("the kernel's own EPERM for the claim")
        .expect_at_least(1);
}
