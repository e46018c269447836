//! `write-paths`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, expect_hook_attached, expect_pins, Scenario, ARM64, LSM, RESERVE};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Kind, Rule};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "write-paths",
        boots: ARM64,
        dry_run: false,
        policy: RESERVE,
        check: write_paths,
    },
    Scenario {
        name: "write-paths",
        boots: LSM,
        dry_run: false,
        policy: RESERVE,
        check: write_paths,
    },
];

fn write_paths(c: &Checker) {
    let (fn0, fn1) = (c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1"));
    expect_pins(c, Action::Pinned);
    expect_hook_attached(c, "file_permission");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "fn1_override", "none");
    let files = [
        ("driver_override", Rule::ProtectedDriverOverride, Some(fn1)),
        ("bind", Rule::ProtectedBind, Some(fn1)),
        ("unbind", Rule::ProtectedUnbind, Some(fn0)),
        ("new_id", Rule::ProtectedNewId, None),
        ("remove", Rule::ProtectedRemove, Some(fn1)),
    ];
    for mode in ["write", "pwrite", "writev", "io_uring"] {
        for (file, _, _) in files {
            expect_fact(c, &format!("{mode}_{file}"), "error_EPERM");
        }
        // drivers_probe is not vetoed: it can bind only what the pin and the in-kernel bind
        // veto let through, and fn1 stays unbound.
        expect_fact(c, &format!("{mode}_drivers_probe"), "ok");
    }
    c.events(Kind::Veto)
        .rule(Rule::ProtectedDriversProbe)
        .expect_none();
    for (file, rule, device) in files {
        let vetoed = || {
            c.events(Kind::Veto)
                .rule(rule)
                .action(Action::Vetoed)
                .errno("EPERM")
        };
        // The bind also has the two-segment writev; driver_override the trusted writer's
        // while the group is in use.
        let extra = usize::from(rule == Rule::ProtectedBind)
            + usize::from(rule == Rule::ProtectedDriverOverride);
        vetoed()
            .note(format!("one per write path to {file}"))
            .expect(4 + extra);
        // bind/unbind: only write(2) and single-segment writev(2) on this very file are trusted to
        // name their target; pwrite and io_uring fail closed. new_id always fails closed.
        let named = match device {
            Some(d) => vetoed().device(d),
            None => vetoed(),
        };
        named
            .note(format!("the vetoes of {file} that name their target"))
            .expect_at_least(2);
    }
    expect_fact(c, "split_bind", "error_EPERM");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedBind)
        .fail_closed()
        .note("the two-segment bind fails closed")
        .expect_at_least(1);
    expect_fact(c, "unprotected_bind", "ok");
    expect_fact(c, "trusted_override_in_use", "error_EPERM");
    expect_fact(c, "trusted_override", "ok");
    expect_fact(c, "fn0_driver_after", "vfio-pci");
    expect_fact(c, "fn1_driver_after", "none");
}
