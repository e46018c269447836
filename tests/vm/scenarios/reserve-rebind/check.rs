//! `reserve-rebind`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario, EDGES};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "reserve-rebind",
    boots: EDGES,
    dry_run: false,
    policy: Some("rebind-two-function.toml"),
    check: reserve_rebind,
}];

fn reserve_rebind(c: &Checker) {
    expect_fact(c, "first_agent_gone", "yes");
    for fn_ in ["fn0", "fn1"] {
        expect_fact(c, &format!("{fn_}_before"), "e1000");
        expect_fact(c, &format!("rebound_{fn_}"), "1");
        expect_fact(c, &format!("{fn_}_after"), "vfio-pci");
    }
}
