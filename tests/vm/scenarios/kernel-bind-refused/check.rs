//! `kernel-bind-refused`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{Scenario, SIX};
use crate::checks::Checker;
use iommu_enforcer_schema::Kind;
use serde_json::Value;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "kernel-bind-refused",
    boots: SIX,
    dry_run: true,
    policy: None,
    check: kernel_bind_refused,
}];

fn kernel_bind_refused(c: &Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    c.events(Kind::Refusal)
        .group(&g)
        .device(fn1)
        .driver("e1000")
        .ret(-16)
        .errno("EBUSY")
        .note("one for the sysfs bind, one for the autoprobe after modprobe")
        .expect_at_least(2);
    c.expect(
        c.fact("sysfs_bind") == "EBUSY",
        format!(
            "sysfs bind of e1000 to {fn1} was {:?}, expected EBUSY",
            c.fact("sysfs_bind")
        ),
    );
    c.expect(
        c.fact("fn1_driver") == "none",
        format!("{fn1} ended bound to {}", c.fact("fn1_driver")),
    );
    match c.audit_device(fn1) {
        None => c.problem(format!("final audit JSON has no entry for {fn1}")),
        Some(entry) => {
            let driver = entry.get("driver");
            let unbound = matches!(driver, None | Some(Value::Null))
                || driver.and_then(Value::as_str) == Some("");
            c.expect(
                unbound,
                format!("final audit shows {fn1} bound to {driver:?}"),
            );
        }
    }
}
