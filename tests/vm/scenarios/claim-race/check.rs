//! `claim-race`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_alive_and, Scenario, LSM};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "claim-race",
    boots: LSM,
    dry_run: false,
    policy: None,
    check: claim_race,
}];

fn claim_race(c: &Checker) {
    let errno = c.fact("first_bind_errno");
    c.expect(
        errno == "EPERM" || errno == "ENODEV",
        format!("the first bind in the race gave {errno:?}, expected EPERM or ENODEV"),
    );
    c.expect(
        !c.fact("first_bind_us").is_empty(),
        "no race timing reported",
    );
    expect_alive_and(c, "none");
}
