//! `hostile-io-uring`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_alive_and, expect_fact, Scenario, LSM};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Rule};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "hostile-io-uring",
    boots: LSM,
    dry_run: false,
    policy: None,
    check: hostile_io_uring,
}];

fn hostile_io_uring(c: &Checker) {
    for f in [
        "unbind_linked",
        "unbind_linked_fixed",
        "bind_linked",
        "new_id_linked",
        "new_id_any",
        "new_id_padded",
    ] {
        expect_fact(c, f, "error_EPERM");
    }
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_alive_and(c, "none");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedUnbind)
        .fail_closed()
        .note("the linked unbinds fail closed")
        .expect_at_least(2);
    // The buffer race: 300 writes each, every one refused whatever the buffer held.
    expect_fact(c, "race_override_ok", "0");
    expect_fact(c, "race_new_id_ok", "0");
    expect_fact(c, "fn1_override_after_race", "vfio-pci");
}
