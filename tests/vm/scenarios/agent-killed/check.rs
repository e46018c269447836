//! `agent-killed`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{count_fact, expect_alive_and, expect_fact, lsm_runs, Scenario, ARM64, EVERY};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "agent-killed",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: agent_killed,
    },
    Scenario {
        name: "agent-killed",
        boots: EVERY,
        dry_run: false,
        policy: None,
        check: agent_killed,
    },
];

fn agent_killed(c: &Checker) {
    expect_fact(c, "agent_killed", "yes");
    let links: usize = c.fact("pinned_links").parse().unwrap_or(0);
    c.expect(links >= 10, format!("only {links} links pinned"));
    expect_fact(c, "fn1_without_agent", "none");
    if lsm_runs(c) {
        expect_fact(c, "override_without_agent", "error_EPERM");
        // A bus-wide bind or unbind names its target only in the data written: with no agent
        // to arm the write-time check, the open is refused (EAGAIN) while anything is
        // protected, and stays refused until an agent arms it. On 5.10 the check stays
        // attached (it cannot be attached again there): the write is refused (EPERM).
        let bus = if c.is_5_10() {
            "error_EPERM"
        } else {
            "error_EAGAIN"
        };
        expect_fact(c, "bind_without_agent", bus);
        expect_fact(c, "unbind_without_agent", bus);
        expect_fact(c, "override_second_agent", "error_EPERM");
        // The pins guard themselves while the group is in use, with no agent running.
        for f in ["pin_rm", "pin_mv", "map_rm", "bpffs_umount"] {
            expect_fact(c, f, "EPERM");
        }
        expect_fact(c, "detach_in_use", "1");
        expect_fact(c, "links_after_cleanup", &links.to_string());
        expect_fact(c, "bind_after_cleanup", bus);
        // rm, mv, rm of a map, umount: made while no agent ran, printed by the next one.
        let pins = count_fact(c, "second_pin_vetoes");
        c.expect(
            pins >= 4,
            format!("the second agent printed {pins} protected_pins vetoes, expected 4"),
        );
        let n: usize = c.fact("second_vetoes").parse().unwrap_or(0);
        c.expect(n >= 1, "the second agent reported no veto");
    } else {
        // Without BPF LSM nothing vetoes; the pin (ENODEV) is what holds.
        expect_fact(c, "bind_without_agent", "error_ENODEV");
    }
    expect_fact(c, "second_ready", "yes");
    expect_fact(c, "second_adopted", "1");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_alive_and(c, "none");
}
