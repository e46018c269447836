//! `malformed-policy`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "malformed-policy",
    boots: &[("6.1", None)],
    dry_run: false,
    policy: None,
    check: malformed_policy,
}];

fn malformed_policy(c: &Checker) {
    expect_fact(c, "rc", "2");
    expect_fact(c, "stdout_lines", "0");
    expect_fact(c, "names_location", "yes");
    expect_fact(c, "overrides_unchanged", "yes");
}
