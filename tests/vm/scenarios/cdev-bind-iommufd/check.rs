//! `cdev-bind-iommufd`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{cdev_path, expect_fact, json, Scenario, CDEV};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Outcome, Scope};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "cdev-bind-iommufd",
    boots: CDEV,
    dry_run: false,
    policy: None,
    check: cdev_bind_iommufd,
}];

fn cdev_bind_iommufd(c: &Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_fact(c, "open", "ok");
    expect_fact(c, "bind", "ok");
    c.events(Kind::VfioOpen)
        .device(fn0)
        .group(&g)
        .path(&cdev)
        .result(Outcome::Ok)
        .expect(1);
    let claims = c
        .events(Kind::Claim)
        .device(fn0)
        .scope(Scope::Device)
        .result(Outcome::Ok);
    claims.expect(1);
    for claim in claims.list() {
        c.expect(
            claim.errno.is_none(),
            format!("an ok claim carries an errno: {}", json(claim)),
        );
    }
    c.events(Kind::Veto)
        .note("a viable group's cdev bind")
        .expect_none();
}
