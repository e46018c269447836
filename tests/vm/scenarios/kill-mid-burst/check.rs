//! `kill-mid-burst`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{burst_seen, count_fact, counted_lost, expect_fact, Scenario, EDGES};
use crate::checks::Checker;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "kill-mid-burst",
    boots: EDGES,
    dry_run: false,
    policy: None,
    check: kill_mid_burst,
}];

fn kill_mid_burst(c: &Checker) {
    expect_fact(c, "agent_killed", "yes");
    expect_fact(c, "second_ready", "yes");
    expect_fact(c, "second_rc", "0");
    expect_fact(c, "second_restart_lines", "1");
    let dev = c.fact("burst_device");
    let binds = count_fact(c, "binds");
    let unbinds = count_fact(c, "unbinds");
    let cycles = count_fact(c, "cycles");
    let at_kill = count_fact(c, "cycles_at_kill");
    let without = count_fact(c, "cycles_without_agent");
    c.expect(
        at_kill > 0 && at_kill < cycles && without > 0,
        format!("the kill was not mid-burst: {at_kill} cycles before it, {without} without an agent, {cycles} in all"),
    );
    let made = binds + unbinds;
    let (first, _) = burst_seen(c, &dev, "none");
    let second = count_fact(c, "second_binds") + count_fact(c, "second_unbinds");
    let lost = counted_lost(c) + count_fact(c, "second_lost") + count_fact(c, "second_missed");
    // Nothing lost silently: every record made is seen or counted lost. Delivery across kill -9
    // is at least once: a record the first agent printed but had not yet consumed from the ring
    // when it died (its lines go through the output thread first), or a loss it reported but
    // had not yet written to the pinned ledger, is said again by the second. A few, not a
    // batch: the drain consumes each record once its lines are written.
    let said = first + second + lost;
    c.expect(
        said >= made && said <= made + DUPLICATES_AT_KILL,
        format!(
            "made {made} (binds {binds}, unbinds {unbinds}), seen {first} (first agent) + {second} (second) + lost {lost} = {said}: expected {made} to {}",
            made + DUPLICATES_AT_KILL
        ),
    );
}

/// Records a kill -9 may leave to be said twice (printed, not yet consumed): see kill_mid_burst.
const DUPLICATES_AT_KILL: u64 = 8;
