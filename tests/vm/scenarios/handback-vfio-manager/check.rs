//! `handback-vfio-manager`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, expect_hostile_refused, expect_pod, json, Scenario, LSM};
use crate::checks::Checker;
use iommu_enforcer_schema::{Action, Event, Kind, Outcome, Rule};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "handback-vfio-manager",
    boots: LSM,
    dry_run: false,
    policy: Some("trusted-vfio-manager.toml"),
    check: handback_vfio_manager,
}];

/// The GPU Operator's vfio-manager in a container the policy trusts by name: its writes to the
/// reserved, idle group pass the hooks (the reservation's pins are then restored by the agent);
/// another container's are vetoed and name its pod; nobody's pass while the group is held.
fn handback_vfio_manager(c: &Checker) {
    let g = c.fact("group");
    c.expect(!g.is_empty(), "script did not report the device's group");
    let devices = [c.dev("VM_GPU_VGA"), c.dev("VM_GPU_AUDIO")];
    expect_fact(c, "resolved", "yes");
    expect_fact(c, "alive", "yes");
    let (uid_t, id_t) = (c.fact("trusted_uid"), c.fact("trusted_id"));
    let (uid_u, id_u) = (c.fact("untrusted_uid"), c.fact("untrusted_id"));
    // The card starts on its host drivers; bind --all moves it to vfio-pci, where it stays
    // through the other container's writes and the hold; unbind --all gives it back.
    for n in 0..2 {
        let host = c.fact(&format!("host_{n}"));
        c.expect(
            !host.is_empty() && host != "none" && host != "vfio-pci",
            format!("function {n} of the card started on {host:?}, not on a host driver"),
        );
        expect_fact(c, &format!("start_driver_{n}"), &host);
        for phase in ["bound", "untrusted", "held"] {
            expect_fact(c, &format!("{phase}_driver_{n}"), "vfio-pci");
            expect_fact(c, &format!("{phase}_pin_{n}"), "vfio-pci");
        }
        // The reservation gave way to the trusted container: host driver back, pin cleared
        // and not restored.
        expect_fact(c, &format!("unbound_driver_{n}"), &host);
        expect_fact(c, &format!("unbound_pin_{n}"), "(null)");
    }
    // The group's vetoes by one container, in order.
    let vetoes = |id: &str| -> Vec<&Event> {
        c.events(Kind::Veto)
            .group(&g)
            .action(Action::Vetoed)
            .list()
            .into_iter()
            .filter(|e| e.container_id.as_deref() == Some(id))
            .collect()
    };
    for n in 0..2 {
        // The trusted container: every write of bind --all and unbind --all passed the hooks.
        for step in ["override", "unbind", "probe"] {
            expect_fact(c, &format!("bind_{step}_{n}"), "ok");
            expect_fact(c, &format!("unbind_{step}_{n}"), "ok");
        }
        // The other container, and the trusted one while the group is held: refused.
        for phase in ["untrusted", "held"] {
            expect_fact(c, &format!("{phase}_unbind_{n}"), "EPERM");
            expect_fact(c, &format!("{phase}_override_{n}"), "EPERM");
        }
    }
    // The hostile host process, while the group was held: nothing through.
    expect_hostile_refused(c, &g);
    // The trusted container's unbind happened (the observer names its pod).
    for device in devices {
        let unbinds: Vec<&Event> = c
            .events(Kind::Unbind)
            .device(device)
            .driver("vfio-pci")
            .list()
            .into_iter()
            .filter(|e| e.container_id.as_deref() == Some(id_t.as_str()))
            .collect();
        expect_pod(
            c,
            &unbinds,
            &format!("unbind of {device} by vfio-manager"),
            &uid_t,
            &id_t,
        );
    }
    // Vetoes: exactly the other container's unbind and override of each function, and the
    // trusted container's only while the group was held; each names its pod.
    for (id, uid, who) in [
        (&id_u, &uid_u, "the untrusted container"),
        (&id_t, &uid_t, "vfio-manager while the group was held"),
    ] {
        let theirs = vetoes(id);
        let rules: Vec<(Option<&str>, Option<Rule>)> = theirs
            .iter()
            .map(|e| (e.device.as_deref(), e.rule))
            .collect();
        let want: Vec<(Option<&str>, Option<Rule>)> = devices
            .iter()
            .flat_map(|d| {
                [
                    (Some(*d), Some(Rule::ProtectedUnbind)),
                    (Some(*d), Some(Rule::ProtectedDriverOverride)),
                ]
            })
            .collect();
        c.expect(
            rules == want,
            format!("vetoes of {who}: expected {want:?}, got {rules:?}"),
        );
        expect_pod(c, &theirs, &format!("veto of {who}"), uid, id);
    }
    // The trusted container's vetoes all come after the hold began (events in their order).
    let order: Vec<&Event> = c.every_event().collect();
    let at = |e: &Event| order.iter().position(|o| std::ptr::eq(*o, e));
    let held_at = c
        .events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .list()
        .first()
        .and_then(|e| at(e));
    for e in vetoes(&id_t) {
        c.expect(
            held_at.is_some_and(|h| at(e).is_some_and(|i| i > h)),
            format!("vfio-manager vetoed while the group was idle: {}", json(e)),
        );
    }
}
