//! `policy-live`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, json, Scenario, LSM};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Event, Kind, Line, Outcome, Rule};

pub const RUNS: &[Scenario] = &[Scenario {
    // The forbidden write is refused by the BPF LSM: every kernel that runs it.
    name: "policy-live",
    boots: LSM,
    dry_run: false,
    policy: None,
    check: policy_live,
}];

/// Where the agent printed `event` lines of `kind` (indices into `c.lines`).
fn positions(c: &Checker, kind: Kind) -> Vec<usize> {
    c.lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.as_event().is_some_and(|e| e.kind == kind))
        .map(|(i, _)| i)
        .collect()
}

/// guest.sh: three ConfigMap updates (reserve, broken, drop) on a running agent.
fn policy_live(c: &Checker) {
    let (fn0, fn1) = (c.dev("VM_GPU_VGA"), c.dev("VM_GPU_AUDIO"));
    let path = "/etc/iommu-enforcer/policy.toml";
    expect_fact(c, "layout", "..data/policy.toml");
    expect_fact(c, "applied_at_start", "1");
    expect_fact(c, "fn1_override_before", "(null)");
    expect_fact(c, "pinned_within_2s", "yes");
    expect_fact(c, "applied_after_reserve", "2");
    expect_fact(c, "vga_reserved", "vfio-pci");
    expect_fact(c, "audio_reserved", "vfio-pci");
    expect_fact(c, "reserved_write", "EPERM");
    expect_fact(c, "rejected", "1");
    expect_fact(c, "broken_write", "EPERM");
    expect_fact(c, "fn1_override_broken", "vfio-pci");
    expect_fact(c, "applied_after_drop", "3");
    expect_fact(c, "dropped_clear", "ok");
    expect_fact(c, "fn1_override_after", "(null)");
    for n in 0..2 {
        for step in ["unbind", "override", "probe"] {
            expect_fact(c, &format!("reattach_{step}_{n}"), "ok");
        }
    }
    let audio_host = c.fact("audio_host");
    c.expect(
        audio_host != "none" && !audio_host.is_empty(),
        format!("the audio function started on {audio_host:?}"),
    );
    expect_fact(c, "audio_final", &audio_host);
    let vga_final = c.fact("vga_final");
    c.expect(
        vga_final.starts_with("bochs"),
        format!("the VGA function ended on {vga_final:?}, not its host driver"),
    );

    // Applied three times: the empty file at start, the reservation, the drop; each a new
    // digest, the first that of no bytes.
    let applied = c.events(Kind::PolicyApplied).list();
    let digests: Vec<&str> = applied.iter().filter_map(|e| e.digest.as_deref()).collect();
    c.expect(
        applied.len() == 3 && digests.len() == 3,
        format!(
            "expected 3 policy_applied events with a digest, got {}",
            applied.len()
        ),
    );
    if let [start, reserve, drop] = digests[..] {
        c.expect(
            start == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            format!("the start's digest {start} is not that of an empty file"),
        );
        c.expect(
            start != reserve && reserve != drop && start != drop,
            format!("digests are not all different: {digests:?}"),
        );
    }
    for e in &applied {
        c.expect(
            e.path.as_deref() == Some(path) && e.result == Outcome::Ok,
            format!("policy_applied should name {path}, result ok: {}", json(e)),
        );
    }
    // Rejected once, where the bracket is missing, as typed fields.
    let rejected = c.events(Kind::PolicyRejected).list();
    c.expect(
        rejected.len() == 1,
        format!("expected 1 policy_rejected event, got {}", rejected.len()),
    );
    for e in &rejected {
        c.expect(
            e.line == Some(4)
                && e.column.is_some_and(|col| col > 0)
                && e.path.as_deref() == Some(path)
                && e.error.as_deref().is_some_and(|m| m.contains(":4:"))
                && e.result == Outcome::Error,
            format!(
                "policy_rejected should say {path} line 4 with a column: {}",
                json(e)
            ),
        );
    }

    // In order: applied (reserve), both pins, the refused write; rejected, refused again;
    // applied (drop), and from there no pin kept on either function.
    let (applied_at, rejected_at) = (
        positions(c, Kind::PolicyApplied),
        positions(c, Kind::PolicyRejected),
    );
    let (Some(&reserved), Some(&dropped), Some(&broken)) =
        (applied_at.get(1), applied_at.get(2), rejected_at.first())
    else {
        return;
    };
    let between = |from: usize, to: usize, want: &dyn Fn(&Event) -> bool| {
        c.lines[from..to]
            .iter()
            .filter_map(Line::as_event)
            .filter(|e| want(e))
            .count()
    };
    for dev in [fn0, fn1] {
        let pins = between(reserved, broken, &|e| {
            e.kind == Kind::Rebind
                && e.device.as_deref() == Some(dev)
                && e.driver.as_deref() == Some("vfio-pci")
                && e.action == Some(Action::Rebound)
                && e.result == Outcome::Ok
        });
        c.expect(
            pins == 1,
            format!(
                "expected {dev} moved to vfio-pci once after the reservation was applied, got {pins}"
            ),
        );
    }
    let vetoed = |e: &Event| {
        e.kind == Kind::Veto
            && e.rule == Some(Rule::ProtectedDriverOverride)
            && e.device.as_deref() == Some(fn1)
            && e.action == Some(Action::Vetoed)
    };
    let (reserved_vetoes, broken_vetoes) = (
        between(reserved, broken, &vetoed),
        between(broken, dropped, &vetoed),
    );
    c.expect(
        reserved_vetoes == 1 && broken_vetoes == 1,
        format!(
            "expected the write to {fn1}'s driver_override vetoed once under the reservation and once after the rejected file, got {reserved_vetoes} and {broken_vetoes}"
        ),
    );
    let after_drop = between(dropped, c.lines.len(), &|e| {
        matches!(
            e.kind,
            Kind::Pin | Kind::PinRestored | Kind::Rebind | Kind::Veto
        ) && [Some(fn0), Some(fn1)].contains(&e.device.as_deref())
    });
    c.expect(
        after_drop == 0,
        format!("{after_drop} pins or vetoes on {fn0}/{fn1} after the reservation was dropped"),
    );
}
