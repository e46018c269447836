//! `hostile-topology`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_alive_and, expect_fact, Scenario, LSM};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Kind, Rule, Why};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "hostile-topology",
    boots: LSM,
    dry_run: false,
    policy: None,
    check: hostile_topology,
}];

fn hostile_topology(c: &Checker) {
    let port = c.fact("port");
    c.expect(
        !port.is_empty(),
        "the script found no port above the device",
    );
    expect_fact(c, "port_remove", "error_EPERM");
    expect_fact(c, "slot_power", "error_EPERM");
    expect_fact(c, "fn0_reset", "error_EPERM");
    let sub = c.fact("port_reset_subordinate");
    c.expect(
        sub == "absent" || sub == "error_EPERM",
        format!("reset_subordinate of the port: {sub}"),
    );
    expect_fact(c, "alone_remove", "ok");
    expect_fact(c, "fn0_driver", "vfio-pci");
    // Config space and BARs of the held device and of the port above: refused at the open, or
    // (descriptors opened while idle) at the write and the writable mapping; reads still work.
    let refused = "open=error_EPERM write=skipped mmap=skipped";
    expect_fact(c, "port_sbr", refused);
    expect_fact(c, "port_bus_numbers", refused);
    expect_fact(c, "fn0_bar", refused);
    expect_fact(
        c,
        "preopened_bar",
        "open=ok write=error_EPERM mmap=error_EPERM",
    );
    let config = c.fact("preopened_config");
    c.expect(
        config.starts_with("open=ok write=error_EPERM "),
        format!("the pre-opened config write of the port above: {config}"),
    );
    expect_fact(c, "port_config_read", "64");
    let before = c.fact("secondary_before");
    c.expect(!before.is_empty(), "no secondary bus number read");
    expect_fact(c, "secondary_after", &before);
    for rule in [Rule::ProtectedConfig, Rule::ProtectedResource] {
        c.events(Kind::Veto)
            .rule(rule)
            .action(Action::Vetoed)
            .expect_at_least(2);
    }
    expect_alive_and(c, "none");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedRemove)
        .device(&port)
        .action(Action::Vetoed)
        .why(Why::AboveProtectedGroup)
        .note(format!("{port}/remove, as above a protected group"))
        .expect(1);
    c.events(Kind::Veto)
        .rule(Rule::ProtectedSlotPower)
        .action(Action::Vetoed)
        .expect(1);
}
