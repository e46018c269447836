//! `burst`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{burst_seen, count_fact, counted_lost, expect_fact, Scenario, EDGES};
use crate::checks::Checker;
use iommu_enforcer_schema::Line;
use serde_json::Value;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "burst",
    boots: EDGES,
    dry_run: false,
    policy: None,
    check: burst,
}];

/// The agent's last verdict of every group equals the audit's read of sysfs after it stopped.
fn final_map_matches_sysfs(c: &Checker) {
    let Some(groups) = c
        .audit
        .as_ref()
        .and_then(|a| a.get("groups"))
        .and_then(Value::as_array)
    else {
        c.problem("no groups in the final audit JSON");
        return;
    };
    for g in groups {
        let id = g["id"].as_str().unwrap_or("?");
        let want = (g["owner"].as_str(), g["viable"].as_bool());
        let got = c
            .verdicts(id)
            .last()
            .map(|v| (Some(v.owner.as_str()), Some(v.viable)));
        c.expect(
            got == Some(want),
            format!(
                "group {id}: the agent's last verdict (owner, viable) {got:?} is not the audit's {want:?}"
            ),
        );
    }
}

fn burst(c: &Checker) {
    let dev = c.fact("burst_device");
    let node = format!("/dev/vfio/{}", c.fact("flood_group"));
    let cycles = count_fact(c, "cycles");
    let binds = count_fact(c, "binds");
    let unbinds = count_fact(c, "unbinds");
    let ok = count_fact(c, "opens_ok");
    let failed = count_fact(c, "opens_failed");
    c.expect(
        cycles >= 1000 && binds == cycles && unbinds == cycles,
        format!("{cycles} cycles with {binds} binds and {unbinds} unbinds: expected 1000 of each"),
    );
    // Each successful open makes an open and a release record, a failed one an open.
    let made = binds + unbinds + 2 * ok + failed;
    let (seen_cycles, seen_opens) = burst_seen(c, &dev, &node);
    let lost = counted_lost(c);
    c.expect(
        lost > 0,
        "the flood did not overflow the ring (no record counted lost)",
    );
    c.expect(
        seen_cycles + seen_opens + lost == made,
        format!(
            "made {made} (binds {binds}, unbinds {unbinds}, opens {ok} ok and {failed} failed) != seen {} + {seen_opens} + lost {lost}",
            seen_cycles
        ),
    );
    c.expect(
        !c.of_type(|l| matches!(l, Line::Resync { .. })).is_empty(),
        "no resync after the losses",
    );
    expect_fact(c, "alive", "yes");
    final_map_matches_sysfs(c);
}
