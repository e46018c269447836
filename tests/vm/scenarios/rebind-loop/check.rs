//! `rebind-loop`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{Scenario, ONE};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Line, Outcome};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "rebind-loop",
    boots: ONE,
    dry_run: false,
    policy: None,
    check: rebind_loop,
}];

fn rebind_loop(c: &Checker) {
    let dev = c.dev("VM_DEV_SWITCH");
    let lost = c.of_type(|l| matches!(l, Line::Lost { .. })).len();
    c.expect(
        lost == 0,
        format!("{lost} `lost` lines: records were dropped"),
    );
    let want_binds: usize = c.fact("binds").parse().unwrap_or(usize::MAX);
    let want_unbinds: usize = c.fact("unbinds").parse().unwrap_or(usize::MAX);
    c.expect(
        want_unbinds == 20,
        format!("script reports {want_unbinds} successful unbinds, expected 20"),
    );
    c.events(Kind::Bind)
        .device(dev)
        .driver("e1000")
        .result(Outcome::Ok)
        .note(format!("the script bound it {want_binds} times"))
        .expect(want_binds);
    c.events(Kind::Unbind)
        .device(dev)
        .driver("e1000")
        .note(format!("the script unbound it {want_unbinds} times"))
        .expect(want_unbinds);
}
