//! `pin-restored`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario, RESERVE};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Line, Outcome};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "pin-restored",
    boots: &[("5.10", None), ("6.12", None)],
    dry_run: false,
    policy: RESERVE,
    check: pin_restored,
}];

fn pin_restored(c: &Checker) {
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "alive", "yes");
    let fn1 = c.dev("VM_DEV_FN1");
    let watch = c
        .lines
        .iter()
        .find_map(|l| match l {
            Line::Capabilities { pin_watch, .. } => Some(pin_watch.as_str()),
            _ => None,
        })
        .unwrap_or("");
    c.expect(
        watch.starts_with("event"),
        format!("capabilities.pin_watch is {watch:?}: the pins are polled, not watched by event"),
    );
    for mode in ["write", "io_uring"] {
        expect_fact(c, &format!("{mode}_clear"), "ok");
        expect_fact(c, &format!("{mode}_restored"), "none");
    }
    // Each clearing store is recorded (the value written: none, so `driver` null), and each
    // restore follows its record.
    let kinds: Vec<&str> = c
        .every_event()
        .filter(|e| e.device.as_deref() == Some(fn1) && e.result == Outcome::Ok)
        .filter_map(|e| match e.kind {
            Kind::DriverOverrideWrite if e.driver.is_none() => Some("cleared"),
            Kind::PinRestored if e.driver.as_deref() == Some("none") => Some("restored"),
            _ => None,
        })
        .collect();
    c.expect(
        kinds == ["cleared", "restored", "cleared", "restored"],
        format!(
            "expected for {fn1}: driver_override_write (cleared) then pin_restored, twice; got {kinds:?}"
        ),
    );
}
