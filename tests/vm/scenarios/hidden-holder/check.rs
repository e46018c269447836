//! `hidden-holder`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_alive_and, expect_fact, lsm_runs, Scenario, EVERY};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Outcome};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "hidden-holder",
    boots: EVERY,
    dry_run: false,
    policy: None,
    check: hidden_holder,
}];

fn hidden_holder(c: &Checker) {
    expect_fact(c, "visible_vfio_fds", "0");
    expect_fact(c, "fn1_override", "vfio-pci");
    expect_fact(c, "fn1_after_autoprobe", "none");
    let want = if lsm_runs(c) { "EPERM" } else { "ENODEV" };
    expect_fact(c, "sysfs_bind", want);
    expect_alive_and(c, "none");
    let fn1 = c.dev("VM_DEV_FN1");
    c.events(Kind::Bind)
        .device(fn1)
        .driver("e1000")
        .result(Outcome::Ok)
        .expect_none();
    // The autoprobe the pin stopped is reported, with the driver it stopped.
    c.events(Kind::PinRefused)
        .device(fn1)
        .driver("e1000")
        .expect_at_least(1);
}
