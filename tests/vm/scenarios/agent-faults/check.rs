//! `agent-faults`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, Scenario, LSM_BPF};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    // The agent's own faults: the oldest and the newest kernel with BPF LSM (the vetoes
    // are the subject).
    name: "agent-faults",
    boots: &[("5.10", Some(LSM_BPF)), ("7.3", None)],
    dry_run: false,
    policy: None,
    check: agent_faults,
}];

fn agent_faults(c: &Checker) {
    expect_fact(c, "ready", "yes");
    expect_fact(c, "nofile_raised", "1");
    let base: u32 = c.fact("fds_base").parse().unwrap_or(u32::MAX);
    for phase in ["open", "held"] {
        expect_fact(c, &format!("probes_failed_{phase}"), "0");
        let ok: u32 = c.fact(&format!("probes_ok_{phase}")).parse().unwrap_or(0);
        c.expect(
            ok >= 10,
            format!("{phase} flood: only {ok} probes answered"),
        );
        let max: u64 = c
            .fact(&format!("probe_max_ms_{phase}"))
            .parse()
            .unwrap_or(u64::MAX);
        // 100 ms on a host; TCG and a 2-core CI runner get a margin.
        c.expect(max < 500, format!("{phase} flood: a probe took {max} ms"));
        // The programs, maps and links are most of the base; the flood adds at most the cap
        // of 64 connections and the few a pass opens.
        let fds: u32 = c.fact(&format!("fds_{phase}")).parse().unwrap_or(u32::MAX);
        c.expect(
            fds <= base.saturating_add(80),
            format!("{phase} flood: the agent holds {fds} descriptors, {base} before (cap 64 connections)"),
        );
    }
    for when in ["during", "after"] {
        expect_fact(c, &format!("vfio_open_{when}"), "refused");
        let slot = c.fact(&format!("slot_power_{when}"));
        c.expect(
            slot == "error_EPERM",
            format!("slot power {when} the flood: {slot}"),
        );
        expect_fact(c, &format!("port_remove_{when}"), "error_EPERM");
        expect_fact(c, &format!("override_{when}"), "error_EPERM");
    }
    expect_fact(c, "fn1_host", "e1000");
    expect_fact(c, "shutdown_printed", "1");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "alive", "yes");
}
