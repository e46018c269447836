//! `reserve-prevents-bind`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, expect_pins, lsm_runs, Scenario, ARM64_BOTH, EVERY, RESERVE};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Kind, Rule};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "reserve-prevents-bind",
        boots: ARM64_BOTH,
        dry_run: false,
        policy: RESERVE,
        check: reserve_prevents_bind,
    },
    Scenario {
        name: "reserve-prevents-bind",
        boots: EVERY,
        dry_run: false,
        policy: RESERVE,
        check: reserve_prevents_bind,
    },
    Scenario {
        name: "reserve-prevents-bind",
        boots: &[("6.12", None)],
        dry_run: true,
        policy: RESERVE,
        check: reserve_prevents_bind_dry_run,
    },
];

fn reserve_prevents_bind(c: &Checker) {
    let fn1 = c.dev("VM_DEV_FN1");
    expect_pins(c, Action::Pinned);
    expect_fact(c, "fn0_override", "vfio-pci");
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "fn1_after_autoprobe", "none");
    expect_fact(c, "fn1_driver", "none");
    expect_fact(c, "alive", "yes");
    // Pinned, e1000 never even reaches really_probe for .1.
    c.events(Kind::Bind)
        .device(fn1)
        .driver("e1000")
        .note("the pin did not hold")
        .expect_none();
    if lsm_runs(c) {
        expect_fact(c, "sysfs_bind", "EPERM");
        c.events(Kind::Veto)
            .device(fn1)
            .rule(Rule::ProtectedBind)
            .action(Action::Vetoed)
            .expect(1);
    } else {
        // No BPF LSM: the pin alone refuses the bind, and no veto is claimed.
        expect_fact(c, "sysfs_bind", "ENODEV");
        c.events(Kind::Veto).note("without BPF LSM").expect_none();
    }
}

fn reserve_prevents_bind_dry_run(c: &Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    expect_pins(c, Action::WouldPin);
    expect_fact(c, "fn1_override", "(null)");
    expect_fact(c, "sysfs_bind", "EBUSY");
    expect_fact(c, "fn1_driver", "none");
    c.events(Kind::Refusal)
        .group(&g)
        .device(fn1)
        .driver("e1000")
        .errno("EBUSY")
        .note("the kernel's refusals of the autoprobe and the bind")
        .expect_at_least(2);
    c.events(Kind::Veto)
        .device(fn1)
        .rule(Rule::ProtectedBind)
        .action(Action::WouldVeto)
        .expect(1);
    c.events(Kind::Veto)
        .action(Action::Vetoed)
        .note("in dry-run")
        .expect_none();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Channel;
    use crate::topology;
    use iommu_enforcer_schema::{Event, Line, Outcome};

    fn event(kind: Kind, device: &str, driver: Option<&str>, result: Outcome) -> Event {
        let mut e = Event::new(kind, result);
        e.device = Some(device.into());
        e.driver = driver.map(str::to_string);
        e
    }

    /// A boot of reserve-prevents-bind on 6.12 as the agent and the script report it.
    fn boot(with_veto: bool) -> Checker {
        let (fn0, fn1) = (
            topology::address("VM_DEV_FN0"),
            topology::address("VM_DEV_FN1"),
        );
        let mut lines = Vec::new();
        for (dev, driver) in [(fn0, "vfio-pci"), (fn1, "none")] {
            let mut pin = event(Kind::Pin, dev, Some(driver), Outcome::Ok);
            pin.rule = Some(Rule::Reservation);
            pin.action = Some(Action::Pinned);
            lines.push(Line::Event(Box::new(pin)));
        }
        if with_veto {
            let mut veto = event(Kind::Veto, fn1, None, Outcome::Error);
            veto.rule = Some(Rule::ProtectedBind);
            veto.action = Some(Action::Vetoed);
            veto.errno = Some("EPERM".into());
            lines.push(Line::Event(Box::new(veto)));
        }
        let script = [
            "fn0_override=vfio-pci",
            "fn1_override=none",
            "fn1_after_autoprobe=none",
            "fn1_driver=none",
            "alive=yes",
            "sysfs_bind=EPERM",
        ]
        .map(|f| format!("@fact {f}\n"))
        .concat();
        let ch = Channel {
            events: lines
                .iter()
                .map(|l| serde_json::to_string(l).unwrap())
                .collect(),
            script,
            ..Channel::default()
        };
        Checker::new("6.12", None, &ch)
    }

    #[test]
    fn a_rewritten_check_passes_a_good_boot_and_names_what_a_bad_one_misses() {
        let good = boot(true);
        reserve_prevents_bind(&good);
        assert_eq!(good.into_problems(), Vec::<String>::new());

        let bad = boot(false);
        reserve_prevents_bind(&bad);
        assert_eq!(
            bad.into_problems(),
            [
                "expected 1 `veto` event with device=0000:05:00.1, rule=protected_bind, \
              action=vetoed, got 0 (no `veto` event at all)"
            ]
        );
    }
}
