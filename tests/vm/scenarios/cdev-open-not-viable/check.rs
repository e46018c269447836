//! `cdev-open-not-viable`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{cdev_path, expect_fact, expect_hook_attached, Scenario, CDEV};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Kind, Outcome, Rule, Scope};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "cdev-open-not-viable",
        boots: CDEV,
        dry_run: false,
        policy: None,
        check: cdev_open_vetoed,
    },
    Scenario {
        name: "cdev-open-not-viable",
        boots: CDEV,
        dry_run: true,
        policy: None,
        check: cdev_open_would_veto,
    },
];

fn cdev_open_vetoed(c: &Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_hook_attached(c, "file_open");
    expect_fact(c, "fn1_driver", "e1000");
    expect_fact(c, "open", "error_EPERM");
    c.events(Kind::Veto)
        .device(fn0)
        .group(&g)
        .path(&cdev)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::Vetoed)
        .expect(1);
    c.events(Kind::VfioOpen)
        .path(&cdev)
        .result(Outcome::Ok)
        .note("despite the veto")
        .expect_none();
    c.events(Kind::Claim)
        .device(fn0)
        .note("after a vetoed open")
        .expect_none();
}

fn cdev_open_would_veto(c: &Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_fact(c, "fn1_driver", "e1000");
    expect_fact(c, "open", "ok");
    // The kernel's own refusal: e1000 holds .1, so the group cannot be claimed for user space.
    expect_fact(c, "bind", "error_EPERM");
    c.events(Kind::Veto)
        .device(fn0)
        .group(&g)
        .path(&cdev)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::WouldVeto)
        .expect(1);
    c.events(Kind::VfioOpen)
        .device(fn0)
        .path(&cdev)
        .result(Outcome::Ok)
        .note("dry-run: the open goes through")
        .expect(1);
    c.events(Kind::Claim)
        .device(fn0)
        .scope(Scope::Device)
        .errno("EPERM")
        .result(Outcome::Error)
        .note("the kernel's EPERM for the device claim")
        .expect(1);
}
